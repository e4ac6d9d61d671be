/**
 * An online backup of a SQLite store: a consistent copy taken while a server writes to it, through a
 * read-only connection of its own, so the writer's lock (see `lockWriter`) does not stand in the way.
 */
import {
  chmodSync,
  closeSync,
  existsSync,
  fsyncSync,
  linkSync,
  openSync,
  readdirSync,
  rmSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import { realDatabaseFile } from './file';
import type { SnapshotReply, SnapshotRequest, SnapshotSummary } from './snapshot';

export interface BackupResult {
  /** The backup file, resolved. */
  readonly file: string;
  /** Events in the backup, and the position of its last one (0 for none). */
  readonly events: number;
  readonly lastPosition: number;
  readonly bytes: number;
  /**
   * Partial copies beside the target left by earlier backups to it whose process is gone (a crash, or
   * `kill -9`): told of, never removed, as a process of the same number in another PID namespace may
   * still be writing one.
   */
  readonly leftovers: readonly string[];
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
 * absent. It is written by a child process (`snapshot.ts`), which `signal` can stop at once: a thread
 * cannot be stopped inside `VACUUM INTO`.
 *
 * Rejects, leaving nothing behind, when `target` exists (a backup never overwrites) or its directory
 * does not, when `source` is missing or is not a rockets store, when the copy fails (a full disk, say),
 * or when `signal` aborts before the copy has its name: the child is then killed, and the partial copy
 * removed.
 */
export async function backupSqlite(
  source: string,
  target: string,
  options: { readonly signal?: AbortSignal } = {},
): Promise<BackupResult> {
  const file = resolve(target);
  if (!existsSync(source)) throw new Error(`there is no SQLite database at ${resolve(source)}`);
  if (!statSync(source).isFile()) throw new Error(`${resolve(source)} is not a file: nothing to back up`);
  // The file SQLite really reads, by the name its WAL is kept under (a file with two names is refused).
  const real = realDatabaseFile(source);
  if (existsSync(file)) throw new Error(`${file} exists already: a backup never overwrites a file`);
  if (!existsSync(dirname(file)) || !statSync(dirname(file)).isDirectory())
    throw new Error(`there is no directory ${dirname(file)} to write ${basename(file)} in`);
  options.signal?.throwIfAborted();
  const leftovers = leftoversOf(file);
  // Created here, exclusively and empty (which `VACUUM INTO` accepts): a file already by that name, left
  // by an earlier run in another PID namespace say, is not ours to write into or delete.
  const partial = `${file}.partial-${process.pid}-${randomBytes(4).toString('hex')}`;
  closeSync(openSync(partial, 'wx', 0o600));
  try {
    // The copy holds what the source does: as closed to others as it (SQLite would create it 0644), and
    // writable by its owner until it is written.
    const mode = statSync(real).mode & 0o777;
    chmodSync(partial, mode | 0o600);
    let summary: SnapshotSummary;
    try {
      summary = await snapshotInChild({ source: real, partial }, options.signal);
    } catch (e) {
      throw unreadable(e, real) ?? e;
    }
    chmodSync(partial, mode);
    syncFile(partial);
    // A hard link, unlike a rename, fails when the name was taken meanwhile: nothing is overwritten.
    linkSync(partial, file);
    unlinkSync(partial);
    syncFile(dirname(file));
    return { file, ...summary, bytes: statSync(file).size, leftovers };
  } catch (e) {
    // A failed VACUUM INTO leaves its rollback journal beside the copy too.
    for (const leftover of [partial, `${partial}-journal`]) rmSync(leftover, { force: true });
    throw e;
  }
}

/** `<file>.partial-<pid>-<hex>`, and its journal, whose process is not running here. */
function leftoversOf(file: string): string[] {
  const name = basename(file);
  const found: string[] = [];
  for (const entry of readdirSync(dirname(file))) {
    if (!entry.startsWith(`${name}.partial-`)) continue;
    const m = /^(\d+)-[0-9a-f]{8}(?:-journal)?$/.exec(entry.slice(name.length + '.partial-'.length));
    if (m !== null && !running(Number(m[1]))) found.push(join(dirname(file), entry));
  }
  return found.sort();
}

/** Whether a process of this number runs here (one we may not signal runs too). */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * `snapshot` in a child process. On `signal` the child is killed and, once it has ended, the promise
 * rejects with the signal's reason: the caller then removes a copy nothing writes to any more.
 */
function snapshotInChild(request: SnapshotRequest, signal?: AbortSignal): Promise<SnapshotSummary> {
  return new Promise((resolvePromise, reject) => {
    const child = fork(join(__dirname, 'snapshot.js'), [request.source, request.partial], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let reply: SnapshotReply | undefined;
    let failure: Error | undefined;
    const abort = (): void => {
      const reason: unknown = signal?.reason;
      failure ??= reason instanceof Error ? reason : new Error(`backup aborted: ${String(reason)}`);
      child.kill('SIGKILL');
    };
    signal?.addEventListener('abort', abort, { once: true });
    child.once('message', (message: SnapshotReply) => {
      reply = message;
    });
    child.once('error', (e) => {
      failure ??= e;
      child.kill('SIGKILL');
    });
    // 'close', not 'exit': only then has the reply, sent just before the child ends, surely arrived.
    child.once('close', (code, killedBy) => {
      signal?.removeEventListener('abort', abort);
      if (failure !== undefined) reject(failure);
      else if (reply?.ok === true) resolvePromise({ events: reply.events, lastPosition: reply.lastPosition });
      else if (reply !== undefined)
        reject(Object.assign(new Error(reply.message), reply.code === undefined ? {} : { code: reply.code }));
      else reject(new Error(`the backup's copy ended (${killedBy ?? `exit code ${code}`}) without an answer`));
    });
  });
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
