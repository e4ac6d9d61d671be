/**
 * The bench starts its servers with an environment of its own (bench/harness.ts `childEnv`): the shell's
 * settings of the service must not change what the table says was measured.
 */
import { spawnSync } from 'node:child_process';
import { childEnv } from '../../bench/harness';

const SETTINGS = { SQLITE_SYNCHRONOUS: 'NORMAL', WORKER_COUNT: '1', INGEST_TOKEN: 'x', NODE_OPTIONS: '--no-opt' };

test('a child takes PATH, HOME, the locale and libpq’s PG* from the shell, none of the service’s settings', () => {
  const shell = { ...SETTINGS, PATH: '/usr/bin:/bin', HOME: '/home/b', LC_ALL: 'C.UTF-8', PGUSER: 'bench' };
  const saved = Object.keys(shell).map((name) => [name, process.env[name]] as const);
  Object.assign(process.env, shell);
  try {
    const env = childEnv({ DATABASE_URL: 'sqlite:/tmp/x.db', SQLITE_SYNCHRONOUS: 'FULL' });
    // node-postgres reads PGUSER (and PGHOST, PGPASSWORD, …) for what a database URL leaves out.
    expect(env).toMatchObject({ PATH: '/usr/bin:/bin', HOME: '/home/b', LC_ALL: 'C.UTF-8', PGUSER: 'bench' });
    expect(env).toMatchObject({ DATABASE_URL: 'sqlite:/tmp/x.db', SQLITE_SYNCHRONOUS: 'FULL' });
    for (const name of ['WORKER_COUNT', 'INGEST_TOKEN', 'NODE_OPTIONS']) expect(env[name]).toBeUndefined();
    // And a real process sees only that.
    const seen = spawnSync(process.execPath, ['-e', 'console.log(JSON.stringify(process.env))'], {
      env: childEnv({}),
      encoding: 'utf8',
    });
    const names = Object.keys(JSON.parse(seen.stdout) as object);
    for (const name of Object.keys(SETTINGS)) expect(names).not.toContain(name);
  } finally {
    for (const [name, value] of saved)
      if (value === undefined) Reflect.deleteProperty(process.env, name);
      else process.env[name] = value;
  }
});
