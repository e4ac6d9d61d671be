/**
 * The copy of an online backup (see `backup.ts`), in a process of its own: `VACUUM INTO` holds the
 * thread that runs it until the whole file is written, and a thread cannot be stopped inside it, while
 * a backup cut short by a signal must stop writing before it removes its partial copy.
 *
 * Run as `node snapshot.js <source> <partial>` through `fork`: it sends one `SnapshotReply` and ends.
 * It leaves stop signals to its parent, which kills it: a Ctrl-C reaches both.
 */
import { SqliteDatabase } from './database';
import { holdsStore } from './schema';

export interface SnapshotRequest {
  /** The store's database file, as SQLite really reads it. */
  readonly source: string;
  /** The empty file to copy into. */
  readonly partial: string;
}

/** What a copy holds: its events, and the position of its last one (0 for none). */
export interface SnapshotSummary {
  readonly events: number;
  readonly lastPosition: number;
}

export type SnapshotReply =
  | ({ readonly ok: true } & SnapshotSummary)
  /** `code`: SQLite's (`SQLITE_READONLY`…), which the caller's message depends on. */
  | { readonly ok: false; readonly message: string; readonly code?: string };

/** Copies the store at `source` into `partial` in one read transaction; counts what the copy holds. */
export function snapshot({ source, partial }: SnapshotRequest): SnapshotSummary {
  const db = new SqliteDatabase(source, { readonly: true, fileMustExist: true, timeout: 5000 });
  try {
    if (!holdsStore(db)) throw new Error(`${source} is not a rockets database: nothing to back up`);
    db.prepare('VACUUM INTO ?').run(partial);
  } finally {
    db.close();
  }
  const copy = new SqliteDatabase(partial, { readonly: true, fileMustExist: true });
  try {
    const row = copy
      .prepare<[], { events: number; lastPosition: number | null }>(
        'SELECT count(*) AS events, max(position) AS lastPosition FROM events',
      )
      .get();
    return { events: row?.events ?? 0, lastPosition: row?.lastPosition ?? 0 };
  } finally {
    copy.close();
  }
}

if (require.main === module) {
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => undefined);
  const [source = '', partial = ''] = process.argv.slice(2);
  let reply: SnapshotReply;
  try {
    reply = { ok: true, ...snapshot({ source, partial }) };
  } catch (e) {
    const code = (e as { code?: unknown } | null)?.code;
    reply = {
      ok: false,
      message: e instanceof Error ? e.message : String(e),
      ...(typeof code === 'string' ? { code } : {}),
    };
  }
  process.send?.(reply, () => process.disconnect());
}
