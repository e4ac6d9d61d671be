// The events table of src/store/sqlite.ts as B4 and B5 create it, and the one insert both run: one
// definition, so the two SQLite baselines cannot drift apart.
import type { Database } from 'better-sqlite3';

export const CREATE_EVENTS = `CREATE TABLE events (
    position INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL,
    message_number INTEGER NOT NULL CHECK (message_number >= 1), message_type TEXT NOT NULL,
    message_time TEXT NOT NULL, payload TEXT NOT NULL, recorded_at TEXT NOT NULL,
    UNIQUE (channel, message_number)) STRICT`;

/** channel, message_number, message_type, message_time, payload, recorded_at */
export type EventRow = [string, number, string, string, string, string];

export const prepareInsert = (db: Database) =>
  db.prepare<EventRow>(
    `INSERT INTO events (channel, message_number, message_type, message_time, payload, recorded_at)
     VALUES (?, ?, ?, ?, ?, ?)`,
  );
