// The events table of src/store/sqlite/schema.ts as B4 and B5 create it, and the one insert both run:
// one definition, so the two SQLite baselines cannot drift apart.
import type { Database, Statement } from 'better-sqlite3';

export const CREATE_EVENTS = `CREATE TABLE events (
    position INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL,
    message_number INTEGER NOT NULL CHECK (message_number >= 1), message_type TEXT NOT NULL,
    message_time TEXT NOT NULL, payload TEXT NOT NULL, recorded_at TEXT NOT NULL,
    UNIQUE (channel, message_number)) STRICT`;

/** channel, message_number, message_type, message_time, payload (recorded_at is the commit's) */
export type EventRow = readonly [string, number, string, string, string];

/** Rows one INSERT writes at most, as src/store/sqlite/store.ts appends a commit's events. */
const INSERT_ROWS = 64;

/**
 * Inserts rows in order, up to INSERT_ROWS a statement (one prepared statement per row count), the way
 * our store appends events: a statement per row would pay its step, reset and bindings once per row; OR
 * ROLLBACK, as ours, spares SQLite a statement journal.
 */
export function prepareInsert(db: Database): (rows: readonly EventRow[], at: string) => void {
  const statements: Array<Statement<unknown[], never>> = [];
  const statement = (count: number): Statement<unknown[], never> =>
    (statements[count] ??= db.prepare<unknown[], never>(
      `INSERT OR ROLLBACK INTO events (channel, message_number, message_type, message_time, payload, recorded_at)
       VALUES ${Array.from({ length: count }, () => '(?, ?, ?, ?, ?, ?)').join(', ')}`,
    ));
  return (rows, at) => {
    for (let from = 0; from < rows.length; from += INSERT_ROWS) {
      const count = Math.min(INSERT_ROWS, rows.length - from);
      const values = new Array<unknown>(count * 6);
      for (let i = 0, v = 0; i < count; i++) {
        const row = rows[from + i] as EventRow;
        for (const value of row) values[v++] = value;
        values[v++] = at;
      }
      statement(count).run(values);
    }
  };
}
