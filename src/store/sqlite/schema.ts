/**
 * The SQLite file's schema, its migrations and the statements prepared once per connection: the SQL
 * the store runs, apart from its logic, so that the tables, their indexes and their reads sit together.
 */
import type Database from 'better-sqlite3';
import { EVENT_TYPES, MESSAGE_TYPES } from '../../domain/message';
import { ROCKET_STATUSES } from '../../domain/rocket';
import type { RocketSortField, StoreStats } from '../types';
import type { BufferRow, EventRow, GapRow, MessageRow, MessageTuple, RocketRow } from './rows';

/** Bumped by each migration; a file written by a newer build is refused rather than misread. */
const SCHEMA_VERSION = 3;

const quoted = (values: readonly string[]): string => values.map((v) => `'${v}'`).join(', ');

const SCHEMA_V1 = `
  CREATE TABLE IF NOT EXISTS events (
    -- AUTOINCREMENT so that a position is never handed out twice, even after the newest row is gone.
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    channel        TEXT    NOT NULL,
    message_number INTEGER NOT NULL CHECK (message_number >= 1),
    -- Senders' types, and MessageSkipped recorded by the gap policy.
    message_type   TEXT    NOT NULL CHECK (message_type IN (${quoted(EVENT_TYPES)})),
    message_time   TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    recorded_at    TEXT    NOT NULL,
    UNIQUE (channel, message_number)
  ) STRICT;
  -- Catch-up readers page through one channel by position.
  CREATE INDEX IF NOT EXISTS events_by_channel ON events (channel, position);

  CREATE TABLE IF NOT EXISTS rockets (
    channel             TEXT    PRIMARY KEY,
    type                TEXT,
    mission             TEXT,
    speed               REAL    NOT NULL,
    status              TEXT    NOT NULL CHECK (status IN (${quoted(ROCKET_STATUSES)})),
    exploded_reason     TEXT,
    launched_at         TEXT,
    updated_at          TEXT    NOT NULL,
    last_message_number INTEGER NOT NULL,
    -- Sort keys of the nullable text fields (null sorts as ''). Computed, never stored; as columns
    -- rather than expressions so that a cursor's row-value comparison can seek their indexes.
    type_key            TEXT    GENERATED ALWAYS AS (COALESCE(type, '')) VIRTUAL,
    mission_key         TEXT    GENERATED ALWAYS AS (COALESCE(mission, '')) VIRTUAL,
    launched_at_key     TEXT    GENERATED ALWAYS AS (COALESCE(launched_at, '')) VIRTUAL
  ) STRICT;
  -- Every sort key with channel as the tie-breaker, with and without a leading status: a page,
  -- filtered or not, after a cursor or not, is one index range scan in either direction. The primary
  -- key serves the channel order.
  CREATE INDEX IF NOT EXISTS rockets_by_status ON rockets (status, channel);
  CREATE INDEX IF NOT EXISTS rockets_by_type ON rockets (type_key, channel);
  CREATE INDEX IF NOT EXISTS rockets_by_status_type ON rockets (status, type_key, channel);
  CREATE INDEX IF NOT EXISTS rockets_by_mission ON rockets (mission_key, channel);
  CREATE INDEX IF NOT EXISTS rockets_by_status_mission ON rockets (status, mission_key, channel);
  CREATE INDEX IF NOT EXISTS rockets_by_speed ON rockets (speed, channel);
  CREATE INDEX IF NOT EXISTS rockets_by_status_speed ON rockets (status, speed, channel);
  CREATE INDEX IF NOT EXISTS rockets_by_launched_at ON rockets (launched_at_key, channel);
  CREATE INDEX IF NOT EXISTS rockets_by_status_launched_at ON rockets (status, launched_at_key, channel);
  CREATE INDEX IF NOT EXISTS rockets_by_updated_at ON rockets (updated_at, channel);
  CREATE INDEX IF NOT EXISTS rockets_by_status_updated_at ON rockets (status, updated_at, channel);

  CREATE TABLE IF NOT EXISTS pending (
    channel        TEXT    NOT NULL,
    message_number INTEGER NOT NULL,
    message_type   TEXT    NOT NULL CHECK (message_type IN (${quoted(MESSAGE_TYPES)})),
    message_time   TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    received_at    TEXT    NOT NULL,
    PRIMARY KEY (channel, message_number)
  ) STRICT, WITHOUT ROWID;
  -- The gap sweep finds the channels whose oldest buffered message is older than the timeout.
  CREATE INDEX IF NOT EXISTS pending_by_received_at ON pending (received_at, channel);
`;

/**
 * Version 2 keeps one index per sort key and drops their copies behind a leading status: every message
 * changes updated_at and most change speed, so each copy cost index writes per message (and pages per
 * commit to write and sync). Status trails each index instead, (key, channel, status): no more entries,
 * and a page filtered by status walks the sort key's index skipping the other status's entries without
 * reading their rows; for a rare status it gathers that status's rows from rockets_by_status and sorts
 * them instead (SqliteStore.statusPlan). An explosion, once per rocket, rewrites its entry in each.
 */
const SCHEMA_V2 = `
  DROP INDEX IF EXISTS rockets_by_status_type;
  DROP INDEX IF EXISTS rockets_by_status_mission;
  DROP INDEX IF EXISTS rockets_by_status_speed;
  DROP INDEX IF EXISTS rockets_by_status_launched_at;
  DROP INDEX IF EXISTS rockets_by_status_updated_at;
  DROP INDEX IF EXISTS rockets_by_type;
  DROP INDEX IF EXISTS rockets_by_mission;
  DROP INDEX IF EXISTS rockets_by_speed;
  DROP INDEX IF EXISTS rockets_by_launched_at;
  DROP INDEX IF EXISTS rockets_by_updated_at;
  CREATE INDEX rockets_by_type ON rockets (type_key, channel, status);
  CREATE INDEX rockets_by_mission ON rockets (mission_key, channel, status);
  CREATE INDEX rockets_by_speed ON rockets (speed, channel, status);
  CREATE INDEX rockets_by_launched_at ON rockets (launched_at_key, channel, status);
  CREATE INDEX rockets_by_updated_at ON rockets (updated_at, channel, status);
`;

/**
 * Version 3 writes the rockets table behind the log: `projection` holds the position of the last event
 * the table reflects. Files of earlier versions wrote it with every commit, so it reflects all of them.
 * It also drops events_by_channel: the unique (channel, message_number) index serves a channel's reads
 * (see eventsOfChannel), and each index written costs every message a page in the WAL.
 */
const SCHEMA_V3 = `
  DROP INDEX IF EXISTS events_by_channel;
  CREATE TABLE projection (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL
  ) STRICT;
  INSERT INTO projection (id, position) SELECT 1, COALESCE(MAX(position), 0) FROM events;
`;

/** The column each sort field orders by; each has its indexes above. */
export const SORT_COLUMN: { readonly [F in RocketSortField]: string } = {
  channel: 'channel',
  type: 'type_key',
  mission: 'mission_key',
  speed: 'speed',
  status: 'status',
  launchedAt: 'launched_at_key',
  updatedAt: 'updated_at',
};

export const ROCKET_COLUMNS =
  'channel, type, mission, speed, status, exploded_reason, launched_at, updated_at, last_message_number';

/** Whether the database holds a rockets store: a schema version `migrate` set, and the event log. */
export function holdsStore(db: Database.Database): boolean {
  return (
    (db.pragma('user_version', { simple: true }) as number) > 0 &&
    db.prepare(`SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'events'`).get() !== undefined
  );
}

/** Brings the file's schema up to SCHEMA_VERSION in one transaction; refuses a newer one. */
export function migrate(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION)
    throw new Error(`the database has schema version ${version}; this build knows up to ${SCHEMA_VERSION}`);
  if (version < SCHEMA_VERSION) {
    db.transaction(() => {
      if (version < 1) db.exec(SCHEMA_V1);
      if (version < 2) db.exec(SCHEMA_V2);
      db.exec(SCHEMA_V3);
      db.pragma(`user_version = ${SCHEMA_VERSION}`);
    }).immediate();
  }
}

/** Every fixed statement, prepared once per connection. */
export function prepare(db: Database.Database) {
  return {
    rocket: db.prepare<[string], RocketRow>(`SELECT ${ROCKET_COLUMNS} FROM rockets WHERE channel = ?`),
    pendingOf: db.prepare<[string], MessageRow>(
      `SELECT channel, message_number, message_type, message_time, payload FROM pending WHERE channel = ?`,
    ),
    eventAt: db.prepare<[string, number], MessageRow>(
      `SELECT channel, message_number, message_type, message_time, payload
       FROM events WHERE channel = ? AND message_number = ?`,
    ),
    insertRocket: db.prepare<[RocketRow], never>(
      `INSERT INTO rockets (channel, type, mission, speed, status, exploded_reason, launched_at, updated_at,
                            last_message_number)
       VALUES (@channel, @type, @mission, @speed, @status, @exploded_reason, @launched_at, @updated_at,
               @last_message_number)`,
    ),
    deleteRockets: db.prepare<[], never>('DELETE FROM rockets'),
    insertPending: db.prepare<[string, number, string, string, string, string], never>(
      `INSERT INTO pending (channel, message_number, message_type, message_time, payload, received_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
    ),
    deletePending: db.prepare<[string, number], never>('DELETE FROM pending WHERE channel = ? AND message_number = ?'),
    arrivalsOf: db.prepare<[string], { message_number: number; received_at: string }>(
      'SELECT message_number, received_at FROM pending WHERE channel = ?',
    ),
    pendingCount: db.prepare<[], { count: number }>('SELECT COUNT(*) AS count FROM pending'),
    statusCounts: db.prepare<[], { status: string; count: number }>(
      'SELECT status, COUNT(*) AS count FROM rockets GROUP BY status',
    ),
    /** Channels holding a message received before the cutoff (ISO text, whose order is time order). */
    staleChannels: db.prepare<[string, number], { channel: string }>(
      'SELECT DISTINCT channel FROM pending WHERE received_at < ? LIMIT ?',
    ),
    gaps: db.prepare<[number], GapRow>(
      `SELECT g.channel, g.count, g.oldest, COALESCE(r.last_message_number, 0) + 1 AS waiting_for
       FROM (SELECT channel, COUNT(*) AS count, MIN(received_at) AS oldest FROM pending GROUP BY channel) g
       LEFT JOIN rockets r ON r.channel = g.channel
       ORDER BY g.oldest, g.channel LIMIT ?`,
    ),
    bufferOf: db.prepare<[string], BufferRow>(
      'SELECT channel, COUNT(*) AS count, MIN(received_at) AS oldest FROM pending WHERE channel = ?',
    ),
    /** Buffer info of a page of rockets in one grouped query; the channels come as a JSON array. */
    buffersOf: db.prepare<[string], BufferRow & { readonly channel: string }>(
      `SELECT channel, COUNT(*) AS count, MIN(received_at) AS oldest FROM pending
       WHERE channel IN (SELECT value FROM json_each(?)) GROUP BY channel`,
    ),
    events: db.prepare<Record<string, unknown>, EventRow>(
      `SELECT * FROM events WHERE position > @afterPosition AND message_number > @afterNumber
       ORDER BY position LIMIT @limit`,
    ),
    // Within a channel, number order is position order (a channel's events are appended 1, 2, 3, …), and
    // the unique index's entries carry the position (the rowid). So the channel's events after a position
    // are those after the number of its last event at or before it: found walking the index back from
    // the channel's end (as far as the events to read), then read walking it forward, neither sorting.
    eventsOfChannel: db.prepare<Record<string, unknown>, EventRow>(
      `SELECT * FROM events WHERE channel = @channel AND message_number > COALESCE(
         (SELECT message_number FROM events WHERE channel = @channel AND position <= @afterPosition
          ORDER BY message_number DESC LIMIT 1), 0)
       ORDER BY message_number LIMIT @limit`,
    ),
    eventsOfChannelAfterNumber: db.prepare<Record<string, unknown>, EventRow>(
      `SELECT * FROM events WHERE channel = @channel AND message_number > @afterNumber AND position > @afterPosition
       ORDER BY message_number LIMIT @limit`,
    ),
    replay: db
      .prepare<[], MessageTuple>(
        'SELECT channel, message_number, message_type, message_time, payload FROM events ORDER BY position',
      )
      .raw(),
    replayAfter: db
      .prepare<[number], MessageTuple>(
        `SELECT channel, message_number, message_type, message_time, payload FROM events
         WHERE position > ? ORDER BY position`,
      )
      .raw(),
    projected: db.prepare<[], { position: number }>('SELECT position FROM projection WHERE id = 1'),
    setProjected: db.prepare<[number], never>('UPDATE projection SET position = ? WHERE id = 1'),
    head: db.prepare<[], { head: number }>('SELECT COALESCE(MAX(position), 0) AS head FROM events'),
    // The log is append-only and AUTOINCREMENT positions of a rolled-back transaction are rolled back
    // with it, so the highest position is the number of events, without counting millions of rows.
    stats: db.prepare<[], StoreStats>(
      `SELECT (SELECT COUNT(*) FROM rockets) AS rockets,
              (SELECT COALESCE(MAX(position), 0) FROM events) AS events,
              (SELECT COUNT(*) FROM pending) AS buffered`,
    ),
  };
}
