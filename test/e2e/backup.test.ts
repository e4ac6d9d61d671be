import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  chmodSync,
  existsSync,
  linkSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  watch,
  writeFileSync,
} from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SqliteDatabase } from '../../src/store/sqlite/database';
import { delivery, expected, fleet, modelOf, type Envelope, type ModelRocket } from '../support/model';
import { deliver, getJson, MAIN, pool, startServer, type ServerProcess } from '../support/process';

const run = promisify(execFile);

interface RocketJson extends ModelRocket {
  lastMessageNumber: number;
  buffer: { waitingFor: number; count: number };
}
interface BackupLine {
  msg: string;
  file: string;
  events: number;
  lastPosition: number;
  bytes: number;
}

const backup = (database: string, target: string): Promise<{ stdout: string }> =>
  run(process.execPath, [MAIN, '--backup', target], { env: { ...process.env, DATABASE_URL: `sqlite:${database}` } });

const refusal = (env: Record<string, string>, args: string[]): Promise<unknown> =>
  run(process.execPath, [MAIN, ...args], { env: { ...process.env, ...env } }).then(
    () => Promise.reject(new Error('expected a failure')),
    (e: unknown) => e,
  );

async function rocketsOf(server: ServerProcess): Promise<RocketJson[]> {
  const r = await getJson(`${server.url}/rockets`);
  expect(r.status).toBe(200);
  return r.body as RocketJson[];
}

/** A file a backup takes for a store (an `events` table, a user_version), with `megabytes` of noise. */
function bulkyStore(file: string, megabytes: number): string {
  const db = new SqliteDatabase(file);
  db.pragma('user_version = 3');
  db.exec('CREATE TABLE events (position INTEGER PRIMARY KEY); CREATE TABLE junk (b BLOB)');
  const insert = db.prepare('INSERT INTO junk VALUES (randomblob(1000000))');
  for (let i = 0; i < megabytes; i++) insert.run();
  db.close();
  return file;
}

/** Resolves once a rollback journal appears in `dir`: a backup's copy has begun. */
const journalIn = (dir: string): Promise<void> =>
  new Promise((resolve) => {
    const watcher = watch(dir, (_, name) => {
      if (name?.endsWith('-journal') !== true) return;
      watcher.close();
      resolve();
    });
  });

describe('--backup of a SQLite store', () => {
  let dir: string;
  const servers: ServerProcess[] = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rockets-backup-'));
  });
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.stop('SIGKILL')));
    rmSync(dir, { recursive: true, force: true });
  });
  const start = async (file: string): Promise<ServerProcess> => {
    const s = await startServer({ DATABASE_URL: `sqlite:${file}` });
    servers.push(s);
    return s;
  };

  it('copies one consistent snapshot, reorder buffer included, while the server goes on acknowledging', async () => {
    const live = join(dir, 'live.db');
    const copy = join(dir, 'copy.db');
    const server = await start(live);
    // Every channel of `waiting` holds back its #5: 1–4 are applied and 6–12 wait in the buffer.
    const waiting = fleet(20, 12, 31, 'waiting');
    const held = (m: Envelope): boolean => m.metadata.messageNumber === 5;
    await pool(
      delivery(waiting, 0.1, 32).filter((m) => !held(m)),
      8,
      async (m) => {
        await deliver(server, m);
      },
    );
    // The backup runs while another fleet's messages are being acknowledged.
    const moving = fleet(60, 15, 33, 'moving');
    const stream = delivery(moving, 0.1, 34);
    let sent = 0;
    let taken: Promise<{ stdout: string }> | undefined;
    await pool(stream, 8, async (m) => {
      if (++sent === Math.floor(stream.length / 3)) taken = backup(live, copy);
      await deliver(server, m);
    });
    const line = JSON.parse((await (taken as Promise<{ stdout: string }>)).stdout) as BackupLine;
    expect(line).toMatchObject({ msg: 'backup written', file: copy });
    expect(readdirSync(dir).filter((f) => f.includes('partial'))).toEqual([]);

    const restored = await start(copy);
    // The copy's log is the live log's first `events` entries, as they were recorded.
    const got = await getJson(`${restored.url}/events?limit=10000`);
    const want = await getJson(`${server.url}/events?limit=${line.events}`);
    expect(got.body).toEqual(want.body);
    expect((got.body as { position: number }[]).at(-1)?.position).toBe(line.lastPosition);
    // Its rockets are the live ones as they stood after the same messages.
    const rockets = await rocketsOf(restored);
    await pool(rockets, 8, async ({ buffer, ...rocket }) => {
      const then = await getJson(
        `${server.url}/rockets/${encodeURIComponent(rocket.channel)}?asOf=${rocket.lastMessageNumber}`,
      );
      expect(then.body).toEqual({ ...rocket, asOf: { messageNumber: rocket.lastMessageNumber } });
      if (rocket.channel.startsWith('waiting')) expect(buffer).toMatchObject({ waitingFor: 5, count: 7 });
    });
    expect(rockets.filter((r) => r.channel.startsWith('waiting'))).toHaveLength(20);

    // The copy is a store like any other: given the held messages, its buffered ones apply.
    for (const h of waiting) await deliver(restored, h[4]);
    const after = new Map((await rocketsOf(restored)).map((r) => [r.channel, r]));
    for (const h of waiting)
      expect(modelOf(after.get(h[0]?.metadata.channel ?? '') as RocketJson)).toEqual(expected(h));
  });

  it('copies a store no server has open as well', async () => {
    const live = join(dir, 'live.db');
    const histories = fleet(10, 6, 36);
    const server = await start(live);
    await pool(delivery(histories, 0.1, 37), 4, async (m) => {
      await deliver(server, m);
    });
    const before = await rocketsOf(server);
    expect(await server.stop('SIGTERM')).toBe(0);
    const line = JSON.parse((await backup(live, join(dir, 'copy.db'))).stdout) as BackupLine;
    expect(line).toMatchObject({ msg: 'backup written', events: 60, lastPosition: 60 });
    expect(await rocketsOf(await start(join(dir, 'copy.db')))).toEqual(before);
    // Through a symbolic link: SQLite reads the target, and keeps its WAL beside it.
    symlinkSync(live, join(dir, 'link.db'));
    await backup(join(dir, 'link.db'), join(dir, 'linked-copy.db'));
    expect(await rocketsOf(await start(join(dir, 'linked-copy.db')))).toEqual(before);
  });

  it('never overwrites a file, and leaves the one there as it was', async () => {
    const live = join(dir, 'live.db');
    const server = await start(live);
    await deliver(server, fleet(1, 1, 35)[0]?.[0]);
    const target = join(dir, 'taken.db');
    writeFileSync(target, 'an earlier backup');
    expect(await refusal({ DATABASE_URL: `sqlite:${live}` }, ['--backup', target])).toMatchObject({
      code: 1,
      stdout: expect.stringMatching(
        /exists already: a backup never overwrites a file.*"msg":"backup failed"/,
      ) as unknown,
    });
    expect(readFileSync(target, 'utf8')).toBe('an earlier backup');
  });

  it('refuses a file that is not a rockets store, or is not there, or a target with no directory, writing nothing', async () => {
    const other = join(dir, 'other.db');
    const db = new SqliteDatabase(other);
    db.exec('CREATE TABLE notes (text TEXT)');
    db.close();
    expect(await refusal({ DATABASE_URL: `sqlite:${other}` }, ['--backup', join(dir, 'a.db')])).toMatchObject({
      code: 1,
      stdout: expect.stringContaining(`${other} is not a rockets database: nothing to back up`) as unknown,
    });
    const missing = join(dir, 'missing.db');
    expect(await refusal({ DATABASE_URL: `sqlite:${missing}` }, ['--backup', join(dir, 'b.db')])).toMatchObject({
      code: 1,
      stdout: expect.stringContaining(`there is no SQLite database at ${missing}`) as unknown,
    });
    expect(await refusal({ DATABASE_URL: `sqlite:${dir}` }, ['--backup', join(dir, 'c.db')])).toMatchObject({
      code: 1,
      stdout: expect.stringContaining(`${dir} is not a file: nothing to back up`) as unknown,
    });
    const live = join(dir, 'live.db');
    const server = await start(live);
    await deliver(server, fleet(1, 1, 38)[0]?.[0]);
    // A second name would have a WAL of its own: the store is refused, as the server refuses it.
    linkSync(other, join(dir, 'other-twin.db'));
    expect(await refusal({ DATABASE_URL: `sqlite:${other}` }, ['--backup', join(dir, 'e.db')])).toMatchObject({
      code: 1,
      stdout: expect.stringContaining('has 2 hard links') as unknown,
    });
    rmSync(join(dir, 'other-twin.db'));
    expect(await refusal({ DATABASE_URL: `sqlite:${live}` }, ['--backup', join(dir, 'none', 'd.db')])).toMatchObject({
      code: 1,
      stdout: expect.stringContaining(`there is no directory ${join(dir, 'none')} to write d.db in`) as unknown,
    });
    expect(
      readdirSync(dir)
        .filter((f) => !f.startsWith('live.db'))
        .sort(),
    ).toEqual(['other.db']);
  });

  it('leaves nothing behind when the copy fails part way (a full disk)', async () => {
    // 100 MB: large enough that SQLite opens a rollback journal for the copy before the disk fills.
    const live = bulkyStore(join(dir, 'live.db'), 100);
    // Writes past 50 MiB fail with EFBIG, as they would with ENOSPC on a full disk.
    const full = `trap '' XFSZ; ulimit -f 50000; exec "${process.execPath}" "${MAIN}" --backup "${join(dir, 'a.db')}"`;
    await expect(
      run('bash', ['-c', full], { env: { ...process.env, DATABASE_URL: `sqlite:${live}` } }),
    ).rejects.toMatchObject({ code: 1, stdout: expect.stringContaining('backup failed') as unknown });
    expect(readdirSync(dir).sort()).toEqual(['live.db']);
  });

  it.each(['SIGINT', 'SIGTERM'] as const)(
    'stops at %s part way, removing its partial copy, and exits as the signal would',
    async (signal) => {
      // 200 MB: the copy takes about a second, and its rollback journal appears as it begins.
      const live = bulkyStore(join(dir, 'live.db'), 200);
      const copying = journalIn(dir);
      const child = spawn(process.execPath, [MAIN, '--backup', join(dir, 'a.db')], {
        env: { ...process.env, DATABASE_URL: `sqlite:${live}` },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let stdout = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      const ended = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
      await copying;
      expect(readdirSync(dir).filter((f) => f.startsWith('a.db.partial-'))).toHaveLength(2);
      child.kill(signal);
      expect(await ended).toEqual([128 + constants.signals[signal], null]);
      expect(JSON.parse(stdout)).toMatchObject({ signal, msg: 'backup interrupted: the partial copy is removed' });
      expect(readdirSync(dir).sort()).toEqual(['live.db']);
    },
  );

  it('tells of the partial copies a backup killed outright left beside the target, and leaves them be', async () => {
    const live = bulkyStore(join(dir, 'live.db'), 200);
    const copying = journalIn(dir);
    // Its own process group, so that SIGKILL takes the backup and its copying child at once, as a crash of
    // the machine or the container would.
    const child = spawn(process.execPath, [MAIN, '--backup', join(dir, 'a.db')], {
      env: { ...process.env, DATABASE_URL: `sqlite:${live}` },
      stdio: 'ignore',
      detached: true,
    });
    const ended = once(child, 'exit');
    await copying;
    process.kill(-(child.pid as number), 'SIGKILL');
    await ended;
    const left = readdirSync(dir)
      .filter((f) => f.startsWith('a.db.partial-'))
      .sort();
    expect(left).toEqual([
      expect.stringMatching(/^a\.db\.partial-\d+-[0-9a-f]{8}$/),
      expect.stringMatching(/-journal$/),
    ]);

    const lines = (await backup(live, join(dir, 'a.db'))).stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toMatchObject([
      {
        msg: 'partial copies left by interrupted backups lie beside the target: delete them',
        leftovers: left.map((f) => join(dir, f)),
      },
      { msg: 'backup written', file: join(dir, 'a.db') },
    ]);
    expect(readdirSync(dir).sort()).toEqual(['a.db', ...left, 'live.db']);
    // A backup of another name is not told of them.
    expect((await backup(live, join(dir, 'b.db'))).stdout).not.toContain('leftovers');
  });

  it('gives the copy the permissions of the source', async () => {
    const live = join(dir, 'live.db');
    const server = await start(live);
    await deliver(server, fleet(1, 1, 39)[0]?.[0]);
    for (const mode of [0o600, 0o640, 0o444]) {
      chmodSync(live, mode);
      await backup(live, join(dir, `copy-${mode.toString(8)}.db`));
      expect(statSync(join(dir, `copy-${mode.toString(8)}.db`)).mode & 0o777).toBe(mode);
    }
  });

  it('refuses stores it does not copy, and a missing or empty file argument', async () => {
    expect(await refusal({ DATABASE_URL: 'memory:' }, ['--backup', join(dir, 'a.db')])).toMatchObject({
      code: 1,
      stdout: expect.stringContaining('--backup needs a stored log: DATABASE_URL is memory:') as unknown,
    });
    expect(
      await refusal({ DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/test' }, ['--backup', join(dir, 'a.db')]),
    ).toMatchObject({ code: 1, stdout: expect.stringContaining('back up PostgreSQL with pg_dump') as unknown });
    expect(await refusal({}, ['--backup'])).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/^--backup needs the file to write: --backup <file>\n\nUsage:/) as unknown,
    });
    // An empty argument (an unset shell variable, quoted) names no file: not the directory it would resolve to.
    expect(await refusal({}, ['--backup', ''])).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/^--backup needs the file to write: --backup <file>\n\nUsage:/) as unknown,
    });
    expect(existsSync(join(dir, 'a.db'))).toBe(false);
  });
});
