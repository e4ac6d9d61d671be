import { closeSync, fdatasync, fstatSync, fsyncSync, openSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

const STAT_EVERY_MS = 250;

/**
 * Group commit for a SQLite database in WAL mode, with the disk waits off the event loop.
 *
 * The writer connection runs with `synchronous = NORMAL`, so a commit only writes its frames to the
 * `-wal` file and never waits for the disk (a checkpoint, every 1,000 pages, still syncs the WAL and the
 * database, the WAL first, so a frame leaves the WAL only once the database holds it on disk). `afterSync` then asks for an
 * `fdatasync` of that file on libuv's thread pool: once it returns, every frame written before it was
 * asked for is on disk, which is what `synchronous = FULL` would have waited for inside the commit. While
 * one sync runs, the transactions committed meanwhile wait together for the next one, so one sync covers
 * many commits and the event loop keeps parsing requests instead of blocking on the disk.
 *
 * A failed sync leaves it unknown what reached the disk, and later transactions were built on the
 * unsynced ones: the WAL then refuses every later sync with the same error (like PostgreSQL's fsync
 * panic), so nothing more is acknowledged until the process restarts and SQLite recovers the file.
 */
export class WalSync {
  private fd: number | undefined;
  private ino = 0;
  /** When `current` last made sure the descriptor names the WAL file. */
  private checked = 0;
  private running = false;
  private waiting: Array<(error?: Error) => void> = [];
  private failed: Error | undefined;
  private idle: Array<() => void> = [];
  /** Syncs completed: with `transactions`, tells how many commits one sync covered. */
  syncs = 0;

  /** `walFile` must exist: open it after the first write transaction. */
  constructor(private readonly walFile: string) {
    this.open();
  }

  /** The error of a failed sync: nothing written since is known to be durable, nor will be. */
  get failure(): Error | undefined {
    return this.failed;
  }

  /** A sync is in flight. */
  get busy(): boolean {
    return this.running;
  }

  /**
   * Calls `done` once everything written to the WAL before this call is on disk, with no argument, or with
   * the error that prevents it. Never calls `done` synchronously.
   */
  afterSync(done: (error?: Error) => void): void {
    this.waiting.push(done);
    if (!this.running) this.start();
  }

  /** Resolves once no sync is running or waiting. */
  drained(): Promise<void> {
    if (!this.running && this.waiting.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  /** Closes the file descriptor; call once `drained()` resolved. */
  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  private start(): void {
    const batch = this.waiting;
    this.waiting = [];
    this.running = true;
    const finish = (error?: Error): void => {
      this.running = false;
      if (error !== undefined) this.failed ??= error;
      this.syncs++;
      for (const done of batch) done(this.failed);
      if (this.waiting.length > 0) this.start();
      else for (const resolve of this.idle.splice(0)) resolve();
    };
    if (this.failed !== undefined) {
      setImmediate(finish);
      return;
    }
    let fd: number;
    try {
      fd = this.current();
    } catch (e) {
      setImmediate(() => {
        finish(e instanceof Error ? e : new Error(String(e)));
      });
      return;
    }
    fdatasync(fd, (error) => {
      finish(error ?? undefined);
    });
  }

  /**
   * The descriptor of the WAL file as it is now. SQLite keeps the file while a connection is open, but a
   * descriptor of a replaced file would sync the wrong file and lose durability without a sound: reopen
   * if the path names another inode. Checked once per STAT_EVERY_MS, not per sync: a `stat` is a
   * noticeable share of a sync's CPU, for a case SQLite does not produce.
   */
  private current(): number {
    const now = Date.now();
    if (this.fd !== undefined && now - this.checked < STAT_EVERY_MS) return this.fd;
    if (this.fd === undefined || statSync(this.walFile).ino !== this.ino) {
      this.close();
      this.open();
    }
    this.checked = now;
    return this.fd as number;
  }

  /**
   * Opens the WAL file and syncs its directory once: an `fdatasync` of a file does not make its name
   * durable, and the WAL (like the database file beside it, which SQLite made in the same directory) may
   * just have been created. `synchronous = FULL` would sync the directory on the WAL's first sync; on ext4
   * or XFS the journal commit of the file's sync covers the names anyway, but not on every file system. As
   * PostgreSQL's `fsync_fname` does, a directory it may not open (write and search rights are all SQLite
   * needs) or a file system that cannot sync one is skipped; a failed sync is not.
   */
  private open(): void {
    this.syncDirectory();
    this.fd = openSync(this.walFile, 'r+');
    this.ino = fstatSync(this.fd).ino;
  }

  /** The directory's sync: first, so that a failure leaves no descriptor of the WAL open. */
  private syncDirectory(): void {
    let directory: number;
    try {
      directory = openSync(dirname(this.walFile), 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM' || code === 'EISDIR') return;
      throw e;
    }
    try {
      fsyncSync(directory);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EINVAL' && code !== 'EBADF' && code !== 'EISDIR') throw e;
    } finally {
      closeSync(directory);
    }
  }
}
