import { execFile, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
// eslint-disable-next-line no-restricted-imports -- the control: what SqliteDatabase guards against.
import Database from 'better-sqlite3';
import { SqliteDatabase, rowsOf } from '../../src/store/sqlite/database';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Whether each object is still alive after a full collection (once the job that made them has ended). */
async function survivors(make: () => object[]): Promise<boolean[]> {
  const refs = make().map((o) => new WeakRef(o));
  await tick();
  gc();
  return refs.map((r) => r.deref() !== undefined);
}

describe('SqliteDatabase', () => {
  it('keeps every database, statement, pragma statement and iterator it makes, closed or not', async () => {
    const alive = await survivors(() => {
      const db = new SqliteDatabase(':memory:');
      const statement = db.prepare('SELECT 1 AS one');
      db.pragma('user_version', { simple: true });
      const iterator = rowsOf(db.prepare<[], { one: number }>('SELECT 1 AS one'));
      expect([...iterator]).toEqual([{ one: 1 }]);
      db.close();
      return [db, statement, iterator];
    });
    expect(alive).toEqual([true, true, true]);
  });

  it('is needed: the same objects of a plain better-sqlite3 database are collected', async () => {
    const alive = await survivors(() => {
      const db = new Database(':memory:');
      const statement = db.prepare('SELECT 1 AS one');
      db.close();
      return [db, statement];
    });
    expect(alive).toEqual([false, false]);
  });

  it('answers pragmas as better-sqlite3 does, those that answer nothing included', () => {
    const pragmas = [
      ['user_version = 7', undefined],
      ['user_version', { simple: true }],
      ['user_version', undefined],
      ['synchronous = FULL', undefined],
      ['synchronous = NORMAL', { simple: true }],
      ['journal_mode = MEMORY', undefined],
      ['table_info(t)', undefined],
    ] as const;
    const answers = (db: Pick<SqliteDatabase, 'exec' | 'pragma'>): string => {
      db.exec('CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)');
      return JSON.stringify(pragmas.map(([source, options]) => ({ answer: db.pragma(source, options) })));
    };
    const ours = new SqliteDatabase(':memory:');
    const mine = answers(ours);
    ours.close();
    // Plain better-sqlite3's answers, in a process of its own: its pragma statements cannot be kept, and
    // under Node 24 collecting one aborts the process (here, the jest process in whichever file runs next).
    const script = `
      const Database = require(${JSON.stringify(require.resolve('better-sqlite3'))});
      const pragmas = ${JSON.stringify(pragmas)};
      const db = new Database(':memory:');
      db.exec('CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)');
      process.stdout.write(JSON.stringify(pragmas.map(([source, options]) => ({ answer: db.pragma(source, options ?? undefined) }))));
    `;
    const theirs = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(JSON.parse(mine)).toEqual(JSON.parse(theirs));
  });

  it('iterates with parameters as statement.iterate does', () => {
    const db = new SqliteDatabase(':memory:');
    db.exec('CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1), (2), (3)');
    const rows = [...rowsOf(db.prepare<[number], { a: number }>('SELECT a FROM t WHERE a > ? ORDER BY a'), 1)];
    expect(rows).toEqual([{ a: 2 }, { a: 3 }]);
    db.close();
  });

  // Under Node 24 (from 24.19), a plain better-sqlite3 12 process doing this aborts within about a second
  // of its objects becoming garbage ("Assertion failed: (env) != nullptr"): CI runs this suite under Node
  // 24 too. Under Node 20 and 22 it passes either way.
  it('lets a process make and drop thousands of them, then idle, and exit 0', async () => {
    const script = `
      const { SqliteDatabase, rowsOf } = require(${JSON.stringify(join(__dirname, '..', '..', 'dist', 'src', 'store', 'sqlite', 'database.js'))});
      const db = new SqliteDatabase(':memory:');
      db.exec('CREATE TABLE t (a); INSERT INTO t VALUES (1), (2)');
      let made = 0;
      const churn = setInterval(() => {
        for (let i = 0; i < 1000; i++, made++) {
          for (const _ of rowsOf(db.prepare('SELECT a FROM t'))) {}
          const other = new SqliteDatabase(':memory:');
          other.pragma('user_version');
          other.close();
        }
      }, 20);
      setTimeout(() => clearInterval(churn), 1500);
      setTimeout(() => console.log('made ' + made), 2500);
    `;
    const { code, stdout, stderr } = await new Promise<{
      code: number | string | null;
      stdout: string;
      stderr: string;
    }>((resolve) => {
      const child = execFile(process.execPath, ['-e', script], (_error, stdout, stderr) =>
        resolve({ code: child.exitCode ?? child.signalCode, stdout, stderr }),
      );
    });
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    expect(stdout).toMatch(/^made [1-9]\d{3,}\n$/);
  });
});
