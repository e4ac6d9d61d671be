import { closeSync, fdatasync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import Database from 'better-sqlite3';

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

  /** Refuses every later sync with `error`: what reached the disk is no longer known. */
  fail(error: Error): void {
    this.failed ??= error;
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

  private open(): void {
    this.fd = openSync(this.walFile, 'r+');
    this.ino = fstatSync(this.fd).ino;
  }
}

/** WAL frames that wait to be copied into the database before a checkpoint starts (SQLite's default). */
const CHECKPOINT_FRAMES = 1000;

/**
 * Checkpoints of a database whose WAL is synced by WalSync, with no disk wait on the event loop.
 *
 * SQLite's own checkpoint, run inside the commit that crosses 1,000 frames, syncs the WAL and then the
 * database file on the calling thread: at full ingest that kept the event loop blocked about a tenth of
 * the time. Here the writer's automatic checkpoint is off, and once CHECKPOINT_FRAMES frames wait:
 * 1. a read transaction on a connection of our own (the guard) pins the frames written so far;
 * 2. the WAL is synced (WalSync, off the event loop), so every pinned frame is on disk;
 * 3. a PASSIVE checkpoint without syncs copies frames into the database file; SQLite stops at the
 *    guard's frames, whatever was committed since;
 * 4. the database file is synced on libuv's thread pool;
 * 5. only then the guard ends. While it lasts, SQLite cannot start the WAL over (a writer restarts the
 *    WAL only when no reader uses it), so the copied frames stay in the WAL until the database holds
 *    them on disk: a crash at any point recovers from the WAL, as with SQLite's own syncs.
 * A failed sync of the database fails WalSync (nothing more is acknowledged) and keeps the guard, so
 * the WAL keeps every frame until the process ends and SQLite recovers from it.
 *
 * The frames waiting are read from the WAL index (`-shm`): `mxFrame` of its header and `nBackfill` of
 * its checkpoint information, in the layout https://sqlite.org/walformat.html describes.
 */
export class WalCheckpoints {
  private readonly guard: Database.Database;
  private readonly begin: Database.Statement;
  private readonly pin: Database.Statement;
  private readonly end: Database.Statement;
  private readonly dbFd: number;
  private readonly shmFd: number;
  private readonly header = Buffer.alloc(100);
  private running = false;
  private stopped = false;
  private idle: Array<() => void> = [];
  /** Checkpoints completed. */
  count = 0;

  constructor(
    private readonly file: string,
    private readonly writer: Database.Database,
    private readonly wal: WalSync,
    /** `wal.afterSync`, as the writer's owner calls it (so that it also goes on with what waited). */
    private readonly afterSync: (done: (error?: Error) => void) => void,
    /** Syncs the database file; tests hold it to look at the WAL meanwhile. */
    private readonly syncDatabase: (fd: number, done: (error: Error | null) => void) => void = fdatasync,
  ) {
    writer.pragma('wal_autocheckpoint = 0');
    this.guard = new Database(file, { timeout: 5000 });
    try {
      this.begin = this.guard.prepare('BEGIN');
      this.pin = this.guard.prepare('SELECT 1 FROM sqlite_schema LIMIT 1');
      this.end = this.guard.prepare('COMMIT');
      this.dbFd = openSync(file, 'r');
    } catch (e) {
      this.guard.close();
      throw e;
    }
    try {
      this.shmFd = openSync(`${file}-shm`, 'r');
    } catch (e) {
      closeSync(this.dbFd);
      this.guard.close();
      throw e;
    }
  }

  /** Frames in the WAL not yet copied into the database. */
  backlog(): number {
    readSync(this.shmFd, this.header, 0, 100, 0);
    return this.header.readUInt32LE(16) - this.header.readUInt32LE(96);
  }

  /** Call after a write transaction: starts a checkpoint once enough frames wait and none runs. */
  wrote(): void {
    if (this.running || this.stopped || this.wal.failure !== undefined || this.backlog() < CHECKPOINT_FRAMES) return;
    this.running = true;
    this.begin.run();
    this.pin.get();
    this.afterSync((error) => {
      if (error !== undefined) {
        this.finish(error);
        return;
      }
      try {
        this.writer.pragma('synchronous = OFF');
        try {
          this.writer.pragma('wal_checkpoint(PASSIVE)');
        } finally {
          this.writer.pragma('synchronous = NORMAL');
        }
      } catch (e) {
        this.finish(e instanceof Error ? e : new Error(String(e)));
        return;
      }
      this.syncDatabase(this.dbFd, (e) => {
        this.finish(e ?? undefined);
      });
    });
  }

  /** Starts no more checkpoints: the writer's own, as it closes, takes what is left. */
  stop(): void {
    this.stopped = true;
  }

  /** Resolves once no checkpoint runs. */
  drained(): Promise<void> {
    if (!this.running) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  /** Call once `drained()` resolved, before the writer closes (so that it closes last, and checkpoints). */
  close(): void {
    closeSync(this.shmFd);
    closeSync(this.dbFd);
    this.guard.close();
  }

  private finish(error?: Error): void {
    if (error === undefined) {
      this.end.run();
      try {
        // What was committed since the pin: SQLite's own checkpoint, with its syncs, on the event loop;
        // a few frames, so a short wait. It leaves the WAL fully copied, so the next write starts it over.
        this.writer.pragma('wal_checkpoint(PASSIVE)');
        this.count++;
      } catch (e) {
        this.wal.fail(e instanceof Error ? e : new Error(String(e)));
      }
    } else {
      this.wal.fail(error);
    }
    this.running = false;
    for (const resolve of this.idle.splice(0)) resolve();
  }
}
