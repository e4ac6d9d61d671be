/**
 * The statement texts of the store's transactions and reads, and how they are sent: as literal text in
 * one simple query (`inline`), or as prepared statements EXECUTEd with literal arguments (`execute`,
 * PREPARE_ALL). Apart so that PostgresStore reads as the steps of a transaction, not as SQL text.
 */
import { escapeLiteral, type QueryResult, type QueryResultRow } from 'pg';
import type { RocketMessage } from '../../domain/message';
import type { Rocket } from '../../domain/rocket';

/**
 * A select-list item for a transaction's first statement: `synchronous_commit` on for the transaction
 * when the server, database or role set it off. Any other value (on, local, remote_write, remote_apply)
 * already flushes the WAL locally before COMMIT returns, and is kept.
 */
export const DURABLE = `CASE WHEN current_setting('synchronous_commit') = 'off'
  THEN set_config('synchronous_commit', 'on', true) END`;

export const ROCKET_VIEW_SQL = `
  SELECT r.*, b.count AS buffered, b.oldest AS oldest_since
  FROM rockets r
  CROSS JOIN LATERAL (SELECT count(*) AS count, min(p.received_at) AS oldest FROM pending p WHERE p.channel = r.channel) b`;

export const EVENT_COLUMNS = 'position, channel, message_number, message_type, message_time, payload, recorded_at';

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
export function inline(text: string, values: readonly SqlValue[]): string {
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

export const execute = (name: Prepared, values: readonly SqlValue[]): string =>
  `EXECUTE ${name}(${values.map(literal).join(', ')})`;

/** The results of a simple query, one per statement. */
export const resultsOf = (r: QueryResult | QueryResult[]): QueryResult[] => (Array.isArray(r) ? r : [r]);

export function lastRows<R extends QueryResultRow>(r: QueryResult | QueryResult[]): R[] {
  const all = resultsOf(r);
  return (all[all.length - 1]?.rows ?? []) as R[];
}

/** Column arrays for `unnest`: one statement writes any number of rows. */
export function messageColumns(ms: readonly RocketMessage[]): [string[], number[], string[], string[], string[]] {
  return [
    ms.map((m) => m.channel),
    ms.map((m) => m.messageNumber),
    ms.map((m) => m.messageType),
    ms.map((m) => m.messageTime),
    ms.map((m) => JSON.stringify(m.payload)),
  ];
}

export function rocketColumns(rs: readonly Rocket[]): SqlValue[] {
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

export const ROCKET_UNNEST = `SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::text[],
  $7::text[], $8::text[], $9::bigint[])`;
export const ROCKET_INSERT = `INSERT INTO rockets (channel, type, mission, speed, status, exploded_reason, launched_at,
  updated_at, last_message_number)`;

/**
 * Per-channel locks, in ascending key order so that two commits never wait on each other in a cycle.
 * The ordered subquery is not flattened (it has ORDER BY and DISTINCT), so the locks are taken in order.
 */
const LOCK_CHANNELS_SQL = `
  SELECT pg_advisory_xact_lock(s.k)
  FROM (SELECT DISTINCT hashtextextended($1::text || '/' || c, 0) AS k FROM unnest($2::text[]) AS c ORDER BY k) s`;

/** Everything planBatch may ask, in one statement: rockets, buffers, and applied twins of the batch's numbers. */
export const PRELOAD_SQL = `
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
export const STALE = 'the cached state of a channel is stale';

/**
 * A group planned from ChannelCache as one statement in an implicit transaction (see
 * rockets_commit_known): one round trip, prepared once per connection, and COMMIT follows it at once.
 */
export const COMMIT_KNOWN_SQL = `SELECT
  rockets_commit_known($1::integer, $2::text, $3::text, $4::text[], $5::json, $6::json, $7::json, $8::timestamptz)
    AS positions`;

/** Open gaps, oldest first: one group per channel of the (capped, so small) buffer. */
export const GAPS_SQL = `
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
export const RELEASE_SQL = `
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
export const FEED_SQL = 'SELECT * FROM rockets_feed($1::bigint, $2::integer)';

/** PREPARE of every statement `execute` runs (see Prepared). */
export const PREPARE_ALL = (
  [
    ['rockets_lock_channels', LOCK_CHANNELS_SQL],
    ['rockets_upsert', UPSERT_SQL],
    ['rockets_buffer', BUFFER_SQL],
    ['rockets_append', APPEND_SQL],
  ] satisfies [Prepared, string][]
)
  .map(([name, sql]) => `PREPARE ${name} AS ${sql}`)
  .join(';\n');
