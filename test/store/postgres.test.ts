import { Client } from 'pg';
import type { RocketMessage } from '../../src/domain/message';
import type { Rocket } from '../../src/domain/rocket';
import { LanePool } from '../../src/engine/lanes';
import { openStore } from '../../src/store/open';
import { PostgresStore, type ListenerEvent, type PostgresStoreOptions } from '../../src/store/postgres/store';
import type { AppendListener, CommitResult, StoredEvent, SubmitOutcome } from '../../src/store/types';
import { delivery, expected, fleet } from '../support/model';
import { admin, DATABASE_URL, describePg, dropSchema, freshSchema, unreachable } from '../support/postgres';
import { parse } from '../support/telemetry';
import { createTestClock, describeStoreContract, increased, launched } from './contract';

const ALL = Number.MAX_SAFE_INTEGER;

/** A rocket as the values of a `rockets` row, in the table's column order. */
const rocketRow = (r: Rocket): unknown[] => [
  r.channel,
  r.type,
  r.mission,
  r.speed,
  r.status,
  r.explodedReason,
  r.launchedAt,
  r.updatedAt,
  r.lastMessageNumber,
];

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
      tamperRocket: (r) =>
        admin(async (c) => {
          await c.query(
            `INSERT INTO "${schema}".rockets (channel, type, mission, speed, status, exploded_reason, launched_at,
                                              updated_at, last_message_number)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (channel) DO UPDATE SET type = $2, mission = $3, speed = $4, status = $5,
               exploded_reason = $6, launched_at = $7, updated_at = $8, last_message_number = $9`,
            rocketRow(r),
          );
        }),
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
const statusesOf = (r: CommitResult): string[] => r.outcomes.map((o) => o.status);

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

  /** Ends the listener's connection (pg_terminate_backend) and waits until it is lost; returns the events so far. */
  async cut(): Promise<number> {
    const up = this.events.filter((e) => e.state === 'listening').pop() as { state: 'listening'; pid: number };
    const seenBefore = this.events.length;
    const lost = this.next('lost', seenBefore);
    await admin(async (c) => {
      await c.query('SELECT pg_terminate_backend($1)', [up.pid]);
    });
    await lost;
    return seenBefore;
  }

  /** Whether the listener was listening again at some point after the first `after` events. */
  backSince(after: number): boolean {
    return this.events.slice(after).some((e) => e.state === 'listening');
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

  /** An instance whose sessions are named `<schema>-<name>`, so that waitsOnLock can tell them apart. */
  const openNamed = async (name: string): Promise<PostgresStore> => {
    const url = new URL(DATABASE_URL);
    url.searchParams.set('application_name', `${schema}-${name}`);
    const store = await PostgresStore.open(url.toString(), { schema, poolSize: 2 });
    opened.push(store);
    return store;
  };
  /** For `until`: whether a session named $1 waits for an advisory lock. */
  const waitsOnLock = `SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid
    WHERE l.locktype = 'advisory' AND NOT l.granted AND s.application_name = $1) AS ok`;

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

  it('takes one instant written differently for a duplicate on another instance too', async () => {
    const [a, b] = [await open(), await open()];
    const statuses = (...rs: CommitResult[]) => rs.flatMap((r) => r.outcomes.map((o) => o.status));
    const [one, three] = ['2022-01-01T00:00:00Z', '2022-01-01T00:00:03.5+00:00'];
    await a.commit([launched('t', 1, {}, one), increased('t', 3, 5, three)]);
    const events = await a.readEvents({ limit: ALL });
    // Applied and buffered on A; B finds both in the database.
    const sameOnB = [launched('t', 1, {}, '2022-01-01t01:00:00.000+01:00')];
    sameOnB.push(increased('t', 3, 5, '2022-01-01 00:00:03.5z'));
    expect(statuses(await b.commit(sameOnB))).toEqual(['duplicate', 'duplicate']);
    const later = launched('t', 1, {}, '2022-01-01T00:00:00.001Z');
    expect(statuses(await b.commit([later]))).toEqual(['conflict']);
    // At once on both instances, one instant written two ways: applied once, then a duplicate.
    const both = await Promise.all([
      a.commit([increased('t', 2, 1, '2022-01-01T00:00:02Z')]),
      b.commit([increased('t', 2, 1, '2022-01-01T02:00:02+02:00')]),
    ]);
    expect(statuses(...both).sort()).toEqual(['applied', 'duplicate']);
    expect((await b.readEvents({ limit: ALL })).slice(0, 1)).toEqual(events);
    expect(await b.getRocket('t')).toMatchObject({ speed: 506, lastMessageNumber: 3 });
  });

  it('feeds instance B every event committed by instance A, in order, once per transaction, with no gap', async () => {
    const [a, b] = [await open(), await open()];
    const onA = record(a);
    const onB = record(b);
    // Waves of concurrent commits; a wave may find the transaction of the one before still in flight.
    const sent: Promise<CommitResult>[] = [];
    for (let wave = 0; wave < 4; wave++) {
      for (let i = 0; i < 10; i++)
        sent.push(a.commit([wave === 0 ? launched(`feed-${i}`, 1) : increased(`feed-${i}`, wave + 1, i)]));
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    sent.push(a.commit([launched('feed-last', 1)]));
    const results = await Promise.all(sent);
    const head = await a.headPosition();
    await onB.until(head);
    await onA.until(head);
    const all = await a.readEvents({ limit: ALL });
    expect(all).toHaveLength(41);
    expect(onB.events).toEqual(all);
    expectStrictlyIncreasing(positions(onB.events));
    // One listener call per transaction of A, with exactly its events: on B as on A itself, and as the log
    // groups them by transaction id.
    const byTransaction = await admin((c) =>
      c.query<{ ps: number[] }>(
        `SELECT array_agg(position::int ORDER BY position) AS ps FROM "${schema}".events GROUP BY txid ORDER BY min(position)`,
      ),
    );
    const transactions = byTransaction.rows.map((r) => r.ps);
    expect(transactions.length).toBeGreaterThan(1);
    expect(transactions.length).toBeLessThan(41);
    expect(onB.calls.map(positions)).toEqual(transactions);
    expect(onA.calls.map(positions)).toEqual(transactions);
    // Every call's events lie inside one transaction.
    for (const r of results.filter((x) => x.events.length > 0))
      expect(transactions.some((t) => positions(r.events).every((p) => t.includes(p)))).toBe(true);
    onA.off();
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
    // The commit larger than a page reaches B's listeners in one call, as it reached A's.
    expect(positions(onB.calls[0] ?? [])).toEqual(positions(all.slice(0, 1_200)));
    expect(onB.calls.slice(1).flat()).toEqual(all.slice(1_200));
    expect(await b.getRocket('big')).toMatchObject({ speed: 500 + 1_199, lastMessageNumber: 1_200 });
    onB.off();
  });

  it('hands B commits of A it reads late, whose page ends inside a commit, one call per transaction', async () => {
    const [a, b] = [await open(), await openNamed('b')];
    const onB = record(b);
    await a.commit([launched('before', 1)]);
    const start = await a.headPosition();
    await onB.until(start);
    // B's feed holds off while a commit of B is in flight (the notifications most likely announce that
    // commit). The test holds the channel lock of `hold`, so B's commit of it waits there, before the
    // append lock, and B reads nothing while A commits three groups of 400 events one after another.
    const holder = new Client({ connectionString: DATABASE_URL });
    await holder.connect();
    let heldBack: Promise<CommitResult>;
    const groups = [0, 1, 2].map((k) => Array.from({ length: 400 }, (_, i) => launched(`late-${k}-${i}`, 1)));
    try {
      await holder.query(`SELECT pg_advisory_lock(hashtextextended($1 || '/hold', 0))`, [schema]);
      heldBack = b.commit([launched('hold', 1)]);
      await until(holder, waitsOnLock, [`${schema}-b`]);
      for (const g of groups) expect(statusesOf(await a.commit(g))).toEqual(new Array(400).fill('applied'));
      await holder.query(`SELECT pg_advisory_unlock(hashtextextended($1 || '/hold', 0))`, [schema]);
    } finally {
      await holder.query('SELECT pg_advisory_unlock_all()').catch(() => undefined);
      await holder.end();
    }
    // B then reads the 1,200 events in pages of 500: the first ends 100 events into A's second commit.
    const rh = await heldBack;
    const head = await a.headPosition();
    expect(positions(rh.events)).toEqual([head]);
    await onB.until(head);
    const all = await a.readEvents({ limit: ALL });
    expect(all).toHaveLength(1_202);
    expect(onB.events).toEqual(all);
    expectStrictlyIncreasing(positions(onB.events));
    const byTransaction = await admin((c) =>
      c.query<{ ps: number[] }>(
        `SELECT array_agg(position::int ORDER BY position) AS ps FROM "${schema}".events GROUP BY txid ORDER BY min(position)`,
      ),
    );
    expect(byTransaction.rows.map((r) => r.ps.length)).toEqual([1, 400, 400, 400, 1]);
    expect(onB.calls.map(positions)).toEqual(byTransaction.rows.map((r) => r.ps));
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

  it('hands B a rocket with a commit of A only in the state that commit left it, never a later one', async () => {
    const a = await open();
    const log = new ListenerLog();
    const b = await open({ onListener: log.hook, reconnectDelayMs: { min: 1_000, max: 2_000 } });
    const told: { events: StoredEvent[]; rockets: Rocket[] }[] = [];
    const off = b.onAppend((events, rockets) => told.push({ events: [...events], rockets: [...rockets] }));
    const onB = record(b);
    await a.commit([launched('x', 1)]);
    // B's listener down while A commits one message after another: B then reads them all at once, when
    // the row of x is that of the last commit.
    const seenBefore = await log.cut();
    for (let n = 2; n <= 30; n++) await a.commit([increased('x', n, n)]);
    expect(log.backSince(seenBefore)).toBe(false);
    await onB.until(await a.headPosition());

    const states = told.flatMap(({ events, rockets }) =>
      rockets.map((r) => {
        const numbers = events.filter((e) => e.channel === r.channel).map((e) => e.messageNumber);
        expect(r.lastMessageNumber).toBe(Math.max(...numbers));
        return r.lastMessageNumber;
      }),
    );
    expectStrictlyIncreasing(states);
    expect(states.at(-1)).toBe(30);
    off();
    onB.off();
  });

  /** A commit of `slowBatch` takes its position, then waits in COMMIT while a faster one goes by. */
  const lateCommit = async (slowBatch: RocketMessage[]): Promise<void> => {
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
      const slow = a.commit(slowBatch);
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
  };

  it('does not let a position > last reader or a feed skip a transaction that took its position early and commits late', () =>
    lateCommit([launched('slow', 1)]));

  // Buffering #3 sends the commit the long way, not through rockets_commit_known: each takes the append
  // lock in its own code.
  it('does not let a position > last reader or a feed skip a late commit that went the long way either', () =>
    lateCommit([launched('slow', 1), increased('slow', 3, 3)]));

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
      const seenBefore = await log.cut();
      const msgs = batch();
      written = [...written, ...msgs];
      await a.commit(msgs);
      provenDown = !log.backSince(seenBefore);
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
    expect(versions.rows.map((r) => r.version)).toEqual([1, 2, 3, 4, 5]);
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
    const escape = PostgresStore.open('postgres://postgres:sec%ZZret@127.0.0.1:5432/test');
    await expect(escape).rejects.toThrow(
      "the PostgreSQL URL's password holds a malformed percent escape: write a % as %25",
    );
    await expect(escape).rejects.not.toThrow(/sec/);
    await expect(PostgresStore.open(DATABASE_URL, { schema: 'bad"name' })).rejects.toThrow(/schema/);
  });

  it('refuses a URL that spells schema= otherwise, names a parameter twice or carries one pg would ignore', async () => {
    const withParams = (params: string): string => {
      const url = new URL(DATABASE_URL);
      url.search = `?${params}${url.search === '' ? '' : `&${url.search.slice(1)}`}`;
      return url.toString();
    };
    await expect(PostgresStore.open(withParams(`Schema=${schema}`))).rejects.toThrow(
      'the PostgreSQL URL\'s "Schema=" parameter is spelt "schema=" (lower case)',
    );
    await expect(PostgresStore.open(withParams(`schema=${schema}&schema=other`))).rejects.toThrow(
      'the PostgreSQL URL names "schema=" more than once',
    );
    await expect(PostgresStore.open(withParams(`schema=${schema}&sslmode=disable&sslmode=require`))).rejects.toThrow(
      'the PostgreSQL URL names "sslmode=" more than once',
    );
    // A misspelt sslmode would otherwise connect without TLS; connect_timeout is libpq's, which pg ignores.
    for (const key of ['sslmod', 'connect_timeout', 'client_encoding', 'binary'])
      await expect(PostgresStore.open(withParams(`schema=${schema}&${key}=1`))).rejects.toThrow(
        `the PostgreSQL URL's "${key}=" parameter is not one this server or pg reads; it takes schema=, host=`,
      );
    const tables = await admin((c) =>
      c.query('SELECT 1 FROM information_schema.tables WHERE table_schema = $1', [schema]),
    );
    expect(tables.rowCount).toBe(0);
    // The parameters pg reads still reach it.
    const named = await PostgresStore.open(withParams(`schema=${schema}&application_name=${schema}-app`));
    opened.push(named);
    const seen = await admin((c) =>
      c.query<{ n: string }>('SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1', [
        `${schema}-app`,
      ]),
    );
    expect(Number(seen.rows[0]?.n)).toBeGreaterThan(0);
  });

  it('opens no more pool connections than openStore was given, however many commits and reads wait', async () => {
    const url = new URL(DATABASE_URL);
    url.searchParams.set('schema', schema);
    url.searchParams.set('application_name', `${schema}-pool`);
    const store = await openStore(url.toString(), { postgresPoolSize: 2 });
    try {
      const work = Array.from({ length: 30 }, (_, i) =>
        i % 2 === 0 ? store.commit([launched(`c${i}`, 1)]) : store.listRockets({ sort: 'channel', order: 'asc' }),
      );
      await Promise.all(work);
      const seen = await admin((c) =>
        c.query<{ n: string }>('SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1', [
          `${schema}-pool`,
        ]),
      );
      // The pool's two, and the LISTEN connection.
      expect(Number(seen.rows[0]?.n)).toBeLessThanOrEqual(3);
      expect((await store.stats()).rockets).toBe(15);
    } finally {
      await store.close();
    }
  });

  it('refuses a schema that holds no store when asked for an existing one, and creates nothing', async () => {
    await expect(PostgresStore.open(DATABASE_URL, { schema, existing: true })).rejects.toThrow(
      `schema "${schema}" holds no rockets store yet`,
    );
    const found = await admin((c) => c.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]));
    expect(found.rowCount).toBe(0);
    const store = await open();
    expect(store.location).toMatch(new RegExp(`^postgres://[^@/]+/[^ ]+ \\(schema ${schema}\\)$`));
    const again = await open({ existing: true });
    expect(await again.stats()).toEqual({ rockets: 0, events: 0, buffered: 0 });
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

  it('records concurrent commit() calls of one instance in one transaction, each planned after the calls before it', async () => {
    const [a, b] = [await open(), await open()];
    const onB = record(b);
    const start = await a.headPosition();
    // A plain LISTEN on the schema's channel: it hears every NOTIFY the store sends.
    const listener = new Client({ connectionString: DATABASE_URL });
    await listener.connect();
    const notified: string[] = [];
    listener.on('notification', (n) => notified.push(n.payload ?? ''));
    await listener.query(`LISTEN "rockets_events_${schema}"`);
    try {
      const results = await Promise.all([
        a.commit([launched('g1', 1)]),
        a.commit([increased('g1', 2, 5)]),
        a.commit([launched('g1', 1)]),
        a.commit([launched('g2', 1), increased('g2', 3, 1)]),
        a.commit([increased('g2', 2, 2)]),
      ]);
      // Later calls saw the earlier ones: #2 applied after #1, the redelivered #1 is a duplicate, and the
      // #3 one call buffered was released by the next call.
      expect(results.map(statusesOf)).toEqual([
        ['applied'],
        ['applied'],
        ['duplicate'],
        ['applied', 'buffered'],
        ['applied'],
      ]);
      expect(results.map((r) => r.events.map((e) => `${e.channel}#${e.messageNumber}`))).toEqual([
        ['g1#1'],
        ['g1#2'],
        [],
        ['g2#1'],
        ['g2#2', 'g2#3'],
      ]);
      expect(results.flatMap((r) => positions(r.events))).toEqual([1, 2, 3, 4, 5].map((i) => start + i));
      // Each call has the rockets as of its own end.
      expect(results[0].rockets).toEqual([
        expect.objectContaining({ channel: 'g1', lastMessageNumber: 1, speed: 500 }),
      ]);
      expect(results[1].rockets).toEqual([
        expect.objectContaining({ channel: 'g1', lastMessageNumber: 2, speed: 505 }),
      ]);
      expect(results[3].rockets).toEqual([expect.objectContaining({ channel: 'g2', lastMessageNumber: 1 })]);
      expect(results[4].rockets).toEqual([
        expect.objectContaining({ channel: 'g2', lastMessageNumber: 3, speed: 503 }),
      ]);
      expect(await a.stats()).toEqual({ rockets: 2, events: 5, buffered: 0 });

      // One transaction: one transaction id in the log, one NOTIFY, one listener call on the other instance.
      const tx = await admin((c) =>
        c.query<{ n: string }>(`SELECT count(DISTINCT txid) AS n FROM "${schema}".events WHERE position > $1`, [start]),
      );
      expect(Number(tx.rows[0]?.n)).toBe(1);
      await onB.until(start + 5);
      expect(onB.calls.map(positions)).toEqual([[1, 2, 3, 4, 5].map((i) => start + i)]);
      // A NOTIFY is delivered once its transaction committed; a round trip on the listener's own
      // connection after that lets any other arrive too.
      await listener.query('SELECT 1');
      expect(notified).toEqual([String(start + 5)]);
    } finally {
      await listener.end();
      onB.off();
    }
  });

  it('carries at most 1,000 messages a transaction, so that large groups at once do not fill the lock table', async () => {
    const [a, b] = [await open(), await open()];
    const batch = (name: string): RocketMessage[] =>
      Array.from({ length: 1_000 }, (_, i) => launched(`${name}-${i}`, 1));
    // At once: 20 calls of 1,000 new channels on A, and 10 full submitMessages batches through B's
    // lanes. Merged whole, a transaction would hold 20,000 channel locks, in a lock table of 64 × 100
    // slots by default that every session shares: "out of shared memory".
    const lanes = new LanePool(b, 2);
    try {
      const [onA, onB] = await Promise.all([
        Promise.all(Array.from({ length: 20 }, (_, k) => a.commit(batch(`a${k}`)))),
        Promise.all(Array.from({ length: 10 }, (_, k) => lanes.submitAll(batch(`b${k}`)))),
      ]);
      const statuses = [...onA.flatMap((r) => r.outcomes), ...onB.flat()].map((o) => o.status);
      expect(statuses).toEqual(new Array(30_000).fill('applied'));
    } finally {
      await lanes.close();
    }
    expect(await a.stats()).toEqual({ rockets: 30_000, events: 30_000, buffered: 0 });
    const largest = await admin((c) =>
      c.query<{ n: string }>(`SELECT max(n) AS n FROM (SELECT count(*) AS n FROM "${schema}".events GROUP BY txid) t`),
    );
    expect(Number(largest.rows[0]?.n)).toBe(1_000);
    expect(a.maxBatch).toBe(1_000);
  });

  it('gathers the calls that arrive while its transaction is in flight into the next one, without starting another', async () => {
    // Named, so that its sessions can be told from those of other tests running at the same time.
    const url = new URL(DATABASE_URL);
    url.searchParams.set('application_name', schema);
    const a = await PostgresStore.open(url.toString(), { schema, poolSize: 4 });
    opened.push(a);
    const gate = 0x5108;
    // As above: the transaction for channel `slow` blocks in COMMIT until the test lets it go.
    await admin(async (c) => {
      await c.query(`
        CREATE FUNCTION "${schema}".slow_gate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock_shared(${gate}); RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER slow_gate AFTER INSERT ON "${schema}".events
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.channel = 'slow')
          EXECUTE FUNCTION "${schema}".slow_gate();`);
    });
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
      // Calls in several ticks while that transaction is in flight.
      const later = [a.commit([launched('l1', 1)]), a.commit([launched('l2', 1)])];
      await new Promise((resolve) => setImmediate(resolve));
      later.push(a.commit([launched('l3', 1), increased('l1', 2, 1)]));
      await new Promise((resolve) => setTimeout(resolve, 100));
      later.push(a.commit([increased('l2', 2, 2)]));
      await new Promise((resolve) => setTimeout(resolve, 100));
      // None of them opened a transaction: the only session of this schema in one is the blocked commit.
      const open = await holder.query<{ n: string }>(
        `SELECT count(*) AS n FROM pg_stat_activity WHERE xact_start IS NOT NULL AND application_name = $1`,
        [schema],
      );
      expect(Number(open.rows[0]?.n)).toBe(1);

      await holder.query('SELECT pg_advisory_unlock($1)', [gate]);
      const [first, ...rest] = await Promise.all([slow, ...later]);
      expect(statusesOf(first)).toEqual(['applied']);
      expect(rest.map(statusesOf)).toEqual([['applied'], ['applied'], ['applied', 'applied'], ['applied']]);
      // Two transactions: the slow one, then one for every call that waited for it.
      const byTransaction = await admin((c) =>
        c.query<{ channels: string[] }>(
          `SELECT array_agg(channel || '#' || message_number ORDER BY position) AS channels
            FROM "${schema}".events GROUP BY txid ORDER BY min(position)`,
        ),
      );
      expect(byTransaction.rows.map((r) => r.channels)).toEqual([['slow#1'], ['l1#1', 'l2#1', 'l3#1', 'l1#2', 'l2#2']]);
    } finally {
      await holder.query('SELECT pg_advisory_unlock_all()').catch(() => undefined);
      await holder.end();
    }
  });

  it('rejects every call of a group whose transaction fails, records nothing of any, and goes on', async () => {
    const a = await open();
    await admin(async (c) => {
      await c.query(`
        CREATE FUNCTION "${schema}".boom() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'boom'; END $$;
        CREATE TRIGGER boom AFTER INSERT ON "${schema}".events
          FOR EACH ROW WHEN (NEW.channel = 'boom') EXECUTE FUNCTION "${schema}".boom();`);
    });
    await a.commit([launched('ok', 1)]);
    const settled = await Promise.allSettled([
      a.commit([increased('ok', 2, 1)]),
      a.commit([launched('boom', 1)]),
      a.commit([launched('other', 1), increased('ok', 3, 1)]),
    ]);
    expect(settled.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    for (const r of settled) if (r.status === 'rejected') expect(String(r.reason)).toMatch(/boom/);
    expect(await a.stats()).toEqual({ rockets: 1, events: 1, buffered: 0 });
    expect(await a.getRocket('ok')).toMatchObject({ lastMessageNumber: 1, speed: 500 });
    // The calls can be retried, and the store carries on.
    const retried = await Promise.all([a.commit([increased('ok', 2, 1)]), a.commit([launched('other', 1)])]);
    expect(retried.map(statusesOf)).toEqual([['applied'], ['applied']]);
    expect(await a.getRocket('ok')).toMatchObject({ lastMessageNumber: 2, speed: 501 });
  });

  it('notices a channel changed behind its back (a row, a buffered message, a rival instance) and plans from the database', async () => {
    const [a, b] = [await open(), await open()];
    await a.commit([launched('s', 1), launched('p', 1)]);
    expect(await a.getRocket('s')).toMatchObject({ speed: 500 });
    // Changed without telling any instance: what A remembers of `s` and `p` is now wrong.
    await admin(async (c) => {
      await c.query(`UPDATE "${schema}".rockets SET speed = 900 WHERE channel = 's'`);
      await c.query(
        `INSERT INTO "${schema}".pending (channel, message_number, message_type, message_time, payload, received_at)
          VALUES ('p', 3, 'RocketSpeedIncreased', $1, '{"by":7}', now())`,
        [increased('p', 3, 7).messageTime],
      );
    });
    const [rs, rp] = await Promise.all([a.commit([increased('s', 2, 1)]), a.commit([increased('p', 2, 2)])]);
    expect(statusesOf(rs)).toEqual(['applied']);
    expect(rs.rockets).toEqual([expect.objectContaining({ channel: 's', speed: 901, lastMessageNumber: 2 })]);
    // #2 released the buffered #3.
    expect(rp.events.map((e) => e.messageNumber)).toEqual([2, 3]);
    expect(await a.getRocket('p')).toMatchObject({ speed: 509, lastMessageNumber: 3, buffer: { count: 0 } });

    // A channel B created: A has not seen it, takes its #1 for a new channel, and finds out.
    await b.commit([launched('n', 1)]);
    const rn = await a.commit([launched('n', 1), increased('n', 2, 3)]);
    expect(statusesOf(rn)).toEqual(['duplicate', 'applied']);
    // B moves `s` on; A's next commit of `s` sees it, whether A's feed told it already or not.
    await b.commit([increased('s', 3, 10)]);
    expect(statusesOf(await a.commit([increased('s', 3, 10), increased('s', 4, 1)]))).toEqual(['duplicate', 'applied']);
    expect(await b.getRocket('s')).toMatchObject({ speed: 912, lastMessageNumber: 4 });
    const log = await a.readEvents({ channel: 's', limit: ALL });
    expect(log.map((e) => e.messageNumber)).toEqual([1, 2, 3, 4]);
  });

  it('records a group of channels it knows in one statement, and goes the long way only when the group needs it', async () => {
    const a = await open();
    // A trigger records which way each append came: the one statement, or the long way's script.
    await admin(async (c) => {
      await c.query(`
        CREATE TABLE "${schema}".way (way text);
        CREATE FUNCTION "${schema}".way() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO "${schema}".way
            VALUES (CASE WHEN current_query() LIKE '%rockets_commit_known(%' THEN 'one statement' ELSE 'long' END);
          RETURN NULL;
        END $$;
        CREATE TRIGGER way AFTER INSERT ON "${schema}".events FOR EACH STATEMENT EXECUTE FUNCTION "${schema}".way();`);
    });
    // New channels (their #1), then channels it knows.
    await a.commit([launched('x', 1), launched('y', 1)]);
    await a.commit([increased('x', 2, 1), increased('y', 2, 2)]);
    // A redelivered #2 needs the log to tell a duplicate from a conflict: the long way.
    expect(statusesOf(await a.commit([increased('x', 2, 1), increased('y', 3, 3)]))).toEqual(['duplicate', 'applied']);
    // Then the short way again, from what the long way left.
    await a.commit([increased('x', 3, 4), increased('y', 4, 5)]);
    const ways = await admin((c) => c.query<{ way: string }>(`SELECT way FROM "${schema}".way`));
    expect(ways.rows.map((r) => r.way)).toEqual(['one statement', 'one statement', 'long', 'one statement']);
    expect(await a.getRocket('x')).toMatchObject({ speed: 505, lastMessageNumber: 3 });
    expect(await a.getRocket('y')).toMatchObject({ speed: 510, lastMessageNumber: 4 });
  });

  it('takes the channel lock in the one statement too: it waits for a long-way commit that buffers the next number', async () => {
    const [a, b] = [await openNamed('a'), await openNamed('b')];
    const gate = 0x5109;
    // B's transaction that buffers a message of `c` blocks in COMMIT (a deferred trigger waits on a lock
    // this test holds), after its channel lock was taken and its row written but before anyone sees it.
    await admin(async (c) => {
      await c.query(`
        CREATE FUNCTION "${schema}".buffer_gate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock_shared(${gate}, hashtext(TG_TABLE_SCHEMA)); RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER buffer_gate AFTER INSERT ON "${schema}".pending
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.channel = 'c')
          EXECUTE FUNCTION "${schema}".buffer_gate();`);
    });
    // A knows `c` at #1 (its own commit), so its #2 goes as one statement (rockets_commit_known).
    await a.commit([launched('c', 1)]);
    const holder = new Client({ connectionString: DATABASE_URL });
    await holder.connect();
    let outcomes: [CommitResult, CommitResult];
    let aWentFirst: boolean;
    try {
      await holder.query('SELECT pg_advisory_lock($1, hashtext($2))', [gate, schema]);
      // B reads `c` at #1 under its channel lock and buffers #3: the long way.
      const buffering = b.commit([increased('c', 3, 3)]);
      await until(holder, waitsOnLock, [`${schema}-b`]);
      // Meanwhile A applies #2. Its statement must wait for B's channel lock: without it, its check of the
      // buffer cannot see B's uncommitted #3, both commit, and `c` waits for #3 with #3 in the buffer.
      const state = { settled: false };
      const applying = a.commit([increased('c', 2, 2)]);
      applying.then(
        () => (state.settled = true),
        () => (state.settled = true),
      );
      // Until A's commit has either ended or waits on a lock.
      const deadline = Date.now() + 15_000;
      while (!state.settled && !(await holder.query<{ ok: boolean }>(waitsOnLock, [`${schema}-a`])).rows[0]?.ok) {
        if (Date.now() > deadline) throw new Error("A's commit neither ended nor waited on a lock");
        await new Promise((r) => setTimeout(r, 5));
      }
      aWentFirst = state.settled;
      await holder.query('SELECT pg_advisory_unlock($1, hashtext($2))', [gate, schema]);
      outcomes = await Promise.all([buffering, applying]);
    } finally {
      await holder.query('SELECT pg_advisory_unlock_all()').catch(() => undefined);
      await holder.end();
    }
    // Nothing is left waiting: #3 was released, on both instances' view.
    for (const s of [a, b]) {
      expect(await s.getRocket('c')).toMatchObject({ speed: 505, lastMessageNumber: 3, buffer: { count: 0 } });
      expect(await s.listGaps(100)).toEqual([]);
    }
    expect(await a.stats()).toEqual({ rockets: 1, events: 3, buffered: 0 });
    expect((await b.readEvents({ channel: 'c', limit: ALL })).map((e) => e.messageNumber)).toEqual([1, 2, 3]);
    // A's commit waited for B's, then found #3 buffered and released it with #2.
    const [rb, ra] = outcomes;
    expect(aWentFirst).toBe(false);
    expect(statusesOf(rb)).toEqual(['buffered']);
    expect(statusesOf(ra)).toEqual(['applied']);
    expect(ra.events.map((e) => e.messageNumber)).toEqual([2, 3]);
  });

  it('commits with synchronous_commit on even where the role or the URL turns it off, the long way and a rebuild too', async () => {
    const url = new URL(DATABASE_URL);
    url.searchParams.set('options', '-c synchronous_commit=off');
    const a = await PostgresStore.open(url.toString(), { schema, poolSize: 2 });
    opened.push(a);
    // Triggers record the setting each writing transaction runs with, and what it wrote: an append, a
    // buffered message, or the rebuild's DELETE of the projection (nothing else deletes from `rockets`).
    await admin(async (c) => {
      await c.query(`
        CREATE TABLE "${schema}".seen (id serial, tab text, setting text);
        CREATE FUNCTION "${schema}".seen() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO "${schema}".seen (tab, setting) VALUES (TG_TABLE_NAME, current_setting('synchronous_commit'));
          RETURN NULL;
        END $$;
        CREATE TRIGGER seen AFTER INSERT ON "${schema}".events
          FOR EACH STATEMENT EXECUTE FUNCTION "${schema}".seen();
        CREATE TRIGGER seen AFTER INSERT ON "${schema}".pending
          FOR EACH STATEMENT EXECUTE FUNCTION "${schema}".seen();
        CREATE TRIGGER seen AFTER DELETE ON "${schema}".rockets
          FOR EACH STATEMENT EXECUTE FUNCTION "${schema}".seen();`);
    });
    // Fresh and in-order messages: the one statement (rockets_commit_known).
    await a.commit([launched('d', 1)]);
    await a.commit([increased('d', 2, 1)]);
    await a.commit([increased('d', 3, 1), launched('e', 1)]);
    // The long way (the transaction's BEGIN line): a group that only buffers, then one with a duplicate
    // (#3 again), whose #4 releases the buffered #5.
    expect(statusesOf(await a.commit([increased('d', 5, 1)]))).toEqual(['buffered']);
    const dup = await a.commit([increased('d', 3, 1), increased('d', 4, 1)]);
    expect(statusesOf(dup)).toEqual(['duplicate', 'applied']);
    expect(dup.events.map((e) => e.messageNumber)).toEqual([4, 5]);
    // And the rebuild's transaction.
    expect(await a.rebuildProjection()).toBe(6);
    const seen = await admin((c) =>
      c.query<{ tab: string; setting: string }>(`SELECT tab, setting FROM "${schema}".seen ORDER BY id`),
    );
    expect(seen.rows.map((r) => `${r.tab}: ${r.setting}`)).toEqual([
      'events: on',
      'events: on',
      'events: on',
      'pending: on',
      'events: on',
      'rockets: on',
    ]);
  });

  it('closes idempotently', async () => {
    const s = await open();
    await expect(s.close()).resolves.toBeUndefined();
    await expect(s.close()).resolves.toBeUndefined();
  });
});

describePg('PostgresStore statements whose plans outlive the table sizes they were made for', () => {
  let schema: string;
  let store: PostgresStore | undefined;

  beforeEach(() => {
    schema = freshSchema();
  });

  afterEach(async () => {
    await store?.close();
    store = undefined;
    await dropSchema(schema);
  });

  /** Blocks a statement read or wrote, as EXPLAIN (ANALYZE, BUFFERS) counts them; rolled back after. */
  async function blocksOf(c: Client, sql: string, values: unknown[]): Promise<number> {
    await c.query('BEGIN');
    try {
      const res = await c.query<{ 'QUERY PLAN': { Plan: Record<string, number> }[] }>(
        `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${sql}`,
        values,
      );
      const plan = res.rows[0]?.['QUERY PLAN'][0]?.Plan ?? {};
      return (plan['Shared Hit Blocks'] ?? NaN) + (plan['Shared Read Blocks'] ?? NaN);
    } finally {
      await c.query('ROLLBACK');
    }
  }

  const rocketAt = (channel: string, n: number): Rocket => ({
    channel,
    type: 'Falcon-9',
    mission: 'ARTEMIS',
    speed: 500 + n,
    status: 'flying',
    explodedReason: null,
    launchedAt: '2022-02-02T19:39:05.863Z',
    updatedAt: '2022-02-02T19:39:05.863Z',
    lastMessageNumber: n,
  });

  /** The arguments of rockets_commit_known for message #n of a channel whose row holds rocketAt(n - 1). */
  function commitKnown(channel: string, n: number): unknown[] {
    const was = rocketAt(channel, n - 1);
    const known = {
      ...rocketAt(channel, n),
      wasType: was.type,
      wasMission: was.mission,
      wasSpeed: was.speed,
      wasStatus: was.status,
      wasExplodedReason: was.explodedReason,
      wasLaunchedAt: was.launchedAt,
      wasUpdatedAt: was.updatedAt,
      wasLastMessageNumber: was.lastMessageNumber,
    };
    return [
      1,
      schema,
      `test_${schema}`,
      [channel],
      JSON.stringify([known]),
      '[]',
      JSON.stringify([increased(channel, n, 1)]),
      new Date(),
    ];
  }
  const COMMIT_KNOWN = `SELECT rockets_commit_known($1::integer, $2::text, $3::text, $4::text[], $5::json, $6::json,
    $7::json, $8::timestamptz)`;

  it('commits a cached group and reads a feed page by key after the tables grew past the sizes the plans were made for', async () => {
    store = await PostgresStore.open(DATABASE_URL, { schema, poolSize: 2 });
    await admin(async (c) => {
      await c.query(`SET search_path TO "${schema}"`);
      for (let i = 1; i <= 10; i++)
        await c.query(
          'INSERT INTO rockets VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)',
          rocketRow(rocketAt(`k-${i}`, 1)),
        );
      // Enough calls while the tables are tiny for the session to keep generic plans of every statement.
      for (let i = 1; i <= 8; i++) {
        await c.query(COMMIT_KNOWN, commitKnown(`k-${i}`, 2));
        await c.query('SELECT * FROM rockets_feed($1, 500)', [0]);
      }

      // The fleet grows (and some of it buffers) without the statistics being told.
      await c.query(`INSERT INTO rockets SELECT 'g-' || i, 'Falcon-9', 'ARTEMIS', i, 'flying', NULL, 't', 't', 1
        FROM generate_series(1, 30000) AS i`);
      await c.query(`INSERT INTO pending SELECT 'q-' || i, 3, 'RocketSpeedIncreased', 't', '{"by":1}', now()
        FROM generate_series(1, 5000) AS i`);
      const pages = await c.query<{ n: string }>(`SELECT pg_relation_size('rockets') / 8192 AS n`);
      expect(Number(pages.rows[0]?.n)).toBeGreaterThan(300);

      // One rocket's commit and a page of a few events each touch a few blocks, not the whole of `rockets`.
      expect(await blocksOf(c, COMMIT_KNOWN, commitKnown('k-9', 2))).toBeLessThan(100);
      const head = await c.query<{ p: string }>('SELECT max(position) AS p FROM events');
      expect(await blocksOf(c, 'SELECT * FROM rockets_feed($1, 500)', [Number(head.rows[0]?.p) - 3])).toBeLessThan(100);
    });
  });
});
