import { Client, Pool, escapeLiteral, type PoolClient } from 'pg';
import type { MessageType, Payload, RocketMessage } from '../domain/message';
import { evolve, type Rocket, type RocketStatus } from '../domain/rocket';
import { gapsToSkip, planBatch, skipMessages, type BatchPlan, type BufferedAt, type PlanSource } from './plan';
import {
  DEFAULT_BUFFER_LIMITS,
  notify,
  toMessage,
  type AppendListener,
  type BufferLimits,
  type CommitResult,
  type EventQuery,
  type EventStore,
  type Gap,
  type RocketListQuery,
  type RocketSortField,
  type RocketView,
  type SkippedGap,
  type StoredEvent,
  type StoreStats,
} from './types';

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
}

/** Advisory lock classes (the two-int4 key space, apart from the bigint space used for channels). */
const LOCK_MIGRATE = 0x726b0001;
const LOCK_APPEND = 0x726b0002;
const LOCK_REBUILD = 0x726b0003;
/** Held by every commit that buffers, from counting `pending` to COMMIT: the total cap is exact. */
const LOCK_BUFFER = 0x726b0004;

/** Channels one skip transaction handles: each skips at most its buffer's span, so a transaction stays small. */
const SKIP_CHANNELS_PER_TRANSACTION = 100;

/**
 * Every connection: TCP keepalive probes from 10 s of silence (the OS sets their interval and count), so
 * a silently dead LISTEN connection is noticed at all, and a bound on waiting for a connection or a pool
 * slot, so a commit fails instead of hanging.
 */
const CONNECTION = { keepAlive: true, keepAliveInitialDelayMillis: 10_000, connectionTimeoutMillis: 30_000 };

/** Events read per round trip by the feed and by rebuildProjection. */
const PAGE = 500;
const SCHEMA_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,47}$/;

/**
 * Versioned migrations: step N is applied once, in its own transaction, and recorded in
 * `schema_migrations`. Never edit a released step; append a new one.
 *
 * Text that is sorted or compared is `COLLATE "C"`: byte order of UTF-8, which is code-point order, as
 * the other stores sort. Times the senders gave stay text as received; `updated_at` and `launched_at`
 * are the projection's UTC ISO strings, whose text order is time order.
 */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE events (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel text COLLATE "C" NOT NULL,
    message_number bigint NOT NULL,
    message_type text NOT NULL,
    message_time text NOT NULL,
    payload json NOT NULL,
    recorded_at timestamptz NOT NULL,
    -- Groups the events of one commit for the feed (one listener call per commit).
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT events_channel_number UNIQUE (channel, message_number)
  );
  CREATE INDEX events_channel_position ON events (channel, position);

  CREATE TABLE rockets (
    channel text COLLATE "C" PRIMARY KEY,
    type text COLLATE "C",
    mission text COLLATE "C",
    speed double precision NOT NULL,
    status text COLLATE "C" NOT NULL,
    exploded_reason text,
    launched_at text COLLATE "C",
    updated_at text COLLATE "C" NOT NULL,
    last_message_number bigint NOT NULL
  );
  CREATE INDEX rockets_by_type ON rockets ((COALESCE(type, '')), channel);
  CREATE INDEX rockets_by_mission ON rockets ((COALESCE(mission, '')), channel);
  CREATE INDEX rockets_by_speed ON rockets (speed, channel);
  CREATE INDEX rockets_by_status ON rockets (status, channel);
  CREATE INDEX rockets_by_launched_at ON rockets ((COALESCE(launched_at, '')), channel);
  CREATE INDEX rockets_by_updated_at ON rockets (updated_at, channel);

  CREATE TABLE pending (
    channel text COLLATE "C" NOT NULL,
    message_number bigint NOT NULL,
    message_type text NOT NULL,
    message_time text NOT NULL,
    payload json NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (channel, message_number)
  );
  `,
  // 2: the gap sweep finds the channels whose oldest buffered message is older than the timeout.
  `CREATE INDEX pending_received_at ON pending (received_at, channel);`,
];

/** SQL sort expression per field; the expression indexes above use exactly these. */
const SORT_SQL: { readonly [F in RocketSortField]: { readonly expr: string; readonly numeric: boolean } } = {
  channel: { expr: 'r.channel', numeric: false },
  type: { expr: "COALESCE(r.type, '')", numeric: false },
  mission: { expr: "COALESCE(r.mission, '')", numeric: false },
  speed: { expr: 'r.speed', numeric: true },
  status: { expr: 'r.status', numeric: false },
  launchedAt: { expr: "COALESCE(r.launched_at, '')", numeric: false },
  updatedAt: { expr: 'r.updated_at', numeric: false },
};

const ROCKET_VIEW_SQL = `
  SELECT r.*, b.count AS buffered, b.oldest AS oldest_since
  FROM rockets r
  CROSS JOIN LATERAL (SELECT count(*) AS count, min(p.received_at) AS oldest FROM pending p WHERE p.channel = r.channel) b`;

const EVENT_COLUMNS = 'position, channel, message_number, message_type, message_time, payload, recorded_at';

/** Rows as pg returns them (bigint as text) or as json_agg builds them (bigint as number). */
interface RocketRow {
  channel: string;
  type: string | null;
  mission: string | null;
  speed: number | string;
  status: string;
  exploded_reason: string | null;
  launched_at: string | null;
  updated_at: string;
  last_message_number: number | string;
}

interface RocketViewRow extends RocketRow {
  buffered: string;
  oldest_since: Date | null;
}

interface MessageRow {
  channel: string;
  message_number: number | string;
  message_type: string;
  message_time: string;
  payload: unknown;
}

interface PendingRow extends MessageRow {
  /** As json_build_object writes a timestamptz: ISO 8601 with an offset. */
  received_at: string;
}

/** A commit's view of its locked channels. */
interface Loaded {
  readonly rockets: ReadonlyMap<string, Rocket>;
  /** Arrival times of each channel's buffered messages, for the gap policy. */
  readonly arrivals: ReadonlyMap<string, readonly BufferedAt[]>;
  readonly source: PlanSource;
}

interface EventRow extends MessageRow {
  position: number | string;
  recorded_at: Date | string;
}

interface FeedRow extends EventRow {
  txid: string;
  r_channel: string | null;
  type: string | null;
  mission: string | null;
  speed: number | null;
  status: string | null;
  exploded_reason: string | null;
  launched_at: string | null;
  updated_at: string | null;
  last_message_number: string | null;
}

const toIso = (v: Date | string): string => (v instanceof Date ? v : new Date(v)).toISOString();

function toRocket(row: RocketRow): Rocket {
  return {
    channel: row.channel,
    type: row.type,
    mission: row.mission,
    // json_agg writes a non-finite float8 as a string; Number() reads both forms.
    speed: Number(row.speed),
    status: row.status as RocketStatus,
    explodedReason: row.exploded_reason,
    launchedAt: row.launched_at,
    updatedAt: row.updated_at,
    lastMessageNumber: Number(row.last_message_number),
  };
}

function toView(row: RocketViewRow): RocketView {
  const r = toRocket(row);
  return {
    ...r,
    buffer: {
      waitingFor: r.lastMessageNumber + 1,
      count: Number(row.buffered),
      oldestSince: row.oldest_since === null ? null : toIso(row.oldest_since),
    },
  };
}

const toRocketMessage = (row: MessageRow): RocketMessage =>
  ({
    channel: row.channel,
    messageNumber: Number(row.message_number),
    messageTime: row.message_time,
    messageType: row.message_type as MessageType,
    payload: row.payload as Payload,
  }) as RocketMessage;

const toEvent = (row: EventRow): StoredEvent => ({
  position: Number(row.position),
  channel: row.channel,
  messageNumber: Number(row.message_number),
  messageType: row.message_type as MessageType,
  messageTime: row.message_time,
  payload: row.payload as Payload,
  recordedAt: toIso(row.recorded_at),
});

const keyOf = (channel: string, n: number): string => `${n}:${channel}`;

/** Column arrays for `unnest`: one statement writes any number of rows. */
function messageColumns(ms: readonly RocketMessage[]): [string[], number[], string[], string[], string[]] {
  return [
    ms.map((m) => m.channel),
    ms.map((m) => m.messageNumber),
    ms.map((m) => m.messageType),
    ms.map((m) => m.messageTime),
    ms.map((m) => JSON.stringify(m.payload)),
  ];
}

function rocketColumns(rs: readonly Rocket[]): unknown[] {
  return [
    rs.map((r) => r.channel),
    rs.map((r) => r.type),
    rs.map((r) => r.mission),
    rs.map((r) => r.speed),
    rs.map((r) => r.status),
    rs.map((r) => r.explodedReason),
    rs.map((r) => r.launchedAt),
    rs.map((r) => r.updatedAt),
    rs.map((r) => r.lastMessageNumber),
  ];
}

const ROCKET_UNNEST = `SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::text[],
  $7::text[], $8::text[], $9::bigint[])`;
const ROCKET_INSERT = `INSERT INTO rockets (channel, type, mission, speed, status, exploded_reason, launched_at,
  updated_at, last_message_number)`;

/** One commit's events as this instance appended them, waiting to be handed to the listeners. */
interface OwnCommit {
  readonly first: number;
  readonly last: number;
  readonly events: readonly StoredEvent[];
  readonly rockets: readonly Rocket[];
}

interface Pending extends OwnCommit {
  /** Registration order: a read that started after it must have seen it. */
  readonly ticket: number;
  /** Lets the committer go on; idempotent. */
  readonly settle: () => void;
}

interface Group {
  readonly events: StoredEvent[];
  readonly rockets: Map<string, Rocket>;
  readonly txid: string;
}

/**
 * The append feed of one instance: hands the listeners every event committed by any instance, once, in
 * position order, one call per commit. The events table is the truth; NOTIFY and this instance's own
 * commits only say "there is more". One pump runs at a time and coalesces wake-ups. An own commit that
 * directly follows the last delivered position is delivered without a read; anything else is read from
 * the table (`position > last`, in pages), which is gap-free because positions become visible in order
 * (see PostgresStore).
 */
class AppendFeed {
  readonly listeners = new Set<AppendListener>();
  private readonly own = new Map<number, Pending>();
  private tickets = 0;
  /** Highest position a notification announced. */
  private announced = 0;
  /** Read once even without an announcement (at open, after a reconnect, after a failed read). */
  private force = false;
  private dirty = false;
  private running = false;
  private closed = false;
  private retry: NodeJS.Timeout | undefined;
  private retryDelay: number;

  constructor(
    private last: number,
    private readonly read: (after: number, limit: number) => Promise<FeedRow[]>,
    private readonly delays: { readonly min: number; readonly max: number },
  ) {
    this.retryDelay = delays.min;
  }

  /**
   * Records this instance's commit; resolves once the listeners have had it, or at once while the feed
   * cannot read (its events follow when it can again), or when the feed closes.
   */
  appended(c: OwnCommit): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.own.set(c.first, { ...c, ticket: ++this.tickets, settle: resolve });
      if (this.retry !== undefined) resolve();
      this.kick();
    });
  }

  /** A notification: some instance committed up to `position`. */
  announce(position: number): void {
    if (!Number.isSafeInteger(position) || position <= this.announced) return;
    this.announced = position;
    if (position > this.last) this.kick();
  }

  /** Reads from the last delivered position whatever happened meanwhile. */
  catchUp(): void {
    this.force = true;
    this.kick();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    for (const c of this.own.values()) c.settle();
    this.own.clear();
  }

  private get isClosed(): boolean {
    return this.closed;
  }

  private kick(): void {
    this.dirty = true;
    if (!this.running && this.retry === undefined) void this.pump();
  }

  private async pump(): Promise<void> {
    this.running = true;
    try {
      while (this.dirty && !this.closed) {
        this.dirty = false;
        this.deliverOwn();
        if (!this.force && this.announced <= this.last && this.own.size === 0) continue;
        this.force = false;
        const target = this.announced;
        const ticket = this.tickets;
        let rows: FeedRow[];
        try {
          rows = await this.read(this.last, PAGE);
        } catch {
          this.failed();
          return;
        }
        // close() may have run during the read (a getter, so the check is not narrowed away).
        if (this.isClosed) return;
        this.retryDelay = this.delays.min;
        const full = rows.length === PAGE;
        const groups = this.group(rows);
        // A full page may end inside a commit: leave its last group for the next read, unless it is all.
        if (full && groups.length > 1) groups.pop();
        for (const g of groups) this.deliverGroup(g);
        if (full) {
          this.dirty = true;
          continue;
        }
        // Everything committed before the read started was in it: a notification is sent only once its
        // commit is visible, and an own commit is registered only after COMMIT returned. What it did not
        // reach is gone (a hole, or a log emptied under us): forget it rather than spin on it.
        if (this.announced === target) this.announced = Math.min(target, this.last);
        for (const [first, c] of this.own)
          if (c.ticket <= ticket) {
            this.own.delete(first);
            c.settle();
          }
        if (this.own.size > 0) this.dirty = true;
      }
    } finally {
      this.running = false;
    }
  }

  private failed(): void {
    // Committers do not wait on a feed that cannot read; their events are delivered after the retry.
    this.force = true;
    for (const c of this.own.values()) c.settle();
    if (this.closed) return;
    const delay = this.retryDelay;
    this.retryDelay = Math.min(this.delays.max, this.retryDelay * 2);
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.kick();
    }, delay);
    this.retry.unref();
  }

  private deliverOwn(): void {
    for (const [first, c] of this.own)
      if (c.last <= this.last) {
        this.own.delete(first);
        c.settle();
      }
    for (let c = this.own.get(this.last + 1); c !== undefined; c = this.own.get(this.last + 1)) {
      this.own.delete(c.first);
      this.deliver(c.events, c.rockets, c.last);
      c.settle();
    }
  }

  private group(rows: readonly FeedRow[]): Group[] {
    const groups: Group[] = [];
    let g: Group | undefined;
    for (const row of rows) {
      if (g?.txid !== row.txid) groups.push((g = { events: [], rockets: new Map(), txid: row.txid }));
      g.events.push(toEvent(row));
      if (row.r_channel !== null && !g.rockets.has(row.r_channel))
        g.rockets.set(row.r_channel, toRocket({ ...row, channel: row.r_channel } as RocketRow));
    }
    return groups;
  }

  private deliverGroup(g: Group): void {
    const first = g.events[0];
    const lastEvent = g.events[g.events.length - 1];
    if (first === undefined || lastEvent === undefined || lastEvent.position <= this.last) return;
    const mine = this.own.get(first.position);
    if (mine !== undefined && mine.last === lastEvent.position) {
      // Our own commit knows the exact state each rocket reached in it.
      this.own.delete(mine.first);
      this.deliver(mine.events, mine.rockets, mine.last);
      mine.settle();
    } else {
      // Another instance's commit: rocket rows as of the read, at least as new as these events.
      const events = first.position > this.last ? g.events : g.events.filter((e) => e.position > this.last);
      this.deliver(events, [...g.rockets.values()], lastEvent.position);
    }
    this.deliverOwn();
  }

  private deliver(events: readonly StoredEvent[], rockets: readonly Rocket[], last: number): void {
    this.last = last;
    if (events.length > 0) notify(this.listeners, events, rockets);
  }
}

/**
 * The event store on PostgreSQL, for several instances sharing one database.
 *
 * Per-channel serialisation is in the database: each commit takes `pg_advisory_xact_lock` on a hash of
 * each of its channels, in ascending key order (so two commits never wait on each other in a cycle),
 * before it reads the state it plans from. The buffer is the `pending` table. Events, projection and
 * buffer change in one transaction; the unique (channel, message_number) key is the last line against a
 * duplicate that got past the locks (the commit then fails whole, and the retry sees the duplicate).
 *
 * Global order: an identity value is taken at insert but becomes visible only at commit, so with
 * concurrent writers a reader of `position > last` could see 11 before 10 commits and then skip 10 for
 * good. Every commit therefore takes one more advisory lock, global to the schema, as its last step:
 * after all per-channel work, right before it inserts its events, and holds it through COMMIT. PostgreSQL
 * releases transaction locks only after the commit is visible to new snapshots, so positions are taken
 * and become visible in the same order: any snapshot sees a prefix of the log (an aborted insert leaves
 * a hole that no later commit fills, which readers pass harmlessly). `position > last` is then a sound
 * checkpoint for readEvents and for the feed, and positions stay one number, monotonic in commit order.
 * The cost is that appends of all channels serialise for the insert and the commit's WAL flush only;
 * the per-channel work before it runs in parallel. (Emmett's xid/snapshot filter avoids even that, but
 * orders by (xid, position), which would break the monotonic-position contract CatchUp relies on.)
 *
 * Buffer caps: the per-channel cap is decided under the channel's lock. A commit that buffers also takes
 * a buffer lock, global to the schema, after its channel locks and before the append lock, and counts
 * `pending` under it: the total cap holds exactly across instances, and only buffering commits pay for
 * the count. The gap policy's skips are commits too: same locks, same planner, same feed.
 */
export class PostgresStore implements EventStore {
  readonly kind = 'postgres';
  private readonly feed: AppendFeed;
  private readonly limits: BufferLimits;
  private listener: Client | undefined;
  private reconnect: NodeJS.Timeout | undefined;
  private reconnectDelay: number;
  private closing: Promise<void> | undefined;

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
    this.feed = new AppendFeed(head, (after, limit) => this.readFeed(after, limit), delays);
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
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new Error('the PostgreSQL URL is not a valid URL');
    }
    if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:')
      throw new Error(`a PostgreSQL URL starts with postgres:// or postgresql://, not ${parsed.protocol}//`);
    const schema = options.schema ?? parsed.searchParams.get('schema') ?? 'public';
    if (!SCHEMA_NAME.test(schema))
      throw new Error(`schema "${schema}" must be letters, digits and _ (at most 48), not starting with a digit`);
    parsed.searchParams.delete('schema');
    // Every connection resolves the tables in the schema; set through the URL because pg lets the
    // connection string override explicit options. A transaction of ours is never idle for long; one that
    // is (a frozen process) would hold the append lock and stall every instance, so the server ends it.
    const extra = parsed.searchParams.get('options');
    parsed.searchParams.set(
      'options',
      `${extra === null ? '' : `${extra} `}-c search_path="${schema}" -c idle_in_transaction_session_timeout=60000`,
    );
    if (!parsed.searchParams.has('application_name')) parsed.searchParams.set('application_name', 'rockets');
    const connectionString = parsed.toString();

    const pool = new Pool({ connectionString, max: options.poolSize ?? 10, ...CONNECTION });
    // An idle connection that dies is dropped by the pool; the next query opens a new one.
    pool.on('error', () => undefined);
    let store: PostgresStore | undefined;
    try {
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

  async commit(messages: readonly RocketMessage[]): Promise<CommitResult> {
    if (messages.length === 0) return { outcomes: [], events: [], rockets: [] };
    const channels = [...new Set(messages.map((m) => m.channel))];
    return this.record(channels, async (c, at) => {
      const loaded = await this.load(c, channels, messages);
      // Counting the buffer costs a scan of `pending`: only a commit that buffers pays it. It then counts
      // under the buffer lock, which every buffering commit holds to its end, so the count includes every
      // commit that buffered before and the total cap is exact across instances.
      let plan = planBatch(messages, loaded.source, { limits: this.limits, buffered: 0 });
      if (plan.buffered.length > 0) {
        // Two statements: the count's snapshot must be taken after the lock is granted.
        await c.query(`SELECT pg_advisory_xact_lock(${LOCK_BUFFER}, ${this.schemaKey})`);
        const res = await c.query<{ n: string }>('SELECT count(*) AS n FROM pending');
        plan = planBatch(messages, loaded.source, { limits: this.limits, buffered: Number(res.rows[0]?.n) });
      }
      return this.write(c, plan, at);
    });
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
   * one finds the gap already skipped and records nothing.
   */
  async skipGaps(olderThanMs: number, reason: string): Promise<SkippedGap[]> {
    const now = this.now();
    const cutoff = now.getTime() - olderThanMs;
    const skipped: SkippedGap[] = [];
    for (;;) {
      const found = await this.pool.query<{ channel: string }>(
        'SELECT DISTINCT channel FROM pending WHERE received_at < $1 LIMIT $2',
        [new Date(cutoff), SKIP_CHANNELS_PER_TRANSACTION],
      );
      const channels = found.rows.map((r) => r.channel);
      if (channels.length === 0) break;
      let gaps: SkippedGap[] = [];
      await this.record(channels, async (c, at) => {
        const loaded = await this.load(c, channels, []);
        gaps = channels.flatMap((channel) =>
          gapsToSkip(
            channel,
            (loaded.rockets.get(channel)?.lastMessageNumber ?? 0) + 1,
            loaded.arrivals.get(channel) ?? [],
            cutoff,
          ),
        );
        return this.write(c, planBatch(skipMessages(gaps, now.toISOString(), reason), loaded.source), at);
      });
      skipped.push(...gaps);
      // Each channel found is now free of stale gaps; none skipped means another instance got there first.
      if (gaps.length === 0 || channels.length < SKIP_CHANNELS_PER_TRANSACTION) break;
    }
    return skipped;
  }

  /**
   * One commit: a transaction that takes the channels' locks (in ascending key order, so two commits never
   * wait on each other in a cycle) and runs `work`, which plans, writes and commits; then hands the
   * appended events to the feed.
   */
  private async record(
    channels: readonly string[],
    work: (c: PoolClient, at: Date) => Promise<CommitResult>,
  ): Promise<CommitResult> {
    const at = this.now();
    const begin = `BEGIN; SELECT pg_advisory_xact_lock_shared(${LOCK_REBUILD}, ${this.schemaKey})`;
    const result = await this.transaction(begin, async (c) => {
      await c.query({ name: 'rockets-lock-channels', text: LOCK_CHANNELS_SQL, values: [this.schema, channels] });
      return work(c, at);
    });
    const first = result.events[0];
    const last = result.events[result.events.length - 1];
    if (first && last)
      await this.feed.appended({
        first: first.position,
        last: last.position,
        events: result.events,
        rockets: result.rockets,
      });
    return result;
  }

  /** What the planner may ask about `channels` (locked), with the applied twins of `messages`' numbers. */
  private async load(c: PoolClient, channels: readonly string[], messages: readonly RocketMessage[]): Promise<Loaded> {
    const pre = await c.query<{ rockets: RocketRow[]; pending: PendingRow[]; twins: MessageRow[] }>({
      name: 'rockets-preload',
      text: PRELOAD_SQL,
      values: [channels, messages.map((m) => m.channel), messages.map((m) => m.messageNumber)],
    });
    const loaded = pre.rows[0];
    if (!loaded) throw new Error('the preload query returned no row');
    const rockets = new Map(loaded.rockets.map((r) => [r.channel, toRocket(r)]));
    const pending = new Map<string, Map<number, RocketMessage>>();
    const arrivals = new Map<string, BufferedAt[]>();
    for (const row of loaded.pending) {
      const m = toRocketMessage(row);
      let map = pending.get(m.channel);
      if (!map) pending.set(m.channel, (map = new Map<number, RocketMessage>()));
      map.set(m.messageNumber, m);
      let list = arrivals.get(m.channel);
      if (!list) arrivals.set(m.channel, (list = []));
      list.push({ messageNumber: m.messageNumber, receivedAt: Date.parse(row.received_at) });
    }
    const twins = new Map(loaded.twins.map((row) => [keyOf(row.channel, Number(row.message_number)), row]));
    return {
      rockets,
      arrivals,
      source: {
        channel: (channel) => ({
          rocket: rockets.get(channel),
          pending: pending.get(channel) ?? new Map<number, RocketMessage>(),
        }),
        appliedMessage: (channel, n) => {
          const row = twins.get(keyOf(channel, n));
          return row && toRocketMessage(row);
        },
      },
    };
  }

  /** Writes a plan (projection, buffer, then the events under the append lock) and commits. */
  private async write(c: PoolClient, plan: BatchPlan, at: Date): Promise<CommitResult> {
    const changed = [...plan.rockets.values()];
    if (changed.length + plan.released.length + plan.buffered.length > 0) {
      const w = await c.query<{ up: string; del: string; ins: string }>({
        name: 'rockets-write',
        text: WRITE_SQL,
        values: [
          ...rocketColumns(changed),
          plan.released.map((m) => m.channel),
          plan.released.map((m) => m.messageNumber),
          ...messageColumns(plan.buffered),
          at,
        ],
      });
      const counts = w.rows[0];
      if (Number(counts?.del) !== plan.released.length || Number(counts?.ins) !== plan.buffered.length)
        throw new Error('the reorder buffer changed under the channel lock');
    }

    let events: StoredEvent[] = [];
    if (plan.applied.length > 0) {
      // Last step before COMMIT: positions are taken and become visible in one global order.
      await c.query(`SELECT pg_advisory_xact_lock(${LOCK_APPEND}, ${this.schemaKey})`);
      const ins = await c.query<{ position: string; channel: string; message_number: string }>({
        name: 'rockets-append',
        text: APPEND_SQL,
        values: [...messageColumns(plan.applied), at],
      });
      const positions = new Map(ins.rows.map((r) => [keyOf(r.channel, Number(r.message_number)), Number(r.position)]));
      const recordedAt = at.toISOString();
      events = plan.applied.map((m) => ({
        position: positions.get(keyOf(m.channel, m.messageNumber)) ?? NaN,
        channel: m.channel,
        messageNumber: m.messageNumber,
        messageType: m.messageType,
        messageTime: m.messageTime,
        payload: m.payload,
        recordedAt,
      }));
      // Positions must follow apply order, or a channel's log would not be in number order.
      let previous = 0;
      for (const e of events) {
        if (!(e.position > previous)) throw new Error('positions were not assigned in apply order');
        previous = e.position;
      }
      const lastPosition = events[events.length - 1]?.position ?? 0;
      await c.query(`SELECT pg_notify(${escapeLiteral(this.channelName)}, '${lastPosition}'); COMMIT`);
    } else {
      await c.query('COMMIT');
    }
    return { outcomes: plan.outcomes, events, rockets: changed };
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

  async stats(): Promise<StoreStats> {
    const res = await this.pool.query<{ rockets: string; events: string; buffered: string }>(
      `SELECT (SELECT count(*) FROM rockets) AS rockets, (SELECT count(*) FROM events) AS events,
        (SELECT count(*) FROM pending) AS buffered`,
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
    const begin = `BEGIN; SELECT pg_advisory_xact_lock(${LOCK_REBUILD}, ${this.schemaKey})`;
    return this.transaction(begin, async (c) => {
      await c.query('DELETE FROM rockets');
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
      return replayed;
    });
  }

  /** Stops listening and ends the pool; waits for queries in flight. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
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
   * Runs `begin` (which opens the transaction and takes its first locks), then `fn`, which commits; rolls
   * back when either throws. A connection that fails between queries would emit 'error' with nobody
   * listening while checked out of the pool, so a handler is attached for the duration.
   */
  private async transaction<T>(begin: string, fn: (c: PoolClient) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    const onError = (): void => undefined;
    c.on('error', onError);
    let broken: Error | undefined;
    try {
      await c.query(begin);
      try {
        return await fn(c);
      } catch (e) {
        await c.query('ROLLBACK').catch((err: unknown) => {
          broken = err instanceof Error ? err : new Error(String(err));
        });
        throw e;
      }
    } catch (e) {
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

/**
 * Creates the schema and applies the missing migrations under a session advisory lock on the schema,
 * so instances starting together take turns and the later ones find nothing to do. Returns hashtext(schema).
 */
async function migrate(pool: Pool, schema: string): Promise<number> {
  const c = await pool.connect();
  const onError = (): void => undefined;
  c.on('error', onError);
  try {
    const key = await c.query<{ key: number }>('SELECT hashtext($1) AS key', [schema]);
    const schemaKey = key.rows[0]?.key ?? 0;
    await c.query(`SELECT pg_advisory_lock(${LOCK_MIGRATE}, ${schemaKey})`);
    try {
      await c.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"; SET search_path TO "${schema}";
        CREATE TABLE IF NOT EXISTS schema_migrations (
          version integer PRIMARY KEY,
          applied_at timestamptz NOT NULL DEFAULT now()
        )`);
      const res = await c.query<{ version: number | null }>('SELECT max(version) AS version FROM schema_migrations');
      for (let v = (res.rows[0]?.version ?? 0) + 1; v <= MIGRATIONS.length; v++) {
        await c.query('BEGIN');
        try {
          await c.query(MIGRATIONS[v - 1] as string);
          await c.query('INSERT INTO schema_migrations (version) VALUES ($1)', [v]);
          await c.query('COMMIT');
        } catch (e) {
          await c.query('ROLLBACK');
          throw e;
        }
      }
    } finally {
      await c.query(`SELECT pg_advisory_unlock(${LOCK_MIGRATE}, ${schemaKey})`);
    }
    return schemaKey;
  } finally {
    c.off('error', onError);
    c.release();
  }
}

/**
 * Per-channel locks, in ascending key order so that two commits never wait on each other in a cycle.
 * The ordered subquery is not flattened (it has ORDER BY and DISTINCT), so the locks are taken in order.
 */
const LOCK_CHANNELS_SQL = `
  SELECT pg_advisory_xact_lock(s.k)
  FROM (SELECT DISTINCT hashtextextended($1::text || '/' || c, 0) AS k FROM unnest($2::text[]) AS c ORDER BY k) s`;

/** Everything planBatch may ask, in one statement: rockets, buffers, and applied twins of the batch's numbers. */
const PRELOAD_SQL = `
  SELECT
    (SELECT COALESCE(json_agg(r), '[]') FROM rockets r WHERE r.channel = ANY($1::text[])) AS rockets,
    (SELECT COALESCE(json_agg(json_build_object('channel', p.channel, 'message_number', p.message_number,
        'message_type', p.message_type, 'message_time', p.message_time, 'payload', p.payload,
        'received_at', p.received_at)), '[]')
      FROM pending p WHERE p.channel = ANY($1::text[])) AS pending,
    (SELECT COALESCE(json_agg(json_build_object('channel', e.channel, 'message_number', e.message_number,
        'message_type', e.message_type, 'message_time', e.message_time, 'payload', e.payload)), '[]')
      FROM events e JOIN (SELECT DISTINCT * FROM unnest($2::text[], $3::bigint[])) AS t(c, n)
        ON e.channel = t.c AND e.message_number = t.n) AS twins`;

/** Open gaps, oldest first: one group per channel of the (capped, so small) buffer. */
const GAPS_SQL = `
  SELECT g.channel, g.count, g.oldest, COALESCE(r.last_message_number, 0) + 1 AS waiting_for
  FROM (SELECT channel, count(*) AS count, min(received_at) AS oldest FROM pending GROUP BY channel) g
  LEFT JOIN rockets r ON r.channel = g.channel
  ORDER BY g.oldest, g.channel
  LIMIT $1`;

/** Projection upserts, buffer releases and buffer additions of one commit, in one statement. */
const WRITE_SQL = `
  WITH up AS (
    ${ROCKET_INSERT} ${ROCKET_UNNEST}
    ON CONFLICT (channel) DO UPDATE SET type = EXCLUDED.type, mission = EXCLUDED.mission, speed = EXCLUDED.speed,
      status = EXCLUDED.status, exploded_reason = EXCLUDED.exploded_reason, launched_at = EXCLUDED.launched_at,
      updated_at = EXCLUDED.updated_at, last_message_number = EXCLUDED.last_message_number
    RETURNING 1
  ), del AS (
    DELETE FROM pending p USING unnest($10::text[], $11::bigint[]) AS d(c, n)
    WHERE p.channel = d.c AND p.message_number = d.n
    RETURNING 1
  ), ins AS (
    INSERT INTO pending (channel, message_number, message_type, message_time, payload, received_at)
    SELECT c, n, t, tm, pl::json, $17::timestamptz FROM unnest($12::text[], $13::bigint[], $14::text[], $15::text[], $16::text[])
      AS u(c, n, t, tm, pl)
    RETURNING 1
  )
  SELECT (SELECT count(*) FROM up) AS up, (SELECT count(*) FROM del) AS del, (SELECT count(*) FROM ins) AS ins`;

/** Appends in apply order: rows are inserted, and take positions, in ordinality order. */
const APPEND_SQL = `
  INSERT INTO events (channel, message_number, message_type, message_time, payload, recorded_at)
  SELECT c, n, t, tm, pl::json, $6::timestamptz
  FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(c, n, t, tm, pl, o)
  ORDER BY o
  RETURNING position, channel, message_number`;

/** A page of the log after a position, with each event's rocket as of the same snapshot. */
const FEED_SQL = `
  SELECT e.position, e.channel, e.message_number, e.message_type, e.message_time, e.payload, e.recorded_at,
    e.txid::text AS txid, r.channel AS r_channel, r.type, r.mission, r.speed, r.status, r.exploded_reason,
    r.launched_at, r.updated_at, r.last_message_number
  FROM (SELECT * FROM events WHERE position > $1 ORDER BY position LIMIT $2) e
  LEFT JOIN rockets r ON r.channel = e.channel
  ORDER BY e.position`;
