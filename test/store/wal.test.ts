import { closeSync, fdatasync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { WalCheckpoints, WalSync } from '../../src/store/wal';

const afterSync = (wal: WalSync): Promise<Error | undefined> => new Promise((resolve) => wal.afterSync(resolve));

describe('WalSync', () => {
  let dir: string;
  const opened: WalSync[] = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rockets-wal-'));
  });
  afterEach(async () => {
    for (const wal of opened.splice(0)) {
      await wal.drained();
      wal.close();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const open = (file: string): WalSync => {
    const wal = new WalSync(file);
    opened.push(wal);
    return wal;
  };

  it('calls back once a sync that began after the call returned, never synchronously', async () => {
    const file = join(dir, 'x.db-wal');
    writeFileSync(file, 'frames');
    const wal = open(file);
    let called = false;
    const done = new Promise<Error | undefined>((resolve) =>
      wal.afterSync((e) => {
        called = true;
        resolve(e);
      }),
    );
    expect(called).toBe(false);
    expect(wal.busy).toBe(true);
    expect(await done).toBeUndefined();
    expect(wal.syncs).toBe(1);
  });

  it('covers every call made during a sync with one more sync', async () => {
    const file = join(dir, 'x.db-wal');
    writeFileSync(file, 'frames');
    const wal = open(file);
    const first = afterSync(wal);
    const during = [afterSync(wal), afterSync(wal), afterSync(wal)];
    expect(await Promise.all([first, ...during])).toEqual([undefined, undefined, undefined, undefined]);
    expect(wal.syncs).toBe(2);
  });

  it('fails every later call with the error of a failed sync', async () => {
    // Linux refuses to sync a character device: a real failing fdatasync.
    const wal = open('/dev/null');
    const error = await afterSync(wal);
    expect(error).toMatchObject({ code: 'EINVAL' });
    expect(wal.failure).toBe(error);
    expect(await afterSync(wal)).toBe(error);
  });

  it('reports when nothing runs or waits any more', async () => {
    const file = join(dir, 'x.db-wal');
    writeFileSync(file, 'frames');
    const wal = open(file);
    let synced = false;
    wal.afterSync(() => (synced = true));
    await wal.drained();
    expect(synced).toBe(true);
    expect(wal.busy).toBe(false);
  });
});

describe('WalCheckpoints', () => {
  let dir: string;
  let file: string;
  let db: Database.Database;
  let wal: WalSync;

  /** The WAL header's salt, which SQLite changes when it starts the WAL over. */
  const salt = (): string => {
    const fd = openSync(`${file}-wal`, 'r');
    try {
      const header = Buffer.alloc(8);
      readSync(fd, header, 0, 8, 16);
      return header.toString('hex');
    } finally {
      closeSync(fd);
    }
  };
  /** Writes `pages` pages of new rows, one transaction. */
  const write = (pages: number): void => {
    const insert = db.prepare('INSERT INTO t (b) VALUES (randomblob(3000))');
    db.transaction(() => {
      for (let i = 0; i < pages; i++) insert.run();
    })();
  };
  const count = (): number => (db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rockets-ckpt-'));
    file = join(dir, 'x.db');
    db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)');
    wal = new WalSync(`${file}-wal`);
  });
  afterEach(async () => {
    await wal.drained();
    wal.close();
    if (db.open) db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('starts once 1,000 frames wait, and copies them into the database file', async () => {
    const checkpoints = new WalCheckpoints(file, db, wal, (done) => wal.afterSync(done));
    write(500);
    checkpoints.wrote();
    await checkpoints.drained();
    expect(checkpoints.count).toBe(0);
    write(600);
    const waiting = checkpoints.backlog();
    expect(waiting).toBeGreaterThanOrEqual(1000);
    checkpoints.wrote();
    await checkpoints.drained();
    expect(checkpoints.count).toBe(1);
    expect(checkpoints.backlog()).toBe(0);
    // Started over by the next write, now that the database file holds every frame on disk.
    const before = salt();
    write(1);
    expect(salt()).not.toBe(before);
    expect(checkpoints.backlog()).toBeLessThan(10);
    checkpoints.close();
    db.close();
    const again = new Database(file, { readonly: true });
    expect((again.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n).toBe(1101);
    again.close();
  });

  /** WalCheckpoints whose database sync waits for `release()`; `held()` resolves once it is asked for. */
  const heldCheckpoints = (): { checkpoints: WalCheckpoints; held: () => Promise<void>; release: () => void } => {
    let release: (() => void) | undefined;
    const checkpoints = new WalCheckpoints(
      file,
      db,
      wal,
      (done) => wal.afterSync(done),
      (fd, done) => (release = () => fdatasync(fd, done)),
    );
    const held = (): Promise<void> =>
      new Promise((resolve) => {
        const poll = (): void => (release === undefined ? void setImmediate(poll) : resolve());
        poll();
      });
    return { checkpoints, held, release: () => (release as () => void)() };
  };

  it('copies only the frames written before it began, whatever was committed since', async () => {
    const { checkpoints, held, release } = heldCheckpoints();
    write(1100);
    checkpoints.wrote();
    // Written after the checkpoint began, before the WAL sync it waits for: not known to be on disk.
    write(5);
    await held();
    expect(checkpoints.backlog()).toBeGreaterThanOrEqual(5);
    expect(checkpoints.backlog()).toBeLessThan(20);
    release();
    await checkpoints.drained();
    expect(checkpoints.count).toBe(1);
    expect(count()).toBe(1105);
    checkpoints.close();
  });

  it('keeps the WAL from starting over until the database file is synced', async () => {
    const { checkpoints, held, release } = heldCheckpoints();
    write(1100);
    checkpoints.wrote();
    await held();
    // Every frame is copied, but the database file is not synced: a write must not overwrite the WAL.
    expect(checkpoints.backlog()).toBe(0);
    const kept = salt();
    write(1);
    expect(salt()).toBe(kept);
    let drained = false;
    void checkpoints.drained().then(() => (drained = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(drained).toBe(false);
    release();
    await checkpoints.drained();
    expect(checkpoints.count).toBe(1);
    // Synced: the frame written meanwhile is copied too, and the next write starts the WAL over.
    expect(checkpoints.backlog()).toBe(0);
    write(1);
    expect(salt()).not.toBe(kept);
    expect(count()).toBe(1102);
    checkpoints.close();
  });

  it('fails the WAL sync for good, and keeps its pin, when the database file cannot be synced', async () => {
    const broken = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
    const checkpoints = new WalCheckpoints(
      file,
      db,
      wal,
      (done) => wal.afterSync(done),
      (_fd, done) => setImmediate(() => done(broken)),
    );
    write(1100);
    checkpoints.wrote();
    await checkpoints.drained();
    expect(checkpoints.count).toBe(0);
    expect(wal.failure).toBe(broken);
    // Every frame was copied, but the pin stays: the WAL keeps them too, for SQLite to recover from.
    expect(checkpoints.backlog()).toBe(0);
    const kept = salt();
    write(1);
    expect(salt()).toBe(kept);
    checkpoints.close();
  });
});
