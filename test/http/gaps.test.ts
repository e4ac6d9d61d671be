import { buildApp, createLogger, type App } from '../../src/app';
import { loadConfig, type Config } from '../../src/config';
import { isBufferFullError } from '../../src/domain/errors';
import { createTestClock, type TestClock } from '../store/contract';
import { getJson, postJson, send, type Reply } from '../support/process';

const launch = (channel: string, n = 1) => ({
  metadata: {
    channel,
    messageNumber: n,
    messageTime: '2022-02-02T19:39:05.86337+01:00',
    messageType: 'RocketLaunched',
  },
  message: { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' },
});
const speedUp = (channel: string, n: number, by = 1) => ({
  metadata: { channel, messageNumber: n, messageTime: '2022-02-02T19:40:05Z', messageType: 'RocketSpeedIncreased' },
  message: { by },
});

interface ErrorBody {
  error: Record<string, unknown>;
}

describe('REST: the reorder buffer is bounded and visible', () => {
  let app: App;
  let base: string;
  let clock: TestClock;

  const start = async (changes: Partial<Config> = {}): Promise<void> => {
    clock = createTestClock();
    app = await buildApp(
      {
        ...loadConfig({}),
        databaseUrl: 'memory:',
        bufferLimits: { perChannel: 2, total: 3 },
        gapTimeoutMs: 30_000,
        ...changes,
      },
      createLogger('silent'),
      clock.now,
    );
    base = `http://127.0.0.1:${await app.start(0, '127.0.0.1')}`;
  };
  const post = (body: unknown): Promise<Reply> => postJson(`${base}/messages`, body);
  const counts = async (): Promise<unknown> => {
    const h = (await getJson(`${base}/health`)).body as Record<string, unknown>;
    return { rockets: h.rockets, events: h.events, buffered: h.buffered };
  };

  afterEach(() => app.stop());

  describe('with caps of 2 per channel and 3 in all, and a 30 s gap timeout', () => {
    beforeEach(() => start());

    it('answers 429 with Retry-After and the per-channel cap to a message too far ahead, and stores nothing', async () => {
      await post(launch('a'));
      expect((await post(speedUp('a', 3))).body).toMatchObject({ status: 'buffered' });
      expect((await post(speedUp('a', 4))).body).toMatchObject({ status: 'buffered' });
      const before = await counts();
      const r = await post(speedUp('a', 5));
      expect(r.status).toBe(429);
      expect(r.headers['retry-after']).toBe('1');
      expect(r.body).toEqual({
        error: {
          code: 'CHANNEL_BUFFER_FULL',
          message: expect.stringContaining('MAX_BUFFERED_PER_CHANNEL (2)') as unknown,
          cap: 'MAX_BUFFERED_PER_CHANNEL',
          limit: 2,
          channel: 'a',
          messageNumber: 5,
          waitingFor: 2,
          retryAfterSeconds: 1,
          requestId: expect.any(String) as unknown,
        },
      });
      expect(await counts()).toEqual(before);

      // The message the channel waits for is never refused, and it brings #5 within reach.
      expect((await post(speedUp('a', 2))).body).toMatchObject({ status: 'applied' });
      expect((await post(speedUp('a', 5))).body).toMatchObject({ status: 'applied' });
      expect((await getJson(`${base}/rockets/a`)).body).toMatchObject({ lastMessageNumber: 5, speed: 504 });
    });

    it('answers 503 with Retry-After and the total cap once the whole buffer is full, yet applies what channels wait for', async () => {
      for (const c of ['b', 'c', 'd']) expect((await post(speedUp(c, 2))).status).toBe(202);
      const r = await post(speedUp('e', 2));
      expect(r.status).toBe(503);
      expect(r.headers['retry-after']).toBe('5');
      expect((r.body as ErrorBody).error).toMatchObject({
        code: 'BUFFER_FULL',
        cap: 'MAX_BUFFERED_TOTAL',
        limit: 3,
        channel: 'e',
        messageNumber: 2,
        waitingFor: 1,
      });
      expect((r.body as ErrorBody).error.message).toMatch(/MAX_BUFFERED_TOTAL \(3\)/);
      expect(await counts()).toEqual({ rockets: 0, events: 0, buffered: 3 });

      expect((await post(launch('e'))).body).toMatchObject({ status: 'applied' });
      expect((await post(launch('b'))).body).toMatchObject({ status: 'applied' });
      expect((await post(speedUp('e', 3))).body).toMatchObject({ status: 'buffered' });
      expect(await counts()).toEqual({ rockets: 2, events: 3, buffered: 3 });
    });

    it('reports a refusal per item of a batch, and records the rest', async () => {
      const results = await app.service.submitMany([
        speedUp('a', 2),
        speedUp('a', 3),
        speedUp('a', 4),
        speedUp('b', 2),
        launch('a'),
      ]);
      expect(
        results.map((r) => (isBufferFullError(r) ? `${r.code}:${r.cap}` : 'status' in r ? r.status : r.code)),
      ).toEqual(['buffered', 'buffered', 'CHANNEL_BUFFER_FULL:perChannel', 'buffered', 'applied']);
      expect(await counts()).toEqual({ rockets: 1, events: 3, buffered: 1 });
    });

    it('lists open gaps oldest first on GET /gaps, with channels that have no rocket yet', async () => {
      const t0 = clock.now().toISOString();
      await post(speedUp('b', 2));
      clock.advance(1_000);
      const t1 = clock.now().toISOString();
      await post(launch('a'));
      await post(speedUp('a', 3));
      const r = await getJson(`${base}/gaps`);
      expect(r.status).toBe(200);
      expect(r.body).toEqual([
        { channel: 'b', waitingFor: 1, count: 1, oldestSince: t0 },
        { channel: 'a', waitingFor: 2, count: 1, oldestSince: t1 },
      ]);
      expect((await getJson(`${base}/gaps?limit=1`)).body).toEqual([
        { channel: 'b', waitingFor: 1, count: 1, oldestSince: t0 },
      ]);
      expect((await getJson(`${base}/rockets/a`)).body).toMatchObject({
        buffer: { waitingFor: 2, count: 1, oldestSince: t1 },
      });
      expect(await counts()).toMatchObject({ buffered: 2 });
      expect((await getJson(`${base}/gaps?limit=0`)).status).toBe(400);
      expect((await getJson(`${base}/gaps?limit=many`)).status).toBe(400);
      const wrong = await send(`${base}/gaps`, 'POST', '{}');
      expect(wrong.status).toBe(405);
      expect(wrong.headers.allow).toBe('GET, HEAD, OPTIONS');
    });

    it('skips a gap once it is older than GAP_TIMEOUT, and answers a late message for it with a 409 that says so', async () => {
      await post(launch('a'));
      await post(speedUp('a', 3, 7));
      clock.advance(30_000);
      expect(await app.service.skipStaleGaps()).toEqual([]);
      clock.advance(1);
      const skippedAt = clock.now().toISOString();
      expect(await app.service.skipStaleGaps()).toEqual([{ channel: 'a', from: 2, to: 2 }]);

      expect((await getJson(`${base}/gaps`)).body).toEqual([]);
      const events = (await getJson(`${base}/rockets/a/events`)).body as Array<Record<string, unknown>>;
      expect(events.map((e) => e.messageType)).toEqual(['RocketLaunched', 'MessageSkipped', 'RocketSpeedIncreased']);
      expect(events[1]).toMatchObject({
        messageNumber: 2,
        messageTime: skippedAt,
        payload: { reason: 'not received within GAP_TIMEOUT (30s)' },
      });
      expect((await getJson(`${base}/rockets/a`)).body).toMatchObject({
        speed: 507,
        lastMessageNumber: 3,
        buffer: { waitingFor: 4, count: 0, oldestSince: null },
      });

      const late = await post(speedUp('a', 2));
      expect(late.status).toBe(409);
      expect((late.body as ErrorBody).error).toMatchObject({ code: 'CONFLICT', skipped: true });
      expect((late.body as ErrorBody).error.message).toMatch(/skipped after the gap timeout \(GAP_TIMEOUT\)/);
      // A redelivery of a message that was applied is still a duplicate.
      expect((await post(speedUp('a', 3, 7))).body).toMatchObject({ status: 'duplicate' });
      expect(await counts()).toEqual({ rockets: 1, events: 3, buffered: 0 });
    });

    it('refuses a MessageSkipped from a sender like any unknown type', async () => {
      const r = await post({
        metadata: {
          channel: 'a',
          messageNumber: 1,
          messageTime: '2022-02-02T19:40:05Z',
          messageType: 'MessageSkipped',
        },
        message: { reason: 'forged' },
      });
      expect(r.status).toBe(400);
      expect(JSON.stringify(r.body)).toMatch(/metadata\.messageType/);
      expect(await counts()).toEqual({ rockets: 0, events: 0, buffered: 0 });
    });
  });

  it('skips nothing without a GAP_TIMEOUT, however long a gap stays open', async () => {
    await start({ gapTimeoutMs: undefined });
    await post(speedUp('a', 2));
    clock.advance(365 * 24 * 3_600_000);
    expect(await app.service.skipStaleGaps()).toEqual([]);
    expect((await getJson(`${base}/gaps`)).body).toMatchObject([{ channel: 'a', waitingFor: 1, count: 1 }]);
  });
});
