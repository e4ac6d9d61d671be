/**
 * PostgresStore, the event store for several instances sharing one database, and its options: what
 * importers use. Its parts sit beside it: the URL and connection settings (connection.ts), the schema
 * (schema.ts), the statements (sql.ts), rows and their conversion (rows.ts), the in-memory planning state
 * (planning.ts) and the append feed (feed.ts).
 */
import { Client, Pool, escapeLiteral, type PoolClient } from 'pg';
import type { RocketMessage } from '../../domain/message';
import { evolve, type Rocket } from '../../domain/rocket';
import {
  gapsToSkip,
  joinSkips,
  SKIP_CHANNELS_PER_TRANSACTION,
  planBatch,
  skipMessages,
  splitSkips,
  type BatchPlan,
} from '../plan';
import {
  DEFAULT_BUFFER_LIMITS,
  toMessage,
  toStoredEvent,
  type AppendListener,
  type BufferLimits,
  type CommitResult,
  type EventQuery,
  type EventStore,
  type Gap,
  type RocketListQuery,
  type RocketView,
  type SkippedGap,
  type StoredEvent,
  type StoreStats,
  takeWithin,
} from '../types';
import { CONNECTION, connectionOf } from './connection';
import { AppendFeed, PAGE } from './feed';
import { ChannelCache, NOT_LOADED, NotLoaded, Overlay, buffersAny, netEffect, type NetEffect } from './planning';
import {
  toEvent,
  toIso,
  toLoaded,
  toView,
  type EventRow,
  type FeedRow,
  type Loaded,
  type PreloadRow,
  type RocketViewRow,
} from './rows';
import { LOCK_APPEND, LOCK_BUFFER, LOCK_REBUILD, SORT_SQL, holdsStore, migrate } from './schema';
import {
  COMMIT_KNOWN_SQL,
  DURABLE,
  EVENT_COLUMNS,
  FEED_SQL,
  GAPS_SQL,
  PREPARE_ALL,
  PRELOAD_SQL,
  RELEASE_SQL,
  ROCKET_INSERT,
  ROCKET_UNNEST,
  ROCKET_VIEW_SQL,
  STALE,
  execute,
  inline,
  lastRows,
  messageColumns,
  resultsOf,
  rocketColumns,
} from './sql';

/** What the LISTEN connection went through; for logs and for tests that cut it. */
export type ListenerEvent =
  { readonly state: 'listening'; readonly pid: number } | { readonly state: 'lost'; readonly error: unknown };

export interface PostgresStoreOptions {
  /**
   * Schema that holds the tables; created when missing. Wins over a `schema=` parameter of the URL;
   * `public` when neither is given. Letters, digits and `_`, at most 48 characters.
   */
  readonly schema?: string | undefined;
  /** Connections in the pool (the LISTEN connection is extra). Default 10. */
  readonly poolSize?: number | undefined;
  /**
   * Clock for `recordedAt`, buffer `receivedAt` and the gap policy's cutoff. Instances sharing a database
   * should keep their clocks in sync (NTP): a skew shifts the gap timeout by as much.
   */
  readonly now?: (() => Date) | undefined;
  /** Bounds of the reorder buffer; DEFAULT_BUFFER_LIMITS when not given. */
  readonly bufferLimits?: BufferLimits | undefined;
  /** Backoff between reconnection attempts of the LISTEN connection, doubling from `min` to `max`. */
  readonly reconnectDelayMs?: { readonly min: number; readonly max: number } | undefined;
  /** Told when the LISTEN connection is up or lost. A hook that throws is ignored. */
  readonly onListener?: ((event: ListenerEvent) => void) | undefined;
  /** Refuse a schema that holds no store yet, instead of creating one (for `--rebuild`). */
  readonly existing?: boolean | undefined;
}

/**
 * The most messages a group commit merges (maxBatch). Each channel of a transaction holds an advisory
 * lock to COMMIT, in the server's lock table (about max_locks_per_transaction × max_connections slots,
 * shared by every session): a group without bound fills it under load, and fails with "out of shared
 * memory". A lane's share of one submitMessages call is at most 1,000 messages, so it still goes whole.
 */
const MAX_BATCH = 1_000;
/** Channels ChannelCache holds at most: some MB. */
const KNOWN_CHANNELS = 20_000;
/**
 * Group commits that go the long way after ChannelCache's check failed: another instance is likely
 * writing the same channels, and each failed check costs a round trip and a rollback.
 */
const STALE_BACKOFF = 8;

/** A commit() call waiting for its group's transaction. */
interface Call {
  readonly messages: readonly RocketMessage[];
  readonly resolve: (r: CommitResult) => void;
  readonly reject: (e: unknown) => void;
}

/** What one transaction recorded: its plans in order, the events of each, and the rockets it changed. */
interface Recorded {
  readonly plans: readonly BatchPlan[];
  readonly events: readonly (readonly StoredEvent[])[];
  /** Final state of every rocket the transaction changed. */
  readonly rockets: readonly Rocket[];
  /** Settles once the feed handed the events to the listeners (see AppendFeed.appended). */
  readonly delivered: Promise<void>;
}

/**
 * The event store on PostgreSQL, for several instances sharing one database.
 *
 * Group commit: an instance runs one transaction at a time. Every commit() call that arrives while one
 * is in flight, or in the same tick, waits for the next, and that one records them all, in call order,
 * each call planned against the state the calls before it left (as SqliteStore does); all, or as many
 * as hold at most MAX_BATCH messages (one at least), the rest waiting for the next. Each call still
 * gets its own CommitResult: its outcomes, the events it appended, the rockets it changed as of its end.
 * The transaction is one commit for the listeners (one call, on every instance), and if it fails every
 * call of it rejects and nothing of any of them is recorded. So the WAL flush and the append lock below
 * are paid once per group, at most one transaction per instance holds or waits for that lock, and
 * groups grow with the load. The gap policy's skip transactions take their turn in the same line.
 *
 * A transaction is at most three round trips: (1) BEGIN, the locks and one preload of everything the
 * planner may ask (rockets, buffers, applied messages with the numbers of the group's messages); the
 * plans are made in memory; (2) only when a plan buffers: the buffer lock and the count (below); (3)
 * the projection and buffer writes, the append lock, the append, NOTIFY and COMMIT. Several statements
 * go in one simple query; the checks that must stop a COMMIT run inside statements on the server
 * (rockets_assert), so a failed one aborts the transaction before it. `synchronous_commit` is turned
 * back on for the transaction should the server or role have it off: a call resolves only once its
 * transaction's WAL is flushed.
 *
 * Most groups take one round trip and one statement: each instance remembers the rocket row it last saw
 * committed for recently used channels that buffer nothing (ChannelCache), plans the group from that, and
 * calls rockets_commit_known, a function of the schema that takes the locks, checks the remembered rows,
 * writes, appends and notifies; its statement's implicit transaction commits as it ends. Prepared once
 * per connection, it costs the server no parsing or planning per group and the client no SQL text. The
 * check runs under the channel locks and compares every column (each row is updated only where it still
 * holds what the cache says), so the plan stands on exactly the state a preload would have read; if
 * anything differs (another instance wrote the channel, a rebuild changed a row, something was buffered)
 * it raises, the transaction rolls back, and the group is done again the long way. A group that would
 * look up an applied message (a duplicate or conflict) or buffer anything always takes the long way.
 *
 * Per-channel serialisation is in the database: each transaction takes `pg_advisory_xact_lock` on a
 * hash of each of its channels, in ascending key order (so two transactions never wait on each other in
 * a cycle), before it reads or checks the state it plans from. The buffer is the `pending` table.
 * Events, projection and buffer change in one transaction; the unique (channel, message_number) key is
 * the last line against a duplicate that got past the locks (the transaction then fails whole, and the
 * retry sees the duplicate).
 *
 * Global order: an identity value is taken at insert but becomes visible only at commit, so with
 * concurrent writers a reader of `position > last` could see 11 before 10 commits and then skip 10 for
 * good. Every transaction therefore takes one more advisory lock, global to the schema, as its last
 * step: after all per-channel work, right before it inserts its events, and holds it through COMMIT.
 * PostgreSQL releases transaction locks only after the commit is visible to new snapshots, so positions
 * are taken and become visible in the same order: any snapshot sees a prefix of the log (an aborted
 * insert leaves a hole that no later commit fills, which readers pass harmlessly). `position > last` is
 * then a sound checkpoint for readEvents and for the feed, and positions stay one number, monotonic in
 * commit order. The cost is that appends of all instances serialise for the insert and the commit's WAL
 * flush only (in the same round trip as the lock, so no client latency is inside it); the work before
 * it runs in parallel. (Emmett's xid/snapshot filter avoids even that, but orders by (xid, position),
 * which would break the monotonic-position contract CatchUp relies on.)
 *
 * Buffer caps: the per-channel cap is decided under the channel's lock. A transaction that buffers also
 * takes a buffer lock, global to the schema, after its channel locks and before the append lock, and
 * counts `pending` under it: the total cap holds exactly across instances, and only buffering
 * transactions pay for the count. The gap policy's skips are transactions too: same locks, same
 * planner, same feed.
 */
export class PostgresStore implements EventStore {
  readonly kind = 'postgres';
  readonly maxBatch = MAX_BATCH;

  get location(): string {
    const url = new URL(this.url);
    return `postgres://${url.host}${url.pathname} (schema ${this.schema})`;
  }
  private readonly feed: AppendFeed;
  private readonly limits: BufferLimits;
  private listener: Client | undefined;
  private reconnect: NodeJS.Timeout | undefined;
  private reconnectDelay: number;
  private closing: Promise<void> | undefined;
  private readonly known = new ChannelCache(KNOWN_CHANNELS);
  /** Group commits left that do not try ChannelCache, after its check failed (see STALE_BACKOFF). */
  private staleBackoff = 0;
  /** Calls waiting for the next group commit. */
  private readonly queue: Call[] = [];
  /** A flush is chained on `tail` that has not taken the queue yet. */
  private flushScheduled = false;
  /** Settles once the last transaction chained by `serially` has ended. */
  private tail: Promise<void> = Promise.resolve();
  /**
   * Opens a commit's transaction. It takes the rebuild lock shared, and turns `synchronous_commit` back
   * on should the server or the role have it off: a commit resolves only once its WAL is flushed.
   */
  private readonly begin: string;

  private constructor(
    private readonly pool: Pool,
    private readonly url: string,
    readonly schema: string,
    /** hashtext(schema): the second half of this schema's global lock keys. */
    private readonly schemaKey: number,
    head: number,
    private readonly options: PostgresStoreOptions,
  ) {
    const delays = options.reconnectDelayMs ?? { min: 100, max: 5_000 };
    this.limits = options.bufferLimits ?? DEFAULT_BUFFER_LIMITS;
    this.reconnectDelay = delays.min;
    this.feed = new AppendFeed(
      head,
      (after, limit) => this.readFeed(after, limit),
      delays,
      (events) => {
        for (const e of events) this.known.delete(e.channel);
      },
    );
    this.begin = `BEGIN; SELECT pg_advisory_xact_lock_shared(${LOCK_REBUILD}, ${schemaKey}), ${DURABLE}`;
  }

  /** LISTEN/NOTIFY channel of this schema. */
  private get channelName(): string {
    return `rockets_events_${this.schema}`;
  }

  /**
   * Connects, applies pending migrations and starts listening. `url` is `postgres://…` or
   * `postgresql://…`; its `schema` parameter is read here and not passed on to the driver.
   * Rejects (leaving nothing open) when the database cannot be reached or migrated.
   */
  static async open(url: string, options: PostgresStoreOptions = {}): Promise<PostgresStore> {
    const { connectionString, schema } = connectionOf(url, options.schema);
    const pool = new Pool({ connectionString, max: options.poolSize ?? 10, ...CONNECTION });
    // An idle connection that dies is dropped by the pool; the next query opens a new one.
    pool.on('error', () => undefined);
    let store: PostgresStore | undefined;
    try {
      if (options.existing === true && !(await holdsStore(pool, schema)))
        throw new Error(`schema "${schema}" holds no rockets store yet`);
      const schemaKey = await migrate(pool, schema);
      const head = await queryHead(pool);
      store = new PostgresStore(pool, connectionString, schema, schemaKey, head, options);
      await store.listen();
      // Anything committed between reading the head and LISTEN is picked up now.
      store.feed.catchUp();
      return store;
    } catch (e) {
      if (store) await store.close();
      else await pool.end();
      // pg's messages name the server, role or database, never the password.
      throw new Error(`cannot open the PostgreSQL store: ${e instanceof Error ? e.message : String(e)}`, {
        cause: e,
      });
    }
  }

  /**
   * Queued for this instance's next transaction: every call that arrives while one is in flight, or in
   * the same tick, is recorded by the same transaction, up to MAX_BATCH messages (see the class
   * comment).
   */
  commit(messages: readonly RocketMessage[]): Promise<CommitResult> {
    if (messages.length === 0) return Promise.resolve({ outcomes: [], events: [], rockets: [] });
    if (this.closing) return Promise.reject(new Error('the PostgreSQL store is closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ messages, resolve, reject });
      this.scheduleFlush();
    });
  }

  /** Chains a flush after this instance's transactions, unless one that has not taken the queue is. */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    void this.serially(() => this.flush());
  }

  async listGaps(limit: number): Promise<Gap[]> {
    if (limit <= 0) return [];
    const res = await this.pool.query<{ channel: string; waiting_for: string; count: string; oldest: Date }>(GAPS_SQL, [
      limit,
    ]);
    return res.rows.map((g) => ({
      channel: g.channel,
      waitingFor: Number(g.waiting_for),
      count: Number(g.count),
      oldestSince: toIso(g.oldest),
    }));
  }

  /**
   * Skips in transactions of a bounded number of channels, each under the same channel locks as a commit:
   * a channel's state is read after its lock is granted, so when several instances sweep at once the later
   * one finds the gap already skipped and records nothing. Each transaction takes its turn with this
   * instance's group commits. Once the store is closing it stops after the transaction in hand.
   */
  async skipGaps(olderThanMs: number, reason: string): Promise<SkippedGap[]> {
    const now = this.now();
    const cutoff = now.getTime() - olderThanMs;
    const skipped: SkippedGap[] = [];
    for (let round = 0; ; round++) {
      // A closing store takes no new transaction: what was skipped so far stands.
      if (this.closing) {
        if (round === 0) throw new Error('the PostgreSQL store is closed');
        break;
      }
      const found = await this.pool.query<{ channel: string }>(
        'SELECT DISTINCT channel FROM pending WHERE received_at < $1 LIMIT $2',
        [new Date(cutoff), SKIP_CHANNELS_PER_TRANSACTION],
      );
      const channels = found.rows.map((r) => r.channel);
      if (channels.length === 0) break;
      let gaps: SkippedGap[] = [];
      let cut = false as boolean; // set in the transaction below
      // One at a time with this instance's group commits: it too holds the append lock to its COMMIT.
      const recorded = await this.serially(() =>
        this.transact(channels, [], (loaded) => {
          const stale = channels.flatMap((channel) =>
            gapsToSkip(
              channel,
              (loaded.rockets.get(channel)?.lastMessageNumber ?? 0) + 1,
              loaded.arrivals.get(channel) ?? [],
              cutoff,
            ),
          );
          const [taken, left] = splitSkips(stale);
          gaps = taken;
          cut = left.length > 0;
          return [planBatch(skipMessages(gaps, now.toISOString(), reason), new Overlay(loaded))];
        }),
      );
      await recorded.delivered;
      skipped.push(...gaps);
      // Each channel found is now free of stale gaps, unless the transaction was cut short; none skipped means
      // another instance got there first.
      if (gaps.length === 0 || (channels.length < SKIP_CHANNELS_PER_TRANSACTION && !cut)) break;
    }
    return joinSkips(skipped);
  }

  /**
   * Runs `work` after every transaction this instance started before: one transaction at a time, so at
   * most one of this instance's holds or waits for the append lock. Resolves or rejects as `work` does.
   */
  private serially<T>(work: () => Promise<T>): Promise<T> {
    const run = this.tail.then(work);
    this.tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /**
   * One group commit: takes the calls queued by the time it starts (a tick after the transaction
   * before it ended, so the callers that one resolved are in), as many as hold at most MAX_BATCH
   * messages and at least one, and records them in one transaction, each call planned after the ones
   * before it; the rest go to the next flush, which it chains. Never rejects: a failure rejects every
   * call of the group.
   */
  private async flush(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.flushScheduled = false;
    if (this.queue.length === 0) return;
    const calls = takeWithin(this.queue, MAX_BATCH);
    if (this.queue.length > 0) this.scheduleFlush();
    const messages = calls.flatMap((call) => call.messages);
    const channels = [...new Set(messages.map((m) => m.channel))];
    const planGroup = (loaded: Loaded, buffered: number): BatchPlan[] => {
      const source = new Overlay(loaded);
      let count = buffered;
      return calls.map((call) => {
        const plan = planBatch(call.messages, source, { limits: this.limits, buffered: count });
        source.advance(plan);
        count += plan.buffered.length - plan.released.length;
        return plan;
      });
    };
    let recorded: Recorded;
    try {
      recorded =
        (await this.transactFromCache(channels, messages, planGroup)) ??
        (await this.transact(channels, messages, planGroup));
    } catch (e) {
      for (const call of calls) call.reject(e);
      return;
    }
    // Outside the serial chain: the next transaction need not wait for the listeners.
    void recorded.delivered.then(() =>
      calls.forEach((call, i) => {
        const plan = recorded.plans[i] as BatchPlan;
        call.resolve({
          outcomes: plan.outcomes,
          events: recorded.events[i] ?? [],
          rockets: plan.rockets,
        });
      }),
    );
  }

  /**
   * A group commit in one round trip and one statement, planned from ChannelCache instead of a preload:
   * rockets_commit_known takes the same locks in the same order as `transact`, checks under the channel
   * locks that the cache was right (each rocket row equal in every column, each absent one absent,
   * nothing buffered), writes, appends and notifies; the statement's implicit transaction commits as it
   * ends. Only when the plan needs nothing more: every channel cached, no applied message looked up (a
   * duplicate or conflict needs the log), nothing buffered even for a moment (the total cap needs the
   * count), every channel changed; a channel not cached whose message #1 is in the group is taken to be
   * new (no rocket, nothing buffered), which the check verifies like the rest. Resolves to undefined
   * when it cannot be used or the check failed (nothing was written, the entries are dropped, and the
   * next STALE_BACKOFF groups do not try): `transact` then does it the long way.
   */
  private async transactFromCache(
    channels: readonly string[],
    messages: readonly RocketMessage[],
    planGroup: (loaded: Loaded, buffered: number) => BatchPlan[],
  ): Promise<Recorded | undefined> {
    if (this.staleBackoff > 0) {
      this.staleBackoff--;
      return undefined;
    }
    const firsts = new Set(messages.filter((m) => m.messageNumber === 1).map((m) => m.channel));
    const rockets = new Map<string, Rocket>();
    for (const channel of channels) {
      const r = this.known.get(channel);
      // Not cached, but its message #1 is here: most likely a new channel, and the check says if not.
      if (r === undefined && !firsts.has(channel)) return undefined;
      if (r) rockets.set(channel, r);
    }
    const loaded: Loaded = { rockets, pending: new Map(), arrivals: new Map(), twins: NOT_LOADED };
    let plans: BatchPlan[];
    try {
      plans = planGroup(loaded, 0);
    } catch (e) {
      if (e instanceof NotLoaded) return undefined;
      throw e;
    }
    if (buffersAny(plans)) return undefined;
    const net = netEffect(plans);
    // The check rides on each channel's write, so every channel must change; and every rocket must fit in
    // JSON (validation keeps speeds finite: this guards the store's own contract only).
    if (
      net.applied.length === 0 ||
      net.rockets.size !== channels.length ||
      [...net.rockets.values(), ...rockets.values()].some((r) => !Number.isFinite(r.speed))
    )
      return undefined;
    // Rockets that exist, with the columns the cache holds for them (`was*`), and rockets that do not yet.
    const known: object[] = [];
    const fresh: Rocket[] = [];
    for (const r of net.rockets.values()) {
      const was = rockets.get(r.channel);
      if (was === undefined) fresh.push(r);
      else
        known.push({
          ...r,
          wasType: was.type,
          wasMission: was.mission,
          wasSpeed: was.speed,
          wasStatus: was.status,
          wasExplodedReason: was.explodedReason,
          wasLaunchedAt: was.launchedAt,
          wasUpdatedAt: was.updatedAt,
          wasLastMessageNumber: was.lastMessageNumber,
        });
    }
    const at = this.now();
    this.feed.committing();
    try {
      const res = await this.pool.query<{ positions: string[] }>({
        name: 'rockets-commit-known',
        text: COMMIT_KNOWN_SQL,
        values: [
          this.schemaKey,
          this.schema,
          this.channelName,
          channels,
          JSON.stringify(known),
          JSON.stringify(fresh),
          JSON.stringify(net.applied),
          at,
        ],
      });
      const recorded = this.recorded(plans, net, res.rows[0]?.positions ?? [], at);
      this.remember(channels, loaded, net);
      return recorded;
    } catch (e) {
      for (const channel of channels) this.known.delete(channel);
      if (isServerError(e) && e instanceof Error && e.message === STALE) {
        this.staleBackoff = STALE_BACKOFF;
        return undefined;
      }
      throw e;
    } finally {
      this.feed.committed();
    }
  }

  /**
   * One transaction in three round trips at most: (1) BEGIN, the channel locks (in ascending key order)
   * and the preload of everything `plan` may ask about the channels and the messages' numbers; then
   * `plan`, with the number of buffered messages taken as 0; (2) only if a plan buffers: the buffer lock
   * and the count, and `plan` again with it; (3) `finish`.
   */
  private async transact(
    channels: readonly string[],
    messages: readonly RocketMessage[],
    plan: (loaded: Loaded, buffered: number) => BatchPlan[],
  ): Promise<Recorded> {
    const at = this.now();
    const begin = [
      this.begin,
      execute('rockets_lock_channels', [this.schema, channels]),
      inline(PRELOAD_SQL, [channels, messages.map((m) => m.channel), messages.map((m) => m.messageNumber)]),
    ].join(';\n');
    return this.transaction(async (c) => {
      const loaded = toLoaded(lastRows<PreloadRow>(await c.query(begin))[0]);
      let plans = plan(loaded, 0);
      // Counting the buffer costs a scan of `pending`: only a transaction with a message to buffer pays
      // it (even one its batch then drains: see buffersAny). It then counts under the buffer lock, which
      // every buffering transaction holds to its end, so the count includes every one that buffered
      // before and the total cap is exact across instances. Two statements: the count's snapshot is
      // taken after the lock is granted.
      if (buffersAny(plans)) {
        const counted = await c.query(
          `SELECT pg_advisory_xact_lock(${LOCK_BUFFER}, ${this.schemaKey}); SELECT count(*) AS n FROM pending`,
        );
        plans = plan(loaded, Number(lastRows<{ n: string }>(counted)[0]?.n));
      }
      return this.finish(c, [], { channels, loaded, plans, at });
    }).catch((e: unknown) => {
      for (const channel of channels) this.known.delete(channel);
      throw e;
    });
  }

  /**
   * The last round trip of a transaction: `first` (statements that go before, if any), the projection
   * and buffer writes, the append lock, the append, NOTIFY and COMMIT. Its checks run on the server, so
   * a failed one keeps COMMIT from running. Then remembers the channels' state in ChannelCache and hands
   * the events to the feed.
   */
  private async finish(
    c: PoolClient,
    first: readonly string[],
    t: { channels: readonly string[]; loaded: Loaded; plans: readonly BatchPlan[]; at: Date },
  ): Promise<Recorded> {
    const { channels, loaded, plans, at } = t;
    const net = netEffect(plans);
    const script = [...first];
    if (net.rockets.size > 0) script.push(execute('rockets_upsert', rocketColumns([...net.rockets.values()])));
    if (net.released.length > 0)
      script.push(inline(RELEASE_SQL, [net.released.map((m) => m.channel), net.released.map((m) => m.messageNumber)]));
    if (net.buffered.length > 0) script.push(execute('rockets_buffer', [...messageColumns(net.buffered), at]));
    const appends = net.applied.length > 0;
    if (appends)
      // Last step before COMMIT: positions are taken and become visible in one global order.
      script.push(
        `SELECT pg_advisory_xact_lock(${LOCK_APPEND}, ${this.schemaKey})`,
        execute('rockets_append', [...messageColumns(net.applied), at]),
        `SELECT pg_notify(${escapeLiteral(this.channelName)}, currval('events_position_seq')::text)`,
      );
    script.push('COMMIT');

    let recorded: Recorded;
    if (!appends) {
      await c.query(script.join(';\n'));
      recorded = { plans, events: plans.map(() => []), rockets: [], delivered: Promise.resolve() };
    } else {
      this.feed.committing();
      try {
        const done = resultsOf(await c.query(script.join(';\n')));
        // One result per statement: the append's is the third from the end, before NOTIFY's and COMMIT's.
        const rows = (done[done.length - 3]?.rows ?? []) as { position: string }[];
        recorded = this.recorded(
          plans,
          net,
          rows.map((r) => r.position),
          at,
        );
      } finally {
        this.feed.committed();
      }
    }
    this.remember(channels, loaded, net);
    return recorded;
  }

  /** A committed transaction's events, from its plans and the positions of its appends; hands them to the feed. */
  private recorded(
    plans: readonly BatchPlan[],
    net: NetEffect,
    positions: readonly (string | number)[],
    at: Date,
  ): Recorded {
    const recordedAt = at.toISOString();
    let next = 0;
    const events = plans.map((p) => p.applied.map((m) => toStoredEvent(m, Number(positions[next++]), recordedAt)));
    const all = events.flat();
    const rockets = [...net.rockets.values()];
    const delivered = this.feed.appended({
      first: all[0]?.position ?? NaN,
      last: all[all.length - 1]?.position ?? NaN,
      events: all,
      rockets,
    });
    return { plans, events, rockets, delivered };
  }

  /** Remembers in ChannelCache what the channels of a committed transaction hold now; not those that buffer. */
  private remember(channels: readonly string[], loaded: Loaded, net: NetEffect): void {
    const left = new Map<string, number>();
    for (const [channel, p] of loaded.pending) left.set(channel, p.size);
    for (const m of net.released) left.set(m.channel, (left.get(m.channel) ?? 0) - 1);
    for (const m of net.buffered) left.set(m.channel, (left.get(m.channel) ?? 0) + 1);
    for (const channel of channels)
      if ((left.get(channel) ?? 0) === 0)
        this.known.set(channel, net.rockets.get(channel) ?? loaded.rockets.get(channel) ?? null);
      else this.known.delete(channel);
  }

  onAppend(listener: AppendListener): () => void {
    this.feed.listeners.add(listener);
    return () => this.feed.listeners.delete(listener);
  }

  async getRocket(channel: string): Promise<RocketView | undefined> {
    const res = await this.pool.query<RocketViewRow>(`${ROCKET_VIEW_SQL} WHERE r.channel = $1`, [channel]);
    const row = res.rows[0];
    return row && toView(row);
  }

  async listRockets(q: RocketListQuery): Promise<RocketView[]> {
    const sort = SORT_SQL[q.sort];
    const dir = q.order === 'desc' ? 'DESC' : 'ASC';
    const where: string[] = [];
    const values: unknown[] = [];
    const param = (v: unknown): string => {
      values.push(v);
      return `$${values.length}`;
    };
    if (q.status !== undefined) where.push(`r.status = ${param(q.status)}`);
    if (q.after !== undefined) {
      const cmp = q.order === 'desc' ? '<' : '>';
      const key = sort.numeric ? Number(q.after.key) : String(q.after.key);
      if (typeof key === 'number' && Number.isNaN(key)) {
        // As the memory store: a key that is no number compares equal, so the channel decides.
        where.push(`r.channel ${cmp} ${param(q.after.channel)}`);
      } else {
        const k = `${param(key)}::${sort.numeric ? 'float8' : 'text'}`;
        where.push(`(${sort.expr}, r.channel) ${cmp} (${k}, ${param(q.after.channel)}::text)`);
      }
    }
    let sql = `${ROCKET_VIEW_SQL}${where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''}
      ORDER BY ${sort.expr} ${dir}, r.channel ${dir}`;
    if (q.limit !== undefined) sql += ` LIMIT ${param(q.limit)}`;
    const res = await this.pool.query<RocketViewRow>(sql, values);
    return res.rows.map(toView);
  }

  async readEvents(q: EventQuery): Promise<StoredEvent[]> {
    const where: string[] = [];
    const values: unknown[] = [];
    const param = (v: unknown): string => {
      values.push(v);
      return `$${values.length}`;
    };
    if (q.channel !== undefined) where.push(`channel = ${param(q.channel)}`);
    if (q.afterPosition !== undefined) where.push(`position > ${param(q.afterPosition)}`);
    if (q.afterMessageNumber !== undefined) where.push(`message_number > ${param(q.afterMessageNumber)}`);
    const sql = `SELECT ${EVENT_COLUMNS} FROM events${where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''}
      ORDER BY position LIMIT ${param(q.limit)}`;
    const res = await this.pool.query<EventRow>(sql, values);
    return res.rows.map(toEvent);
  }

  headPosition(): Promise<number> {
    return queryHead(this.pool);
  }

  /**
   * Counts without scanning the log, which grows without bound while `/health` reads this on every
   * probe. A channel's events are its messages 1 to its rocket's `last_message_number` (the sequencer
   * applies none past a gap), so their sum is the number of events; `position`, an identity, skips the
   * numbers a rolled-back commit took, so it cannot serve as SQLite's does. `pending` is bounded.
   */
  async stats(): Promise<StoreStats> {
    const res = await this.pool.query<{ rockets: string; events: string; buffered: string }>(
      `SELECT r.rockets, r.events, (SELECT count(*) FROM pending) AS buffered
        FROM (SELECT count(*) AS rockets, COALESCE(sum(last_message_number), 0) AS events FROM rockets) r`,
    );
    const row = res.rows[0];
    return { rockets: Number(row?.rockets), events: Number(row?.events), buffered: Number(row?.buffered) };
  }

  /**
   * Replays the log into an emptied projection in one transaction. It holds the rebuild lock
   * exclusively, so it waits for commits in flight (they hold it shared) and commits wait for it;
   * readers keep seeing the old projection until it commits. Each channel's events are replayed in
   * (channel, number) keyset pages: a rocket depends only on its own events, whose number order is
   * their position order, so the result equals a replay in global position order while memory holds
   * one page and one rocket.
   */
  rebuildProjection(): Promise<number> {
    const begin = `BEGIN; SELECT pg_advisory_xact_lock(${LOCK_REBUILD}, ${this.schemaKey}), ${DURABLE}`;
    return this.transaction(async (c) => {
      await c.query(`${begin}; DELETE FROM rockets`);
      let replayed = 0;
      let current: Rocket | undefined;
      let after: [string, number] | undefined;
      for (;;) {
        const res = await c.query<EventRow>(
          after
            ? `SELECT ${EVENT_COLUMNS} FROM events WHERE (channel, message_number) > ($2::text, $3::bigint)
                ORDER BY channel, message_number LIMIT $1`
            : `SELECT ${EVENT_COLUMNS} FROM events ORDER BY channel, message_number LIMIT $1`,
          after ? [PAGE, ...after] : [PAGE],
        );
        const done: Rocket[] = [];
        for (const row of res.rows) {
          const e = toEvent(row);
          if (current !== undefined && current.channel !== e.channel) {
            done.push(current);
            current = undefined;
          }
          current = evolve(current, toMessage(e));
          after = [e.channel, e.messageNumber];
        }
        replayed += res.rows.length;
        if (done.length > 0) await c.query(`${ROCKET_INSERT} ${ROCKET_UNNEST}`, rocketColumns(done));
        if (res.rows.length < PAGE) break;
      }
      if (current !== undefined) await c.query(`${ROCKET_INSERT} ${ROCKET_UNNEST}`, rocketColumns([current]));
      await c.query('COMMIT');
      // The rows may differ from what this instance had seen (that is what a rebuild is for).
      this.known.clear();
      return replayed;
    });
  }

  /**
   * Stops taking commits, records those already queued, then stops listening and ends the pool; waits
   * for queries in flight. Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (let t = this.tail; ; t = this.tail) {
        await t;
        if (t === this.tail) break;
      }
      this.feed.close();
      clearTimeout(this.reconnect);
      const l = this.listener;
      this.listener = undefined;
      await l?.end().catch(() => undefined);
      await this.pool.end();
    })();
    return this.closing;
  }

  private now(): Date {
    return this.options.now?.() ?? new Date();
  }

  /**
   * Runs `fn`, which opens the transaction (its first statement is BEGIN) and commits it; rolls back when
   * it throws. A connection that fails between queries would emit 'error' with nobody listening while
   * checked out of the pool, so a handler is attached for the duration.
   */
  private async transaction<T>(fn: (c: PoolClient) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    const onError = (): void => undefined;
    c.on('error', onError);
    let broken: Error | undefined;
    if (!PREPARED_ON.has(c)) {
      try {
        await c.query(PREPARE_ALL);
        PREPARED_ON.add(c);
      } catch (e) {
        // Which of them exist is unknown: the connection is dropped.
        c.off('error', onError);
        c.release(e instanceof Error ? e : new Error(String(e)));
        throw e;
      }
    }
    try {
      return await fn(c);
    } catch (e) {
      // A failed statement leaves the transaction open and aborted: it is rolled back too.
      await c.query('ROLLBACK').catch((err: unknown) => {
        broken = err instanceof Error ? err : new Error(String(err));
      });
      broken ??= isServerError(e) ? undefined : e instanceof Error ? e : new Error(String(e));
      throw e;
    } finally {
      c.off('error', onError);
      c.release(broken);
    }
  }

  private async readFeed(after: number, limit: number): Promise<FeedRow[]> {
    const res = await this.pool.query<FeedRow>({ name: 'rockets-feed', text: FEED_SQL, values: [after, limit] });
    return res.rows;
  }

  /** Opens the LISTEN connection; on loss, retries with backoff and then catches up. */
  private async listen(): Promise<void> {
    const client = new Client({ connectionString: this.url, ...CONNECTION });
    const lost = (error: unknown): void => {
      if (this.listener !== client) return;
      this.listener = undefined;
      client.end().catch(() => undefined);
      this.tell({ state: 'lost', error });
      this.scheduleListen();
    };
    client.on('error', lost);
    client.on('end', () => lost(new Error('the LISTEN connection ended')));
    client.on('notification', (n) => {
      if (n.channel === this.channelName) this.feed.announce(Number(n.payload));
    });
    try {
      await client.connect();
      await client.query(`LISTEN "${this.channelName}"`);
      const pid = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      if (this.closing) throw new Error('the store is closed');
      this.listener = client;
      this.reconnectDelay = this.options.reconnectDelayMs?.min ?? 100;
      this.tell({ state: 'listening', pid: pid.rows[0]?.pid ?? 0 });
    } catch (e) {
      client.removeAllListeners('end');
      client.on('error', () => undefined);
      await client.end().catch(() => undefined);
      throw e;
    }
  }

  private scheduleListen(): void {
    if (this.closing) return;
    const delay = this.reconnectDelay;
    this.reconnectDelay = Math.min(this.options.reconnectDelayMs?.max ?? 5_000, delay * 2);
    this.reconnect = setTimeout(() => {
      this.reconnect = undefined;
      this.listen().then(
        // Nothing is replayed after a disconnect: read whatever was committed meanwhile.
        () => this.feed.catchUp(),
        (error: unknown) => {
          if (this.closing) return;
          this.tell({ state: 'lost', error });
          this.scheduleListen();
        },
      );
    }, delay);
    this.reconnect.unref();
  }

  private tell(event: ListenerEvent): void {
    try {
      this.options.onListener?.(event);
    } catch {
      // A hook's failure must not stop the reconnection.
    }
  }
}

/** An error the server reported (it has an SQLSTATE): the connection itself is still usable. */
const isServerError = (e: unknown): boolean =>
  typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string' && 'severity' in e;

async function queryHead(pool: Pool): Promise<number> {
  const res = await pool.query<{ head: string }>('SELECT COALESCE(max(position), 0) AS head FROM events');
  return Number(res.rows[0]?.head ?? 0);
}

/** Pool connections on which PREPARE_ALL ran. */
const PREPARED_ON = new WeakSet<PoolClient>();
