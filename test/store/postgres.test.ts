import { Client } from 'pg';
import type { RocketMessage } from '../../src/domain/message';
import type { Rocket } from '../../src/domain/rocket';
import { LanePool } from '../../src/engine/lanes';
import { PostgresStore, type ListenerEvent, type PostgresStoreOptions } from '../../src/store/postgres';
import type { AppendListener, StoredEvent, SubmitOutcome } from '../../src/store/types';
import { delivery, expected, fleet } from '../support/model';
import { admin, DATABASE_URL, describePg, dropSchema, freshSchema, unreachable } from '../support/postgres';
import { parse } from '../support/telemetry';
import { createTestClock, describeStoreContract, increased, launched } from './contract';

const ALL = Number.MAX_SAFE_INTEGER;

if (unreachable === undefined) {
  describeStoreContract('PostgresStore', async (options) => {
    const clock = createTestClock();
    const schema = freshSchema();
    const store = await PostgresStore.open(DATABASE_URL, {
      schema,
      now: clock.now,
      poolSize: 4,
      bufferLimits: options.bufferLimits,
    });
    return {
      store,
      clock,
      cleanup: async () => {
        await store.close();
        await dropSchema(schema);
      },
    };
  });
} else {
  describe.skip('PostgresStore store contract', () => {
    it('needs PostgreSQL', () => undefined);
  });
}

// ---------------------------------------------------------------------------------------------------
// Helpers for several instances on one schema.

interface Recorder {
  readonly calls: StoredEvent[][];
  readonly events: StoredEvent[];
  /** Resolves once an event at or beyond `position` has arrived. */
  until(position: number): Promise<void>;
  readonly off: () => void;
}

function record(store: PostgresStore): Recorder {
  const calls: StoredEvent[][] = [];
  const events: StoredEvent[] = [];
  let waiters: { position: number; resolve: () => void }[] = [];
  let head = 0;
  const listener: AppendListener = (es) => {
    calls.push([...es]);
    events.push(...es);
    for (const e of es) head = Math.max(head, e.position);
    for (const w of waiters.filter((x) => x.position <= head)) w.resolve();
    waiters = waiters.filter((x) => x.position > head);
  };
  return {
    calls,
    events,
    off: store.onAppend(listener),
    until: (position) =>
      position <= head ? Promise.resolve() : new Promise((resolve) => waiters.push({ position, resolve })),
  };
}

const positions = (events: readonly StoredEvent[]): number[] => events.map((e) => e.position);

function expectStrictlyIncreasing(ns: readonly number[]): void {
  for (let i = 1; i < ns.length; i++) expect(ns[i]).toBeGreaterThan(ns[i - 1] as number);
}

/** Listener-connection events of one store, awaitable in order. */
class ListenerLog {
  readonly events: ListenerEvent[] = [];
  private waiters: { state: ListenerEvent['state']; after: number; resolve: (e: ListenerEvent) => void }[] = [];

  readonly hook = (e: ListenerEvent): void => {
    this.events.push(e);
    const i = this.events.length;
    for (const w of this.waiters.filter((x) => x.state === e.state && x.after < i)) w.resolve(e);
    this.waiters = this.waiters.filter((x) => !(x.state === e.state && x.after < i));
  };

  /** The first event of this state after the first `after` events. */
  next(state: ListenerEvent['state'], after = this.events.length): Promise<ListenerEvent> {
    const found = this.events.slice(after).find((e) => e.state === state);
    if (found) return Promise.resolve(found);
    return new Promise((resolve) => this.waiters.push({ state, after, resolve }));
  }
}

/** Polls a condition in the database (a lock wait) until it holds; each round is a real query. */
async function until(c: Client, sql: string, values: unknown[]): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const res = await c.query<{ ok: boolean }>(sql, values);
    if (res.rows[0]?.ok === true) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`condition never held: ${sql}`);
}

/**
 * A reader that only ever asks for `position > last`, as CatchUp does, in a loop until stopped; `stop`
 * resolves to everything it saw.
 */
function tailer(store: PostgresStore, from: number): { stop: () => Promise<StoredEvent[]> } {
  const state = { running: true };
  const seen: StoredEvent[] = [];
  const loop = (async () => {
    let last = from;
    while (state.running) {
      const page = await store.readEvents({ afterPosition: last, limit: 100 });
      for (const e of page) {
        seen.push(e);
        last = e.position;
      }
      await new Promise((r) => setImmediate(r));
    }
    // One last read after the writers are done.
    seen.push(...(await store.readEvents({ afterPosition: last, limit: ALL })));
  })();
  return {
    stop: async () => {
      state.running = false;
      await loop;
      return seen;
    },
  };
}

describePg('PostgresStore with several instances', () => {
  let schema: string;
  const opened: PostgresStore[] = [];

  const open = async (options: PostgresStoreOptions = {}): Promise<PostgresStore> => {
    const store = await PostgresStore.open(DATABASE_URL, { schema, poolSize: 4, ...options });
    opened.push(store);
    return store;
  };

  beforeEach(() => {
    schema = freshSchema();
  });

  afterEach(async () => {
    await Promise.all(opened.splice(0).map((s) => s.close()));
    await dropSchema(schema);
  });

  it('applies a shuffled, duplicated stream spread over two instances exactly once, as the model says', async () => {
    const [a, b] = [await open(), await open()];
    const lanes = [new LanePool(a, 3), new LanePool(b, 3)] as const;
    const histories = fleet(200, 8, 4242, 'two');
    const stream = delivery(histories, 0.4, 99);
    const seen = [record(a), record(b)];
    const tails = [tailer(a, 0), tailer(b, 0)];
    let pick = 7;
    const outcomes = await Promise.all(
      stream.map((envelope) => {
        pick = (pick * 1103515245 + 12345) % 2147483648;
        return lanes[pick % 2 === 0 ? 0 : 1].submit(parse(envelope));
      }),
    );
    await Promise.all(lanes.map((l) => l.close()));
    const tailed = await Promise.all(tails.map((t) => t.stop()));

    const statusOf = (o: SubmitOutcome): string => o.status;
    const unique = histories.flat().length;
    expect(outcomes.filter((o) => statusOf(o) === 'conflict')).toEqual([]);
    expect(outcomes.filter((o) => statusOf(o) !== 'duplicate')).toHaveLength(unique);
    expect(outcomes.filter((o) => statusOf(o) === 'duplicate')).toHaveLength(stream.length - unique);

    for (const h of histories) {
      const model = expected(h);
      const fromA = await a.getRocket(model.channel);
      expect(fromA).toMatchObject({ ...model, buffer: { waitingFor: model.lastMessageNumber + 1, count: 0 } });
      expect(await b.getRocket(model.channel)).toEqual(fromA);
      const events = await a.readEvents({ channel: model.channel, limit: ALL });
      expect(events.map((e) => e.messageNumber)).toEqual(h.map((m) => m.metadata.messageNumber));
    }
    const all = await a.readEvents({ limit: ALL });
    expect(all).toHaveLength(unique);
    expectStrictlyIncreasing(positions(all));
    expect(await b.readEvents({ limit: ALL })).toEqual(all);
    // Readers of `position > last` that ran alongside the writers saw the same log: nothing skipped.
    for (const t of tailed) expect(t).toEqual(all);
    expect(await a.stats()).toEqual({ rockets: histories.length, events: unique, buffered: 0 });
    expect(await b.listRockets({ sort: 'speed', order: 'desc' })).toEqual(
      await a.listRockets({ sort: 'speed', order: 'desc' }),
    );

    // Each instance's feed heard every event of both, in order, once.
    const head = await a.headPosition();
    for (const r of seen) {
      await r.until(head);
      expect(r.events).toEqual(all);
      r.off();
    }
  });

  it('feeds instance B every event committed by instance A, in order, once per commit, with no gap', async () => {
    const [a, b] = [await open(), await open()];
    const onB = record(b);
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => {
        const c = `feed-${i % 10}`;
        const n = Math.floor(i / 10) + 1;
        return a.commit([n === 1 ? launched(c, 1) : increased(c, n, i)]);
      }),
    );
    // Commits of one channel ran concurrently: some only buffered. Fill nothing in; what was applied counts.
    const head = await a.headPosition();
    await onB.until(head);
    const all = await a.readEvents({ limit: ALL });
    expect(onB.events).toEqual(all);
    expectStrictlyIncreasing(positions(onB.events));
    // One listener call per commit of A that appended, with exactly that commit's events.
    const appended = results.filter((r) => r.events.length > 0).map((r) => positions(r.events));
    expect(onB.calls.map(positions).sort((x, y) => (x[0] ?? 0) - (y[0] ?? 0))).toEqual(
      appended.sort((x, y) => (x[0] ?? 0) - (y[0] ?? 0)),
    );
    onB.off();
  });

  it('pages a backlog larger than one read, including one commit larger than a page, to B in order', async () => {
    // A buffers 1,199 messages of one channel before #1 comes: beyond the default per-channel cap.
    const [a, b] = [await open({ bufferLimits: { perChannel: 1_200, total: 1_200 } }), await open()];
    const onB = record(b);
    const big = Array.from({ length: 1_200 }, (_, i) => (i === 0 ? launched('big', 1) : increased('big', i + 1, 1)));
    await a.commit(big.slice().reverse());
    await Promise.all(Array.from({ length: 30 }, (_, i) => a.commit([launched(`small-${i}`, 1)])));
    const head = await a.headPosition();
    await onB.until(head);
    const all = await a.readEvents({ limit: ALL });
    expect(all).toHaveLength(1_230);
    expect(onB.events).toEqual(all);
    expect(await b.getRocket('big')).toMatchObject({ speed: 500 + 1_199, lastMessageNumber: 1_200 });
    onB.off();
  });

  it('rebuilds the projection on one instance while another keeps committing, and ends as the model says', async () => {
    const [a, b] = [await open(), await open()];
    const histories = fleet(40, 12, 77, 'rebuild');
    const stream = delivery(histories, 0.2, 5);
    const lanes = new LanePool(a, 3);
    const submitted = Promise.all(stream.map((e) => lanes.submit(parse(e))));
    const rebuilt = [await b.rebuildProjection(), await b.rebuildProjection()];
    await submitted;
    await lanes.close();
    expect(rebuilt.every((n) => n <= histories.flat().length)).toBe(true);
    for (const h of histories) {
      const model = expected(h);
      expect(await b.getRocket(model.channel)).toMatchObject(model);
    }
    const live = await a.listRockets({ sort: 'channel', order: 'asc' });
    expect(await b.rebuildProjection()).toBe(histories.flat().length);
    expect(await a.listRockets({ sort: 'channel', order: 'asc' })).toEqual(live);
  });

  it('hands B the rocket states of A’s commits along with their events', async () => {
    const [a, b] = [await open(), await open()];
    const rockets: Rocket[] = [];
    const off = b.onAppend((_events, rs) => rockets.push(...rs));
    const onB = record(b);
    const r = await a.commit([launched('x', 1), increased('x', 2, 5), launched('y', 1)]);
    await onB.until(r.events[2]?.position ?? Infinity);
    expect(rockets.sort((p, q) => p.channel.localeCompare(q.channel))).toEqual(
      [...r.rockets].sort((p, q) => p.channel.localeCompare(q.channel)),
    );
    off();
    onB.off();
  });

  it('does not let a position > last reader or a feed skip a transaction that took its position early and commits late', async () => {
    const [a, b] = [await open(), await open()];
    const gate = 0x5107;
    // The slow commit blocks in COMMIT (a deferred trigger waits on a lock this test holds), after its
    // events were inserted: its position is taken but not yet visible.
    await admin(async (c) => {
      await c.query(`
        CREATE FUNCTION "${schema}".slow_gate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock_shared(${gate}); RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER slow_gate AFTER INSERT ON "${schema}".events
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.channel = 'slow')
          EXECUTE FUNCTION "${schema}".slow_gate();`);
    });
    const onA = record(a);
    const onB = record(b);
    await a.commit([launched('before', 1)]);
    const start = await a.headPosition();
    await onB.until(start);

    // A reader that only ever asks for `position > last`, as CatchUp does, running throughout.
    const tail = tailer(b, start);

    const holder = new Client({ connectionString: DATABASE_URL });
    await holder.connect();
    try {
      await holder.query('SELECT pg_advisory_lock($1)', [gate]);
      const slow = a.commit([launched('slow', 1)]);
      await until(
        holder,
        `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
          AND objsubid = 1 AND classid = 0 AND objid = $1) AS ok`,
        [gate],
      );
      // Its position is taken: the sequence moved past the head, but nothing new is visible.
      const seq = await holder.query<{ v: string }>(`SELECT last_value AS v FROM "${schema}".events_position_seq`);
      expect(Number(seq.rows[0]?.v)).toBe(start + 1);

      // A faster commit on B, for another channel, waits behind it for the append lock.
      const fast = b.commit([launched('fast', 1)]);
      await until(
        holder,
        `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
          AND objsubid = 2 AND objid = (hashtext($1)::bigint & 4294967295)::oid) AS ok`,
        [schema],
      );
      expect(await b.readEvents({ afterPosition: start, limit: 100 })).toEqual([]);
      expect(await b.headPosition()).toBe(start);

      await holder.query('SELECT pg_advisory_unlock($1)', [gate]);
      const [rs, rf] = await Promise.all([slow, fast]);
      const slowAt = rs.events[0]?.position ?? NaN;
      const fastAt = rf.events[0]?.position ?? NaN;
      expect(slowAt).toBe(start + 1);
      expect(fastAt).toBeGreaterThan(slowAt);

      await onA.until(fastAt);
      await onB.until(fastAt);
      const tailed = await tail.stop();
      const committed = await a.readEvents({ afterPosition: start, limit: ALL });
      expect(positions(committed)).toEqual([slowAt, fastAt]);
      expect(positions(tailed)).toEqual([slowAt, fastAt]);
      expect(positions(onA.events)).toEqual([start, slowAt, fastAt]);
      expect(positions(onB.events)).toEqual([start, slowAt, fastAt]);
    } finally {
      await tail.stop();
      await holder.end();
      onA.off();
      onB.off();
    }
  });

  it('shows the hazard it guards against: without the append lock a naive reader skips a late commit', async () => {
    // The same `position > last` reader over a plain identity column, written to by two transactions.
    await admin(async (c) => {
      await c.query(`CREATE SCHEMA "${schema}"; CREATE TABLE "${schema}".naive (
        position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)`);
    });
    const [slow, fast, reader] = [new Client(DATABASE_URL), new Client(DATABASE_URL), new Client(DATABASE_URL)];
    await Promise.all([slow.connect(), fast.connect(), reader.connect()]);
    try {
      const read = async (after: number): Promise<number[]> =>
        (
          await reader.query<{ position: string }>(
            `SELECT position FROM "${schema}".naive WHERE position > $1 ORDER BY position`,
            [after],
          )
        ).rows.map((r) => Number(r.position));
      await slow.query(`BEGIN; INSERT INTO "${schema}".naive (v) VALUES ('slow')`);
      await fast.query(`BEGIN; INSERT INTO "${schema}".naive (v) VALUES ('fast'); COMMIT`);
      const first = await read(0);
      expect(first).toEqual([2]);
      await slow.query('COMMIT');
      expect(await read(2)).toEqual([]);
      expect(await read(0)).toEqual([1, 2]);
    } finally {
      await Promise.all([slow.end(), fast.end(), reader.end()]);
    }
  });

  it('reconnects its listener after pg_terminate_backend and catches up on what was committed meanwhile', async () => {
    const a = await open();
    const log = new ListenerLog();
    const b = await open({ onListener: log.hook, reconnectDelayMs: { min: 250, max: 1_000 } });
    const onB = record(b);
    const start = await a.headPosition();
    let written: RocketMessage[] = [];
    let n = 0;
    const batch = (): RocketMessage[] => {
      n++;
      return [n === 1 ? launched('r', 1) : increased('r', n, n), launched(`other-${n}`, 1)];
    };

    // Commit while B's listener is down; if B came back before the commit finished, cut it again.
    let provenDown = false;
    for (let attempt = 0; attempt < 5 && !provenDown; attempt++) {
      const up = log.events.filter((e) => e.state === 'listening').pop() as { state: 'listening'; pid: number };
      const seenBefore = log.events.length;
      const lost = log.next('lost', seenBefore);
      await admin(async (c) => {
        await c.query('SELECT pg_terminate_backend($1)', [up.pid]);
      });
      await lost;
      const msgs = batch();
      written = [...written, ...msgs];
      await a.commit(msgs);
      provenDown = !log.events.slice(seenBefore).some((e) => e.state === 'listening');
      await log.next('listening', seenBefore);
    }
    expect(provenDown).toBe(true);

    let head = await a.headPosition();
    await onB.until(head);
    // And live again through NOTIFY after the reconnect.
    await a.commit(batch());
    head = await a.headPosition();
    await onB.until(head);
    const all = await a.readEvents({ afterPosition: start, limit: ALL });
    expect(onB.events).toEqual(all);
    expectStrictlyIncreasing(positions(onB.events));
    onB.off();
  });

  it('applies migrations once when two instances open the same fresh schema at the same time', async () => {
    const [a, b] = await Promise.all([open(), open()]);
    const c = await open();
    const versions = await admin((cl) =>
      cl.query<{ version: number }>(`SELECT version FROM "${schema}".schema_migrations ORDER BY version`),
    );
    expect(versions.rows.map((r) => r.version)).toEqual([1, 2]);
    await a.commit([launched('m', 1)]);
    expect(await b.getRocket('m')).toMatchObject({ lastMessageNumber: 1 });
    expect(await c.stats()).toEqual({ rockets: 1, events: 1, buffered: 0 });
  });

  it('takes the schema from the URL when the options give none', async () => {
    const url = new URL(DATABASE_URL);
    url.searchParams.set('schema', schema);
    const store = await PostgresStore.open(url.toString());
    opened.push(store);
    expect(store.schema).toBe(schema);
    await store.commit([launched('u', 1)]);
    const rows = await admin((c) => c.query<{ n: string }>(`SELECT count(*) AS n FROM "${schema}".events`));
    expect(Number(rows.rows[0]?.n)).toBe(1);
  });

  it('refuses URLs that are not PostgreSQL and schema names it would have to quote', async () => {
    await expect(PostgresStore.open('mysql://localhost/x')).rejects.toThrow(/postgres:\/\//);
    await expect(PostgresStore.open(DATABASE_URL, { schema: 'bad"name' })).rejects.toThrow(/schema/);
  });

  it('skips each number once when two instances sweep the same stale gaps at once, and both feeds hear it', async () => {
    const clock = createTestClock();
    const [a, b] = [await open({ now: clock.now }), await open({ now: clock.now })];
    // More channels than one skip transaction takes, so the sweeps run several rounds against each other.
    const channels = Array.from({ length: 150 }, (_, i) => `gap-${String(i).padStart(3, '0')}`);
    const [onA, onB] = [record(a), record(b)];
    await a.commit(channels.flatMap((c) => [launched(c, 1), increased(c, 4, 4), increased(c, 6, 6)]));
    const start = await a.headPosition();
    clock.advance(60_001);

    const [byA, byB] = await Promise.all([a.skipGaps(60_000, 'timeout'), b.skipGaps(60_000, 'timeout')]);
    const ranges = [...byA, ...byB].map((g) => `${g.channel}:${g.from}-${g.to}`).sort();
    expect(ranges).toEqual(channels.flatMap((c) => [`${c}:2-3`, `${c}:5-5`]).sort());
    for (const c of channels)
      expect((await a.readEvents({ channel: c, limit: ALL })).map((e) => `${e.messageNumber}${e.messageType}`)).toEqual(
        [
          '1RocketLaunched',
          '2MessageSkipped',
          '3MessageSkipped',
          '4RocketSpeedIncreased',
          '5MessageSkipped',
          '6RocketSpeedIncreased',
        ],
      );
    expect(await b.stats()).toEqual({ rockets: 150, events: 900, buffered: 0 });
    expect(await b.listGaps(1_000)).toEqual([]);

    const head = await a.headPosition();
    const appended = await a.readEvents({ afterPosition: start, limit: ALL });
    expect(appended).toHaveLength(750);
    for (const r of [onA, onB]) {
      await r.until(head);
      expect(r.events.filter((e) => e.position > start)).toEqual(appended);
      r.off();
    }
  });

  it('holds the total buffer cap exactly while several instances buffer at once', async () => {
    const bufferLimits = { perChannel: 10, total: 20 };
    const [a, b] = [await open({ bufferLimits }), await open({ bufferLimits })];
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) => (i % 2 === 0 ? a : b).commit([increased(`c${i}`, 2, 1)])),
    );
    const statuses = results.map((r) => r.outcomes[0]?.status);
    expect(statuses.filter((st) => st === 'buffered')).toHaveLength(20);
    expect(statuses.filter((st) => st === 'refused')).toHaveLength(40);
    expect(await a.stats()).toMatchObject({ buffered: 20 });
    expect(results.flatMap((r) => r.outcomes).find((o) => o.status === 'refused')).toMatchObject({
      cap: 'total',
      limit: 20,
      waitingFor: 1,
    });
  });

  it('closes idempotently', async () => {
    const s = await open();
    await s.close();
    await s.close();
  });
});
