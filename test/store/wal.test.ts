import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WalSync } from '../../src/store/sqlite/wal';

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
