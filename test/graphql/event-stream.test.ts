import { once } from 'node:events';
import { request, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { print } from 'graphql';
import { createClient, type Client } from 'graphql-sse';
import {
  EventAppendedDocument,
  RocketUpdatedDocument,
  type EventAppendedSubscription,
  type RocketUpdatedSubscription,
} from '../generated/graphql';
import { envelope } from '../support/telemetry';
import { startServer, Subscription, until, type GraphQLErrorJson, type TestServer } from './support';

interface StreamEvent {
  readonly event: string;
  readonly data: string;
  /** Its `id` field, if it has one. */
  readonly id?: string;
}

/**
 * One request to `/graphql` read as an event stream, by hand: its status, headers, comments and events as
 * they come. `pause()` stops reading the socket, as a client that stalls.
 */
class EventStream {
  readonly events: StreamEvent[] = [];
  comments = 0;
  readonly ended: Promise<void>;
  /** Every chunk received, for `text`. */
  private readonly chunks: string[] = [];
  /** The pieces of the event being received (a large one comes in many chunks). */
  private partial: string[] = [];
  private readonly waiters = new Set<() => void>();
  /** Whether the connection has closed. */
  finished = false;

  private constructor(readonly response: IncomingMessage) {
    response.setEncoding('utf8');
    response.on('data', (chunk: string) => {
      this.chunks.push(chunk);
      // Each chunk is searched once for the ends of events ("\n\n", which may fall across two chunks).
      let start = 0;
      if (chunk.startsWith('\n') && this.partial.at(-1)?.endsWith('\n') === true) {
        this.block(this.partial.join('').slice(0, -1));
        start = 1;
      }
      for (let end = chunk.indexOf('\n\n', start); end >= 0; end = chunk.indexOf('\n\n', start)) {
        this.partial.push(chunk.slice(start, end));
        this.block(this.partial.join(''));
        start = end + 2;
      }
      if (start < chunk.length) this.partial.push(chunk.slice(start));
      this.wake();
    });
    this.ended = new Promise((resolve) =>
      response.once('close', () => {
        this.finished = true;
        this.wake();
        resolve();
      }),
    );
  }

  /** The body as received so far, for an answer that is not a stream. */
  get text(): string {
    return this.chunks.join('');
  }

  /** One whole event (or comment) of the stream, without its closing blank line. */
  private block(text: string): void {
    this.partial = [];
    if (text.startsWith(':')) {
      this.comments++;
      return;
    }
    const lines = text.split('\n');
    const field = (name: string): string =>
      lines
        .find((l) => l.startsWith(`${name}:`))
        ?.slice(name.length + 1)
        .trim() ?? '';
    const id = lines.some((l) => l.startsWith('id:')) ? { id: field('id') } : {};
    this.events.push({ event: field('event'), data: field('data'), ...id });
  }

  static open(
    url: string,
    options: { method?: string; body?: string; headers?: Record<string, string> } = {},
  ): Promise<EventStream> {
    return new Promise((resolve, reject) => {
      const req = request(url, {
        method: options.method ?? 'GET',
        headers: {
          accept: 'text/event-stream',
          ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
          ...options.headers,
        },
      });
      req.once('response', (res) => resolve(new EventStream(res)));
      req.once('error', reject);
      req.end(options.body);
    });
  }

  get status(): number {
    return this.response.statusCode ?? 0;
  }

  get headers(): IncomingHttpHeaders {
    return this.response.headers;
  }

  /** The results of the `next` events so far. */
  get results(): Array<{ data?: unknown; errors?: GraphQLErrorJson[] }> {
    return this.events
      .filter((e) => e.event === 'next')
      .map((e) => JSON.parse(e.data) as { data?: unknown; errors?: GraphQLErrorJson[] });
  }

  /** Resolves once `check` holds; rejects if the stream ends first. */
  async until(check: () => boolean): Promise<void> {
    while (!check()) {
      if (this.finished) throw new Error(`the stream ended first: ${JSON.stringify(this.events)}`);
      await new Promise<void>((resolve) => this.waiters.add(resolve));
    }
  }

  pause(): void {
    this.response.pause();
  }

  resume(): void {
    this.response.resume();
  }

  async close(): Promise<void> {
    this.response.destroy();
    await this.ended;
  }

  private wake(): void {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) w();
  }
}

const query = (document: string, variables?: Record<string, unknown>): string =>
  `?query=${encodeURIComponent(document)}${variables ? `&variables=${encodeURIComponent(JSON.stringify(variables))}` : ''}`;

const ROCKET_UPDATED = print(RocketUpdatedDocument);
const SUBSCRIBER_BUFFER = 16;
/** Big enough that a few thousand updates fill the kernel's socket buffers of a client that stopped reading. */
const LONG_TEXT = 'x'.repeat(990);

describe('GraphQL over server-sent events (Accept: text/event-stream)', () => {
  let server: TestServer;
  const streams: EventStream[] = [];
  const clients: Client[] = [];
  const start = async (overrides: Parameters<typeof startServer>[0] = {}): Promise<void> => {
    server = await startServer({ subscriberBuffer: SUBSCRIBER_BUFFER, keepAliveMs: 0, ...overrides });
  };
  const open = async (...args: Parameters<typeof EventStream.open>): Promise<EventStream> => {
    const s = await EventStream.open(...args);
    streams.push(s);
    return s;
  };
  const graphql = (search = ''): string => `${server.http}/graphql${search}`;
  /** graphql-sse's own client, in its distinct connections mode (one request an operation), never retrying. */
  const sseClient = (headers: Record<string, string> = {}): Client => {
    const c = createClient({ url: graphql(), singleConnection: false, retryAttempts: 0, headers });
    clients.push(c);
    return c;
  };
  const subscribers = (): number => server.app.service.hub.subscribers;
  const launch = (channel: string, mission = 'ARTEMIS', n = 1) =>
    server.app.service.submit(
      envelope(channel, 1, 'RocketLaunched', { type: 'Falcon-9', launchSpeed: 500 + n, mission }),
    );
  const increase = (channel: string, n: number) =>
    server.app.service.submit(envelope(channel, n, 'RocketSpeedIncreased', { by: 1 }));

  afterEach(async () => {
    for (const c of clients.splice(0)) c.dispose();
    for (const s of streams.splice(0)) await s.close();
    await server.app.stop();
  });

  describe('with graphql-sse’s client', () => {
    beforeEach(() => start());

    it('delivers every update of a subscription, and unsubscribing releases it on the server', async () => {
      const sub = new Subscription<RocketUpdatedSubscription>(sseClient(), RocketUpdatedDocument, { channel: 'a' });
      await until(() => subscribers() === 1);
      await launch('a');
      await launch('b');
      for (let n = 2; n <= 5; n++) await increase('a', n);

      const items = await sub.until((i) => i.length >= 5);
      expect(items.map((i) => [i.rocketUpdated.channel, i.rocketUpdated.speed])).toEqual([
        ['a', 501],
        ['a', 502],
        ['a', 503],
        ['a', 504],
        ['a', 505],
      ]);
      sub.unsubscribe();
      await until(() => subscribers() === 0);
      expect(sub.failure).toBeUndefined();
    });

    it('replays the log from a position, then goes live, with no gap and no duplicate', async () => {
      await launch('c');
      for (let n = 2; n <= 40; n++) await increase('c', n);
      const sub = new Subscription<EventAppendedSubscription>(sseClient(), EventAppendedDocument, { after: 10 });
      const writer = (async () => {
        for (let n = 41; n <= 80; n++) await increase('c', n);
      })();
      await writer;
      const items = await sub.until((i) => i.length >= 70);
      expect(items.map((i) => i.eventAppended.position)).toEqual(Array.from({ length: 70 }, (_, i) => i + 11));
      expect(items.map((i) => i.eventAppended.messageNumber)).toEqual(Array.from({ length: 70 }, (_, i) => i + 11));
    });

    it('runs a query and completes; a mutation needs the ingest token, as over HTTP', async () => {
      await server.app.stop();
      await start({ ingestToken: 'ingest-secret' });
      await launch('q');
      const results = await collect(sseClient(), { query: '{ rockets { nodes { channel speed } } }' });
      expect(results).toEqual([{ data: { rockets: { nodes: [{ channel: 'q', speed: 501 }] } } }]);

      const mutation = `mutation($metadata: MessageMetadataInput!, $message: MessagePayloadInput!) {
        submitMessage(metadata: $metadata, message: $message) { status }
      }`;
      const variables = envelopeInput('q', 2);
      const refused = await collect(sseClient(), { query: mutation, variables });
      expect(refused.map((r) => [r.data, r.errors?.map((e) => e.extensions?.code)])).toEqual([
        [null, ['UNAUTHENTICATED']],
      ]);
      const applied = await collect(sseClient({ authorization: 'Bearer ingest-secret' }), {
        query: mutation,
        variables,
      });
      expect(applied).toEqual([{ data: { submitMessage: { status: 'APPLIED' } } }]);
      expect((await server.app.service.rocket('q')).speed).toBe(502);
    });
  });

  describe('the protocol by hand', () => {
    beforeEach(() => start());

    it('answers 200 with an event stream, a comment first, then the results as `next` events', async () => {
      const s = await open(graphql(query(ROCKET_UPDATED)));
      expect(s.status).toBe(200);
      expect(s.headers['content-type']).toBe('text/event-stream; charset=utf-8');
      expect(s.headers['cache-control']).toBe('no-store');
      await s.until(() => s.comments === 1);
      await until(() => subscribers() === 1);
      await launch('a');
      await s.until(() => s.events.length === 1);
      expect(s.events[0]?.event).toBe('next');
      expect(s.results).toEqual([
        { data: { rocketUpdated: { channel: 'a', speed: 501, status: 'FLYING', lastMessageNumber: 1 } } },
      ]);
    });

    it('sends each event of the log with its position as `id`, and resumes after a `Last-Event-ID`', async () => {
      await launch('c');
      for (let n = 2; n <= 5; n++) await increase('c', n);
      await launch('d');
      const ask = graphql(query('subscription { eventAppended(after: 0) { position channel messageNumber } }'));
      const first = await open(ask);
      await first.until(() => first.events.length >= 6);
      expect(first.events.map((e) => e.id)).toEqual(['1', '2', '3', '4', '5', '6']);
      expect(first.results.map((r) => (r.data as EventAppendedSubscription).eventAppended.position)).toEqual([
        1, 2, 3, 4, 5, 6,
      ]);
      await first.close();

      // Reconnected as a browser does (the same URL, the last id back): on after it, not from `after: 0`.
      for (let n = 6; n <= 8; n++) await increase('c', n);
      const again = await open(ask, { headers: { 'last-event-id': '6' } });
      await again.until(() => again.events.length >= 3);
      expect(again.events.map((e) => e.id)).toEqual(['7', '8', '9']);

      // Of one rocket, first asked from its message number: on after the position all the same.
      const ofC = await open(
        graphql(query('subscription { eventAppended(channel: "c", afterMessageNumber: 1) { messageNumber } }')),
        { headers: { 'last-event-id': '7' } },
      );
      await ofC.until(() => ofC.events.length >= 2);
      expect(ofC.events.map((e) => [e.id, JSON.parse(e.data) as unknown])).toEqual([
        ['8', { data: { eventAppended: { messageNumber: 7 } } }],
        ['9', { data: { eventAppended: { messageNumber: 8 } } }],
      ]);
    });

    it('sends each update of a rocket with the position of its commit as `id`, and resumes with what changed', async () => {
      const ask = graphql(query('subscription { rocketUpdated { channel lastMessageNumber } }'));
      const updates = (s: EventStream) =>
        s.events.map((e) => {
          const { channel, lastMessageNumber } = (
            JSON.parse(e.data) as { data: { rocketUpdated: { channel: string; lastMessageNumber: number } } }
          ).data.rocketUpdated;
          return [e.id, channel, lastMessageNumber];
        });
      const first = await open(ask);
      await until(() => subscribers() === 1);
      await launch('a');
      await launch('b');
      await first.until(() => first.events.length === 2);
      expect(updates(first)).toEqual([
        ['1', 'a', 1],
        ['2', 'b', 1],
      ]);
      await first.close();

      // While the client is away: a changes twice, c launches, b does not change.
      await increase('a', 2);
      await launch('c');
      await increase('a', 3);
      // Reconnected as a browser does: the state of each rocket that changed, the last with the head, then live.
      const again = await open(ask, { headers: { 'last-event-id': '2' } });
      await again.until(() => again.events.length === 2);
      await increase('b', 2);
      await again.until(() => again.events.length === 3);
      expect(updates(again)).toEqual([
        [undefined, 'a', 3],
        ['5', 'c', 1],
        ['6', 'b', 2],
      ]);

      // Of one rocket: its state only if it changed after the id.
      const ofB = await open(
        graphql(query('subscription { rocketUpdated(channel: "b") { channel lastMessageNumber } }')),
        {
          headers: { 'last-event-id': '5' },
        },
      );
      await ofB.until(() => ofB.events.length === 1);
      expect(updates(ofB)).toEqual([['6', 'b', 2]]);
      const ahead = await open(ask, { headers: { 'last-event-id': '7' } });
      await ahead.ended;
      expect(ahead.events[0]?.id).toBe('');
      expect(ahead.results[0]?.errors?.[0]?.message).toContain('Last-Event-ID: 7 is past the end of the log');
    });

    it('answers a `Last-Event-ID` past the end of the log, or with arguments it refuses, with errors', async () => {
      await launch('c');
      for (let n = 2; n <= 5; n++) await increase('c', n);
      const ask = (document: string, lastId: string) =>
        open(graphql(query(document)), { headers: { 'last-event-id': lastId } });
      // Not sent from this log (a store restored from an older backup, or a memory store restarted): going on
      // after it would skip events 1 to 5 without a word.
      const ahead = await ask('subscription { eventAppended(after: 0) { position } }', '100');
      // The arguments the stream first asked with are checked as they were: these never made a stream.
      const refused = await ask('subscription { eventAppended(afterMessageNumber: 1) { position } }', '2');
      for (const s of [ahead, refused]) {
        await s.ended;
        expect(s.status).toBe(200);
        expect(s.events.at(-1)).toEqual({ event: 'complete', data: '' });
      }
      // Its id is cleared, so that a browser that reconnects all the same starts where its URL says.
      expect(ahead.events[0]?.id).toBe('');
      expect(ahead.results).toEqual([
        {
          errors: [
            expect.objectContaining({
              message: expect.stringContaining('Last-Event-ID: 100 is past the end of the log (position 5)') as string,
              extensions: expect.objectContaining({ code: 'BAD_USER_INPUT' }) as object,
            }),
          ],
        },
      ]);
      expect(refused.results[0]?.errors?.[0]?.message).toContain('afterMessageNumber: needs channel');
      // An empty id is none: the stream starts where the URL says.
      const none = await ask('subscription { eventAppended(after: 3) { position } }', '');
      await none.until(() => none.events.length >= 2);
      expect(none.events.map((e) => e.id)).toEqual(['4', '5']);
      expect(subscribers()).toBe(1);
    });

    it('refuses a `Last-Event-ID` that is not a position with a coded 400', async () => {
      for (const id of ['x', '-1', '1.5', '9007199254740992', '12345678901234567']) {
        const s = await open(graphql(query('subscription { eventAppended { position } }')), {
          headers: { 'last-event-id': id },
        });
        await s.ended;
        expect(s.status).toBe(400);
        expect(JSON.parse(s.text)).toEqual({
          errors: [
            expect.objectContaining({
              message: expect.stringContaining(`"${id}"`) as string,
              extensions: { code: 'BAD_REQUEST' },
            }),
          ],
        });
      }
      expect(subscribers()).toBe(0);
    });

    it('ends a query with `complete`, and closes nothing else', async () => {
      await launch('a');
      const s = await open(graphql(), {
        method: 'POST',
        body: JSON.stringify({ query: '{ rocket(channel: "a") { speed } }' }),
      });
      await s.ended;
      expect(s.events).toEqual([
        { event: 'next', data: JSON.stringify({ data: { rocket: { speed: 501 } } }) },
        { event: 'complete', data: '' },
      ]);
    });

    it('sends errors of the operation as its result (the client would retry any answer but a 200)', async () => {
      const syntax = await open(graphql(query('{ rockets {')));
      const invalid = await open(graphql(query('subscription { rocketUpdated { nope } }')));
      await Promise.all([syntax.ended, invalid.ended]);
      expect([syntax.status, invalid.status]).toEqual([200, 200]);
      expect(syntax.results).toEqual([
        { errors: [expect.objectContaining({ extensions: { code: 'GRAPHQL_PARSE_FAILED' } })] },
      ]);
      expect(invalid.results).toEqual([
        { errors: [expect.objectContaining({ extensions: { code: 'GRAPHQL_VALIDATION_FAILED' } })] },
      ]);
      expect(invalid.events.at(-1)).toEqual({ event: 'complete', data: '' });
      expect(subscribers()).toBe(0);
    });

    it('refuses a malformed request with a coded 4xx in JSON, before any stream', async () => {
      const cases: Array<[EventStream, number, string]> = [
        [await open(graphql()), 400, 'BAD_REQUEST'],
        [await open(graphql(`?query=x&variables=1`)), 400, 'BAD_REQUEST'],
        [await open(graphql(), { method: 'POST', body: '{' }), 400, 'BAD_REQUEST'],
        [
          await open(graphql(), { method: 'POST', body: '{}', headers: { 'content-type': 'text/plain' } }),
          415,
          'UNSUPPORTED_MEDIA_TYPE',
        ],
        [await open(graphql(query('mutation { __typename }'))), 405, 'METHOD_NOT_ALLOWED'],
      ];
      for (const [s, status, code] of cases) {
        await s.ended;
        expect([s.status, s.headers['content-type']]).toEqual([status, 'application/json; charset=utf-8']);
        const body = JSON.parse(s.text) as { errors: GraphQLErrorJson[] };
        expect(body.errors).toEqual([expect.objectContaining({ extensions: { code } })]);
        expect(body.errors[0]?.message.length).toBeGreaterThan(10);
      }
      expect(cases[4]?.[0].headers.allow).toBe('POST');
    });

    it('streams only for a client that prefers it: one that takes JSON first gets JSON', async () => {
      const ask = (accept: string) => open(graphql(query('{ __typename }')), { headers: { accept } });
      const chosen = await Promise.all(
        [
          'text/event-stream',
          'text/event-stream, application/json',
          'application/json;q=0.5, text/event-stream',
          'application/json, text/event-stream',
          'application/graphql-response+json, text/event-stream;q=0.9',
          'text/event-stream;q=0, application/json',
          'Text/Event-Stream',
          'application/json, text/event-stream;q=2',
        ].map(async (accept) => {
          const s = await ask(accept);
          await s.ended;
          return s.headers['content-type']?.split(';')[0];
        }),
      );
      expect(chosen).toEqual([
        'text/event-stream',
        'text/event-stream',
        'text/event-stream',
        'application/json',
        'application/graphql-response+json',
        'application/json',
        'text/event-stream',
        'application/json',
      ]);
    });

    it('answers HEAD with the headers of a stream and runs nothing', async () => {
      const s = await open(graphql(query(ROCKET_UPDATED)), { method: 'HEAD' });
      await s.ended;
      expect([s.status, s.headers['content-type'], s.text]).toEqual([200, 'text/event-stream; charset=utf-8', '']);
      expect(subscribers()).toBe(0);
    });

    it('starts a stream pipelined behind another only when that one ends, and ends all with their connection', async () => {
      // Twenty streams asked at once on one connection: each answer waits behind the one before it, and
      // could never be read while the first runs. Only the first may hold a subscription.
      const socket = connect(Number(new URL(server.http).port), '127.0.0.1');
      await once(socket, 'connect');
      const get = `GET /graphql${query(ROCKET_UPDATED)} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n`;
      socket.write(get.repeat(20));
      await until(() => subscribers() === 1);
      // Another connection's answer: by then the server has read all twenty (they came in one write).
      expect((await fetch(`${server.http}/health`)).status).toBe(200);
      expect(subscribers()).toBe(1);
      // Queued answers hear nothing when the connection closes: the stream ends with it all the same.
      socket.destroy();
      await until(() => subscribers() === 0);
      expect(subscribers()).toBe(0);
    });

    it('runs streams pipelined behind a query in turn', async () => {
      await launch('p');
      const socket = connect(Number(new URL(server.http).port), '127.0.0.1');
      await once(socket, 'connect');
      let text = '';
      socket.on('data', (c: Buffer) => (text += c.toString('utf8')));
      const ask = (document: string) =>
        `GET /graphql${query(document)} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n`;
      socket.write(ask('{ rocket(channel: "p") { speed } }') + ask(ROCKET_UPDATED));
      await until(() => subscribers() === 1);
      await increase('p', 2);
      await until(() => text.includes('"speed":502'));
      // The query's answer, complete, then the subscription's, live.
      expect(text.indexOf('"speed":501')).toBeLessThan(text.indexOf('event: complete'));
      expect(text.indexOf('event: complete')).toBeLessThan(text.indexOf('"speed":502'));
      socket.destroy();
      await until(() => subscribers() === 0);
    });

    it('releases the subscription of a client that goes away', async () => {
      const s = await open(graphql(query(ROCKET_UPDATED)));
      await until(() => subscribers() === 1);
      await s.close();
      await until(() => subscribers() === 0);
      await launch('after');
      expect(server.app.service.rocket('after')).toBeDefined();
    });

    it('drops a client that stopped reading with FELL_BEHIND, while another gets every update', async () => {
      const fast = await open(graphql(query('subscription { rocketUpdated { channel } }')));
      const slow = await open(graphql(query('subscription { rocketUpdated { channel mission } }')));
      await until(() => subscribers() === 2);
      slow.pause();

      // One new rocket per commit: the stalled connection fills, then its feed holds more rockets than it may.
      let n = 0;
      while (subscribers() === 2 && n < 20_000) {
        n++;
        await launch(`r${n}`, LONG_TEXT, n);
        await fast.until(() => fast.events.length >= n);
      }
      expect(subscribers()).toBe(1);
      expect(fast.results.map((r) => (r.data as RocketUpdatedSubscription).rocketUpdated.channel)).toEqual(
        Array.from({ length: n }, (_, i) => `r${i + 1}`),
      );

      slow.resume();
      await slow.ended;
      expect(slow.results.at(-1)).toEqual({
        errors: [
          expect.objectContaining({
            message: `the subscriber fell more than ${SUBSCRIBER_BUFFER} items behind and was dropped; resubscribe`,
            extensions: { code: 'FELL_BEHIND' },
          }),
        ],
      });
      expect(slow.events.at(-1)).toEqual({ event: 'complete', data: '' });
      expect(slow.results.length).toBeLessThan(n);
    });
  });

  describe('settings', () => {
    it('cuts a client that takes nothing for WS_KEEPALIVE_MS, and releases its subscription', async () => {
      await start({ keepAliveMs: 100 });
      // eventAppended never drops a slow reader (it reads the store again): only the cut frees its connection.
      const heavy = 'subscription { eventAppended { payload { ... on RocketLaunched { mission } } } }';
      const slow = await open(graphql(query(heavy)));
      await until(() => subscribers() === 1);
      slow.pause();
      // Each launch's event carries the long mission, so the stalled connection fills after a few thousand.
      // The hub's count cannot tell: a stalled reader of the log drops its live feed and reads the store again
      // (its subscription is then out of the hub until it reads). The server's connections can.
      const connections = (): Promise<number> =>
        new Promise((resolve, reject) =>
          server.app.server.getConnections((e, count) => (e ? reject(e) : resolve(count))),
        );
      let n = 0;
      while ((await connections()) > 0 && n < 60_000) {
        n++;
        await launch(`r${n}`, LONG_TEXT, n);
        // Turns for the stream to write (and find the connection full), and for its timer.
        if (n % 20 === 0) await new Promise<void>((resolve) => setTimeout(resolve, 1));
      }
      expect(await connections()).toBe(0);
      expect(subscribers()).toBe(0);
      // The connection was cut: what the client had not read ends with no `complete`, and the answer is
      // incomplete.
      slow.resume();
      await slow.ended;
      expect([slow.response.complete, slow.events.at(-1)?.event]).toEqual([false, 'next']);
    });

    it('keeps a client that reads a large answer slowly, but steadily, for longer than WS_KEEPALIVE_MS', async () => {
      // A read every 10 ms, far inside the timeout, however loaded the machine; the whole read takes longer.
      await start({ keepAliveMs: 500 });
      for (let n = 1; n <= 10_000; n++) await launch(`big${n}`, LONG_TEXT, n);
      // One result of about 10 MB, more than the kernel's buffers hold: it leaves in one write, and drains
      // only once the client has taken most of it.
      const big = 'query($n: Int!) { events(after: 0, first: $n) { payload { ... on RocketLaunched { mission } } } }';
      const s = await open(graphql(query(big, { n: 10_000 })));
      // Read a chunk (64 KB at most) every 10 ms: a few MB/s, a second or two in all.
      const throttle = (async () => {
        while (!s.finished) {
          s.pause();
          await new Promise<void>((resolve) => setTimeout(resolve, 10));
          const read = new Promise<void>((resolve) => {
            const done = (): void => {
              s.response.off('data', done).off('close', done);
              resolve();
            };
            s.response.on('data', done).on('close', done);
          });
          s.resume();
          await read;
        }
      })();
      await s.ended;
      await throttle;
      expect(s.text.length).toBeGreaterThan(10_000_000);
      expect(s.events.map((e) => e.event)).toEqual(['next', 'complete']);
    });

    it('sends a comment every WS_KEEPALIVE_MS, so that an idle stream stays open through proxies', async () => {
      await start({ keepAliveMs: 20 });
      const s = await open(graphql(query(ROCKET_UPDATED)));
      await s.until(() => s.comments >= 3);
      expect(s.events).toEqual([]);
    });

    it('with SUBSCRIPTION_TOKEN, a subscription needs it as a bearer token (401 otherwise); a query does not', async () => {
      await start({ subscriptionToken: 'sub-secret' });
      const none = await open(graphql(query(ROCKET_UPDATED)));
      const wrong = await open(graphql(query(ROCKET_UPDATED)), { headers: { authorization: 'Bearer nope' } });
      for (const s of [none, wrong]) {
        await s.ended;
        expect([s.status, s.headers['www-authenticate']]).toEqual([401, 'Bearer']);
        expect(JSON.parse(s.text)).toEqual({
          errors: [expect.objectContaining({ extensions: { code: 'UNAUTHENTICATED' } })],
        });
      }
      const right = await open(graphql(query(ROCKET_UPDATED)), { headers: { authorization: 'Bearer sub-secret' } });
      expect(right.status).toBe(200);
      await until(() => subscribers() === 1);

      const read = await open(graphql(query('{ __typename }')));
      await read.ended;
      expect(read.results).toEqual([{ data: { __typename: 'Query' } }]);
    });

    it('carries the CORS allowance of an allowed origin', async () => {
      await start({ allowedOrigins: ['https://rockets.example'] });
      const s = await open(graphql(query('{ __typename }')), { headers: { origin: 'https://rockets.example' } });
      await s.ended;
      expect(s.headers['access-control-allow-origin']).toBe('https://rockets.example');
    });
  });

  describe('a stop', () => {
    beforeEach(() => start());

    it('refuses with a 503 a stream whose request was still coming in when the stop began', async () => {
      const socket = connect(Number(new URL(server.http).port), '127.0.0.1');
      await once(socket, 'connect');
      let answer = '';
      socket.on('data', (c: Buffer) => (answer += c.toString('latin1')));
      const closed = once(socket, 'close');
      const body = JSON.stringify({ query: ROCKET_UPDATED });
      socket.write(
        `POST /graphql HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n` +
          `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, 5)}`,
      );
      // Once another request is answered, the server has read these headers: the request is in flight.
      expect((await fetch(`${server.http}/health`)).status).toBe(200);
      const stopped = server.app.stop();
      socket.write(body.slice(5));
      await closed;
      await stopped;
      expect(answer).toMatch(/^HTTP\/1\.1 503 /);
      expect(answer).toMatch(/\r\nretry-after: 1\r\n/i);
      expect(subscribers()).toBe(0);
    });

    it('ends open streams without `complete`, so that clients reconnect elsewhere', async () => {
      const s = await open(graphql(query(ROCKET_UPDATED)));
      await until(() => subscribers() === 1);
      await launch('a');
      await s.until(() => s.events.length === 1);

      const stopped = server.app.stop();
      await s.ended;
      expect(s.events.map((e) => e.event)).toEqual(['next']);
      await stopped;
      expect(subscribers()).toBe(0);
    });
  });
});

/** Every result of one operation run by `client`, once it completes; rejects with its failure. */
function collect(
  client: Client,
  request: { query: string; variables?: Record<string, unknown> },
): Promise<Array<{ data?: unknown; errors?: readonly GraphQLErrorJson[] }>> {
  return new Promise((resolve, reject) => {
    const results: Array<{ data?: unknown; errors?: readonly GraphQLErrorJson[] }> = [];
    client.subscribe(request, {
      next: (r) => results.push(r as never),
      error: reject,
      complete: () => resolve(results),
    });
  });
}

/** The arguments of `submitMessage` for a speed increase, as a GraphQL client sends them. */
function envelopeInput(channel: string, messageNumber: number): Record<string, unknown> {
  return {
    metadata: {
      channel,
      messageNumber,
      messageTime: '2022-02-02T19:39:05.86337+01:00',
      messageType: 'ROCKET_SPEED_INCREASED',
    },
    message: { rocketSpeedIncreased: { by: 1 } },
  };
}
