import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, sqliteFileOf } from '../../src/store/open';
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
