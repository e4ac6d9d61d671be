import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Client } from 'pg';

/** The PostgreSQL the tests use; each test makes its own schema in it. */
export const DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/**
 * Checked once, synchronously, while Jest collects the tests: it cannot decide to skip later. A child
 * process does the asynchronous connect.
 */
function probe(url: string): string | undefined {
  const script = `
    const { Client } = require('pg');
    const c = new Client({ connectionString: process.argv[1], connectionTimeoutMillis: 5000 });
    c.connect().then(() => c.end()).then(() => process.exit(0), (e) => { console.error(e.message); process.exit(1); });`;
  const r = spawnSync(process.execPath, ['-e', script, url], {
    cwd: join(__dirname, '..', '..'),
    encoding: 'utf8',
    timeout: 20_000,
  });
  return r.status === 0 ? undefined : ((r.stderr.trim() || r.error?.message) ?? 'no answer');
}

/** Why PostgreSQL cannot be used, or undefined when it can. */
export const unreachable = probe(DATABASE_URL);
/** `describe` when PostgreSQL is reachable; otherwise skipped, or (under CI=true) a failing test. */
export const describePg = unreachable === undefined ? describe : describe.skip;

if (unreachable !== undefined) {
  const shown = new URL(DATABASE_URL);
  if (shown.password !== '') shown.password = '***';
  const why = `PostgreSQL is not reachable at TEST_DATABASE_URL (${shown.toString()}): ${unreachable}`;
  if (process.env.CI === 'true') {
    describe('PostgreSQL', () => {
      it('is reachable (required under CI=true)', () => {
        throw new Error(why);
      });
    });
  } else {
    console.warn(`\n*** SKIPPING the PostgreSQL tests. ${why}\n*** Set CI=true to make this a failure.\n`);
  }
}

// ---------------------------------------------------------------------------------------------------
// Schemas: each test gets its own, so runs and parallel files never share tables.

const RUN = `${process.pid.toString(36)}${Date.now().toString(36)}`;
let schemas = 0;
export const freshSchema = (): string => `rockets_t_${RUN}_${++schemas}`;

export async function admin<T>(fn: (c: Client) => Promise<T>): Promise<T> {
  const c = new Client({ connectionString: DATABASE_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export const dropSchema = (schema: string): Promise<void> =>
  admin(async (c) => {
    await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  });

/** The test database URL with `schema=` set: what a server process gets as DATABASE_URL. */
export function urlWithSchema(schema: string): string {
  const u = new URL(DATABASE_URL);
  u.searchParams.set('schema', schema);
  return u.toString();
}
