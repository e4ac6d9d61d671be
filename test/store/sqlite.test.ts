import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import { SqliteDatabase } from '../../src/store/sqlite/database';
import { migrate } from '../../src/store/sqlite/schema';
import fc from 'fast-check';
import type { RocketMessage } from '../../src/domain/message';
import type { Rocket } from '../../src/domain/rocket';
import { MemoryStore } from '../../src/store/memory';
import { SqliteStore } from '../../src/store/sqlite/store';
import { mountSmallDisk, type SmallDisk } from '../support/small-disk';
import type { CommitResult, EventStore, RocketView, StoredEvent } from '../../src/store/types';
import {
  createTestClock,
  describeStoreContract,
  exploded,
  fold,
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

/**
 * Writes `row` into the rockets table from a second connection, as an operator's tool would. The store
 * first writes the rockets it holds back (any read of the table does), so that none of its own writes
 * later undoes the damage; its channel cache keeps the states it held.
 */
async function tamperRocket(store: SqliteStore, row: Rocket): Promise<void> {
  await store.stats();
  const db = new SqliteDatabase(store.location);
  try {
    db.prepare(
      `INSERT OR REPLACE INTO rockets (channel, type, mission, speed, status, exploded_reason, launched_at,
                                       updated_at, last_message_number)
       VALUES (@channel, @type, @mission, @speed, @status, @explodedReason, @launchedAt, @updatedAt,
               @lastMessageNumber)`,
    ).run(row);
  } finally {
    db.close();
  }
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
    tamperRocket: (row) => tamperRocket(store, row),
  });
});

// The same contract with a cache of two channels: most commits read some channel from the tables, and the
// cache forgets channels between groups.
describeStoreContract('SqliteStore with a channel cache of 2', (options) => {
  const clock = createTestClock();
  const tmp = tempDir();
  const store = new SqliteStore(tmp.file, { now: clock.now, bufferLimits: options.bufferLimits, channelCacheSize: 2 });
  return Promise.resolve({
    store,
    clock,
    cleanup: async () => {
      await store.close();
      tmp.remove();
    },
    tamperRocket: (row) => tamperRocket(store, row),
  });
});

/** The indexes of the rockets table, by name. */
const rocketIndexes = (db: Database.Database): string[] =>
  db
    .prepare<[], { name: string }>(
      `SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'rockets' AND sql IS NOT NULL ORDER BY name`,
    )
    .all()
    .map((r) => r.name);

const SORT_INDEXES = [
  'rockets_by_launched_at',
  'rockets_by_mission',
  'rockets_by_speed',
  'rockets_by_status',
  'rockets_by_type',
  'rockets_by_updated_at',
];

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
    const db = new SqliteDatabase(tmp.file);
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

  it('after a reopen, takes one instant written differently for a duplicate', async () => {
    const first = open(createTestClock());
    const [one, three] = ['2022-01-01T00:00:00Z', '2022-01-01T00:00:03.5+00:00'];
    await first.commit([launched('r1', 1, {}, one), increased('r1', 3, 5, three)]);
    const events = await all(first);
    await first.close();

    const second = open(createTestClock());
    const statuses = async (...ms: RocketMessage[]) => {
      const { outcomes } = await second.commit(ms);
      return outcomes.map((o) => o.status);
    };
    const again = [launched('r1', 1, {}, '2022-01-01t01:00:00.000+01:00')];
    again.push(increased('r1', 3, 5, '2022-01-01 00:00:03.5z'));
    expect(await statuses(...again)).toEqual(['duplicate', 'duplicate']);
    expect(await statuses(launched('r1', 1, {}, '2022-01-01T00:00:00.001Z'))).toEqual(['conflict']);
    expect(await all(second)).toEqual(events);
    expect((await second.getRocket('r1'))?.buffer.count).toBe(1);
  });

  it('stores each payload as JSON of the contract fields alone, in their order, whatever the object holds', async () => {
    const store = open();
    const mission = 'quote " backslash \\ tab \t é 🚀 \u2028';
    // As a JavaScript caller may build it: the fields in another order, and one the contract does not have.
    const payload = { mission, extra: 'dropped', launchSpeed: 1.5e3, type: 'Falcon-9' };
    const { messageTime } = launched('r1', 1);
    const reordered: RocketMessage = {
      channel: 'r1',
      messageNumber: 1,
      messageTime,
      messageType: 'RocketLaunched',
      payload,
    };
    await store.commit([reordered, increased('r1', 2, 0.25), missionChanged('r1', 3, ''), exploded('r1', 4, 'x')]);
    const stored = sideConnection()
      .prepare<[], { payload: string }>('SELECT payload FROM events ORDER BY position')
      .all()
      .map((r) => r.payload);
    expect(stored).toEqual([
      `{"type":"Falcon-9","launchSpeed":1500,"mission":${JSON.stringify(mission)}}`,
      '{"by":0.25}',
      '{"newMission":""}',
      '{"reason":"x"}',
    ]);
    expect((await all(store))[0]?.payload).toEqual({ type: 'Falcon-9', launchSpeed: 1500, mission });
  });

  it('creates the parent directory, uses WAL and records the schema version', async () => {
    const store = open();
    await store.commit([launched('r1', 1)]);
    const db = sideConnection();
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(db.pragma('user_version', { simple: true })).toBe(3);
    expect(rocketIndexes(db)).toEqual(SORT_INDEXES);
  });

  it('migrates a version 1 file: drops the status copies of the sort indexes and keeps every row', async () => {
    const first = open();
    await first.commit([launched('r1', 1), increased('r1', 2, 10), increased('r2', 2, 1)]);
    const before = { rockets: await first.listRockets({ sort: 'speed', order: 'desc' }), events: await all(first) };
    await first.close();
    // Back to version 1 as that build left it: the same tables, with the status copies of each index.
    const db = sideConnection();
    db.exec(`CREATE INDEX rockets_by_status_type ON rockets (status, type_key, channel);
             CREATE INDEX rockets_by_status_mission ON rockets (status, mission_key, channel);
             CREATE INDEX rockets_by_status_speed ON rockets (status, speed, channel);
             CREATE INDEX rockets_by_status_launched_at ON rockets (status, launched_at_key, channel);
             CREATE INDEX rockets_by_status_updated_at ON rockets (status, updated_at, channel);
             DROP TABLE projection;
             PRAGMA user_version = 1;`);
    expect(rocketIndexes(db)).toHaveLength(11);

    const second = open();
    expect(db.pragma('user_version', { simple: true })).toBe(3);
    expect(rocketIndexes(db)).toEqual(SORT_INDEXES);
    expect(await second.listRockets({ sort: 'speed', order: 'desc' })).toEqual(before.rockets);
    expect(await all(second)).toEqual(before.events);
    expect((await second.commit([launched('r2', 1)])).outcomes.map((o) => o.status)).toEqual(['applied']);
    expect(await second.stats()).toEqual({ rockets: 2, events: 4, buffered: 0 });
  });

  it('sets only the columns that changed since the table last held a rocket, and writes it once', async () => {
    const store = open();
    await store.commit([launched('r1', 1), launched('r2', 1)]);
    // Any read of the table writes the rockets changed since it was last written.
    const project = async (): Promise<void> => {
      await store.stats();
    };
    await project();
    const db = sideConnection();
    db.exec('CREATE TABLE written (channel TEXT, column_name TEXT)');
    for (const column of ['type', 'mission', 'speed', 'status', 'exploded_reason', 'launched_at', 'updated_at'])
      db.exec(`CREATE TRIGGER written_${column} AFTER UPDATE OF ${column} ON rockets
               BEGIN INSERT INTO written VALUES (NEW.channel, '${column}'); END`);
    const written = (): string[] =>
      db
        .prepare<[], { w: string }>(
          `SELECT channel || ' ' || column_name AS w FROM written ORDER BY channel, column_name`,
        )
        .all()
        .map((r) => r.w);
    const clear = (): void => {
      db.exec('DELETE FROM written');
    };

    await store.commit([increased('r1', 2, 5)]);
    expect(written()).toEqual([]);
    await project();
    expect(written()).toEqual(['r1 speed', 'r1 updated_at']);
    clear();
    // Two calls of one group, two messages of one call and a later group change r1: one update, of its
    // final state, where the speed is back where it was.
    await Promise.all([
      store.commit([missionChanged('r1', 3, 'M'), increased('r1', 4, 1)]),
      store.commit([decreased('r1', 5, 1), missionChanged('r2', 2, 'N')]),
    ]);
    await store.commit([increased('r1', 6, 0)]);
    await project();
    expect(written()).toEqual(['r1 mission', 'r1 updated_at', 'r2 mission', 'r2 updated_at']);
    clear();
    await store.commit([exploded('r2', 3, 'boom')]);
    await project();
    expect(written()).toEqual(['r2 exploded_reason', 'r2 status', 'r2 updated_at']);
    expect(await store.getRocket('r1')).toMatchObject({ mission: 'M', speed: 505, lastMessageNumber: 6 });
    expect(await store.getRocket('r2')).toMatchObject({ mission: 'N', status: 'exploded', explodedReason: 'boom' });
  });

  it('migrates a version 2 file, whose rockets table reflects its whole log, and carries on', async () => {
    const first = open();
    await first.commit([launched('r1', 1), increased('r1', 2, 10), launched('r2', 1)]);
    const rockets = await first.listRockets({ sort: 'channel', order: 'asc' });
    await first.close();
    const db = sideConnection();
    db.exec('DROP TABLE projection; PRAGMA user_version = 2;');

    // The migration alone: opening the store would bring the table up to the log whatever it recorded, and
    // only replaying the whole log would show a wrong position.
    migrate(db);
    expect(db.pragma('user_version', { simple: true })).toBe(3);
    expect(db.prepare('SELECT position FROM projection').get()).toEqual({ position: 3 });
    const second = open();
    expect(await second.listRockets({ sort: 'channel', order: 'asc' })).toEqual(rockets);
    expect((await second.commit([increased('r1', 3, 1)])).outcomes[0]?.status).toBe('applied');
  });

  it('refuses a file written by a newer schema version', async () => {
    await open().close();
    sideConnection().pragma('user_version = 99');
    expect(() => open()).toThrow(/schema version 99/);
  });

  it('lets go of the WAL it syncs when it cannot bring the rockets table up to the log at open', async () => {
    const store = open();
    await store.commit([launched('a', 1)]);
    await store.close();
    // As a crash leaves it: the table behind the log; and a table that cannot take the row.
    sideConnection().exec(`UPDATE projection SET position = 0; DELETE FROM rockets;
                           CREATE TRIGGER boom BEFORE INSERT ON rockets BEGIN SELECT RAISE(ABORT, 'forced failure'); END`);
    // Descriptors of this process open on the WAL file (the side connection holds its own).
    const walOpen = (): number =>
      readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`) === `${realpathSync(tmp.file)}-wal`;
        } catch {
          return false;
        }
      }).length;
    const before = walOpen();
    expect(() => new SqliteStore(tmp.file)).toThrow(/forced failure/);
    expect(walOpen()).toBe(before);
  });

  it('answers a read asked while a group waits for its sync only after the sync, with the group', async () => {
    const store = open();
    await store.commit([launched('a', 1)]);
    const order: string[] = [];
    const committing = store.commit([increased('a', 2, 5), launched('b', 1), increased('c', 2, 1)]);
    void committing.then(() => order.push('acknowledged'));
    // The group is written in this turn's check phase; its sync ends on the thread pool, later.
    await new Promise((resolve) => setImmediate(resolve));
    expect(store.transactions).toBe(2);
    const reads = {
      rocket: store.getRocket('b'),
      rockets: store.listRockets({ sort: 'channel', order: 'asc' }),
      events: all(store),
      head: store.headPosition(),
      gaps: store.listGaps(10),
      stats: store.stats(),
    };
    for (const [name, read] of Object.entries(reads)) void read.then(() => order.push(name));
    const answered = {
      rocket: await reads.rocket,
      rockets: await reads.rockets,
      events: await reads.events,
      head: await reads.head,
      gaps: await reads.gaps,
      stats: await reads.stats,
    };
    expect(order[0]).toBe('acknowledged');
    expect(answered.rocket?.lastMessageNumber).toBe(1);
    expect(answered.rockets.map((r) => [r.channel, r.speed])).toEqual([
      ['a', 505],
      ['b', 500],
    ]);
    expect(answered.events).toHaveLength(3);
    expect(answered.head).toBe(3);
    expect(answered.gaps.map((g) => g.channel)).toEqual(['c']);
    expect(answered.stats).toEqual({ rockets: 2, events: 3, buffered: 1 });
    // Nothing waits for a sync: answered at once.
    expect(await store.getRocket('a')).toMatchObject({ speed: 505 });
  });

  it('refuses every read and write once a WAL sync failed, and a restart recovers the file', async () => {
    const store = open();
    await store.commit([launched('a', 1)]);
    // The WAL's name now leads to a character device, which Linux refuses to sync: the store's syncs
    // reopen the file by that name (checked every 250 ms), while SQLite keeps writing its own descriptor.
    const wal = `${tmp.file}-wal`;
    renameSync(wal, `${wal}.kept`);
    symlinkSync('/dev/null', wal);
    let failure: unknown;
    for (let n = 2; failure === undefined && n < 100_000; n++) {
      await store.commit([increased('a', n, 1)]).catch((e: unknown) => (failure = e));
    }
    expect(failure).toMatchObject({ code: 'EINVAL', syscall: 'fdatasync' });
    await expect(store.commit([launched('b', 1)])).rejects.toBe(failure);
    await expect(store.stats()).rejects.toBe(failure);
    await expect(store.getRocket('a')).rejects.toBe(failure);
    await expect(store.listRockets({ sort: 'channel', order: 'asc' })).rejects.toBe(failure);
    await expect(all(store)).rejects.toBe(failure);
    await expect(store.headPosition()).rejects.toBe(failure);
    await expect(store.listGaps(10)).rejects.toBe(failure);
    await expect(store.skipGaps(0, 'test')).rejects.toBe(failure);
    await expect(store.rebuildProjection()).rejects.toBe(failure);

    // Closing checkpoints through SQLite's own descriptor and removes the WAL by its name (the link).
    await store.close();
    const again = open();
    expect((await again.stats()).rockets).toBe(1);
    expect((await again.commit([launched('b', 1)])).outcomes[0]?.status).toBe('applied');
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

  it('rolls back the whole group when an event breaks the log’s unique constraint', async () => {
    // The log's inserts run OR ROLLBACK (no statement journal): a broken constraint must still undo
    // everything the group wrote before it, and leave the store able to go on.
    const store = open();
    await store.commit([launched('ok', 1)]);
    const before = { events: await all(store), stats: await store.stats(), ok: await store.getRocket('ok') };
    // Another writer took number 1 of "taken", which this store has not read: it plans that number anew.
    const db = sideConnection();
    db.prepare(
      `INSERT INTO events (channel, message_number, message_type, message_time, payload, recorded_at)
       VALUES ('taken', 1, 'RocketLaunched', '2022-02-02T19:39:05Z', '{}', '2022-02-02T19:39:05Z')`,
    ).run();
    const heard: StoredEvent[] = [];
    store.onAppend((events) => heard.push(...events));

    const settled = await Promise.allSettled([
      store.commit([increased('ok', 2, 1)]),
      store.commit([launched('taken', 1)]),
      store.commit([launched('fresh', 1)]),
    ]);
    expect(settled.map((s) => s.status)).toEqual(['rejected', 'rejected', 'rejected']);
    for (const s of settled) expect(s.status === 'rejected' && String(s.reason)).toMatch(/UNIQUE constraint failed/);
    db.prepare("DELETE FROM events WHERE channel = 'taken'").run();
    expect(await all(store)).toEqual(before.events);
    expect(await store.stats()).toEqual(before.stats);
    expect(await store.getRocket('ok')).toEqual(before.ok);
    expect(heard).toEqual([]);

    const retried = await Promise.all([
      store.commit([increased('ok', 2, 1)]),
      store.commit([launched('taken', 1)]),
      store.commit([launched('fresh', 1)]),
    ]);
    expect(retried.map((r) => r.outcomes[0]?.status)).toEqual(['applied', 'applied', 'applied']);
    expect(await store.stats()).toMatchObject({ rockets: 3, buffered: 0 });
    // Position 2 was the other writer's, and is never handed out again.
    expect((await all(store)).map((e) => `${e.position} ${e.channel}#${e.messageNumber}`)).toEqual([
      '1 ok#1',
      '3 ok#2',
      '4 taken#1',
      '5 fresh#1',
    ]);
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

  it('resolves a commit and tells listeners only after a WAL sync that began after its transaction', async () => {
    const store = open();
    const seen: number[] = [];
    store.onAppend(() => seen.push(store.walSyncs));
    const before = store.walSyncs;
    const committed = store.commit([launched('a', 1)]);
    // Nothing resolves in the tick that writes the transaction: the sync is still to come.
    await new Promise((resolve) => setImmediate(resolve));
    expect(store.transactions).toBe(1);
    expect(store.walSyncs).toBe(before);
    await committed;
    expect(store.walSyncs).toBeGreaterThan(before);
    expect(seen).toEqual([before + 1]);
  });

  it('gathers the commits made during a WAL sync into the next group, each told once it is durable', async () => {
    const store = open();
    await store.commit([launched('warm', 1)]);
    const groups: string[][] = [];
    store.onAppend((events) => groups.push(events.map((e) => e.channel)));
    const first = store.commit([launched('a', 1)]);
    // The first group's transaction is written in this turn's check phase; its sync then runs.
    await new Promise((resolve) => setImmediate(resolve));
    const later = [store.commit([launched('b', 1)]), store.commit([launched('c', 1)])];
    await Promise.all([first, ...later]);
    expect(groups).toEqual([['a'], ['b', 'c']]);
    expect(store.transactions).toBe(3);
  });

  it('syncs nothing itself with synchronous NORMAL', async () => {
    const store = new SqliteStore(tmp.file, { synchronous: 'NORMAL' });
    opened.push(store);
    await store.commit([launched('a', 1)]);
    expect(store.walSyncs).toBe(0);
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
    const statuses = async (...ms: RocketMessage[]) => {
      const { outcomes } = await second.commit(ms);
      return outcomes.map((o) => o.status);
    };
    expect(await statuses(increased('c', 2, 1))).toEqual(['refused']);
    expect(await statuses(launched('a', 1), increased('c', 2, 1), increased('d', 2, 1))).toEqual([
      'applied',
      'buffered',
      'refused',
    ]);
  });

  it('forgets what a failed group did to a channel: the buffer it released is still there', async () => {
    const store = open();
    await store.commit([launched('a', 1), increased('a', 3, 10), increased('a', 4, 100)]);
    sideConnection().exec(`CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.channel = 'boom'
                           BEGIN SELECT RAISE(ABORT, 'forced failure'); END`);
    // Message 2 releases 3 and 4 from the buffer, then the group fails after those writes.
    const failed = await Promise.allSettled([
      store.commit([increased('a', 2, 1)]),
      store.commit([launched('boom', 1)]),
    ]);
    expect(failed.map((f) => f.status)).toEqual(['rejected', 'rejected']);
    expect((await store.getRocket('a'))?.buffer).toMatchObject({ waitingFor: 2, count: 2 });

    const retried = await store.commit([increased('a', 2, 1)]);
    expect(retried.events.map((e) => e.messageNumber)).toEqual([2, 3, 4]);
    expect(await store.getRocket('a')).toMatchObject({ speed: 611, lastMessageNumber: 4, buffer: { count: 0 } });
    expect(await store.stats()).toEqual({ rockets: 1, events: 4, buffered: 0 });
  });

  it('fails the reads while the rockets table cannot be written, and writes all of it once it can', async () => {
    const store = open();
    await store.commit([launched('a', 1), launched('b', 1)]);
    await store.stats();
    const db = sideConnection();
    db.exec(`CREATE TRIGGER boom BEFORE UPDATE OF speed ON rockets WHEN NEW.channel = 'b'
             BEGIN SELECT RAISE(ABORT, 'forced failure'); END`);
    // The log takes them: the table is written behind it.
    const committed = await store.commit([increased('a', 2, 10), increased('a', 3, 10), increased('b', 2, 10)]);
    expect(committed.outcomes.map((o) => o.status)).toEqual(['applied', 'applied', 'applied']);
    await expect(store.listRockets({ sort: 'channel', order: 'asc' })).rejects.toThrow(/forced failure/);
    const rows = (): unknown[] =>
      db.prepare('SELECT channel, speed, last_message_number FROM rockets ORDER BY channel').all();
    // Nothing of the failed write is left half done.
    expect(rows()).toEqual([
      { channel: 'a', speed: 500, last_message_number: 1 },
      { channel: 'b', speed: 500, last_message_number: 1 },
    ]);
    // A rocket still answers from the state sequencing holds.
    expect(await store.getRocket('a')).toMatchObject({ speed: 520, lastMessageNumber: 3 });
    db.exec('DROP TRIGGER boom');

    expect((await store.commit([increased('b', 3, 1)])).outcomes[0]?.status).toBe('applied');
    expect(
      (await store.listRockets({ sort: 'channel', order: 'asc' })).map((r) => [
        r.channel,
        r.speed,
        r.lastMessageNumber,
      ]),
    ).toEqual([
      ['a', 520, 3],
      ['b', 511, 3],
    ]);
    expect(rows()).toEqual([
      { channel: 'a', speed: 520, last_message_number: 3 },
      { channel: 'b', speed: 511, last_message_number: 3 },
    ]);
  });

  it('brings the rockets table up to the log after a failed group, from the events it had not written', async () => {
    const store = open();
    await store.commit([launched('a', 1), launched('b', 1)]);
    await store.stats();
    // Changed in the log and the cache only.
    await store.commit([increased('a', 2, 10), missionChanged('b', 2, 'M')]);
    const db = sideConnection();
    db.exec(`CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.channel = 'boom'
             BEGIN SELECT RAISE(ABORT, 'forced failure'); END`);
    // The failure empties the cache, and the changed rockets with it.
    await expect(store.commit([increased('a', 3, 1), launched('boom', 1)])).rejects.toThrow(/forced failure/);
    db.exec('DROP TRIGGER boom');

    // Had it sequenced from the table, a#3 would wait for a#2 and b#2 would be applied again.
    const next = await store.commit([increased('a', 3, 1), missionChanged('b', 2, 'M'), increased('b', 3, 5)]);
    expect(next.outcomes.map((o) => o.status)).toEqual(['applied', 'duplicate', 'applied']);
    expect(
      (await store.listRockets({ sort: 'channel', order: 'asc' })).map((r) => [r.channel, r.speed, r.mission]),
    ).toEqual([
      ['a', 511, 'ARTEMIS'],
      ['b', 505, 'M'],
    ]);
  });

  describe('writing the rockets table behind the log', () => {
    // Only the timers that pace the projection, and the clock they read; commits, syncs and I/O stay real.
    beforeEach(() => {
      jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask', 'performance', 'hrtime'] });
    });
    afterEach(() => {
      jest.useRealTimers();
    });

    it('writes rockets once changed for a while, oldest first, in chunks, below a position it has passed', async () => {
      const store = new SqliteStore(tmp.file, { projection: { afterMs: 1000, chunk: 2, maxDirty: 100 } });
      opened.push(store);
      await store.commit([launched('a', 1), launched('b', 1), launched('c', 1)]);
      jest.advanceTimersByTime(500);
      await store.commit([launched('d', 1), launched('e', 1), increased('a', 2, 5)]);
      const db = sideConnection();
      const table = (): unknown => ({
        rows: db
          .prepare<[], { channel: string; n: number }>(
            'SELECT channel, last_message_number AS n FROM rockets ORDER BY channel',
          )
          .all()
          .map((r) => `${r.channel}${r.n}`),
        position: db.prepare<[], { position: number }>('SELECT position FROM projection').get()?.position,
      });
      expect(table()).toEqual({ rows: [], position: 0 });

      // a (changed again since, but first at 0) is due: a and b, then at once c and d, which is not due
      // yet, each chunk with the position before the first event of the oldest rocket left.
      jest.advanceTimersByTime(499);
      expect(table()).toEqual({ rows: [], position: 0 });
      jest.advanceTimersByTime(1);
      expect(table()).toEqual({ rows: ['a2', 'b1'], position: 0 });
      jest.runOnlyPendingTimers();
      expect(table()).toEqual({ rows: ['a2', 'b1', 'c1', 'd1'], position: 3 });
      // e, once due.
      jest.advanceTimersByTime(400);
      expect(table()).toEqual({ rows: ['a2', 'b1', 'c1', 'd1'], position: 3 });
      jest.advanceTimersByTime(100);
      expect(table()).toEqual({ rows: ['a2', 'b1', 'c1', 'd1', 'e1'], position: 6 });
    });

    it('writes the oldest rockets at once while more than the bound wait', async () => {
      const store = new SqliteStore(tmp.file, { projection: { afterMs: 60_000, chunk: 2, maxDirty: 2 } });
      opened.push(store);
      await store.commit([launched('a', 1), launched('b', 1), launched('c', 1), launched('d', 1)]);
      jest.advanceTimersByTime(0);
      const db = sideConnection();
      expect(db.prepare('SELECT channel FROM rockets ORDER BY channel').all()).toEqual([
        { channel: 'a' },
        { channel: 'b' },
      ]);
    });

    it('writes the oldest rockets at once when more than the bound wait, though the next write was timed', async () => {
      const store = new SqliteStore(tmp.file, { projection: { afterMs: 60_000, chunk: 2, maxDirty: 2 } });
      opened.push(store);
      // Within the bound: the write of a is timed for a minute from now.
      await store.commit([launched('a', 1)]);
      await store.commit([launched('b', 1), launched('c', 1), launched('d', 1)]);
      jest.advanceTimersByTime(0);
      const db = sideConnection();
      expect(db.prepare('SELECT channel FROM rockets ORDER BY channel').all()).toEqual([
        { channel: 'a' },
        { channel: 'b' },
      ]);
    });
  });

  it('skips, replaying the log into the table, the events a row already reflects', async () => {
    const store = open();
    const history = [launched('a', 1), increased('a', 2, 10), launched('b', 1), decreased('b', 2, 7)];
    await store.commit(history);
    await store.close();
    // As a crash leaves it after a chunk wrote rows past the position the table records.
    sideConnection().exec('UPDATE projection SET position = 1');
    const reopened = open();
    expect((await reopened.listRockets({ sort: 'channel', order: 'asc' })).map(stripBuffer)).toEqual([
      fold(history.slice(0, 2)),
      fold(history.slice(2)),
    ]);
  });

  it('replays into the rockets table, when a file is opened, the events it had not written before a crash', async () => {
    const store = open();
    const history = [launched('a', 1), launched('b', 1), increased('a', 2, 10), exploded('b', 2, 'boom')];
    await store.commit(history.slice(0, 2));
    await store.stats();
    await store.commit(history.slice(2));
    // The file as a crash would leave it now: log and WAL on disk, the table behind the log.
    const copy = join(tmp.dir, 'crashed.db');
    copyFileSync(tmp.file, copy);
    copyFileSync(`${tmp.file}-wal`, `${copy}-wal`);
    const lagging = new SqliteDatabase(copy, { readonly: true });
    side.push(lagging);
    expect(lagging.prepare('SELECT channel, status FROM rockets ORDER BY channel').all()).toEqual([
      { channel: 'a', status: 'flying' },
      { channel: 'b', status: 'flying' },
    ]);
    lagging.close();

    const reopened = new SqliteStore(copy);
    opened.push(reopened);
    const rockets = await reopened.listRockets({ sort: 'channel', order: 'asc' });
    expect(rockets.map(stripBuffer)).toEqual([
      fold(history.filter((m) => m.channel === 'a')),
      fold(history.filter((m) => m.channel === 'b')),
    ]);
    expect((await reopened.commit([increased('a', 3, 1)])).outcomes[0]?.status).toBe('applied');
  });

  it('sequences from the rebuilt projection, not from what it held before the rebuild', async () => {
    const store = open();
    await store.commit([launched('r1', 1), increased('r1', 2, 20)]);
    await store.close();
    // A damaged row, which the reopened store reads (and keeps) when it sequences r1 before the rebuild.
    sideConnection().exec(`UPDATE rockets SET speed = 1, status = 'exploded' WHERE channel = 'r1'`);
    const reopened = open();
    expect((await reopened.commit([increased('r1', 4, 1)])).outcomes[0]?.status).toBe('buffered');
    expect(await reopened.rebuildProjection()).toBe(2);

    const result = await reopened.commit([increased('r1', 3, 100)]);
    expect(result.events.map((e) => e.messageNumber)).toEqual([3, 4]);
    const expected = fold([launched('r1', 1), increased('r1', 2, 20), increased('r1', 3, 100), increased('r1', 4, 1)]);
    expect(result.rockets).toEqual([expected]);
    expect(stripBuffer((await reopened.getRocket('r1')) as RocketView)).toEqual(expected);
  });

  it('ends as in-order delivery whatever the order, grouping, failures and cache size', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 12 }), {
          minLength: 1,
          maxLength: 4,
        }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 5 }), fc.boolean()), { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 0, max: 5 }),
        async (kinds, deliveries, cacheSize) => {
          // Rocket i gets kinds[i].length messages after its launch: 0 increase, 1 decrease, 2 mission.
          const histories = kinds.map((ks, i) => {
            const channel = `r${i}`;
            const later = ks.map((k, j): RocketMessage => {
              const n = j + 2;
              return k === 0
                ? increased(channel, n, n * 7)
                : k === 1
                  ? decreased(channel, n, n * 5)
                  : missionChanged(channel, n, `M${n}`);
            });
            return [launched(channel, 1, { launchSpeed: 10 * i }), ...later];
          });
          const queue = histories.flat();
          const dir = join(tmp.dir, `run-${run++}`);
          const store = new SqliteStore(join(dir, 'p.db'), { channelCacheSize: cacheSize });
          opened.push(store);
          const db = new SqliteDatabase(join(dir, 'p.db'));
          side.push(db);
          db.exec(`CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.channel = 'boom'
                     BEGIN SELECT RAISE(ABORT, 'forced failure'); END`);
          // Each round: a group of calls, each taking some messages from a random place in the queue;
          // some groups carry a message that makes the whole group fail, and then go back to the queue.
          for (let i = 0; queue.length > 0; i++) {
            // Failures stop after 200 rounds: more rounds than that means commits fail on their own.
            if (i > 1000) throw new Error(`still ${queue.length} messages to deliver after ${i} rounds`);
            const [at, calls, fail] = deliveries[i % deliveries.length] as [number, number, boolean];
            const batches: RocketMessage[][] = [];
            for (let c = 0; c < calls && queue.length > 0; c++)
              batches.push(queue.splice(at % queue.length, 1 + (c % 3)));
            const commits: Promise<CommitResult>[] = batches.map((b) => store.commit(b));
            if (fail && i < 200) commits.push(store.commit([launched('boom', 1)]));
            const settled = await Promise.allSettled(commits);
            if (settled.some((x) => x.status === 'rejected')) queue.push(...batches.flat());
          }
          const expected = histories.map((h) => fold(h) as Rocket);
          const live = await store.listRockets({ sort: 'channel', order: 'asc' });
          expect(live.map(stripBuffer)).toEqual(expected);
          expect(live.every((r) => r.buffer.count === 0)).toBe(true);
          const reference = new MemoryStore();
          await reference.commit(histories.flat());
          for (const sort of ['speed', 'mission', 'updatedAt'] as const)
            expect(await store.listRockets({ sort, order: 'desc' })).toEqual(
              await reference.listRockets({ sort, order: 'desc' }),
            );
          await store.rebuildProjection();
          expect(await store.listRockets({ sort: 'channel', order: 'asc' })).toEqual(live);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('pages by status the same whether it walks a sort index or gathers the status and sorts it', async () => {
    const store = open();
    const reference = new MemoryStore();
    // 40 rockets: 4 exploded (rare for a page of 20, so gathered), 36 flying (walked); some share a key.
    const messages = Array.from({ length: 40 }, (_, i): RocketMessage[] => {
      const channel = `r${(i * 7) % 40}`;
      const launch = launched(channel, 1, {
        launchSpeed: (i % 6) * 10,
        mission: `M${i % 5}`,
        type: i % 3 === 0 ? 'A' : 'B',
      });
      return i % 10 === 3 ? [launch, exploded(channel, 2, 'x')] : [launch, increased(channel, 2, i % 4)];
    }).flat();
    await store.commit(messages);
    await reference.commit(messages);
    for (const sort of ['channel', 'type', 'mission', 'speed', 'status', 'launchedAt', 'updatedAt'] as const)
      for (const order of ['asc', 'desc'] as const)
        for (const status of ['flying', 'exploded'] as const)
          for (const limit of [1, 3, 20, undefined]) {
            const q = { sort, order, status, limit };
            const expected = await reference.listRockets(q);
            expect([q, await store.listRockets(q)]).toEqual([q, expected]);
            // And every page after each of its rockets.
            for (const r of expected) {
              const key = sort === 'channel' ? r.channel : (r[sort] ?? '');
              const paged = { ...q, after: { key, channel: r.channel } };
              expect([paged, await store.listRockets(paged)]).toEqual([paged, await reference.listRockets(paged)]);
            }
          }
    // The counts behind the choice follow the writes: r0 explodes now, and the pages still agree.
    await store.commit([exploded('r0', 3, 'y')]);
    await reference.commit([exploded('r0', 3, 'y')]);
    for (const status of ['flying', 'exploded'] as const) {
      const q = { sort: 'speed', order: 'desc', status, limit: 5 } as const;
      expect(await store.listRockets(q)).toEqual(await reference.listRockets(q));
    }
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

  it('refuses a second writer of the file while one has it open, and opens it once that one closed', async () => {
    const first = new SqliteStore(tmp.file);
    opened.push(first);
    await first.commit([launched('a', 1)]);
    expect(() => new SqliteStore(tmp.file)).toThrow(/already open for writing/);
    // A reader of the database file is not a writer: it is not refused.
    const reader = new SqliteDatabase(tmp.file, { readonly: true });
    expect(reader.prepare('SELECT count(*) AS n FROM events').get()).toEqual({ n: 1 });
    reader.close();
    await first.close();
    const second = new SqliteStore(tmp.file);
    opened.push(second);
    expect((await second.commit([increased('a', 2, 1)])).outcomes[0]?.status).toBe('applied');
  });

  it('opens a file through a symbolic link by its real name: the WAL it syncs and the lock it holds', async () => {
    // SQLite follows the link, here to a file not created yet, and keeps its WAL beside the target.
    const volume = join(tmp.dir, 'volume');
    mkdirSync(volume);
    const link = join(tmp.dir, 'linked.db');
    symlinkSync(join(volume, 'real.db'), link);
    const viaLink = new SqliteStore(link);
    opened.push(viaLink);
    await viaLink.commit([launched('a', 1)]);
    expect(existsSync(join(volume, 'real.db-wal'))).toBe(true);
    expect(existsSync(`${link}-wal`)).toBe(false);
    expect(() => new SqliteStore(join(volume, 'real.db'))).toThrow(/already open for writing/);
    await viaLink.close();

    const direct = new SqliteStore(join(volume, 'real.db'));
    opened.push(direct);
    expect((await direct.commit([increased('a', 2, 1)])).outcomes[0]?.status).toBe('applied');
    expect(() => new SqliteStore(link)).toThrow(/already open for writing/);
  });

  it('follows a relative link to a file not created yet from where the link really is', async () => {
    // a/linkdir -> ../x/y, and x/y/db -> ../z/r.db: the file is x/z/r.db, as the kernel and SQLite read it.
    for (const d of ['a', 'x/y', 'x/z']) mkdirSync(join(tmp.dir, d), { recursive: true });
    symlinkSync('../x/y', join(tmp.dir, 'a', 'linkdir'));
    symlinkSync('../z/r.db', join(tmp.dir, 'x', 'y', 'db'));
    const store = new SqliteStore(join(tmp.dir, 'a', 'linkdir', 'db'));
    opened.push(store);
    await store.commit([launched('a', 1)]);
    expect(existsSync(join(tmp.dir, 'x', 'z', 'r.db'))).toBe(true);
    expect(existsSync(join(tmp.dir, 'a', 'z'))).toBe(false);
  });

  it('refuses a file with a second hard link, a link into a missing directory and a loop of links', async () => {
    const first = new SqliteStore(tmp.file);
    await first.commit([launched('a', 1)]);
    await first.close();
    const alias = join(tmp.dir, 'alias.db');
    linkSync(tmp.file, alias);
    expect(() => new SqliteStore(alias)).toThrow(/has 2 hard links: SQLite keeps a WAL per name/);
    expect(() => new SqliteStore(tmp.file)).toThrow(/has 2 hard links/);
    rmSync(alias);
    const reopened = new SqliteStore(tmp.file);
    opened.push(reopened);
    expect((await reopened.commit([increased('a', 2, 1)])).outcomes[0]?.status).toBe('applied');

    // A link to a file in a directory that does not exist: refused, rather than opened by the link's name.
    const dangling = join(tmp.dir, 'dangling.db');
    symlinkSync(join(tmp.dir, 'nowhere', 'gone.db'), dangling);
    expect(() => new SqliteStore(dangling)).toThrow(/ENOENT.*nowhere/);
    expect(() => new SqliteStore(tmp.dir)).toThrow(`${tmp.dir} is a directory, not a database file`);
    expect(() => new SqliteStore(join(tmp.file, 'inside.db'))).toThrow(
      `cannot make the directory of the SQLite store at ${join(tmp.file, 'inside.db')}: a part of its path is a file, not a directory`,
    );
    const loop = join(tmp.dir, 'loop.db');
    symlinkSync(loop, loop);
    expect(() => new SqliteStore(loop)).toThrow(/ELOOP/);
  });

  it('refuses at once a directory it cannot make, where Node 20 would try for ever (under /proc)', () => {
    // In a process of its own, with a time limit: a store that loops would hold this one's event loop.
    const store = join(__dirname, '..', '..', 'dist', 'src', 'store', 'sqlite', 'store.js');
    const script = `try { new (require(${JSON.stringify(store)}).SqliteStore)('/proc/rockets-none/x/y.db') } catch (e) { process.stdout.write(e.message) }`;
    const said = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20_000 });
    expect(said).toBe(
      "cannot make the directory of the SQLite store at /proc/rockets-none/x/y.db: Error: ENOENT: no such file or directory, mkdir '/proc/rockets-none'",
    );
  });

  it('names the file when SQLite cannot open it, as it does not itself', () => {
    const notes = join(tmp.dir, 'notes.txt');
    writeFileSync(notes, 'not a database, but long enough for SQLite to read its header and say so\n'.repeat(10));
    expect(() => new SqliteStore(notes)).toThrow(`cannot open the SQLite store at ${notes}: file is not a database`);
    // Its lock file cannot be opened either (here a directory holds its name).
    const locked = join(tmp.dir, 'locked.db');
    mkdirSync(`${locked}-lock`);
    expect(() => new SqliteStore(locked)).toThrow(
      `cannot open the SQLite store at ${locked}: unable to open database file`,
    );
  });

  it('refuses a file it may read but not write, which SQLite would open read-only without a word', async () => {
    const file = join(tmp.dir, 'read-only.db');
    const store = new SqliteStore(file);
    await store.commit([launched('a', 1)]);
    await store.close();
    // As a file copied in would be: no WAL beside it.
    for (const extra of ['-wal', '-shm']) rmSync(`${file}${extra}`, { force: true });
    const root = process.getuid?.() === 0;
    if (root) {
      // Root may write any file: the store is opened as another user (this process's effective user, for
      // the synchronous constructor alone), in a directory that user may write. It makes the WAL itself, as
      // its own: only the database file is not its to write.
      chmodSync(tmp.dir, 0o777);
      process.seteuid?.(65534);
    } else chmodSync(file, 0o444);
    let opened: SqliteStore | undefined;
    let refusal: unknown;
    try {
      opened = new SqliteStore(file);
    } catch (e) {
      refusal = e;
    } finally {
      if (root) process.seteuid?.(0);
    }
    await opened?.close();
    expect(refusal).toEqual(new Error(`cannot open the SQLite store at ${file}: attempt to write a readonly database`));
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

describe('SqliteStore on a full disk (a small tmpfs: the test mounts one, as root)', () => {
  let disk: SmallDisk | undefined;
  let store: SqliteStore | undefined;
  const filler = (): string => join((disk as SmallDisk).dir, 'filler');
  const database = (): string => join((disk as SmallDisk).dir, 'rockets.db');

  beforeAll(() => {
    disk = mountSmallDisk('1m');
  });
  afterAll(async () => {
    await store?.close().catch(() => undefined);
    disk?.remove();
  });

  /** Takes every byte the disk has left. */
  function fillDisk(): void {
    const fd = openSync(filler(), 'a');
    try {
      for (;;) writeSync(fd, Buffer.alloc(16 * 1024));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
    } finally {
      closeSync(fd);
    }
  }

  const channels = (rockets: readonly RocketView[]) => rockets.map((r) => `${r.channel}${r.lastMessageNumber}`);

  it('reads the rockets as far as the log holds them, writes nothing, and catches up once there is room', async () => {
    // The rockets are held back from the table (a minute, and no bound reached): a read must write them first.
    store = new SqliteStore(database(), {
      projection: { afterMs: 60_000, chunk: 500, maxDirty: 100_000 },
    });
    const launches = Array.from({ length: 200 }, (_, i) => launched(`r${String(i).padStart(3, '0')}`, 1));
    await store.commit(launches);
    fillDisk();
    const all = { sort: 'channel', order: 'asc' } as const;
    const launchedOnly = launches.map((m) => `${m.channel}1`);

    // Rows dirty, the table up to date otherwise: written in a transaction rolled back.
    expect(channels(await store.listRockets(all))).toEqual(launchedOnly);
    expect(await store.stats()).toEqual({ rockets: 200, events: 200, buffered: 0 });
    expect((await store.listGaps(10)).length).toBe(0);

    // A commit that needs room fails; the store forgets what it held, and reads replay the log, rolled back too.
    const increases = launches.map((m) => increased(m.channel, 2, 5));
    await expect(store.commit(increases)).rejects.toMatchObject({ code: 'SQLITE_FULL' });
    expect(channels(await store.listRockets(all))).toEqual(launchedOnly);
    expect((await store.getRocket('r007'))?.lastMessageNumber).toBe(1);
    expect(await store.stats()).toEqual({ rockets: 200, events: 200, buffered: 0 });

    // Room again: the refused messages are taken, and the table is written.
    rmSync(filler());
    expect((await store.commit(increases)).outcomes.every((o) => o.status === 'applied')).toBe(true);
    expect(channels(await store.listRockets(all))).toEqual(launches.map((m) => `${m.channel}2`));
    await store.close();
    const side = new SqliteDatabase(database(), { readonly: true });
    try {
      expect(side.prepare('SELECT count(*) AS n FROM rockets WHERE last_message_number = 2').get()).toEqual({ n: 200 });
    } finally {
      side.close();
    }
  });
});
