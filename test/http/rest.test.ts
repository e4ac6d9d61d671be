import { connect, type Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import { buildApp, type App } from '../../src/app';
import { loadConfig } from '../../src/config';
import { DISCARD_BYTES } from '../../src/http/io';
import { CODINGS, expectNotModified, getJson, postJson, send, type Reply } from '../support/process';

const launch = (channel: string, n = 1, extra: Record<string, unknown> = {}) => ({
  metadata: {
    channel,
    messageNumber: n,
    messageTime: '2022-02-02T19:39:05.86337+01:00',
    messageType: 'RocketLaunched',
  },
  message: { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS', ...extra },
});
const speedUp = (channel: string, n: number, by: number) => ({
  metadata: { channel, messageNumber: n, messageTime: '2022-02-02T19:40:05Z', messageType: 'RocketSpeedIncreased' },
  message: { by },
});

describe('REST API', () => {
  let app: App;
  let base: string;
  const post = (body: unknown, headers?: Record<string, string>): Promise<Reply> =>
    postJson(`${base}/messages`, body, headers);
  const counts = async (): Promise<unknown> => {
    const h = (await getJson(`${base}/health`)).body as Record<string, unknown>;
    return { rockets: h.rockets, events: h.events, buffered: h.buffered };
  };

  beforeEach(async () => {
    app = await buildApp({ ...loadConfig({}), databaseUrl: 'memory:', maxBodyBytes: 64 * 1024 });
    base = `http://127.0.0.1:${await app.start(0, '127.0.0.1')}`;
  });
  afterEach(() => app.stop());

  describe('POST /messages', () => {
    it('answers 202 applied with the channel and number once the message is recorded', async () => {
      const r = await post(launch('a'));
      expect(r.status).toBe(202);
      expect(r.body).toEqual({ status: 'applied', channel: 'a', messageNumber: 1 });
    });

    it('buffers a message from the future and applies it once the gap fills', async () => {
      expect((await post(speedUp('a', 2, 100))).body).toMatchObject({ status: 'buffered' });
      expect((await getJson(`${base}/rockets/a`)).status).toBe(404);
      expect((await post(launch('a'))).body).toMatchObject({ status: 'applied' });
      expect((await getJson(`${base}/rockets/a`)).body).toMatchObject({ speed: 600, lastMessageNumber: 2 });
    });

    it('acknowledges a redelivery as a duplicate and changes nothing', async () => {
      await post(launch('a'));
      const before = await counts();
      const r = await post(launch('a'));
      expect(r.status).toBe(202);
      expect(r.body).toMatchObject({ status: 'duplicate' });
      expect(await counts()).toEqual(before);
    });

    it('answers 409 to the same number with a different body, and the first one stands', async () => {
      await post(launch('a'));
      const r = await post(launch('a', 1, { mission: 'OTHER' }));
      expect(r.status).toBe(409);
      expect(r.body).toMatchObject({ error: { code: 'CONFLICT' } });
      expect((await getJson(`${base}/rockets/a`)).body).toMatchObject({ mission: 'ARTEMIS' });
    });

    it('parses the body as JSON whatever the Content-Type says', async () => {
      const r = await send(`${base}/messages`, 'POST', JSON.stringify(launch('a')), { 'content-type': 'text/plain' });
      expect(r.status).toBe(202);
      const none = await send(`${base}/messages`, 'POST', JSON.stringify(launch('b')));
      expect(none.status).toBe(202);
    });

    it('ignores unknown extra fields', async () => {
      const body = { ...launch('a', 1, { colour: 'red' }), extra: true };
      expect((await post(body)).status).toBe(202);
    });

    const bad: Array<[string, unknown, string]> = [
      ['an array body', [], ''],
      ['a missing metadata', { message: {} }, 'metadata'],
      [
        'a missing channel',
        { ...launch('a'), metadata: { ...launch('a').metadata, channel: undefined } },
        'metadata.channel',
      ],
      ['an empty channel', launch(''), 'metadata.channel'],
      ['a zero messageNumber', launch('a', 0), 'metadata.messageNumber'],
      ['a fractional messageNumber', launch('a', 1.5), 'metadata.messageNumber'],
      ['a 2^63 messageNumber', launch('a', 2 ** 63), 'metadata.messageNumber'],
      [
        'an unknown messageType',
        { ...launch('a'), metadata: { ...launch('a').metadata, messageType: 'RocketLanded' } },
        'metadata.messageType',
      ],
      [
        'a bad messageTime',
        { ...launch('a'), metadata: { ...launch('a').metadata, messageTime: 'yesterday' } },
        'metadata.messageTime',
      ],
      ['a string launchSpeed', launch('a', 1, { launchSpeed: '500' }), 'message.launchSpeed'],
      ['a negative amount', speedUp('a', 1, -5), 'message.by'],
      ['a missing payload field', { ...launch('a'), message: { type: 'x', launchSpeed: 1 } }, 'message.mission'],
    ];
    it.each(bad)('refuses %s with a 400 naming the field, and stores nothing', async (_name, body, field) => {
      const before = await counts();
      const r = await post(body);
      expect(r.status).toBe(400);
      const error = (r.body as { error: { code: string; issues: Array<{ field: string; problem: string }> } }).error;
      expect(error.code).toBe('BAD_USER_INPUT');
      expect(error.issues.map((i) => i.field)).toContain(field);
      expect(error.issues.every((i) => i.problem.length > 0)).toBe(true);
      expect(await counts()).toEqual(before);
    });

    it('refuses invalid JSON with a 400 that says so', async () => {
      const r = await send(`${base}/messages`, 'POST', '{"metadata": ', { 'content-type': 'application/json' });
      expect(r.status).toBe(400);
      expect(JSON.stringify(r.body)).toMatch(/not valid JSON/);
    });

    it('takes a body of exactly the size limit, and refuses one byte more with a 413', async () => {
      const json = JSON.stringify(launch('a'));
      const exact = json + ' '.repeat(64 * 1024 - Buffer.byteLength(json));
      const headers = { 'content-type': 'application/json' };
      expect((await send(`${base}/messages`, 'POST', `${exact} `, headers)).status).toBe(413);
      expect((await send(`${base}/messages`, 'POST', exact, headers)).status).toBe(202);
    });

    it('refuses a body over the size limit with a 413', async () => {
      const r = await post({ ...launch('a'), padding: 'x'.repeat(70 * 1024) });
      expect(r.status).toBe(413);
      expect(await counts()).toEqual({ rockets: 0, events: 0, buffered: 0 });
    });

    /** A raw connection to the server: what it answered, and whether the socket failed under the client. */
    const rawPost = (
      contentLength: number,
      headers = '',
    ): { socket: Socket; answer: Promise<{ text: string; error?: Error }> } => {
      const socket = connect(Number(new URL(base).port), '127.0.0.1');
      const chunks: Buffer[] = [];
      let error: Error | undefined;
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('error', (e) => (error = e));
      const answer = new Promise<{ text: string; error?: Error }>((resolve) =>
        socket.on('close', () => resolve({ text: Buffer.concat(chunks).toString('latin1'), ...(error && { error }) })),
      );
      socket.write(
        `POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${contentLength}\r\n${headers}\r\n`,
      );
      return { socket, answer };
    };
    const written = (socket: Socket, data: Buffer): Promise<void> =>
      new Promise((resolve, reject) => socket.write(data, (e) => (e ? reject(e) : resolve())));

    it('reads a refused body to its end before the 413, so a client still sending gets the answer', async () => {
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const chunks = 12; // 768 KiB against the 64 KiB limit
      const { socket, answer } = rawPost(chunk.length * chunks);
      let early = '';
      const onEarly = (c: Buffer): void => {
        early += c.toString('latin1');
      };
      socket.on('data', onEarly);
      for (let i = 1; i < chunks; i++) {
        await written(socket, chunk);
        // A round trip on another connection: the server has turned its loop over what it had received.
        expect((await getJson(`${base}/health`)).status).toBe(200);
      }
      // Nothing yet, while the last chunk is still to come.
      expect(early).toBe('');
      socket.off('data', onEarly);
      await written(socket, chunk);
      const { text, error } = await answer;
      expect(error).toBeUndefined();
      expect(text).toMatch(/^HTTP\/1\.1 413 /);
      expect(text).toMatch(/PAYLOAD_TOO_LARGE/);
      expect(text.toLowerCase()).toContain('connection: close');
      expect(await counts()).toEqual({ rockets: 0, events: 0, buffered: 0 });
    });

    it('answers 413 at once, without reading it, to a body declared far beyond the limit', async () => {
      const { answer } = rawPost(64 * 1024 + DISCARD_BYTES + 1);
      const { text } = await answer;
      expect(text).toMatch(/^HTTP\/1\.1 413 /);
      expect(await counts()).toEqual({ rockets: 0, events: 0, buffered: 0 });
    });

    it('refuses a body that is not UTF-8 with a 400 on REST and GraphQL, and stores nothing', async () => {
      // "café" in ISO-8859-1: read as UTF-8 it would be "caf\uFFFD", as would "cafè", one channel for two.
      const latin1 = (body: unknown): RequestInit => ({
        method: 'POST',
        body: Buffer.from(JSON.stringify(body), 'latin1'),
        headers: { 'content-type': 'application/json; charset=iso-8859-1' },
      });
      const rest = await fetch(`${base}/messages`, latin1(launch('caf\u00e9')));
      expect(rest.status).toBe(400);
      expect(await rest.json()).toEqual({
        error: {
          code: 'BAD_USER_INPUT',
          message: expect.stringMatching(/^the body is not valid UTF-8/) as unknown,
          requestId: expect.any(String) as unknown,
        },
      });
      const mutation = `mutation { submitMessage(metadata: { channel: "caf\u00e8", messageNumber: 1,
        messageTime: "2022-02-02T19:39:05Z", messageType: ROCKET_LAUNCHED },
        message: { rocketLaunched: { type: "F", launchSpeed: 1, mission: "M" } }) { status } }`;
      const graphql = await fetch(`${base}/graphql`, latin1({ query: mutation }));
      expect(graphql.status).toBe(400);
      expect(await graphql.json()).toMatchObject({
        errors: [
          {
            message: expect.stringMatching(/^the body is not valid UTF-8/) as unknown,
            extensions: { code: 'BAD_USER_INPUT' },
          },
        ],
      });
      expect(await counts()).toEqual({ rockets: 0, events: 0, buffered: 0 });
      // The same bytes in UTF-8 are taken, whatever charset is named.
      const utf8 = await fetch(`${base}/messages`, {
        ...latin1(launch('caf\u00e9')),
        body: JSON.stringify(launch('caf\u00e9')),
      });
      expect(utf8.status).toBe(202);
      expect((await getJson(`${base}/rockets/caf%C3%A9`)).status).toBe(200);
    });

    it('reads a body that starts with a UTF-8 byte order mark as the JSON after it, on REST and GraphQL', async () => {
      // RFC 8259 (8.1) lets a parser ignore the mark; some Windows tools write one. JSON.parse would refuse
      // it, in an error naming a character no one can see.
      const withBom = (body: unknown): RequestInit => ({
        method: 'POST',
        body: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify(body))]),
        headers: { 'content-type': 'application/json' },
      });
      const rest = await fetch(`${base}/messages`, withBom(launch('bom')));
      expect({ status: rest.status, body: (await rest.json()) as unknown }).toEqual({
        status: 202,
        body: { status: 'applied', channel: 'bom', messageNumber: 1 },
      });
      const graphql = await fetch(`${base}/graphql`, withBom({ query: '{ rocket(channel: "bom") { channel } }' }));
      expect({ status: graphql.status, body: (await graphql.json()) as unknown }).toEqual({
        status: 200,
        body: { data: { rocket: { channel: 'bom' } } },
      });
    });

    it('refuses a compressed body with a 415 on REST and GraphQL, stores nothing, and keeps serving', async () => {
      const gzipped = (body: unknown): RequestInit => ({
        method: 'POST',
        body: gzipSync(JSON.stringify(body)),
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      });
      const rest = await fetch(`${base}/messages`, gzipped(launch('a')));
      expect(rest.status).toBe(415);
      expect(await rest.json()).toEqual({
        error: {
          code: 'UNSUPPORTED_MEDIA_TYPE',
          message: 'Content-Encoding "gzip" is not supported: send the body uncompressed',
          requestId: expect.any(String) as unknown,
        },
      });
      const graphql = await fetch(`${base}/graphql`, gzipped({ query: '{ gaps { channel } }' }));
      expect(graphql.status).toBe(415);
      expect(await graphql.json()).toMatchObject({ errors: [{ extensions: { code: 'UNSUPPORTED_MEDIA_TYPE' } }] });
      expect(await counts()).toEqual({ rockets: 0, events: 0, buffered: 0 });
      const identity = await send(`${base}/messages`, 'POST', JSON.stringify(launch('a')), {
        'content-type': 'application/json',
        'content-encoding': 'identity',
      });
      expect(identity.status).toBe(202);
      const unnamed = await send(`${base}/messages`, 'POST', JSON.stringify(launch('b')), {
        'content-type': 'application/json',
        'content-encoding': '',
      });
      expect(unnamed.status).toBe(202);
      // Within the bounds of any body: one declared far beyond the limit is refused at once, unread.
      const { answer } = rawPost(64 * 1024 + DISCARD_BYTES + 1, 'Content-Encoding: gzip\r\n');
      expect((await answer).text).toMatch(/^HTTP\/1\.1 413 /);
    });

    it('answers pipelined requests in order, errors included', async () => {
      const socket = connect(Number(new URL(base).port), '127.0.0.1');
      let text = '';
      const answered = new Promise<void>((resolve) =>
        socket.on('data', (c: Buffer) => {
          text += c.toString('latin1');
          // Answers follow one another directly: a body does not end with a newline.
          if ((text.match(/HTTP\/1\.1 /g) ?? []).length === 3 && text.endsWith('}')) resolve();
        }),
      );
      socket.write(
        'GET /health HTTP/1.1\r\nhost: x\r\n\r\n' +
          'GET /events?limit=abc HTTP/1.1\r\nhost: x\r\n\r\n' +
          'GET /health HTTP/1.1\r\nhost: x\r\n\r\n',
      );
      await answered;
      socket.destroy();
      expect(text.match(/HTTP\/1\.1 \d+/g)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 400', 'HTTP/1.1 200']);
    });

    it('answers a request read whole before what broke the parser after it, and refuses nothing it stored', async () => {
      const body = (channel: string) => JSON.stringify(launch(channel));
      const post = (channel: string, close = false) =>
        `POST /messages HTTP/1.1\r\nhost: x\r\n${close ? 'connection: close\r\n' : ''}content-length: ${Buffer.byteLength(body(channel))}\r\n\r\n${body(channel)}`;
      /** All the server answers to `bytes`, sent in one write, until it closes the connection. */
      const answers = (bytes: string) =>
        new Promise<string>((resolve) => {
          const socket = connect(Number(new URL(base).port), '127.0.0.1', () => socket.write(bytes));
          let text = '';
          socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
          socket.on('error', () => undefined);
          socket.on('close', () => resolve(text));
        });
      // Data after `Connection: close`, and bytes that are no request: the message before them was stored,
      // and its sender is told so, not handed a 400 that would come first, while its commit is under way.
      expect((await answers(post('after-close', true) + post('never'))).match(/HTTP\/1\.1 \d+/g)).toEqual([
        'HTTP/1.1 202',
      ]);
      expect((await answers(post('before-garbage') + 'NONSENSE\r\n\r\n')).match(/HTTP\/1\.1 \d+/g)).toEqual([
        'HTTP/1.1 202',
      ]);
      expect(await counts()).toEqual({ rockets: 2, events: 2, buffered: 0 });
    });

    it('answers headers too large with 431, and a CONNECT with 501, as Node would but with a word', async () => {
      /** All the server answers to `request`, sent by hand, until it closes the connection. */
      const answerTo = (request: string) =>
        new Promise<string>((resolve, reject) => {
          const socket = connect(Number(new URL(base).port), '127.0.0.1', () => socket.write(request));
          let got = '';
          socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
          socket.on('error', reject);
          socket.on('close', () => resolve(got));
        });
      const huge = await answerTo(`GET /health HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`);
      expect(huge).toMatch(/^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
      const tunnel = await answerTo('CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n');
      expect(tunnel).toMatch(/^HTTP\/1\.1 501 Not Implemented\r\n/);
      expect(tunnel).toMatch(/\r\n\r\nCONNECT is not served: this is no proxy$/);
      expect((await send(`${base}/health`, 'GET')).status).toBe(200);
    });

    it('answers 405 with Allow to another method', async () => {
      const r = await send(`${base}/messages`, 'GET');
      expect(r.status).toBe(405);
      expect(r.headers.allow).toBe('POST, OPTIONS');
    });
  });

  describe('reads', () => {
    beforeEach(async () => {
      for (const [channel, by] of [
        ['c', 300],
        ['a', 100],
        ['b', 200],
        ['d', 0],
      ] as const) {
        await post(launch(channel));
        await post(speedUp(channel, 2, by));
      }
      await post({
        metadata: {
          channel: 'd',
          messageNumber: 3,
          messageTime: '2022-02-02T19:41:00Z',
          messageType: 'RocketExploded',
        },
        message: { reason: 'PRESSURE_VESSEL_FAILURE' },
      });
    });

    const channels = async (query: string): Promise<string[]> => {
      const r = await getJson(`${base}/rockets${query}`);
      expect(r.status).toBe(200);
      return (r.body as Array<{ channel: string }>).map((x) => x.channel);
    };

    it('lists every rocket with the seed fields, sorted by channel by default', async () => {
      const r = await getJson(`${base}/rockets`);
      expect((r.body as unknown[]).length).toBe(4);
      expect((r.body as unknown[])[0]).toEqual({
        channel: 'a',
        type: 'Falcon-9',
        mission: 'ARTEMIS',
        speed: 600,
        status: 'flying',
        explodedReason: null,
        launchedAt: '2022-02-02T18:39:05.863Z',
        updatedAt: '2022-02-02T19:40:05.000Z',
        lastMessageNumber: 2,
        buffer: { waitingFor: 3, count: 0, oldestSince: null },
      });
    });

    it('sorts by speed in either order and filters by status', async () => {
      expect(await channels('?sort=speed&order=desc')).toEqual(['c', 'b', 'a', 'd']);
      expect(await channels('?sort=speed&order=asc')).toEqual(['d', 'a', 'b', 'c']);
      expect(await channels('?status=exploded')).toEqual(['d']);
      expect(await channels('?status=flying&sort=speed&order=desc')).toEqual(['c', 'b', 'a']);
    });

    it('pages with limit and the cursor in the Link header, with no repeat or skip', async () => {
      const seen: string[] = [];
      let url: string | undefined = `${base}/rockets?sort=speed&order=desc&limit=3`;
      while (url) {
        const r = await getJson(url);
        seen.push(...(r.body as Array<{ channel: string }>).map((x) => x.channel));
        const link = r.headers.link as string | undefined;
        url = link ? `${base}${/<([^>]+)>/.exec(link)?.[1] ?? ''}` : undefined;
      }
      expect(seen).toEqual(['c', 'b', 'a', 'd']);
    });

    it('ends on a last page exactly as long as its limit, with no Link to an empty page', async () => {
      for (const limit of [2, 4]) {
        let url: string | undefined = `${base}/rockets?sort=channel&limit=${limit}`;
        const pages: string[][] = [];
        while (url) {
          const r = await getJson(url);
          pages.push((r.body as Array<{ channel: string }>).map((x) => x.channel));
          const link = r.headers.link as string | undefined;
          expect(r.headers['x-next-cursor'] === undefined).toBe(link === undefined);
          url = link ? `${base}${/<([^>]+)>/.exec(link)?.[1] ?? ''}` : undefined;
        }
        expect(pages).toEqual(
          limit === 2
            ? [
                ['a', 'b'],
                ['c', 'd'],
              ]
            : [['a', 'b', 'c', 'd']],
        );
      }
    });

    it('refuses an unknown sort field, order, status, limit or cursor with a 400', async () => {
      for (const q of ['?sort=colour', '?order=up', '?status=landed', '?limit=0', '?limit=abc', '?after=nope']) {
        const r = await getJson(`${base}/rockets${q}`);
        expect(r.status).toBe(400);
      }
    });

    it('takes a limit of up to 10,000 on every route that pages, and refuses one more with a 400 naming it', async () => {
      for (const path of ['/rockets', '/events', '/rockets/d/events', '/gaps']) {
        const largest = await getJson(`${base}${path}?limit=10000`);
        expect({ path, status: largest.status }).toEqual({ path, status: 200 });
        const over = await getJson(`${base}${path}?limit=10001`);
        expect({ path, status: over.status }).toEqual({ path, status: 400 });
        expect(JSON.stringify(over.body)).toContain('"field":"limit"');
      }
    });

    it('refuses a query parameter given twice with a 400 naming it, whichever copy is valid', async () => {
      for (const [path, field] of [
        ['/rockets?limit=5&limit=abc', 'limit'],
        ['/rockets?limit=abc&limit=5', 'limit'],
        ['/rockets?sort=speed&sort=type', 'sort'],
        ['/rockets?status=flying&status=flying', 'status'],
        ['/events?after=1&after=2', 'after'],
        ['/rockets/d/events?limit=1&limit=2', 'limit'],
        ['/rockets/d?asOf=1&asOf=2', 'asOf'],
        ['/gaps?limit=1&limit=1', 'limit'],
      ] as const) {
        const r = await getJson(`${base}${path}`);
        expect({ path, status: r.status }).toEqual({ path, status: 400 });
        expect(r.body).toEqual({
          error: {
            code: 'BAD_USER_INPUT',
            message: `${field}: is given 2 times: give it once`,
            issues: [{ field, problem: 'is given 2 times: give it once' }],
            requestId: expect.any(String) as unknown,
          },
        });
      }
    });

    it('refuses with a 400 a query parameter the route does not read, naming those it does, and stores nothing', async () => {
      for (const [path, field, takes] of [
        ['/rockets?sortt=speed', 'sortt', '/rockets, which takes sort, order, status, limit, after'],
        ['/rockets?sort=speed&Limit=5', 'Limit', '/rockets, which takes sort, order, status, limit, after'],
        ['/rockets/d?after=1', 'after', '/rockets/:channel, which takes asOf'],
        ['/rockets/d/events?asOf=1', 'asOf', '/rockets/:channel/events, which takes after, limit'],
        ['/events?from=1', 'from', '/events, which takes after, limit'],
        ['/gaps?after=1', 'after', '/gaps, which takes limit'],
        ['/health?verbose', 'verbose', '/health, which takes none'],
      ] as const) {
        const r = await getJson(`${base}${path}`);
        expect({ path, status: r.status, body: r.body }).toEqual({
          path,
          status: 400,
          body: {
            error: {
              code: 'BAD_USER_INPUT',
              message: `${field}: is not a query parameter of ${takes}`,
              issues: [{ field, problem: `is not a query parameter of ${takes}` }],
              requestId: expect.any(String) as unknown,
            },
          },
        });
      }
      const before = await counts();
      const posted = await postJson(`${base}/messages?dryRun=true`, launch('unknown-parameter'));
      expect(posted.status).toBe(400);
      expect(posted.body).toMatchObject({
        error: { message: 'dryRun: is not a query parameter of /messages, which takes none' },
      });
      expect(await counts()).toEqual(before);
      expect((await getJson(`${base}/rockets/unknown-parameter`)).status).toBe(404);
      // An empty query is no parameter.
      expect((await getJson(`${base}/rockets?`)).status).toBe(200);
    });

    it('answers every read but /health with an ETag, and a 304 without a body to a client that holds it', async () => {
      // Each read twice: the second GET of /rockets and /rockets/a is answered from the kept answers.
      const reads = ['/rockets?sort=speed', '/rockets/a', '/rockets/a/events', '/events', '/gaps', '/rockets/a?asOf=1'];
      for (const path of [...reads, ...reads]) {
        const first = await send(`${base}${path}`, 'GET');
        expect({ path, status: first.status }).toEqual({ path, status: 200 });
        const etag = first.headers.etag as string;
        expect(etag).toMatch(/^"[\w-]{27}"$/);
        expect(first.headers['cache-control']).toBe('no-cache');
        expect(first.headers.vary).toBe('origin, accept-encoding');
        await expectNotModified(`${base}${path}`, etag, 'origin, accept-encoding');
        const other = await send(`${base}${path}`, 'GET', undefined, { 'if-none-match': '"other"' });
        expect(other.status).toBe(200);
        expect(other.body).toEqual(first.body);
      }
      const health = await getJson(`${base}/health`);
      expect([health.headers.etag, health.headers['cache-control']]).toEqual([undefined, undefined]);
    });

    it('gives an answer a new ETag once what it says changes, and the same one for the same bytes anywhere', async () => {
      const read = async (path: string): Promise<Reply> => send(`${base}${path}`, 'GET');
      const before = await read('/rockets?sort=speed');
      const rocketBefore = await read('/rockets/a');
      const held = { 'if-none-match': before.headers.etag as string };
      await post(speedUp('a', 3, 1000));
      const after = await send(`${base}/rockets?sort=speed`, 'GET', undefined, held);
      expect(after.status).toBe(200);
      expect(after.headers.etag).not.toBe(before.headers.etag);
      expect((after.body as Array<{ channel: string }>)[3]?.channel).toBe('a');
      expect((await read('/rockets/a')).headers.etag).not.toBe(rocketBefore.headers.etag);
      // A redelivery changes nothing: the same bytes, the same ETag.
      await post(speedUp('b', 2, 200));
      expect((await read('/rockets?sort=speed')).headers.etag).toBe(after.headers.etag);

      // Another server holding the same state answers the same bytes with the same ETag.
      const other = await buildApp({ ...loadConfig({}), databaseUrl: 'memory:' });
      try {
        const otherBase = `http://127.0.0.1:${await other.start(0, '127.0.0.1')}`;
        await postJson(`${otherBase}/messages`, launch('a'));
        await postJson(`${otherBase}/messages`, speedUp('a', 2, 100));
        await postJson(`${otherBase}/messages`, speedUp('a', 3, 1000));
        const there = await send(`${otherBase}/rockets/a`, 'GET', undefined, {
          'if-none-match': (await read('/rockets/a')).headers.etag as string,
        });
        expect(there.status).toBe(304);
      } finally {
        await other.stop();
      }
    });

    it('sends Vary: Origin once to a page of another origin, beside its allowance', async () => {
      const r = await send(`${base}/rockets`, 'GET', undefined, { origin: 'https://elsewhere.example' });
      expect(r.status).toBe(200);
      expect(r.headers['access-control-allow-origin']).toBe('https://elsewhere.example');
      expect(r.headers.vary).toBe('origin, accept-encoding');
    });

    it.each(CODINGS)(
      'compresses an answer of 1 KiB or more as %s for a client that takes it, as another representation with its own ETag',
      async (coding, header, decompress) => {
        const asked = { 'accept-encoding': header };
        const plain = await send(`${base}/rockets`, 'GET');
        expect(plain.raw.length).toBeGreaterThan(1024);
        expect(plain.headers['content-encoding']).toBeUndefined();
        const plainTag = plain.headers.etag as string;
        const codedTag = `${plainTag.slice(0, -1)}-${coding}"`;
        // The second is answered from the kept answers, and compressed from the one made for the first.
        for (const round of [1, 2]) {
          const r = await send(`${base}/rockets`, 'GET', undefined, asked);
          expect({ round, status: r.status, encoding: r.headers['content-encoding'], etag: r.headers.etag }).toEqual({
            round,
            status: 200,
            encoding: coding,
            etag: codedTag,
          });
          expect(r.headers).toMatchObject({ 'cache-control': 'no-cache', vary: 'origin, accept-encoding' });
          expect(Number(r.headers['content-length'])).toBe(r.raw.length);
          expect(r.raw.length).toBeLessThan(plain.raw.length);
          expect(decompress(r.raw)).toEqual(plain.raw);
        }
        const head = await send(`${base}/rockets`, 'HEAD', undefined, asked);
        expect([head.status, head.headers['content-encoding'], head.headers.etag, head.raw.length]).toEqual([
          200,
          coding,
          codedTag,
          0,
        ]);
        await expectNotModified(`${base}/rockets`, codedTag, 'origin, accept-encoding', asked);
        // The tag of another representation gets this one in full.
        expect((await send(`${base}/rockets`, 'GET', undefined, { ...asked, 'if-none-match': plainTag })).status).toBe(
          200,
        );
        expect((await send(`${base}/rockets`, 'GET', undefined, { 'if-none-match': codedTag })).status).toBe(200);
        // An answer made once (an events page) is compressed too; a short one is not.
        const events = await send(`${base}/events`, 'GET', undefined, asked);
        expect(events.headers['content-encoding']).toBe(coding);
        expect(JSON.parse(decompress(events.raw).toString('utf8'))).toEqual((await getJson(`${base}/events`)).body);
        const one = await send(`${base}/rockets/a`, 'GET', undefined, asked);
        expect([one.raw.length < 1024, one.headers['content-encoding'], one.headers.vary]).toEqual([
          true,
          undefined,
          'origin, accept-encoding',
        ]);
      },
    );

    it('chooses Brotli or gzip by their weights in Accept-Encoding, Brotli when alike, neither at q=0, none above 1', async () => {
      const cases = [
        ['gzip;q=0, identity', undefined],
        ['*;q=0.5', 'br'],
        ['gzip;q=0, *', 'br'],
        ['br;q=0, *', 'gzip'],
        ['br;q=0, gzip;q=0, *', undefined],
        ['x-gzip', 'gzip'],
        ['br', 'br'],
        ['gzip, br;q=0.5', 'gzip'],
        ['gzip;q=0.8, br;q=0.8', 'br'],
        ['gzip;q=0.4, *;q=0.3', 'gzip'],
        ['deflate, zstd', undefined],
        ['BR', 'br'],
        // A weight above 1 (RFC 9110 allows none) counts as 1; one that is no number as 0.
        ['gzip;q=1.5, br', 'br'],
        ['br;q=high, gzip', 'gzip'],
      ] as const;
      for (const [header, encoding] of cases) {
        const r = await send(`${base}/rockets`, 'GET', undefined, { 'accept-encoding': header });
        expect({ header, encoding: r.headers['content-encoding'] }).toEqual({ header, encoding });
      }
    });

    it('answers one rocket, or 404 with a JSON error', async () => {
      expect((await getJson(`${base}/rockets/d`)).body).toMatchObject({
        status: 'exploded',
        explodedReason: 'PRESSURE_VESSEL_FAILURE',
      });
      const missing = await getJson(`${base}/rockets/nope`);
      expect(missing.status).toBe(404);
      expect(missing.body).toMatchObject({ error: { code: 'NOT_FOUND' } });
    });

    it('refuses with a 400 a channel or cursor no message could have (NUL, lone surrogates), never looks it up', async () => {
      const cursor = Buffer.from(JSON.stringify(['channel', 'a\u0000', ''])).toString('base64url');
      for (const path of [
        '/rockets/a%00b',
        '/rockets/a%00b/events',
        '/rockets/a%00b?asOf=1',
        `/rockets?after=${cursor}`,
      ]) {
        const r = await getJson(`${base}${path}`);
        expect({ path, status: r.status }).toEqual({ path, status: 400 });
        expect(r.body).toMatchObject({ error: { code: 'BAD_USER_INPUT' } });
      }
      const rocket = 'query ($c: String!) { rocket(channel: $c) { channel } }';
      const events = 'query ($c: String!) { events(channel: $c) { position } }';
      for (const [query, c] of [
        [rocket, 'a\u0000b'],
        [rocket, '\ud800'],
        [events, 'a\u0000b'],
      ] as const) {
        const body = JSON.stringify({ query, variables: { c } });
        const g = await send(`${base}/graphql`, 'POST', body, { 'content-type': 'application/json' });
        expect(JSON.stringify(g.body)).toContain('BAD_USER_INPUT');
      }
    });

    it('lists a rocket’s events in number order, after a number and limited', async () => {
      const all = (await getJson(`${base}/rockets/d/events`)).body as Array<{ messageNumber: number }>;
      expect(all.map((e) => e.messageNumber)).toEqual([1, 2, 3]);
      const some = (await getJson(`${base}/rockets/d/events?after=1&limit=1`)).body as Array<{ messageNumber: number }>;
      expect(some.map((e) => e.messageNumber)).toEqual([2]);
      expect((await getJson(`${base}/rockets/nope/events`)).status).toBe(404);
      const bad = await getJson(`${base}/rockets/d/events?after=abc`);
      expect(bad.status).toBe(400);
      expect(bad.body).toMatchObject({ error: { issues: [{ field: 'after' }] } });
    });

    it('leads from a full page of events to the next with Link and X-Next-Cursor, as /rockets does', async () => {
      const follow = async (first: string): Promise<{ seen: number[]; pages: number }> => {
        const seen: number[] = [];
        let pages = 0;
        let url: string | undefined = `${base}${first}`;
        while (url) {
          const r = await getJson(url);
          pages++;
          const events = r.body as Array<{ position: number; messageNumber: number }>;
          seen.push(...events.map((e) => (first.startsWith('/events') ? e.position : e.messageNumber)));
          const link = r.headers.link as string | undefined;
          if (link !== undefined) expect(r.headers['x-next-cursor']).toBe(String(seen[seen.length - 1]));
          url = link ? `${base}${/<([^>]+)>; rel="next"/.exec(link)?.[1] ?? ''}` : undefined;
        }
        return { seen, pages };
      };
      // Nine events: pages of 2 end with a short one, pages of 3 with an empty one after the full third.
      expect(await follow('/events?limit=2')).toEqual({ seen: [1, 2, 3, 4, 5, 6, 7, 8, 9], pages: 5 });
      expect(await follow('/events?limit=3')).toEqual({ seen: [1, 2, 3, 4, 5, 6, 7, 8, 9], pages: 4 });
      expect(await follow('/rockets/d/events?limit=2')).toEqual({ seen: [1, 2, 3], pages: 2 });
      expect(await follow('/rockets/d/events?after=1&limit=1')).toEqual({ seen: [2, 3], pages: 3 });
      // A page shorter than the largest, with no limit asked: the last.
      expect((await getJson(`${base}/events`)).headers.link).toBeUndefined();
    });

    it('travels in time with ?asOf= a message number or a server time, as GraphQL does', async () => {
      const past = await getJson(`${base}/rockets/d?asOf=2`);
      expect(past.body).toMatchObject({
        status: 'flying',
        speed: 500,
        lastMessageNumber: 2,
        asOf: { messageNumber: 2 },
      });
      expect(past.body).not.toHaveProperty('buffer');
      const now = new Date(Date.now() + 60_000).toISOString();
      expect((await getJson(`${base}/rockets/d?asOf=${now}`)).body).toMatchObject({ status: 'exploded' });
      expect((await getJson(`${base}/rockets/d?asOf=2000-01-01T00:00:00Z`)).status).toBe(404);
      expect((await getJson(`${base}/rockets/d?asOf=yesterday`)).status).toBe(400);
      // An offset's `+` left unencoded in the query string reads as a space; it is taken back as `+`.
      const later = new Date(Date.now() + 7_200_000).toISOString().replace(/\.\d+Z$/, '+01:00');
      expect((await getJson(`${base}/rockets/d?asOf=${later}`)).body).toMatchObject({ status: 'exploded' });
      const query = '{ rocket(channel: "d", asOf: { messageNumber: 2 }) { status speed lastMessageNumber } }';
      const g = await send(`${base}/graphql`, 'POST', JSON.stringify({ query }), {
        'content-type': 'application/json',
      });
      expect(g.body).toEqual({ data: { rocket: { status: 'FLYING', speed: 500, lastMessageNumber: 2 } } });
    });

    it('names the asOf parameter sent, not a GraphQL field, when it refuses one', async () => {
      for (const [asOf, problem] of [
        ['0', /^must be an integer from 1 to /],
        ['12345678901234567', /^must be an integer from 1 to /],
        ['yesterday', /^must be an RFC 3339 timestamp/],
      ] as const) {
        const r = await getJson(`${base}/rockets/d?asOf=${asOf}`);
        expect(r.status).toBe(400);
        const { error } = r.body as { error: { message: string; issues: { field: string; problem: string }[] } };
        expect(error.issues.map((i) => i.field)).toEqual(['asOf']);
        expect(error.issues[0]?.problem).toMatch(problem);
        expect(error.message).toMatch(/^asOf: /);
      }
    });

    it('reports the store, the lanes and the buffered count on /health', async () => {
      await post(speedUp('a', 9, 1));
      expect((await getJson(`${base}/health`)).body).toMatchObject({
        status: 'ok',
        store: 'memory',
        lanes: { count: 3 },
        rockets: 4,
        events: 9,
        buffered: 1,
      });
    });

    it('answers 404 with a JSON error to an unknown route', async () => {
      const r = await getJson(`${base}/nowhere`);
      expect(r.status).toBe(404);
      expect(r.body).toMatchObject({ error: { code: 'NOT_FOUND' } });
    });

    it('answers 404 to a path that begins with two slashes, which names no route, and stores nothing', async () => {
      // A URL parser reads `//x/messages` as host x and path /messages; the path sent is no route.
      const before = await counts();
      const write = await postJson(`${base}//x/messages`, launch('a'));
      expect(write.status).toBe(404);
      expect(write.body).toMatchObject({ error: { code: 'NOT_FOUND', message: 'no route for //x/messages' } });
      expect((await getJson(`${base}//rockets`)).status).toBe(404);
      expect((await getJson(`${base}//x/health`)).status).toBe(404);
      expect(await counts()).toEqual(before);
    });

    it('refuses a target a URL parser would rewrite (dot segments, backslashes), and stores nothing', async () => {
      const before = await counts();
      const raw = (method: string, target: string, body = ''): Promise<string> =>
        new Promise((resolve, reject) => {
          const socket = connect(Number(new URL(base).port), '127.0.0.1', () =>
            socket.write(
              `${method} ${target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
            ),
          );
          let got = '';
          socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
          socket.on('error', reject);
          socket.on('close', () => resolve(got.slice(0, 12)));
        });
      expect(await raw('POST', '/x/../messages', JSON.stringify(launch('dots')))).toBe('HTTP/1.1 400');
      for (const target of ['/rockets/%2e%2e/events', '/rockets/%2E/events', '/rockets/a/./events', '/rockets\\a'])
        expect({ target, status: await raw('GET', target) }).toEqual({ target, status: 'HTTP/1.1 400' });
      expect(await counts()).toEqual(before);
      // Dots that are no segment of their own name a channel as any other character does.
      expect((await getJson(`${base}/rockets/a..b`)).status).toBe(404);
    });

    it('repeats the request id in every error body, the transport’s own errors too', async () => {
      const json = { 'content-type': 'application/json' };
      const refusals: Array<[string, Promise<Reply>, number]> = [
        ['no route', getJson(`${base}/nowhere`), 404],
        ['a dashboard asset that is not there', getJson(`${base}/dashboard/nowhere.js`), 404],
        ['a method', send(`${base}/rockets`, 'DELETE'), 405],
        ['a method on /metrics', send(`${base}/metrics`, 'POST'), 405],
        ['a body too large', send(`${base}/messages`, 'POST', 'x'.repeat(64 * 1024 + 1), json), 413],
        ['a compressed body', send(`${base}/messages`, 'POST', '{}', { ...json, 'content-encoding': 'br' }), 415],
        ['invalid input', send(`${base}/messages`, 'POST', '{}', json), 400],
      ];
      for (const [what, reply, status] of refusals) {
        const r = await reply;
        expect({ what, status: r.status }).toEqual({ what, status });
        const id = r.headers['x-request-id'];
        expect({ what, id: typeof id }).toEqual({ what, id: 'string' });
        expect({ what, body: r.body }).toMatchObject({ what, body: { error: { requestId: id } } });
      }
    });
  });
});
