import { buildApp, createLogger, type App } from '../../src/app';
import { loadConfig } from '../../src/config';
import { validateEnvelope, type RocketMessage } from '../../src/domain/message';
import { Hub } from '../../src/engine/hub';
import { LanePool } from '../../src/engine/lanes';
import { encodeCursor, RocketService } from '../../src/engine/service';
import { KeptAnswers } from '../../src/http/kept-answers';
import { rocketJson } from '../../src/http/rest';
import { MemoryStore } from '../../src/store/memory';
import { createTestClock, type TestClock } from '../store/contract';
import { getJson, postJson, send } from '../support/process';

const launch = (channel: string, launchSpeed = 500) => ({
  metadata: {
    channel,
    messageNumber: 1,
    messageTime: '2022-02-02T19:39:05.86337+01:00',
    messageType: 'RocketLaunched',
  },
  message: { type: 'Falcon-9', launchSpeed, mission: 'ARTEMIS' },
});
const speedUp = (channel: string, n: number, by: number) => ({
  metadata: { channel, messageNumber: n, messageTime: '2022-02-02T19:40:05Z', messageType: 'RocketSpeedIncreased' },
  message: { by },
});
const message = (envelope: unknown): RocketMessage => {
  const v = validateEnvelope(envelope);
  if (!v.ok) throw new Error('bad fixture');
  return v.message;
};

interface RocketBody {
  readonly channel: string;
  readonly speed: number;
  readonly lastMessageNumber: number;
  readonly buffer: { readonly waitingFor: number; readonly count: number; readonly oldestSince: string | null };
}

describe('REST: answers kept while the store has not changed', () => {
  let app: App;
  let base: string;
  let clock: TestClock;

  beforeEach(async () => {
    clock = createTestClock();
    app = await buildApp(
      { ...loadConfig({}), databaseUrl: 'memory:', gapTimeoutMs: 30_000 },
      createLogger('silent'),
      clock.now,
    );
    base = `http://127.0.0.1:${await app.start(0, '127.0.0.1')}`;
    for (const [channel, speed] of [
      ['a', 100],
      ['b', 300],
      ['c', 200],
    ] as const)
      await postJson(`${base}/messages`, launch(channel, speed));
  });
  afterEach(() => app.stop());

  const list = async (query = '?sort=speed&order=desc'): Promise<RocketBody[]> =>
    (await getJson(`${base}/rockets${query}`)).body as RocketBody[];
  const rocketA = async (): Promise<RocketBody | undefined> => (await list()).find((r) => r.channel === 'a');

  it('reads a listing from the store once while nothing changes, and answers the same bytes', async () => {
    const read = jest.spyOn(app.store, 'listRockets');
    const first = await send(`${base}/rockets?sort=speed&order=desc&limit=2`, 'GET');
    const again = await send(`${base}/rockets?limit=2&order=desc&sort=speed`, 'GET');
    expect(read).toHaveBeenCalledTimes(1);
    expect(again.body).toEqual(first.body);
    expect(again.headers['content-length']).toBe(first.headers['content-length']);
    expect(again.headers['x-next-cursor']).toBe(first.headers['x-next-cursor']);
    // What the service lists, serialised as REST always did.
    const page = await app.service.rockets({ sort: 'speed', order: 'desc', limit: 2 });
    expect(JSON.stringify(first.body)).toBe(JSON.stringify(page.rockets.map(rocketJson)));
    expect(first.headers['x-next-cursor']).toBe(page.nextCursor);
  });

  it('builds the Link header from each request’s own query string', async () => {
    const plain = await send(`${base}/rockets?sort=speed&limit=2`, 'GET');
    const other = await send(`${base}/rockets?limit=2&sort=speed&order=asc`, 'GET');
    const cursor = String(plain.headers['x-next-cursor']);
    expect(plain.headers.link).toBe(`</rockets?sort=speed&limit=2&after=${cursor}>; rel="next"`);
    expect(other.headers.link).toBe(
      `</rockets?limit=2&sort=speed&order=asc&after=${String(other.headers['x-next-cursor'])}>; rel="next"`,
    );
  });

  it('answers an applied message in the next listing', async () => {
    expect((await list()).map((r) => r.channel)).toEqual(['b', 'c', 'a']);
    await postJson(`${base}/messages`, speedUp('a', 2, 500));
    expect((await list()).map((r) => [r.channel, r.speed])).toEqual([
      ['a', 600],
      ['b', 300],
      ['c', 200],
    ]);
  });

  it('answers a commit that only buffers (no event appended) in the next listing and rocket', async () => {
    expect((await rocketA())?.buffer).toEqual({ waitingFor: 2, count: 0, oldestSince: null });
    expect((await getJson(`${base}/rockets/a`)).body).toMatchObject({ buffer: { count: 0 } });
    expect((await postJson(`${base}/messages`, speedUp('a', 3, 1))).body).toMatchObject({ status: 'buffered' });
    expect((await rocketA())?.buffer).toEqual({ waitingFor: 2, count: 1, oldestSince: clock.now().toISOString() });
    expect((await getJson(`${base}/rockets/a`)).body).toMatchObject({ buffer: { count: 1 } });
  });

  it('answers what the gap sweep skipped and applied', async () => {
    await postJson(`${base}/messages`, speedUp('a', 3, 1));
    expect(await rocketA()).toMatchObject({ lastMessageNumber: 1, buffer: { count: 1 } });
    clock.advance(31_000);
    expect(await app.service.skipStaleGaps()).toEqual([{ channel: 'a', from: 2, to: 2 }]);
    expect(await rocketA()).toMatchObject({ lastMessageNumber: 3, speed: 101, buffer: { count: 0 } });
  });

  it('answers a commit by another writer of the store, seen on its append feed', async () => {
    expect(await rocketA()).toMatchObject({ speed: 100 });
    // Another instance on PostgreSQL, say: its commits reach this one only through the store's feed.
    await app.store.commit([message(speedUp('a', 2, 7))]);
    expect(await rocketA()).toMatchObject({ speed: 107, lastMessageNumber: 2 });
  });

  it('answers a target asked before again without routing it, each answer with its own request id', async () => {
    const routed = jest.spyOn(app.service, 'rockets');
    const target = `${base}/rockets?sort=speed&order=desc&limit=2`;
    const first = await send(target, 'GET');
    const again = await send(target, 'GET', undefined, { 'x-request-id': 'mine-1' });
    const third = await send(target, 'GET');
    expect(routed).toHaveBeenCalledTimes(1);
    expect(first.status).toBe(200);
    for (const r of [again, third]) {
      expect(r.status).toBe(200);
      expect(r.body).toEqual(first.body);
      for (const h of ['content-type', 'content-length', 'link', 'x-next-cursor'])
        expect([h, r.headers[h]]).toEqual([h, first.headers[h]]);
    }
    expect(first.headers.link).toContain('rel="next"');
    expect(again.headers['x-request-id']).toBe('mine-1');
    expect(new Set([first, third].map((r) => r.headers['x-request-id'])).size).toBe(2);
    // HEAD of the same target: the same headers, no body.
    const head = await send(target, 'HEAD');
    expect(routed).toHaveBeenCalledTimes(1);
    expect([head.status, head.body, head.headers['content-length']]).toEqual([
      200,
      '',
      first.headers['content-length'],
    ]);
  });

  it('answers a single rocket again while nothing changes, but asks again for one it did not find', async () => {
    const routed = jest.spyOn(app.service, 'rocket');
    const a1 = await getJson(`${base}/rockets/a`);
    const a2 = await getJson(`${base}/rockets/a`);
    expect([a1.status, a2.status]).toEqual([200, 200]);
    expect(a2.body).toEqual(a1.body);
    expect(routed).toHaveBeenCalledTimes(1);
    expect((await getJson(`${base}/rockets/nope`)).status).toBe(404);
    expect((await getJson(`${base}/rockets/nope`)).status).toBe(404);
    expect(routed).toHaveBeenCalledTimes(3);
    await postJson(`${base}/messages`, speedUp('a', 2, 5));
    expect((await getJson(`${base}/rockets/a`)).body).toMatchObject({ speed: 105, lastMessageNumber: 2 });
  });

  it('gives a cross-origin read its CORS headers every time, and refuses other methods on a kept target', async () => {
    const target = `${base}/rockets?limit=1`;
    const origin = { origin: 'https://mission.example' };
    await send(target, 'GET');
    for (let i = 0; i < 2; i++) {
      const r = await send(target, 'GET', undefined, origin);
      expect([r.status, r.headers['access-control-allow-origin']]).toEqual([200, 'https://mission.example']);
    }
    const post = await send(target, 'POST', '{}', { 'content-type': 'application/json' });
    expect([post.status, post.headers.allow]).toEqual([405, 'GET, HEAD, OPTIONS']);
  });

  it('keeps no answer while the service says reads must not be kept', async () => {
    jest.spyOn(app.service, 'readVersion').mockReturnValue(undefined);
    const routed = jest.spyOn(app.service, 'rockets');
    await getJson(`${base}/rockets`);
    await getJson(`${base}/rockets`);
    expect(routed).toHaveBeenCalledTimes(2);
  });

  it('does not answer again what it computed while the store changed', async () => {
    const target = `${base}/rockets?sort=speed&order=desc`;
    const read = app.store.listRockets.bind(app.store);
    // A commit lands between the version read and the answer: that answer must not be served again.
    jest.spyOn(app.store, 'listRockets').mockImplementationOnce(async (q) => {
      const page = await read(q);
      await app.store.commit([message(speedUp('a', 2, 500))]);
      return page;
    });
    const stale = await getJson(target);
    expect((stale.body as RocketBody[]).map((r) => r.channel)).toEqual(['b', 'c', 'a']);
    expect(((await getJson(target)).body as RocketBody[]).map((r) => [r.channel, r.speed])).toEqual([
      ['a', 600],
      ['b', 300],
      ['c', 200],
    ]);
  });

  it('does not keep a listing whose read failed', async () => {
    const failing = jest.spyOn(app.store, 'listRockets').mockRejectedValueOnce(new Error('disk on fire'));
    try {
      expect((await getJson(`${base}/rockets`)).status).toBe(503);
      expect((await getJson(`${base}/rockets`)).status).toBe(200);
      expect(failing).toHaveBeenCalledTimes(2);
    } finally {
      failing.mockRestore();
    }
  });
});

describe('the read cache policy of the service', () => {
  const serviceOn = (store: MemoryStore, options?: { cacheReads?: boolean }) =>
    new RocketService(store, new LanePool(store, 1), new Hub(store, 10), undefined, {}, options);

  it('keeps one page object per listing until a commit, and shares one store read between concurrent calls', async () => {
    const store = new MemoryStore();
    const service = serviceOn(store);
    await service.submit(launch('a'));
    const read = jest.spyOn(store, 'listRockets');
    const [p1, p2] = await Promise.all([service.rockets({ limit: 5 }), service.rockets({ limit: 5 })]);
    expect(p2).toBe(p1);
    expect(await service.rockets({ limit: 5 })).toBe(p1);
    expect(read).toHaveBeenCalledTimes(1);
    const before = service.readVersion();
    await service.submit(speedUp('a', 3, 1)); // buffered only
    expect(service.readVersion()).not.toBe(before);
    const p3 = await service.rockets({ limit: 5 });
    expect(p3).not.toBe(p1);
    expect(p3.rockets[0]?.buffer.count).toBe(1);
    expect(read).toHaveBeenCalledTimes(2);
  });

  it('makes cursors only when asked for, the same as a listing after them expects', async () => {
    const store = new MemoryStore();
    const service = serviceOn(store);
    for (const c of ['a', 'b', 'c']) await service.submit(launch(c));
    const page = await service.rockets({ limit: 2 });
    const last = page.rockets[1];
    expect(last && page.cursorOf(last)).toBe(page.nextCursor);
    const next = await service.rockets({ limit: 2, after: page.nextCursor ?? undefined });
    expect(next.rockets.map((r) => r.channel)).toEqual(['c']);
    expect(next.nextCursor).toBeNull();
  });

  it('keeps nothing for a PostgreSQL store, whose other instances may buffer unseen', async () => {
    const store = new MemoryStore();
    Object.defineProperty(store, 'kind', { value: 'postgres' });
    const service = serviceOn(store);
    await service.submit(launch('a'));
    const read = jest.spyOn(store, 'listRockets');
    expect(service.readVersion()).toBeUndefined();
    await service.rockets();
    await service.rockets();
    expect(read).toHaveBeenCalledTimes(2);
  });

  it('keeps nothing when told not to', async () => {
    const store = new MemoryStore();
    const service = serviceOn(store, { cacheReads: false });
    const read = jest.spyOn(store, 'listRockets');
    await service.rockets();
    await service.rockets();
    expect(read).toHaveBeenCalledTimes(2);
    expect(service.readVersion()).toBeUndefined();
  });
});

describe('kept answers (the REST and GraphQL answer caches)', () => {
  const weigh = (key: string, value: string): number => key.length + value.length;
  const one = weigh('/a', 'x'.repeat(100));

  it('keeps answers up to its size, the least recently used going first, and says which went', () => {
    const dropped: string[] = [];
    const kept = new KeptAnswers<string>(3 * one, weigh, { dropped: (key) => dropped.push(key) });
    for (const t of ['/a', '/b', '/c']) expect(kept.set(t, 1, 'x'.repeat(100))).toBe(true);
    expect(kept.get('/a', 1)?.length).toBe(100); // now the most recently used
    kept.set('/d', 1, 'x'.repeat(100));
    expect(['/a', '/b', '/c', '/d'].map((t) => kept.get(t, 1) !== undefined)).toEqual([true, false, true, true]);
    expect(dropped).toEqual(['/b']);
    // An answer larger than the whole cache is not kept, and takes nothing with it that would still fit.
    expect(kept.set('/e', 1, 'x'.repeat(4 * one))).toBe(false);
    expect(['/a', '/c', '/d', '/e'].map((t) => kept.get(t, 1) !== undefined)).toEqual([true, true, true, false]);
    // One answer per key: the first stands.
    expect(kept.set('/a', 1, 'y')).toBe(false);
    expect(kept.get('/a', 1)).toBe('x'.repeat(100));
  });

  it('drops everything when the version moves, and keeps nothing computed before it or without one', () => {
    let cleared = 0;
    const kept = new KeptAnswers<string>(1024 * 1024, weigh, { cleared: () => cleared++ });
    kept.set('/a', 1, 'one');
    expect(kept.get('/a', 1)).toBe('one');
    expect(kept.get('/a', 2)).toBeUndefined();
    expect(cleared).toBe(2); // moving to version 1, then to 2
    expect(kept.set('/a', 1, 'stale')).toBe(false);
    expect(kept.get('/a', 2)).toBeUndefined();
    kept.set('/a', 2, 'two');
    expect(kept.get('/a', 2)).toBe('two');
    // Kept for version 2 while the store moved on to 3: never served under 3.
    kept.set('/b', 2, 'late');
    expect([kept.get('/a', 3), kept.get('/b', 3)]).toEqual([undefined, undefined]);
    expect(kept.set('/c', undefined, 'none')).toBe(false);
    expect(kept.at(undefined)).toBe(false);
    expect(kept.get('/c', undefined)).toBeUndefined();
  });
});

describe('the REST answer cache', () => {
  it('does not keep an answer to a target too long to be worth a key', async () => {
    const app = await buildApp({ ...loadConfig({}), databaseUrl: 'memory:' }, createLogger('silent'));
    try {
      const base = `http://127.0.0.1:${await app.start(0, '127.0.0.1')}`;
      const routed = jest.spyOn(app.service, 'rockets');
      // Cursors the client may hold: after a channel of 3,000 characters, and after "y".
      const long = `${base}/rockets?sort=channel&after=${encodeCursor('channel', 'y'.repeat(3000), 'y'.repeat(3000))}`;
      const short = `${base}/rockets?sort=channel&after=${encodeCursor('channel', 'y', 'y')}`;
      for (const target of [long, long, short, short]) expect((await getJson(target)).status).toBe(200);
      expect(routed).toHaveBeenCalledTimes(3);
    } finally {
      await app.stop();
    }
  });
});
