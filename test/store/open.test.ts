import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, sqliteFileOf } from '../../src/store/open';
import { SqliteDatabase } from '../../src/store/sqlite/database';
import { launched } from './contract';

describe('openStore', () => {
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rockets-open-'));
  });

  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('opens a memory store for memory:', async () => {
    const store = await openStore('memory:');
    expect(store.kind).toBe('memory');
    await store.close();
  });

  it('opens SQLite at the path after sqlite:, creating its directory', async () => {
    const file = join(dir, 'a', 'rockets.db');
    const store = await openStore(`sqlite:${file}`, { sqliteSynchronous: 'NORMAL' });
    expect(store.kind).toBe('sqlite');
    await store.commit([launched('r1', 1)]);
    await store.close();
    expect(existsSync(file)).toBe(true);
  });

  it('reads sqlite:///absolute/path as that absolute path', async () => {
    const file = join(dir, 'b.db');
    const store = await openStore(`sqlite://${file}`);
    await store.close();
    expect(existsSync(file)).toBe(true);
  });

  it('reads sqlite:~/path as a path in the home directory, as a shell would have', () => {
    expect(sqliteFileOf('sqlite:~/rockets/x.db')).toBe(join(homedir(), 'rockets', 'x.db'));
    expect(sqliteFileOf('sqlite:~')).toBe(homedir());
    // `~user` is another user's home: no guess, the name stays as written.
    expect(sqliteFileOf('sqlite:~other/x.db')).toBe('~other/x.db');
    expect(sqliteFileOf('sqlite:./~/x.db')).toBe('./~/x.db');
  });

  it('refuses, when asked for an existing store, a file that holds none, and leaves it as it was', async () => {
    const empty = join(dir, 'empty.db');
    writeFileSync(empty, '');
    const other = join(dir, 'other.db');
    const db = new SqliteDatabase(other);
    db.exec('CREATE TABLE notes (text TEXT); PRAGMA user_version = 5');
    db.close();
    const text = join(dir, 'notes.txt');
    writeFileSync(text, 'not a database at all\n'.repeat(100));
    const before = readdirSync(dir).map((name) => [name, readFileSync(join(dir, name))] as const);

    await expect(openStore(`sqlite:${empty}`, { existing: true })).rejects.toThrow(`${empty} holds no rockets store`);
    await expect(openStore(`sqlite:${other}`, { existing: true })).rejects.toThrow(`${other} holds no rockets store`);
    await expect(openStore(`sqlite:${text}`, { existing: true })).rejects.toThrow(
      `cannot open the SQLite store at ${text}: file is not a database`,
    );
    // Same files, same bytes: nothing migrated, and no -wal, -shm or -lock beside them.
    expect(readdirSync(dir).map((name) => [name, readFileSync(join(dir, name))] as const)).toEqual(before);
  });

  it('opens an existing store when asked for one', async () => {
    const file = join(dir, 'rockets.db');
    const created = await openStore(`sqlite:${file}`);
    await created.commit([launched('r1', 1)]);
    await created.close();
    const store = await openStore(`sqlite:${file}`, { existing: true });
    try {
      expect(await store.rebuildProjection()).toBe(1);
      expect((await store.getRocket('r1'))?.lastMessageNumber).toBe(1);
    } finally {
      await store.close();
    }
  });

  it('refuses a sqlite: URL without a file', async () => {
    await expect(openStore('sqlite:')).rejects.toThrow(/names no file/);
  });

  it('refuses parameters after a sqlite: path rather than make them part of the file name', async () => {
    const file = join(dir, 'c.db');
    await expect(openStore(`sqlite:${file}?mode=ro`)).rejects.toThrow(
      'the SQLite database URL takes no parameters ("?mode=ro"): name the file only',
    );
    expect(existsSync(`${file}?mode=ro`)).toBe(false);
    expect(existsSync(file)).toBe(false);
  });

  it('names the accepted forms for anything else, without repeating the URL', async () => {
    const error = openStore('mysql://root:secret@db/rockets');
    await expect(error).rejects.toThrow(/sqlite:<path>, memory: or postgres:/);
    await expect(error).rejects.not.toThrow(/secret/);
  });
});
