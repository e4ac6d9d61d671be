import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { MemoryStore } from './memory';
import { PostgresStore, type ListenerEvent } from './postgres/store';
import { SqliteDatabase } from './sqlite/database';
import { namingFile } from './sqlite/file';
import { holdsStore } from './sqlite/schema';
import { SqliteStore } from './sqlite/store';
import type { BufferLimits, EventStore } from './types';

export interface OpenStoreOptions {
  /** Server clock for the store's own timestamps; tests inject one. */
  readonly now?: () => Date;
  /** SQLite only: FULL (default) survives power loss, NORMAL only a crash of the process. */
  readonly sqliteSynchronous?: 'FULL' | 'NORMAL';
  /** Bounds of the reorder buffer; DEFAULT_BUFFER_LIMITS when not given. */
  readonly bufferLimits?: BufferLimits;
  /** Refuse a database that holds no store yet (a missing SQLite file, a PostgreSQL schema without tables) instead of creating it. */
  readonly existing?: boolean;
  /** PostgreSQL only: connections of the pool (10 when not given). */
  readonly postgresPoolSize?: number;
  /** PostgreSQL only: told when the LISTEN connection that wakes this instance is up or lost. */
  readonly onListener?: (event: ListenerEvent) => void;
}

export const DEFAULT_SQLITE_PATH = './data/rockets.db';

const ACCEPTED = `leave it unset for SQLite at ${DEFAULT_SQLITE_PATH}, or use sqlite:<path>, memory: or postgres://…`;

/**
 * Opens the store a database URL names:
 * - undefined or '': SQLite at `./data/rockets.db` (relative to the working directory);
 * - `sqlite:<path>`: SQLite at that file, created with its directory when missing (`sqlite:///abs/x.db`
 *   and `sqlite://rel/x.db` are read as `/abs/x.db` and `rel/x.db`); a `?` is refused, as it would only
 *   be part of the file's name;
 * - `memory:`: everything in RAM, lost when the process ends;
 * - `postgres://…` or `postgresql://…`: PostgreSQL.
 *
 * Rejects with an Error naming the accepted forms for anything else, and with the store's own error
 * when it cannot be opened. The error never repeats the URL, which may carry a password.
 */
export function openStore(databaseUrl: string | undefined, options: OpenStoreOptions = {}): Promise<EventStore> {
  return new Promise((resolve) => {
    resolve(open(databaseUrl ?? '', options));
  });
}

/**
 * The SQLite file a database URL names (see `openStore`), or undefined for one that names another store.
 * Throws for a `sqlite:` URL that names no file or carries parameters.
 */
export function sqliteFileOf(url: string): string | undefined {
  if (url === '') return DEFAULT_SQLITE_PATH;
  if (!url.startsWith('sqlite:')) return undefined;
  let file = url.slice('sqlite:'.length);
  if (file.startsWith('//')) file = file.slice(2);
  if (file === '') throw new Error(`the SQLite database URL names no file; ${ACCEPTED}`);
  // A shell does not expand `~` inside quotes or an env file: read it as the home directory, as meant,
  // rather than make a directory named `~` in the working directory.
  if (file === '~' || file.startsWith('~/')) file = join(homedir(), file.slice(1));
  // SQLite's own URI parameters (`?mode=ro`) are not read here: the file would be named with them.
  if (file.includes('?'))
    throw new Error(
      `the SQLite database URL takes no parameters ("${file.slice(file.indexOf('?'))}"): name the file only`,
    );
  return file;
}

function open(url: string, options: OpenStoreOptions): EventStore | Promise<EventStore> {
  const file = sqliteFileOf(url);
  if (file !== undefined) {
    if (options.existing === true) requireSqliteStore(file);
    return new SqliteStore(file, {
      now: options.now,
      synchronous: options.sqliteSynchronous,
      bufferLimits: options.bufferLimits,
    });
  }
  if (url === 'memory:') return new MemoryStore(options.now, options.bufferLimits);
  if (/^postgres(ql)?:\/\//i.test(url)) {
    // postgres: schema from the URL's `schema=` parameter (default public); migrations run on open.
    return PostgresStore.open(url, {
      now: options.now,
      bufferLimits: options.bufferLimits,
      onListener: options.onListener,
      existing: options.existing,
      poolSize: options.postgresPoolSize,
    });
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
  throw new Error(`unsupported database URL${scheme === undefined ? '' : ` (scheme "${scheme}")`}; ${ACCEPTED}`);
}

/**
 * Throws unless `file` holds a rockets store. Looked at read-only, and closed before the store opens
 * it: the store migrates whatever it opens, so a mistyped path (an empty file, another program's
 * database) would otherwise become an empty store, rebuilt with success.
 */
function requireSqliteStore(file: string): void {
  const path = resolve(file);
  if (!existsSync(file)) throw new Error(`there is no SQLite database at ${path}`);
  let found: boolean;
  try {
    const db = new SqliteDatabase(file, { readonly: true, fileMustExist: true, timeout: 5000 });
    try {
      found = holdsStore(db);
    } finally {
      db.close();
    }
  } catch (e) {
    throw namingFile(e, path);
  }
  if (!found) throw new Error(`${path} holds no rockets store`);
}
