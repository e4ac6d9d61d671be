import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { RocketMessage } from '../../src/domain/message';
import { SqliteStore } from '../../src/store/sqlite';
import type { EventStore, RocketView, StoredEvent } from '../../src/store/types';
import {
  createTestClock,
  describeStoreContract,
  exploded,
  increased,
  launched,
  missionChanged,
  decreased,
  stripBuffer,
} from './contract';

const ALL = Number.MAX_SAFE_INTEGER;

/** A fresh directory under the OS temp directory; the database goes in a subdirectory the store creates. */
function tempDir(): { dir: string; file: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'rockets-sqlite-'));
  return { dir, file: join(dir, 'nested', 'rockets.db'), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

describeStoreContract('SqliteStore', (options) => {
  const clock = createTestClock();
  const tmp = tempDir();
  const store = new SqliteStore(tmp.file, { now: clock.now, bufferLimits: options.bufferLimits });
  return Promise.resolve({
    store,
    clock,
    cleanup: async () => {
      await store.close();
      tmp.remove();
    },
  });
});

describe('SqliteStore on its file', () => {
  let tmp: ReturnType<typeof tempDir>;
  const opened: EventStore[] = [];
  const side: Database.Database[] = [];

  const open = (clock = createTestClock()): SqliteStore => {
    const store = new SqliteStore(tmp.file, { now: clock.now });
    opened.push(store);
    return store;
  };
  /** A second connection to the same file, as an operator or another tool would open it. */
  const sideConnection = (): Database.Database => {
    const db = new Database(tmp.file);
    side.push(db);
    return db;
  };
  const all = (store: EventStore): Promise<StoredEvent[]> => store.readEvents({ limit: ALL });

  beforeEach(() => {
    tmp = tempDir();
  });

  afterEach(async () => {
    for (const s of opened.splice(0)) await s.close();
    for (const db of side.splice(0)) db.close();
    tmp.remove();
  });

  it('keeps state, events and buffer across close and reopen, and carries on sequencing', async () => {
    const clock = createTestClock();
    const first = open(clock);
    await first.commit([launched('r1', 1), increased('r1', 2, 10), launched('r2', 1)]);
    const receivedAt = clock.now().toISOString();
    await first.commit([increased('r1', 4, 4), missionChanged('r2', 3, 'X')]);
    clock.advance(1000);
    const before = {
      rockets: await first.listRockets({ sort: 'channel', order: 'asc' }),
      events: await all(first),
      stats: await first.stats(),
      head: await first.headPosition(),
    };
    expect(before.stats).toEqual({ rockets: 2, events: 3, buffered: 2 });
    await first.close();

    const second = open(createTestClock('2030-01-01T00:00:00.000Z'));
    expect(await second.listRockets({ sort: 'channel', order: 'asc' })).toEqual(before.rockets);
    expect(await all(second)).toEqual(before.events);
    expect(await second.stats()).toEqual(before.stats);
    expect(await second.headPosition()).toBe(before.head);
    expect((await second.getRocket('r1'))?.buffer).toEqual({ waitingFor: 3, count: 1, oldestSince: receivedAt });

    const result = await second.commit([increased('r1', 3, 3), increased('r1', 2, 10)]);
    expect(result.outcomes.map((o) => o.status)).toEqual(['applied', 'duplicate']);
    expect(result.events.map((e) => e.messageNumber)).toEqual([3, 4]);
    expect(result.events[0]?.position).toBeGreaterThan(before.head);
    expect(await second.getRocket('r1')).toMatchObject({ speed: 517, buffer: { count: 0, oldestSince: null } });
  });

  it('creates the parent directory, uses WAL and records the schema version', async () => {
    const store = open();
    await store.commit([launched('r1', 1)]);
    const db = sideConnection();
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(db.pragma('user_version', { simple: true })).toBe(1);
  });

  it('refuses a file written by a newer schema version', async () => {
    await open().close();
    sideConnection().pragma('user_version = 99');
    expect(() => open()).toThrow(/schema version 99/);
  });

  it('rejects every commit of a failed group and records nothing of any of them', async () => {
    const store = open();
    await store.commit([launched('ok', 1)]);
    const before = { events: await all(store), stats: await store.stats(), ok: await store.getRocket('ok') };
    // A real failure inside the transaction, after other writes of the group: the event insert of
    // channel "boom" aborts, as a full disk or a broken constraint would.
    const db = sideConnection();
    db.exec(`CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.channel = 'boom'
             BEGIN SELECT RAISE(ABORT, 'forced failure'); END`);
    const heard: StoredEvent[] = [];
    store.onAppend((events) => heard.push(...events));

    const calls = [
      store.commit([increased('ok', 2, 1), increased('ok', 9, 1)]),
      store.commit([increased('fresh', 2, 1)]),
      store.commit([launched('boom', 1)]),
      store.commit([increased('ok', 3, 1)]),
    ];
    const settled = await Promise.allSettled(calls);
    expect(settled.map((s) => s.status)).toEqual(['rejected', 'rejected', 'rejected', 'rejected']);
    for (const s of settled) expect(s.status === 'rejected' && String(s.reason)).toMatch(/forced failure/);
    expect(await all(store)).toEqual(before.events);
    expect(await store.stats()).toEqual(before.stats);
    expect(await store.getRocket('ok')).toEqual(before.ok);
    expect(heard).toEqual([]);

    // The store is not poisoned: once the cause is gone the same messages go through.
    db.exec('DROP TRIGGER boom');
    const retried = await Promise.all([
      store.commit([increased('ok', 2, 1), increased('ok', 9, 1)]),
      store.commit([launched('boom', 1)]),
    ]);
    expect(retried.flatMap((r) => r.outcomes.map((o) => o.status))).toEqual(['applied', 'buffered', 'applied']);
    expect(await store.stats()).toEqual({ rockets: 2, events: 3, buffered: 1 });
  });

  it('records the commits of one tick in one transaction and tells listeners once', async () => {
    const store = open();
    const calls: StoredEvent[][] = [];
    store.onAppend((events) => calls.push([...events]));
    const results = await Promise.all([
      store.commit([launched('a', 1)]),
      store.commit([launched('b', 1), increased('b', 2, 1)]),
      store.commit([increased('a', 2, 1)]),
      store.commit([launched('c', 1)]),
    ]);
    expect(calls).toHaveLength(1);
    expect(calls[0]).toEqual(results.flatMap((r) => r.events));
    expect(calls[0]?.map((e) => `${e.channel}${e.messageNumber}`)).toEqual(['a1', 'b1', 'b2', 'a2', 'c1']);
    expect(calls[0]?.map((e) => e.position)).toEqual([1, 2, 3, 4, 5]);

    // The next tick is the next group.
    await store.commit([launched('d', 1)]);
    expect(calls).toHaveLength(2);
  });

  it('lets a later commit of a group see what an earlier one of the same group did', async () => {
    const store = open();
    const results = await Promise.all([
      store.commit([increased('a', 2, 1)]),
      store.commit([launched('a', 1)]),
      store.commit([increased('a', 2, 1), increased('a', 2, 5)]),
    ]);
    expect(results.map((r) => r.outcomes.map((o) => o.status))).toEqual([
      ['buffered'],
      ['applied'],
      ['duplicate', 'conflict'],
    ]);
    expect(results[1].events.map((e) => e.messageNumber)).toEqual([1, 2]);
    expect(results[1].rockets).toEqual([stripBuffer((await store.getRocket('a')) as RocketView)]);
  });

  it('finishes a commit scheduled before close, then refuses new ones', async () => {
    const store = open();
    const pending = store.commit([launched('a', 1)]);
    const closed = store.close();
    await expect(store.commit([launched('b', 1)])).rejects.toThrow(/closed/);
    expect((await pending).outcomes[0]?.status).toBe('applied');
    await closed;
    const reopened = open();
    expect(await reopened.stats()).toEqual({ rockets: 1, events: 1, buffered: 0 });
  });

  it('rebuilds the projection of a reopened file from its log alone', async () => {
    const store = open();
    const history: RocketMessage[] = [
      increased('r1', 3, 30),
      launched('r1', 1, { launchSpeed: 100 }),
      launched('r2', 1, { type: 'Soyuz', mission: 'M' }),
      increased('r1', 2, 20),
      decreased('r2', 2, 1000),
      exploded('r2', 3, 'BOOM'),
      increased('r2', 4, 5),
      increased('r3', 2, 1),
    ];
    for (const m of history) await store.commit([m]);
    const live = await store.listRockets({ sort: 'speed', order: 'desc' });
    await store.close();

    // Damage the projection behind the store's back: a stale row, a missing row, an extra row.
    const db = sideConnection();
    db.exec(`UPDATE rockets SET speed = 1, status = 'exploded' WHERE channel = 'r1';
             DELETE FROM rockets WHERE channel = 'r2';
             INSERT INTO rockets (channel, speed, status, updated_at, last_message_number)
               VALUES ('ghost', 0, 'flying', '2020-01-01T00:00:00.000Z', 7);`);
    db.close();

    const reopened = open();
    expect(await reopened.rebuildProjection()).toBe(7);
    expect(await reopened.listRockets({ sort: 'speed', order: 'desc' })).toEqual(live);
    expect(await reopened.stats()).toEqual({ rockets: 2, events: 7, buffered: 1 });
  });

  it('counts the buffer from the file when reopened, and holds the total cap across the restart', async () => {
    const bufferLimits = { perChannel: 10, total: 2 };
    const first = new SqliteStore(tmp.file, { bufferLimits });
    opened.push(first);
    await first.commit([increased('a', 2, 1), increased('b', 2, 1)]);
    await first.close();
    const second = new SqliteStore(tmp.file, { bufferLimits });
    opened.push(second);
    const statuses = async (...ms: RocketMessage[]) => (await second.commit(ms)).outcomes.map((o) => o.status);
    expect(await statuses(increased('c', 2, 1))).toEqual(['refused']);
    expect(await statuses(launched('a', 1), increased('c', 2, 1), increased('d', 2, 1))).toEqual([
      'applied',
      'buffered',
      'refused',
    ]);
  });

  it('restores its count of the buffer when a group commit fails', async () => {
    const store = new SqliteStore(tmp.file, { bufferLimits: { perChannel: 10, total: 2 } });
    opened.push(store);
    await store.commit([increased('a', 2, 1)]);
    sideConnection().exec(`CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.channel = 'boom'
                           BEGIN SELECT RAISE(ABORT, 'forced failure'); END`);
    const failed = await Promise.allSettled([
      store.commit([increased('b', 2, 1)]),
      store.commit([launched('boom', 1)]),
    ]);
    expect(failed.map((f) => f.status)).toEqual(['rejected', 'rejected']);
    // Had the failed group's buffering been counted, the cap (2) would refuse this one.
    expect((await store.commit([increased('c', 2, 1)])).outcomes[0]?.status).toBe('buffered');
    expect((await store.commit([increased('d', 2, 1)])).outcomes[0]?.status).toBe('refused');
    expect(await store.stats()).toEqual({ rockets: 0, events: 0, buffered: 2 });
  });

  it('works with synchronous NORMAL and refuses any other setting', async () => {
    const store = new SqliteStore(tmp.file, { synchronous: 'NORMAL' });
    opened.push(store);
    expect((await store.commit([launched('a', 1)])).outcomes[0]?.status).toBe('applied');
    expect(() => new SqliteStore(join(tmp.dir, 'other.db'), { synchronous: 'OFF' as unknown as 'FULL' })).toThrow(
      /FULL or NORMAL/,
    );
  });
});
