import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GraphQLError } from 'graphql';
import { STORAGE_FULL, STORE_DAMAGED, storeFaultOf } from '../../src/store/faults';
import { SqliteDatabase } from '../../src/store/sqlite/database';
import { admin, describePg } from '../support/postgres';

/** The error `work` throws; fails if it throws none. */
function thrownBy(work: () => unknown): unknown {
  try {
    work();
  } catch (e) {
    return e;
  }
  throw new Error('nothing was thrown');
}

async function rejectionOf(work: Promise<unknown>): Promise<unknown> {
  try {
    await work;
  } catch (e) {
    return e;
  }
  throw new Error('nothing was thrown');
}

/** A real SQLITE_FULL: a database held to two pages, written past them. */
function sqliteFull(): unknown {
  const db = new SqliteDatabase(':memory:');
  try {
    db.pragma('max_page_count = 2');
    db.exec('CREATE TABLE t (x BLOB)');
    return thrownBy(() => db.prepare('INSERT INTO t VALUES (?)').run(Buffer.alloc(64 * 1024)));
  } finally {
    db.close();
  }
}

describe('storeFaultOf', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rockets-faults-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("names SQLite's full database a full disk", () => {
    const full = sqliteFull();
    expect((full as { code: string }).code).toBe('SQLITE_FULL');
    expect(storeFaultOf(full)).toBe(STORAGE_FULL);
  });

  it('names a file that is not a SQLite database a damaged store', () => {
    const file = join(dir, 'not-a-database.db');
    writeFileSync(file, Buffer.alloc(8192, 0xde));
    const db = new SqliteDatabase(file);
    try {
      const error = thrownBy(() => db.pragma('user_version'));
      expect((error as { code: string }).code).toBe('SQLITE_NOTADB');
      expect(storeFaultOf(error)).toBe(STORE_DAMAGED);
    } finally {
      db.close();
    }
  });

  it('takes SQLite extended codes of damage, and looks down a chain of causes and GraphQL errors', () => {
    const corrupt = Object.assign(new Error('database disk image is malformed'), { code: 'SQLITE_CORRUPT_INDEX' });
    expect(storeFaultOf(corrupt)).toBe(STORE_DAMAGED);
    const full = sqliteFull();
    const wrapped = new GraphQLError('resolver failed', {
      originalError: new Error('commit failed', { cause: full }),
    });
    expect(storeFaultOf(wrapped)).toBe(STORAGE_FULL);
  });

  it('leaves everything else to be masked: other codes, a failed WAL sync, no error, a cycle of causes', () => {
    const busy = Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
    // After a failed sync nothing is known to be on disk until a restart: not a full disk to wait out.
    const sync = Object.assign(new Error('ENOSPC: no space left on device, fdatasync'), { code: 'ENOSPC' });
    const cycle: Error & { cause?: unknown } = new Error('a');
    cycle.cause = new Error('b', { cause: cycle });
    for (const e of [busy, sync, new Error('boom'), undefined, null, 'SQLITE_FULL', cycle])
      expect(storeFaultOf(e)).toBeUndefined();
  });
});

describePg("storeFaultOf on PostgreSQL's errors", () => {
  const raise = (condition: string): Promise<unknown> =>
    rejectionOf(admin((c) => c.query(`DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '${condition}'; END $$`)));

  it('names disk_full a full disk, and data_corrupted and index_corrupted a damaged store', async () => {
    expect(storeFaultOf(await raise('disk_full'))).toBe(STORAGE_FULL);
    expect(storeFaultOf(await raise('data_corrupted'))).toBe(STORE_DAMAGED);
    expect(storeFaultOf(await raise('index_corrupted'))).toBe(STORE_DAMAGED);
    expect(storeFaultOf(await raise('serialization_failure'))).toBeUndefined();
  });
});
