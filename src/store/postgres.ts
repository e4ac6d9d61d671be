import { Client, Pool, escapeLiteral, type PoolClient, type QueryResult, type QueryResultRow } from 'pg';
import type { MessageType, Payload, RocketMessage } from '../domain/message';
import { evolve, type Rocket, type RocketStatus } from '../domain/rocket';
import type { ChannelState } from '../domain/sequencing';
import { gapsToSkip, planBatch, skipMessages, type BatchPlan, type BufferedAt, type PlanSource } from './plan';
import {
  DEFAULT_BUFFER_LIMITS,
  notify,
  toMessage,
  toStoredEvent,
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
  /** Refuse a schema that holds no store yet, instead of creating one (for `--rebuild`). */
  readonly existing?: boolean | undefined;
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

/** Channels ChannelCache holds at most: some MB. */
const KNOWN_CHANNELS = 20_000;
/**
 * Group commits that go the long way after ChannelCache's check failed: another instance is likely
 * writing the same channels, and each failed check costs a round trip and a rollback.
 */
const STALE_BACKOFF = 8;

/** Events read per round trip by the feed and by rebuildProjection. */
const PAGE = 500;
const SCHEMA_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,47}$/;

/**
 * The parameters a PostgreSQL URL may carry: `schema` (ours), and those pg reads from a connection string
 * and that leave its answers as this store expects them (not `binary`, `replication` or
 * `client_encoding`: pg decodes text as UTF-8). libpq's others, such as `connect_timeout` or
 * `target_session_attrs`, pg would ignore.
 */
const URL_PARAMETERS: ReadonlySet<string> = new Set([
  'schema',
  'host',
  'user',
  'password',
  'ssl',
  'sslmode',
  'sslcert',
  'sslkey',
  'sslrootcert',
  'sslnegotiation',
  'uselibpqcompat',
  'application_name',
  'fallback_application_name',
  'options',
  'statement_timeout',
  'lock_timeout',
  'query_timeout',
  'idle_in_transaction_session_timeout',
]);

/**
 * A select-list item for a transaction's first statement: `synchronous_commit` on for the transaction
 * when the server, database or role set it off. Any other value (on, local, remote_write, remote_apply)
 * already flushes the WAL locally before COMMIT returns, and is kept.
 */
const DURABLE = `CASE WHEN current_setting('synchronous_commit') = 'off'
  THEN set_config('synchronous_commit', 'on', true) END`;

/** The columns of a Rocket as JSON.stringify writes it, for json_to_recordset. */
const ROCKET_JSON = `channel text, type text, mission text, speed float8, status text, "explodedReason" text,
  "launchedAt" text, "updatedAt" text, "lastMessageNumber" bigint`;

/**
 * Records a group planned from ChannelCache. Called alone in a statement outside any transaction block:
 * the statement's implicit transaction commits as it ends, and the settings made here (local to that
 * transaction) end with it. The same steps in the same order as a commit the long way: synchronous_commit
 * back on should the server or role have it off, the rebuild lock shared, the channel locks in ascending
 * key order, then, under them, the check that each rocket row is exactly as cached (every column, or no
 * row at all) and that nothing is buffered, fused with the writes (an UPDATE guarded by the cached
 * values, an INSERT that must not conflict; a short count raises STALE and rolls it all back), then the
 * append lock, the append in apply order (checked), and NOTIFY. Answers the positions in apply order.
 *
 * `known` holds the new state of each rocket that exists, with the columns cached for it as `was*`;
 * `fresh` the rockets that do not exist yet; `events` the messages to append, in apply order.
 *
 * The statements' plans are cached for the session, so they must not depend on what the tables held
 * when they were made (a plan made while `rockets` was one page would scan it whole forever): the
 * transaction allows only index paths and nested loops, which every statement here can use.
 */
const COMMIT_KNOWN_FUNCTION = `
  CREATE FUNCTION rockets_commit_known(schema_key integer, lock_prefix text, notify_channel text, channels text[],
      known json, fresh json, events json, recorded timestamptz) RETURNS bigint[] LANGUAGE plpgsql AS $$
  DECLARE
    written integer;
    chans text[];
    nums bigint[];
    types text[];
    times text[];
    payloads json[];
    positions bigint[];
    in_order boolean;
  BEGIN
    IF current_setting('synchronous_commit') = 'off' THEN
      PERFORM set_config('synchronous_commit', 'on', true);
    END IF;
    PERFORM set_config('enable_seqscan', 'off', true), set_config('enable_hashjoin', 'off', true),
      set_config('enable_mergejoin', 'off', true);
    PERFORM pg_advisory_xact_lock_shared(${LOCK_REBUILD}, schema_key);
    PERFORM pg_advisory_xact_lock(s.k)
    FROM (SELECT DISTINCT hashtextextended(lock_prefix || '/' || c, 0) AS k FROM unnest(channels) AS c ORDER BY k) s;

    UPDATE rockets r SET type = x.type, mission = x.mission, speed = x.speed, status = x.status,
        exploded_reason = x."explodedReason", launched_at = x."launchedAt", updated_at = x."updatedAt",
        last_message_number = x."lastMessageNumber"
      FROM json_to_recordset(known) AS x(${ROCKET_JSON}, "wasType" text, "wasMission" text, "wasSpeed" float8,
        "wasStatus" text, "wasExplodedReason" text, "wasLaunchedAt" text, "wasUpdatedAt" text,
        "wasLastMessageNumber" bigint)
      WHERE r.channel = x.channel COLLATE "C"
        AND (r.type, r.mission, r.speed, r.status, r.exploded_reason, r.launched_at, r.updated_at,
          r.last_message_number)
        IS NOT DISTINCT FROM (x."wasType", x."wasMission", x."wasSpeed", x."wasStatus", x."wasExplodedReason",
          x."wasLaunchedAt", x."wasUpdatedAt", x."wasLastMessageNumber");
    GET DIAGNOSTICS written = ROW_COUNT;
    IF written <> json_array_length(known) THEN
      RAISE EXCEPTION USING MESSAGE = 'the cached state of a channel is stale', ERRCODE = 'XX000';
    END IF;
    IF json_array_length(fresh) > 0 THEN
      INSERT INTO rockets (channel, type, mission, speed, status, exploded_reason, launched_at, updated_at,
          last_message_number)
        SELECT x.channel, x.type, x.mission, x.speed, x.status, x."explodedReason", x."launchedAt", x."updatedAt",
          x."lastMessageNumber"
        FROM json_to_recordset(fresh) AS x(${ROCKET_JSON})
        ON CONFLICT (channel) DO NOTHING;
      GET DIAGNOSTICS written = ROW_COUNT;
      IF written <> json_array_length(fresh) THEN
        RAISE EXCEPTION USING MESSAGE = 'the cached state of a channel is stale', ERRCODE = 'XX000';
      END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM pending p WHERE p.channel = ANY(channels)) THEN
      RAISE EXCEPTION USING MESSAGE = 'the cached state of a channel is stale', ERRCODE = 'XX000';
    END IF;

    SELECT array_agg(e.channel ORDER BY e.o), array_agg(e."messageNumber" ORDER BY e.o),
        array_agg(e."messageType" ORDER BY e.o), array_agg(e."messageTime" ORDER BY e.o),
        array_agg(e.payload ORDER BY e.o)
      INTO chans, nums, types, times, payloads
      FROM ROWS FROM (json_to_recordset(events) AS (channel text, "messageNumber" bigint, "messageType" text,
        "messageTime" text, payload json)) WITH ORDINALITY AS e(channel, "messageNumber", "messageType",
        "messageTime", payload, o);
    -- Last step: positions are taken and become visible in one global order (see PostgresStore).
    PERFORM pg_advisory_xact_lock(${LOCK_APPEND}, schema_key);
    WITH ins AS (
      INSERT INTO events (channel, message_number, message_type, message_time, payload, recorded_at)
      SELECT u.c, u.n, u.t, u.tm, u.pl, recorded
      FROM unnest(chans, nums, types, times, payloads) WITH ORDINALITY AS u(c, n, t, tm, pl, o)
      ORDER BY u.o
      RETURNING position, channel, message_number
    )
    SELECT array_agg(position ORDER BY position),
        array_agg(channel::text ORDER BY position) = chans AND array_agg(message_number ORDER BY position) = nums
      INTO positions, in_order
      FROM ins;
    IF in_order IS NOT TRUE THEN
      RAISE EXCEPTION USING MESSAGE = 'positions were not assigned in apply order', ERRCODE = 'XX000';
    END IF;
    PERFORM pg_notify(notify_channel, positions[cardinality(positions)]::text);
    RETURN positions;
  END $$;`;

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
  // 3: a check inside a statement, so a commit's checks run on the server before its COMMIT, in the same
  // round trip (a failed check aborts the transaction: the statements after it, COMMIT included, are skipped).
  `CREATE FUNCTION rockets_assert(ok boolean, message text) RETURNS boolean LANGUAGE plpgsql AS $$
  BEGIN
    IF ok IS NOT TRUE THEN RAISE EXCEPTION USING MESSAGE = message, ERRCODE = 'XX000'; END IF;
    RETURN true;
  END $$;`,
  // 4: a commit planned from ChannelCache in one statement (see COMMIT_KNOWN_SQL).
  COMMIT_KNOWN_FUNCTION,
  // 5: the feed's page, planned for index lookups whatever the tables held (see FEED_SQL).
  `CREATE FUNCTION rockets_feed(after bigint, page integer)
    RETURNS TABLE ("position" bigint, channel text, message_number bigint, message_type text, message_time text,
      payload json, recorded_at timestamptz, txid text, r_channel text, type text, mission text,
      speed double precision, status text, exploded_reason text, launched_at text, updated_at text,
      last_message_number bigint)
    LANGUAGE plpgsql STABLE SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
  BEGIN
    RETURN QUERY
    SELECT e.position, e.channel::text, e.message_number, e.message_type, e.message_time, e.payload, e.recorded_at,
      e.txid::text, r.channel::text, r.type::text, r.mission::text, r.speed, r.status::text, r.exploded_reason,
      r.launched_at::text, r.updated_at::text, r.last_message_number
    FROM (SELECT * FROM events v WHERE v.position > after ORDER BY v.position LIMIT page) e
    LEFT JOIN rockets r ON r.channel = e.channel
    ORDER BY e.position;
  END $$;`,
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

/** The committed state of a transaction's locked channels, as its preload read it. */
interface Loaded {
  readonly rockets: ReadonlyMap<string, Rocket>;
  readonly pending: ReadonlyMap<string, ReadonlyMap<number, RocketMessage>>;
  /** Arrival times of each channel's buffered messages, for the gap policy. */
  readonly arrivals: ReadonlyMap<string, readonly BufferedAt[]>;
  /** Applied messages that have the (channel, number) of one of the transaction's messages, by keyOf. */
  readonly twins: ReadonlyMap<string, RocketMessage>;
}

/** The one row of PRELOAD_SQL. */
interface PreloadRow {
  readonly rockets: RocketRow[];
  readonly pending: PendingRow[];
  readonly twins: MessageRow[];
}

function toLoaded(row: PreloadRow | undefined): Loaded {
  if (!row) throw new Error('the preload query returned no row');
  const rockets = new Map(row.rockets.map((r) => [r.channel, toRocket(r)]));
  const pending = new Map<string, Map<number, RocketMessage>>();
  const arrivals = new Map<string, BufferedAt[]>();
  for (const p of row.pending) {
    const m = toRocketMessage(p);
    let map = pending.get(m.channel);
    if (!map) pending.set(m.channel, (map = new Map<number, RocketMessage>()));
    map.set(m.messageNumber, m);
    let list = arrivals.get(m.channel);
    if (!list) arrivals.set(m.channel, (list = []));
    list.push({ messageNumber: m.messageNumber, receivedAt: Date.parse(p.received_at) });
  }
  const twins = new Map(row.twins.map((t) => [keyOf(t.channel, Number(t.message_number)), toRocketMessage(t)]));
  return { rockets, pending, arrivals, twins };
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

/**
 * What the batches of one transaction plan from, batch after batch: the loaded state plus the effect of
 * the batches planned before, so that each call of a group sees the calls before it as committed.
 */
class Overlay implements PlanSource {
  private readonly rockets: Map<string, Rocket>;
  private readonly pending = new Map<string, Map<number, RocketMessage>>();
  private readonly applied: Map<string, RocketMessage>;

  constructor(private readonly loaded: Loaded) {
    this.rockets = new Map(loaded.rockets);
    this.applied = new Map(loaded.twins);
  }

  channel(channel: string): ChannelState {
    return { rocket: this.rockets.get(channel), pending: this.pendingOf(channel) };
  }

  /**
   * An applied message of the log, or of a batch planned before. After a preload, none is an answer (it
   * read every number of the transaction's messages); on `loaded.twins === NOT_LOADED` it throws
   * NotLoaded: the message may be in the log.
   */
  appliedMessage(channel: string, n: number): RocketMessage | undefined {
    const m = this.applied.get(keyOf(channel, n));
    if (m === undefined && this.loaded.twins === NOT_LOADED) throw new NotLoaded();
    return m;
  }

  /** Takes a planned batch in: the batches planned next see it. */
  advance(plan: BatchPlan): void {
    for (const rocket of plan.rockets) this.rockets.set(rocket.channel, rocket);
    for (const m of plan.applied) {
      this.applied.set(keyOf(m.channel, m.messageNumber), m);
      this.pendingOf(m.channel).delete(m.messageNumber);
    }
    for (const m of plan.buffered) this.pendingOf(m.channel).set(m.messageNumber, m);
  }

  private pendingOf(channel: string): Map<number, RocketMessage> {
    let p = this.pending.get(channel);
    if (p === undefined) this.pending.set(channel, (p = new Map(this.loaded.pending.get(channel))));
    return p;
  }
}

/** The twins of a plan from ChannelCache: none was read. */
const NOT_LOADED: ReadonlyMap<string, RocketMessage> = new Map();

/** A plan from ChannelCache asked for an applied message: it must be planned from the database. */
class NotLoaded extends Error {}

/**
 * What this instance last saw committed for recently used channels that buffer nothing: the rocket row,
 * or null for none. Only a hint: a commit planned from it checks it on the server, under the channels'
 * locks, before it writes (see PostgresStore). Bounded; the least recently committed channel goes first.
 */
class ChannelCache {
  private readonly rockets = new Map<string, Rocket | null>();

  constructor(private readonly capacity: number) {}

  get(channel: string): Rocket | null | undefined {
    return this.rockets.get(channel);
  }

  set(channel: string, rocket: Rocket | null): void {
    this.rockets.delete(channel);
    this.rockets.set(channel, rocket);
    if (this.rockets.size > this.capacity) {
      const oldest = this.rockets.keys().next();
      if (oldest.done !== true) this.rockets.delete(oldest.value);
    }
  }

  delete(channel: string): void {
    this.rockets.delete(channel);
  }

  clear(): void {
    this.rockets.clear();
  }
}

/** What a transaction writes: the net effect of its plans, taken in order. */
interface NetEffect {
  /** Final state of each rocket changed. */
  readonly rockets: Map<string, Rocket>;
  /** Rows to delete from `pending`: buffered before the transaction, applied in it. */
  readonly released: RocketMessage[];
  /** Rows to add to `pending`: buffered in the transaction and still buffered at its end. */
  readonly buffered: RocketMessage[];
  /** Events to append, in apply order. */
  readonly applied: RocketMessage[];
}

function netEffect(plans: readonly BatchPlan[]): NetEffect {
  const rockets = new Map<string, Rocket>();
  const released = new Map<string, RocketMessage>();
  const buffered = new Map<string, RocketMessage>();
  const applied: RocketMessage[] = [];
  for (const p of plans) {
    for (const rocket of p.rockets) rockets.set(rocket.channel, rocket);
    for (const m of p.released) {
      const key = keyOf(m.channel, m.messageNumber);
      // Released by a later call of the group than the one that buffered it: never written at all.
      if (!buffered.delete(key)) released.set(key, m);
    }
    for (const m of p.buffered) buffered.set(keyOf(m.channel, m.messageNumber), m);
    for (const m of p.applied) applied.push(m);
  }
  return { rockets, released: [...released.values()], buffered: [...buffered.values()], applied };
}

/** A value as PostgreSQL literal text, written as pg writes a text parameter. */
type SqlValue = string | number | Date | readonly (string | number | null)[];

const arrayElement = (x: string | number | null): string =>
  x === null ? 'NULL' : `"${String(x).replace(/[\\"]/g, '\\$&')}"`;

function literal(v: SqlValue): string {
  if (v instanceof Date) return escapeLiteral(v.toISOString());
  if (typeof v === 'string' || typeof v === 'number') return escapeLiteral(String(v));
  return escapeLiteral(`{${v.map(arrayElement).join(',')}}`);
}

/**
 * `text` with each `$n` replaced by the literal of `values[n - 1]` (every `$n` of these statements has a
 * cast): a statement for the simple query protocol, which sends several statements in one round trip.
 * Not prepared statements: the server plans each one for its actual values. A cached generic plan was
 * made while the tables were small and kept scanning them whole as they grew (seen with auto_explain:
 * the preload read every row of `rockets` and `events`), and planning costs a fraction of a millisecond.
 */
function inline(text: string, values: readonly SqlValue[]): string {
  return text.replace(/\$(\d+)/g, (_, n: string) => {
    const v = values[Number(n) - 1];
    if (v === undefined) throw new Error(`no value for $${n}`);
    return literal(v);
  });
}

/**
 * The statements whose plan cannot depend on the tables' contents, as they read nothing but their
 * arguments (the upsert reads `rockets` only through its primary key, as ON CONFLICT's arbiter): they
 * are prepared once per connection (PREPARE_ALL) and EXECUTEd with literal arguments, so the server
 * neither parses nor plans them again. Everything that reads a table is planned every time (`inline`).
 */
type Prepared = 'rockets_lock_channels' | 'rockets_upsert' | 'rockets_buffer' | 'rockets_append';

const execute = (name: Prepared, values: readonly SqlValue[]): string =>
  `EXECUTE ${name}(${values.map(literal).join(', ')})`;

/** The results of a simple query, one per statement. */
const resultsOf = (r: QueryResult | QueryResult[]): QueryResult[] => (Array.isArray(r) ? r : [r]);

function lastRows<R extends QueryResultRow>(r: QueryResult | QueryResult[]): R[] {
  const all = resultsOf(r);
  return (all[all.length - 1]?.rows ?? []) as R[];
}

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

function rocketColumns(rs: readonly Rocket[]): SqlValue[] {
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
 * position order, one call per transaction (a group commit is one). The events table is the truth;
 * NOTIFY and this instance's own commits only say "there is more". One pump runs at a time and
 * coalesces wake-ups. An own commit that directly follows the last delivered position is delivered
 * without a read; anything else is read from the table (`position > last`, in pages), which is gap-free
 * because positions become visible in order (see PostgresStore).
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
  /** Own transactions between sending COMMIT and handing their events over (see `committing`). */
  private inCommit = 0;

  constructor(
    private last: number,
    private readonly read: (after: number, limit: number) => Promise<FeedRow[]>,
    private readonly delays: { readonly min: number; readonly max: number },
    /** Told of the events of every commit it did not get from this instance (another's, or one it read). */
    private readonly foreign: (events: readonly StoredEvent[]) => void,
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

  /**
   * This instance is about to send a COMMIT; `committed` follows once its events were handed over with
   * `appended` (or it failed). Until then a notification alone does not make the feed read: it most
   * likely announces that very commit (the listener connection can be told before the committing one),
   * which `appended` then delivers without a read. Notifications of other instances wait that long.
   */
  committing(): void {
    this.inCommit++;
  }

  committed(): void {
    this.inCommit--;
    this.kick();
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
        if (!this.force && this.own.size === 0 && (this.announced <= this.last || this.inCommit > 0)) continue;
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
      // Another instance's commit: rocket rows as of the read, at least as new as these events. A row a
      // later commit already changed is not the state this one left, so it waits for that commit's group.
      const events = first.position > this.last ? g.events : g.events.filter((e) => e.position > this.last);
      this.foreign(events);
      this.deliver(events, leftBy(events, g.rockets), lastEvent.position);
    }
    this.deliverOwn();
  }

  private deliver(events: readonly StoredEvent[], rockets: readonly Rocket[], last: number): void {
    this.last = last;
    if (events.length > 0) notify(this.listeners, events, rockets);
  }
}

/** The rockets whose row is the state these events left them in: at the number of their last event here. */
function leftBy(events: readonly StoredEvent[], rows: ReadonlyMap<string, Rocket>): Rocket[] {
  const last = new Map<string, number>();
  for (const e of events) last.set(e.channel, Math.max(last.get(e.channel) ?? 0, e.messageNumber));
  return [...rows.values()].filter((r) => r.lastMessageNumber === last.get(r.channel));
}

/**
 * The event store on PostgreSQL, for several instances sharing one database.
 *
 * Group commit: an instance runs one transaction at a time. Every commit() call that arrives while one
 * is in flight, or in the same tick, waits for the next, and that one records them all, in call order,
 * each call planned against the state the calls before it left (as SqliteStore does). Each call still
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
  private queue: Call[] = [];
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
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new Error('the PostgreSQL URL is not a valid URL');
    }
    if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:')
      throw new Error(`a PostgreSQL URL starts with postgres:// or postgresql://, not ${parsed.protocol}//`);
    // pg would fail on it later with a message about something else; the value itself is never repeated.
    for (const [part, value] of [
      ['user', parsed.username],
      ['password', parsed.password],
    ] as const) {
      try {
        decodeURIComponent(value);
      } catch {
        throw new Error(`the PostgreSQL URL's ${part} holds a malformed percent escape: write a % as %25`);
      }
    }
    // The URL is the only place an operator names the schema: a spelling pg would ignore, or a second
    // value, would quietly put this instance in another schema's fleet.
    for (const key of new Set(parsed.searchParams.keys())) {
      if (key !== 'schema' && key.toLowerCase() === 'schema')
        throw new Error(`the PostgreSQL URL's "${key}=" parameter is spelt "schema=" (lower case)`);
      // pg passes every other parameter on as a setting of its own and ignores the ones it does not
      // know, so a misspelt `sslmode` would connect without TLS and say nothing.
      if (!URL_PARAMETERS.has(key))
        throw new Error(
          `the PostgreSQL URL's "${key}=" parameter is not one this server or pg reads; it takes ${[...URL_PARAMETERS].map((k) => `${k}=`).join(', ')}`,
        );
    }
    if (parsed.searchParams.getAll('schema').length > 1)
      throw new Error('the PostgreSQL URL names "schema=" more than once');
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
   * the same tick, is recorded by the same transaction (see the class comment).
   */
  commit(messages: readonly RocketMessage[]): Promise<CommitResult> {
    if (messages.length === 0) return Promise.resolve({ outcomes: [], events: [], rockets: [] });
    if (this.closing) return Promise.reject(new Error('the PostgreSQL store is closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ messages, resolve, reject });
      if (this.flushScheduled) return;
      this.flushScheduled = true;
      void this.serially(() => this.flush());
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
      // One at a time with this instance's group commits: it too holds the append lock to its COMMIT.
      const recorded = await this.serially(() =>
        this.transact(channels, [], (loaded) => {
          gaps = channels.flatMap((channel) =>
            gapsToSkip(
              channel,
              (loaded.rockets.get(channel)?.lastMessageNumber ?? 0) + 1,
              loaded.arrivals.get(channel) ?? [],
              cutoff,
            ),
          );
          return [planBatch(skipMessages(gaps, now.toISOString(), reason), new Overlay(loaded))];
        }),
      );
      await recorded.delivered;
      skipped.push(...gaps);
      // Each channel found is now free of stale gaps; none skipped means another instance got there first.
      if (gaps.length === 0 || channels.length < SKIP_CHANNELS_PER_TRANSACTION) break;
    }
    return skipped;
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
   * One group commit: takes every call queued by the time it starts (a tick after the transaction before
   * it ended, so the callers that one resolved are in) and records them in one transaction, each call
   * planned after the ones before it. Never rejects: a failure rejects every call of the group.
   */
  private async flush(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.flushScheduled = false;
    const calls = this.queue;
    this.queue = [];
    if (calls.length === 0) return;
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
   * duplicate or conflict needs the log), nothing buffered (the total cap needs the count), every channel
   * changed; a channel not cached whose message #1 is in the group is taken to be new (no rocket, nothing
   * buffered), which the check verifies like the rest. Resolves to undefined when it cannot be used or
   * the check failed (nothing was written, the entries are dropped, and the next STALE_BACKOFF groups do
   * not try): `transact` then does it the long way.
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
    if (plans.some((p) => p.buffered.length > 0)) return undefined;
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
      // Counting the buffer costs a scan of `pending`: only a transaction that buffers pays it. It then
      // counts under the buffer lock, which every buffering transaction holds to its end, so the count
      // includes every one that buffered before and the total cap is exact across instances. Two
      // statements: the count's snapshot is taken after the lock is granted.
      if (plans.some((p) => p.buffered.length > 0)) {
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

/** Whether `schema` holds the tables of a store (its migrations table). */
async function holdsStore(pool: Pool, schema: string): Promise<boolean> {
  const res = await pool.query(
    "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'schema_migrations'",
    [schema],
  );
  return (res.rowCount ?? 0) > 0;
}

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

/** The message of the check that fails when ChannelCache was wrong (rockets_commit_known raises it). */
const STALE = 'the cached state of a channel is stale';

/**
 * A group planned from ChannelCache as one statement in an implicit transaction (see
 * rockets_commit_known): one round trip, prepared once per connection, and COMMIT follows it at once.
 */
const COMMIT_KNOWN_SQL = `SELECT
  rockets_commit_known($1::integer, $2::text, $3::text, $4::text[], $5::json, $6::json, $7::json, $8::timestamptz)
    AS positions`;

/** Open gaps, oldest first: one group per channel of the (capped, so small) buffer. */
const GAPS_SQL = `
  SELECT g.channel, g.count, g.oldest, COALESCE(r.last_message_number, 0) + 1 AS waiting_for
  FROM (SELECT channel, count(*) AS count, min(received_at) AS oldest FROM pending GROUP BY channel) g
  LEFT JOIN rockets r ON r.channel = g.channel
  ORDER BY g.oldest, g.channel
  LIMIT $1`;

/** Projection upserts of one transaction. */
const UPSERT_SQL = `
  ${ROCKET_INSERT} ${ROCKET_UNNEST}
  ON CONFLICT (channel) DO UPDATE SET type = EXCLUDED.type, mission = EXCLUDED.mission, speed = EXCLUDED.speed,
    status = EXCLUDED.status, exploded_reason = EXCLUDED.exploded_reason, launched_at = EXCLUDED.launched_at,
    updated_at = EXCLUDED.updated_at, last_message_number = EXCLUDED.last_message_number`;

/**
 * Buffer releases of one transaction, in a statement that fails (and so keeps COMMIT from running)
 * unless the buffer held every one of them.
 */
const RELEASE_SQL = `
  WITH del AS (
    DELETE FROM pending p USING unnest($1::text[], $2::bigint[]) AS d(c, n)
    WHERE p.channel = d.c AND p.message_number = d.n
    RETURNING 1
  )
  SELECT rockets_assert(count(*) = cardinality($2::bigint[]), 'the reorder buffer changed under the channel lock')
  FROM del`;

/** Buffer additions of one transaction; one already there fails the statement (primary key). */
const BUFFER_SQL = `
  INSERT INTO pending (channel, message_number, message_type, message_time, payload, received_at)
  SELECT c, n, t, tm, pl::json, $6::timestamptz FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[])
    AS u(c, n, t, tm, pl)`;

/**
 * Appends in apply order: rows are inserted, and take positions, in ordinality order. Answers the
 * positions in order, and fails (keeping COMMIT from running) unless the rows in position order are the
 * given ones in the given order: a channel's log must be in number order.
 */
const APPEND_SQL = `
  WITH ins AS (
    INSERT INTO events (channel, message_number, message_type, message_time, payload, recorded_at)
    SELECT c, n, t, tm, pl::json, $6::timestamptz
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(c, n, t, tm, pl, o)
    ORDER BY o
    RETURNING position, channel, message_number
  )
  SELECT position FROM ins
  WHERE (SELECT rockets_assert(array_agg(channel::text ORDER BY position) = $1::text[]
      AND array_agg(message_number ORDER BY position) = $2::bigint[], 'positions were not assigned in apply order')
    FROM ins)
  ORDER BY position`;

/**
 * A page of the log after a position, with each event's rocket as of the same snapshot, through
 * rockets_feed: its plan allows only index lookups and nested loops, right for a page of a few events
 * against any fleet. As a plain prepared statement, its plan cached for the connection was the one made
 * while the tables were small, and joined by a scan of all of `rockets` (seen with auto_explain: every
 * read of another instance's commit scanned 12,000 rockets); planned for each read, the page size (500)
 * as its estimate chose the same.
 */
const FEED_SQL = 'SELECT * FROM rockets_feed($1::bigint, $2::integer)';

/** PREPARE of every statement `execute` runs (see Prepared). */
const PREPARE_ALL = (
  [
    ['rockets_lock_channels', LOCK_CHANNELS_SQL],
    ['rockets_upsert', UPSERT_SQL],
    ['rockets_buffer', BUFFER_SQL],
    ['rockets_append', APPEND_SQL],
  ] satisfies [Prepared, string][]
)
  .map(([name, sql]) => `PREPARE ${name} AS ${sql}`)
  .join(';\n');

/** Pool connections on which PREPARE_ALL ran. */
const PREPARED_ON = new WeakSet<PoolClient>();
