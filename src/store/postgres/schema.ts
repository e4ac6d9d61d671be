/**
 * What the store creates in its schema and on what terms: the versioned migrations (tables, indexes,
 * stored functions), the advisory lock classes a stored function bakes in, and the sort expressions the
 * indexes are made for. Apart from the statements (sql.ts): a released migration is never edited, only
 * followed by a new one.
 */
import type { Pool } from 'pg';
import type { RocketSortField } from '../types';

/** Advisory lock classes (the two-int4 key space, apart from the bigint space used for channels). */
const LOCK_MIGRATE = 0x726b0001;
export const LOCK_APPEND = 0x726b0002;
export const LOCK_REBUILD = 0x726b0003;
/** Held by every commit that buffers, from counting `pending` to COMMIT: the total cap is exact. */
export const LOCK_BUFFER = 0x726b0004;

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
export const SORT_SQL: { readonly [F in RocketSortField]: { readonly expr: string; readonly numeric: boolean } } = {
  channel: { expr: 'r.channel', numeric: false },
  type: { expr: "COALESCE(r.type, '')", numeric: false },
  mission: { expr: "COALESCE(r.mission, '')", numeric: false },
  speed: { expr: 'r.speed', numeric: true },
  status: { expr: 'r.status', numeric: false },
  launchedAt: { expr: "COALESCE(r.launched_at, '')", numeric: false },
  updatedAt: { expr: 'r.updated_at', numeric: false },
};

/** Whether `schema` holds the tables of a store (its migrations table). */
export async function holdsStore(pool: Pool, schema: string): Promise<boolean> {
  const res = await pool.query(
    "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'schema_migrations'",
    [schema],
  );
  return (res.rowCount ?? 0) > 0;
}

/**
 * Creates the schema and applies the missing migrations under a session advisory lock on the schema,
 * so instances starting together take turns and the later ones find nothing to do. Returns hashtext(schema).
 */
export async function migrate(pool: Pool, schema: string): Promise<number> {
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
