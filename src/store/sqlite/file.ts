/**
 * Which file a SQLite store really opens, and the lock that keeps that file to one writer: rules of the
 * file system, apart from the store so that they read without its commit logic.
 */
import { lstatSync, mkdirSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type Database from 'better-sqlite3';
import { SqliteDatabase } from './database';

/**
 * SQLite's own refusal to open a file ("file is not a database", "unable to open database file") names
 * no file: an operator who mistyped DATABASE_URL would not know which one. This error names it; any
 * other passes as it is.
 */
export function namingFile(e: unknown, path: string): unknown {
  const code = (e as { code?: unknown } | null)?.code;
  if (!(e instanceof Error) || typeof code !== 'string' || !code.startsWith('SQLITE_')) return e;
  return new Error(`cannot open the SQLite store at ${path}: ${e.message}`, { cause: e });
}

/**
 * Makes `dir` and each missing directory above it, one `mkdir` at a time from the top. Not Node's
 * `mkdirSync(dir, { recursive: true })`: under Node 20 that loops for ever where `mkdir` keeps failing
 * with ENOENT though the parent exists (`/proc/x/y`), so a mistyped DATABASE_URL hung the start. Throws
 * the first refusal (ENOENT, EACCES, ENOTDIR, EEXIST for a file in the way).
 */
export function makeDirectories(dir: string): void {
  const missing: string[] = [];
  for (let d = resolve(dir); !exists(d); d = dirname(d)) {
    missing.push(d);
    if (dirname(d) === d) break;
  }
  for (const d of missing.reverse()) {
    try {
      mkdirSync(d);
    } catch (e) {
      // Made meanwhile by someone else: as good as made here.
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || !statSync(d).isDirectory()) throw e;
    }
  }
  if (!statSync(dir).isDirectory())
    throw Object.assign(new Error(`ENOTDIR: not a directory, '${dir}'`), { code: 'ENOTDIR' });
}

/** Whether anything (a file, a directory, a link's target) is at `path`. */
function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return false;
    // A file where a directory is wanted stops the walk: its mkdir below says so.
    if (code === 'ENOTDIR') return false;
    throw e;
  }
}

/**
 * The file SQLite really opens, by the one name the lock and the WAL sync must use. SQLite follows a
 * symbolic link, even one to a file not created yet, and keeps its WAL beside the target, so links are
 * resolved too; a missing file is named from its directory's real path. A file with more than one hard
 * link is refused: SQLite keeps a WAL per name, so a writer through another name would neither see this
 * one's lock nor share its WAL, and what either acknowledged could be lost.
 */
export function realDatabaseFile(file: string, hops = 0): string {
  let real: string;
  try {
    real = realpathSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    if (!isSymlink(file)) return join(realpathSync(dirname(file)), basename(file));
    if (hops >= MAX_SYMLINK_HOPS) throw new Error(`${file}: too many levels of symbolic links`, { cause: e });
    // A relative target is relative to where the link really is, as the kernel reads it.
    return realDatabaseFile(resolve(realpathSync(dirname(file)), readlinkSync(file)), hops + 1);
  }
  const found = statSync(real);
  if (found.isDirectory()) throw new Error(`${file} is a directory, not a database file`);
  const links = found.nlink;
  if (links > 1)
    throw new Error(
      `${file} has ${links} hard links: SQLite keeps a WAL per name, so writes through another name would be lost; ` +
        'keep one name (a symbolic link is fine)',
    );
  return real;
}

/** As Linux's own limit on links followed in one path. */
const MAX_SYMLINK_HOPS = 40;

function isSymlink(file: string): boolean {
  try {
    return lstatSync(file).isSymbolicLink();
  } catch {
    return false;
  }
}

/**
 * Holds `<file>-lock` exclusively while a store has the file open (the OS drops the lock if the process
 * dies), so that a second writer (another server, or `--rebuild` while one runs) is refused at open
 * instead of sequencing from a cache the first one's commits make stale. Readers of the database file
 * itself are not affected: the lock is a file of its own.
 */
export function lockWriter(file: string): Database.Database {
  let lock: Database.Database;
  try {
    lock = new SqliteDatabase(`${file}-lock`, { timeout: 0 });
  } catch (e) {
    throw namingFile(e, file);
  }
  try {
    // In EXCLUSIVE locking mode the lock a write transaction takes is kept until the connection closes.
    // The file holds nothing, so it needs no journal file beside it.
    lock.pragma('journal_mode = MEMORY');
    lock.pragma('locking_mode = EXCLUSIVE');
    lock.exec('BEGIN EXCLUSIVE; COMMIT');
    return lock;
  } catch (e) {
    lock.close();
    if ((e as { code?: unknown }).code === 'SQLITE_BUSY')
      throw new Error(`${file} is already open for writing (another server, or --rebuild): SQLite allows one writer`, {
        cause: e,
      });
    throw namingFile(e, file);
  }
}
