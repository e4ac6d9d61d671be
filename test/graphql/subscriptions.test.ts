import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteDatabase } from '../../src/store/sqlite/database';
import { print } from 'graphql';
import type { Client } from 'graphql-ws';
import {
  EventAppendedDocument,
  RocketEventsDocument,
  RocketUpdatedDocument,
  SubmitMessageDocument,
  type EventAppendedSubscription,
  type RocketUpdatedSubscription,
} from '../generated/graphql';
import { envelope } from '../support/telemetry';
import {
  data,
  messages,
  post,
  RawSocket,
  startServer,
  Subscription,
  until,
  wsClient,
  type ProtocolMessage,
  type TestServer,
} from './support';

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Big enough that a few thousand of them fill the kernel's socket buffers of a client that stopped reading. */
const LONG_TEXT = 'x'.repeat(990);

/** What a stalled subscriber asks for: every update carries the long mission, so its socket fills quickly. */
const HEAVY_ROCKETS = 'subscription { rocketUpdated { channel mission } }';
const HEAVY_EVENTS = `subscription($channel: String) {
  eventAppended(channel: $channel) { messageNumber payload { ... on RocketMissionChanged { newMission } } }
}`;

/** Server-side listeners in the hub: one per open subscription. */
const SUBSCRIBER_BUFFER = 16;
/** Messages sent at once while a stalled subscriber's socket fills: fewer than SUBSCRIBER_BUFFER. */
const STEP = 8;

describe('subscriptions over graphql-ws', () => {
  let server: TestServer;
  const opened: Array<Client | RawSocket> = [];
  const client = (): Client => {
    const c = wsClient(server);
    opened.push(c);
    return c;
  };
  const raw = async (): Promise<RawSocket> => {
    const s = await RawSocket.open(server.ws);
    opened.push(s);
    await s.init();
    return s;
  };
  const subscribers = (): number => server.app.service.hub.subscribers;
  const submit = (e: unknown) => server.app.service.submit(e);
  const increase = (channel: string, n: number) => submit(envelope(channel, n, 'RocketSpeedIncreased', { by: 1 }));
  const launch = (channel: string, mission = 'ARTEMIS', launchSpeed = 500) =>
    submit(envelope(channel, 1, 'RocketLaunched', { type: 'Falcon-9', launchSpeed, mission }));

  beforeEach(async () => {
    // No keepalive: a client stalled on purpose would be cut for missing pongs (hardening.test.ts covers pings).
    server = await startServer({ subscriberBuffer: SUBSCRIBER_BUFFER, keepAliveMs: 0 });
  });
  afterEach(async () => {
    for (const c of opened.splice(0)) await (c instanceof RawSocket ? c.close() : c.dispose());
    await server.app.stop();
  });

  describe('eventAppended', () => {
    it('replays history, then goes live under concurrent writes, with no gap and no duplicate', async () => {
      await launch('c');
      for (const n of range(2, 200)) await increase('c', n);
      // Writers run while the subscriptions connect and read history; half of their writes wait until both
      // subscriptions listen, so some land during catch-up and some after the switch to live.
      const listening = (): Promise<void> => until(() => subscribers() === 2);
      const writers = Promise.all([
        (async () => {
          for (const n of range(201, 400)) await increase('c', n);
          await listening();
          for (const n of range(401, 600)) await increase('c', n);
        })(),
        (async () => {
          await launch('d');
          for (const n of range(2, 150)) await increase('d', n);
          await listening();
          for (const n of range(151, 300)) await increase('d', n);
        })(),
      ]);
      const c = new Subscription<EventAppendedSubscription>(client(), EventAppendedDocument, {
        channel: 'c',
        after: 0,
      });
      const all = new Subscription<EventAppendedSubscription>(client(), EventAppendedDocument, {});
      await writers;

      const ofC = (await c.until((items) => items.length >= 600)).map((i) => i.eventAppended);
      expect(ofC.map((e) => e.messageNumber)).toEqual(range(1, 600));
      expect(ofC.every((e, i) => e.channel === 'c' && (i === 0 || e.position > (ofC[i - 1]?.position ?? 0)))).toBe(
        true,
      );
      const everything = (await all.until((items) => items.length >= 900)).map((i) => i.eventAppended.position);
      expect(everything).toEqual(range(1, 900));
    });

    it('resumes after a reconnect from the last position received, missing nothing', async () => {
      await launch('c');
      for (const n of range(2, 50)) await increase('c', n);
      const first = client();
      const before = new Subscription<EventAppendedSubscription>(first, EventAppendedDocument, { channel: 'c' });
      const seen = (await before.until((items) => items.length >= 50)).map((i) => i.eventAppended);
      const last = seen[seen.length - 1]?.position ?? 0;
      await first.dispose();
      await until(() => subscribers() === 0);

      for (const n of range(51, 100)) await increase('c', n);
      const after = new Subscription<EventAppendedSubscription>(client(), EventAppendedDocument, {
        channel: 'c',
        after: last,
      });
      for (const n of range(101, 120)) await increase('c', n);
      const resumed = await after.until((items) => items.length >= 70);
      expect(resumed.map((i) => i.eventAppended.messageNumber)).toEqual(range(51, 120));
    });

    it('resumes from a message number of one rocket', async () => {
      await launch('c');
      for (const n of range(2, 10)) await increase('c', n);
      const s = new Subscription<EventAppendedSubscription>(client(), EventAppendedDocument, {
        channel: 'c',
        afterMessageNumber: 7,
      });
      const items = await s.until((i) => i.length >= 3);
      expect(items.map((i) => i.eventAppended.messageNumber)).toEqual([8, 9, 10]);
    });

    it('shows a number the gap policy skipped as a MESSAGE_SKIPPED event, live and afterwards', async () => {
      await server.app.stop();
      let clock = Date.UTC(2026, 0, 1);
      server = await startServer({ gapTimeoutMs: 30_000, keepAliveMs: 0 }, () => new Date(clock));
      const live = new Subscription<EventAppendedSubscription>(client(), EventAppendedDocument, { channel: 'g' });
      await launch('g');
      await increase('g', 3);
      await live.until((items) => items.length >= 1);

      clock += 31_000;
      expect(await server.app.service.skipStaleGaps()).toEqual([{ channel: 'g', from: 2, to: 2 }]);
      const events = (await live.until((items) => items.length >= 3)).map((i) => i.eventAppended);
      expect(events.map((e) => [e.messageNumber, e.messageType])).toEqual([
        [1, 'ROCKET_LAUNCHED'],
        [2, 'MESSAGE_SKIPPED'],
        [3, 'ROCKET_SPEED_INCREASED'],
      ]);
      expect(events[1]?.payload).toEqual({
        __typename: 'MessageSkipped',
        reason: 'not received within GAP_TIMEOUT (30s)',
      });

      const late = await post(server, SubmitMessageDocument, messages('g').increased(2, 1));
      expect(late.body.errors?.[0]?.extensions).toMatchObject({ code: 'CONFLICT', skipped: true, messageNumber: 2 });
      const { rocket } = await data(server, RocketEventsDocument, { channel: 'g' });
      expect(rocket?.events.map((e) => e.payload.__typename)).toEqual([
        'RocketLaunched',
        'MessageSkipped',
        'RocketSpeedIncreased',
      ]);
    });

    it('moves a subscriber that stopped reading back to the store, so it still gets every event', async () => {
      const fast = new Subscription<EventAppendedSubscription>(client(), EventAppendedDocument, { channel: 'e' });
      const slow = await raw();
      slow.subscribe('slow', HEAVY_EVENTS, { channel: 'e' });
      await until(() => subscribers() === 2);
      slow.socket.pause();

      await launch('e');
      let n = 1;
      // Until the stalled subscriber's live buffer overflows and the hub drops its feed: STEP messages at a
      // time, fewer than SUBSCRIBER_BUFFER, as filling the stalled socket takes thousands.
      while (subscribers() === 2) {
        const from = n + 1;
        n += STEP;
        await Promise.all(
          range(from, n).map((i) =>
            submit(envelope('e', i, 'RocketMissionChanged', { newMission: `${i}${LONG_TEXT}` })),
          ),
        );
        await fast.until((items) => items.length >= n);
      }
      const last = n + 10;
      for (n++; n <= last; n++) await increase('e', n);
      expect((await fast.until((items) => items.length >= last)).map((i) => i.eventAppended.messageNumber)).toEqual(
        range(1, last),
      );

      slow.socket.resume();
      const received: number[] = [];
      while (received[received.length - 1] !== last) {
        const m = await slow.nextWhere((x) => x.id === 'slow');
        expect(m.type).toBe('next');
        received.push(
          (m.payload as { data: { eventAppended: { messageNumber: number } } }).data.eventAppended.messageNumber,
        );
      }
      expect(received).toEqual(range(1, last));
      await until(() => subscribers() === 2);
    });
  });

  describe('rocketUpdated', () => {
    it('delivers the new state after each applied message, for one rocket or for every rocket', async () => {
      const one = new Subscription<RocketUpdatedSubscription>(client(), RocketUpdatedDocument, { channel: 'a' });
      const every = new Subscription<RocketUpdatedSubscription>(client(), RocketUpdatedDocument, {});
      await until(() => subscribers() === 2);
      await launch('a');
      await launch('b', 'MARS', 100);
      await increase('a', 2);
      await submit(envelope('a', 4, 'RocketExploded', { reason: 'buffered, so no update' }));

      const states = (await one.until((items) => items.some((i) => i.rocketUpdated.lastMessageNumber === 2))).map(
        (i) => i.rocketUpdated,
      );
      expect(states[states.length - 1]).toEqual({ channel: 'a', speed: 501, status: 'FLYING', lastMessageNumber: 2 });
      expect(states.every((s) => s.channel === 'a')).toBe(true);
      const channels = (await every.until((items) => items.length >= 3)).map((i) => i.rocketUpdated.channel);
      expect(new Set(channels)).toEqual(new Set(['a', 'b']));
    });

    it('keeps a subscriber that reads every update even when one commit changes more rockets than its buffer holds', async () => {
      const every = new Subscription<RocketUpdatedSubscription>(client(), RocketUpdatedDocument, {});
      const events = new Subscription<EventAppendedSubscription>(client(), EventAppendedDocument, {});
      await until(() => subscribers() === 2);
      // One batch over the lanes: each lane's commit changes about a third of these rockets, more than the buffer.
      const channels = range(1, 8 * SUBSCRIBER_BUFFER).map((i) => `r${i}`);
      await server.app.service.submitMany(
        channels.map((c) => envelope(c, 1, 'RocketLaunched', { type: 'Falcon-9', launchSpeed: 1, mission: 'M' })),
      );

      const updated = await every.until((items) => items.length >= channels.length);
      expect(new Set(updated.map((i) => i.rocketUpdated.channel))).toEqual(new Set(channels));
      const appended = await events.until((items) => items.length >= channels.length);
      expect(appended.map((i) => i.eventAppended.position)).toEqual(range(1, channels.length));
      expect(every.failure).toBeUndefined();
      expect(subscribers()).toBe(2);
    });

    it('drops a subscriber that stopped reading with FELL_BEHIND, while the others get every update and its socket stays open', async () => {
      const fast = new Subscription<RocketUpdatedSubscription>(client(), RocketUpdatedDocument, {});
      const slow = await raw();
      slow.subscribe('slow', HEAVY_ROCKETS);
      await until(() => subscribers() === 2);
      slow.socket.pause();

      // New rockets, STEP at a time: the stalled socket fills, then its feed holds more rockets than it may.
      let n = 0;
      while (subscribers() === 2) {
        const from = n + 1;
        n += STEP;
        await Promise.all(range(from, n).map((i) => launch(`r${i}`, LONG_TEXT, i)));
        await fast.until((items) => items.length >= n);
      }
      // Each rocket once (rockets sent at once may commit in any order).
      expect(fast.items.map((i) => i.rocketUpdated.channel).sort()).toEqual(
        range(1, n)
          .map((i) => `r${i}`)
          .sort(),
      );

      slow.socket.resume();
      let end: ProtocolMessage;
      do end = await slow.nextWhere((m) => m.id === 'slow');
      while (end.type === 'next');
      expect(end).toEqual({
        id: 'slow',
        type: 'error',
        payload: [
          expect.objectContaining({
            message: `the subscriber fell more than ${SUBSCRIBER_BUFFER} items behind and was dropped; resubscribe`,
            extensions: { code: 'FELL_BEHIND' },
          }),
        ],
      });

      expect(slow.open).toBe(true);
      slow.subscribe('again', print(RocketUpdatedDocument));
      await until(() => subscribers() === 2);
      await launch('after');
      expect(await slow.nextWhere((m) => m.id === 'again')).toMatchObject({
        type: 'next',
        payload: { data: { rocketUpdated: { channel: 'after' } } },
      });
    });
  });

  describe('housekeeping', () => {
    it('releases every listener on unsubscribe and on disconnect, clean or abrupt', async () => {
      const c1 = client();
      const subs = [
        new Subscription(c1, RocketUpdatedDocument, {}),
        new Subscription(c1, RocketUpdatedDocument, { channel: 'a' }),
        new Subscription(c1, EventAppendedDocument, {}),
        new Subscription(c1, EventAppendedDocument, { channel: 'a', after: 0 }),
      ];
      await until(() => subscribers() === 4);
      subs[0]?.unsubscribe();
      subs[3]?.unsubscribe();
      await until(() => subscribers() === 2);

      const c2 = client();
      const more = [new Subscription(c2, RocketUpdatedDocument, {}), new Subscription(c2, EventAppendedDocument, {})];
      await until(() => subscribers() === 4);
      await c2.dispose();
      await until(() => subscribers() === 2);
      expect(more.map((s) => s.results)).toEqual([[], []]);

      const abrupt = await raw();
      abrupt.subscribe('1', print(RocketUpdatedDocument));
      abrupt.subscribe('2', print(EventAppendedDocument));
      await until(() => subscribers() === 4);
      abrupt.socket.terminate();
      await until(() => subscribers() === 2);

      await c1.dispose();
      await until(() => subscribers() === 0);
      expect((await server.app.service.health()).subscribers).toBe(0);
    });

    it('answers a syntax or validation error with errors and leaves the socket and its other subscriptions open', async () => {
      const s = await raw();
      s.subscribe('ok', print(RocketUpdatedDocument));
      await until(() => subscribers() === 1);

      s.subscribe('syntax', 'subscription { rocketUpdated( ');
      expect(await s.nextWhere((m) => m.id === 'syntax')).toEqual({
        id: 'syntax',
        type: 'error',
        payload: [expect.objectContaining({ message: expect.stringMatching(/^Syntax Error/) as unknown })],
      });
      s.subscribe('invalid', 'subscription { rocketUpdated { warpFactor } }');
      const invalid = await s.nextWhere((m) => m.id === 'invalid');
      expect(invalid).toMatchObject({ type: 'error', payload: [{ locations: [{ line: 1, column: 32 }] }] });
      // The same error as over HTTP: yoga's HTTP hints stay on the server.
      expect((invalid.payload as Array<{ extensions: unknown }>)[0]?.extensions).toEqual({
        code: 'GRAPHQL_VALIDATION_FAILED',
      });
      s.subscribe('negative', print(EventAppendedDocument), { after: -1 });
      expect(await s.nextWhere((m) => m.id === 'negative')).toMatchObject({
        type: 'next',
        payload: { errors: [{ extensions: { code: 'BAD_USER_INPUT' } }] },
      });
      // As the events query: a message number means nothing without its rocket.
      s.subscribe('numberAlone', print(EventAppendedDocument), { afterMessageNumber: 2 });
      expect(await s.nextWhere((m) => m.id === 'numberAlone')).toMatchObject({
        type: 'next',
        payload: { errors: [{ extensions: { code: 'BAD_USER_INPUT', issues: [{ field: 'afterMessageNumber' }] } }] },
      });
      // Nor two starting points: one of them would be dropped.
      s.subscribe('twoStarts', print(EventAppendedDocument), { channel: 'a', after: 1, afterMessageNumber: 1 });
      expect(await s.nextWhere((m) => m.id === 'twoStarts')).toMatchObject({
        type: 'next',
        payload: {
          errors: [
            {
              message:
                'afterMessageNumber: cannot be combined with after: give a position (after) or a message number, not both',
              extensions: { code: 'BAD_USER_INPUT', issues: [{ field: 'afterMessageNumber' }] },
            },
          ],
        },
      });

      await launch('a');
      expect(await s.nextWhere((m) => m.id === 'ok')).toMatchObject({ type: 'next' });
      expect(s.open).toBe(true);
    });

    it('runs queries and mutations over the socket too', async () => {
      const s = await raw();
      s.subscribe('q', '{ rockets { nodes { channel } } }');
      expect(await s.next()).toEqual({ id: 'q', type: 'next', payload: { data: { rockets: { nodes: [] } } } });
      expect(await s.next()).toEqual({ id: 'q', type: 'complete' });
    });

    it('closes every socket with 1001 and a reason when the server stops', async () => {
      const s = await raw();
      s.subscribe('1', print(RocketUpdatedDocument));
      await until(() => subscribers() === 1);
      await server.app.stop();
      expect(await s.closed).toEqual({ code: 1001, reason: 'the server is shutting down' });
      expect(subscribers()).toBe(0);
    });
  });
});

describe('eventAppended while the store fails', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rockets-catch-up-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('ends with the retryable "Unexpected error." once catch-up retried for the limit', async () => {
    // Without retries cut to the limit, the last try before 700 ms would come at 300 ms.
    const limitMs = 700;
    const file = join(dir, 'failing.db');
    const databaseUrl = `sqlite:${file}`;
    const server = await startServer({ databaseUrl, catchUpRetryMs: limitMs, keepAliveMs: 0 });
    const side = new SqliteDatabase(file);
    const client = wsClient(server);
    const connected = new Promise((resolve) => client.on('connected', resolve));
    try {
      await server.app.service.submit(
        envelope('a', 1, 'RocketLaunched', { type: 'Falcon-9', launchSpeed: 500, mission: 'M' }),
      );
      // A real failure of the store, as an operator could cause it: its event log gone from under it.
      side.exec('ALTER TABLE events RENAME TO events_away');
      // Counts the reads (each one the store's own, failing).
      const reads = jest.spyOn(server.app.store, 'readEvents');
      await connected;
      // Before the server can start its catch-up, which starts its clock.
      const started = performance.now();
      const variables = { channel: 'a' };
      const sub = new Subscription<EventAppendedSubscription>(client, EventAppendedDocument, variables);
      await sub.ended();
      const elapsed = performance.now() - started;
      expect(sub.items).toEqual([]);
      expect(sub.failure).toEqual([
        expect.objectContaining({
          message: 'Unexpected error.',
          extensions: { code: 'UNAVAILABLE', retryAfterSeconds: 1, unexpected: true },
        }),
      ]);
      expect(reads.mock.calls.length).toBeGreaterThanOrEqual(2);
      await expect(reads.mock.results[0]?.value).rejects.toThrow('no such table: events');
      // Not before the limit: a lower bound only, on the clock the server measures it by, started
      // before the server's, so no speed of the machine can make it fail.
      expect(elapsed).toBeGreaterThanOrEqual(limitMs);
    } finally {
      await client.dispose();
      side.close();
      await server.app.stop();
    }
  });
});
