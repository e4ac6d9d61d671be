/**
 * An online backup of a SQLite store: a consistent copy taken while a server writes to it, through a
 * read-only connection of its own, so the writer's lock (see `lockWriter`) does not stand in the way.
 */
import { chmodSync, closeSync, existsSync, fsyncSync, linkSync, openSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, resolve } from 'node:path';
import type Database from 'better-sqlite3';
import { SqliteDatabase } from './database';
import { realDatabaseFile } from './file';

export interface BackupResult {
  /** The backup file, resolved. */
  readonly file: string;
  /** Events in the backup, and the position of its last one (0 for none). */
  readonly events: number;
  readonly lastPosition: number;
  readonly bytes: number;
}

/**
 * Copies the store at `source` into a new file `target`, as one snapshot: the log, the reorder buffer
 * and the rockets table as they stood at one commit, so a server started on the copy recovers it as
 * after a crash at that commit. What the server acknowledges meanwhile is not in it.
 *
 * `VACUUM INTO` reads the snapshot in one read transaction, which in WAL mode neither waits for the
 * writer nor holds it up; SQLite's backup API, by contrast, starts over whenever another connection
 * writes, and under steady ingest might never finish. The copy is written under a temporary name in the
 * target's directory, synced, and only then given its name, so `target` is either the whole backup or
 * absent.
 *
 * Rejects, leaving nothing behind, when `target` exists (a backup never overwrites) or its directory does
 * not, when `source` is missing or is not a rockets store, or when the copy fails (a full disk, say).
 */
export function backupSqlite(source: string, target: string): BackupResult {
  const file = resolve(target);
  if (!existsSync(source)) throw new Error(`there is no SQLite database at ${resolve(source)}`);
  if (!statSync(source).isFile()) throw new Error(`${resolve(source)} is not a file: nothing to back up`);
  // The file SQLite really reads, by the name its WAL is kept under (a file with two names is refused).
  const real = realDatabaseFile(source);
  if (existsSync(file)) throw new Error(`${file} exists already: a backup never overwrites a file`);
  if (!existsSync(dirname(file)) || !statSync(dirname(file)).isDirectory())
    throw new Error(`there is no directory ${dirname(file)} to write ${basename(file)} in`);
  // Created here, exclusively and empty (which `VACUUM INTO` accepts): a file already by that name, left
  // by an earlier run in another PID namespace say, is not ours to write into or delete.
  const partial = `${file}.partial-${process.pid}-${randomBytes(4).toString('hex')}`;
  closeSync(openSync(partial, 'wx', 0o600));
  try {
    // The copy holds what the source does: as closed to others as it (SQLite would create it 0644), and
    // writable by its owner until it is written.
    const mode = statSync(real).mode & 0o777;
    chmodSync(partial, mode | 0o600);
    let db: Database.Database | undefined;
    try {
      db = new SqliteDatabase(real, { readonly: true, fileMustExist: true, timeout: 5000 });
      const holdsStore =
        (db.pragma('user_version', { simple: true }) as number) > 0 &&
        db.prepare(`SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'events'`).get() !== undefined;
      if (!holdsStore) throw new Error(`${real} is not a rockets database: nothing to back up`);
      db.prepare('VACUUM INTO ?').run(partial);
    } catch (e) {
      throw unreadable(e, real) ?? e;
    } finally {
      db?.close();
    }
    const copy = new SqliteDatabase(partial, { readonly: true, fileMustExist: true });
    let summary: { events: number; lastPosition: number | null };
    try {
      summary = copy
        .prepare<[], { events: number; lastPosition: number | null }>(
          'SELECT count(*) AS events, max(position) AS lastPosition FROM events',
        )
        .get() ?? { events: 0, lastPosition: null };
    } finally {
      copy.close();
    }
    chmodSync(partial, mode);
    syncFile(partial);
    // A hard link, unlike a rename, fails when the name was taken meanwhile: nothing is overwritten.
    linkSync(partial, file);
    unlinkSync(partial);
    syncFile(dirname(file));
    return { file, events: summary.events, lastPosition: summary.lastPosition ?? 0, bytes: statSync(file).size };
  } catch (e) {
    // A failed VACUUM INTO leaves its rollback journal beside the copy too.
    for (const leftover of [partial, `${partial}-journal`]) rmSync(leftover, { force: true });
    throw e;
  }
}

/**
 * SQLite's refusal to read a store no server has open from a directory this process may not write in:
 * with no `-wal` beside the database, even a read-only connection must create it and `-shm` first.
 */
function unreadable(e: unknown, real: string): Error | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !/^SQLITE_(READONLY|CANTOPEN)/.test(code) || existsSync(`${real}-wal`))
    return undefined;
  const where = dirname(real);
  return new Error(
    `cannot read ${real}: with no server running, SQLite must create its -wal and -shm files in ` +
      `${where} first; run --backup as a user who may write there, or while the server runs`,
    { cause: e },
  );
}

/** `VACUUM INTO` leaves the new file to the page cache; a backup is only one once it is on disk. */
function syncFile(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
