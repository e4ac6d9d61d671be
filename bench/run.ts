/**
 * `npm run bench [-- --quick] [-- --profile] [-- --only=rest,graphql,batch,subs,big,postgres]`
 *
 * Starts our server (a fresh database per measure) and each baseline in its own process on one core,
 * drives them from load generators on the other core, checks under load that every acknowledged message
 * was applied once and in order, and prints one table: each row with our figure, the baseline's figure
 * from this same run, the ratio, the target and whether it is met. A full run (no --only, no --profile)
 * writes the table to bench/RESULTS.md. `--profile` instead runs our server under `--cpu-prof` during
 * the ingest loads and prints where the time went. Exits with 1 when a correctness check or a measure
 * failed.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import type { LoadResult, SeedResult, SubsResult } from './client';
import {
  baseline,
  client,
  cpuSeconds,
  endedChildrenCpuSeconds,
  fetchJson,
  fetchText,
  hasTaskset,
  killAll,
  load,
  MAIN,
  postgresCpuSeconds,
  ROOT,
  run,
  SERVER_CORE,
  LOAD_CORE,
  sleep,
  startServer,
  useWrk,
  wrkVersion,
  type LoadOptions,
  type Server,
} from './harness';
import { PROJECTION } from '../src/store/sqlite/store';
import { formatSummary, summarise } from './profile';
import { judge, LogScan, type EventJson, type GapJson, type Health, type RocketJson, type Verdict } from './oracle';
import type { IngestReport } from './telemetry';

const SECTION_NAMES = ['rest', 'graphql', 'batch', 'subs', 'big', 'postgres'] as const;
const USAGE = `usage: npm run bench [-- --quick] [-- --profile] [-- --only=${SECTION_NAMES.join(',')}]
  --quick    smaller sizes, a run under 3 minutes
  --profile  run our server under --cpu-prof during the ingest loads and print where the time went
  --only=…   run only these measures (comma-separated)
A full run (no --only, no --profile) takes about 8 minutes and writes bench/RESULTS.md.`;

const argv = process.argv.slice(2);
if (argv.includes('--help') || argv.includes('-h')) {
  console.log(USAGE);
  process.exit(0);
}
const quick = argv.includes('--quick');
const profiling = argv.includes('--profile');
const only = argv
  .find((a) => a.startsWith('--only='))
  ?.slice('--only='.length)
  .split(',');
// Refuse what we do not understand before anything starts: a mistyped flag must not become a full run
// that overwrites bench/RESULTS.md.
const unknown = [
  ...argv.filter((a) => a !== '--quick' && a !== '--profile' && !a.startsWith('--only=')),
  ...(only ?? [])
    .filter((name) => !(SECTION_NAMES as readonly string[]).includes(name))
    .map((name) => `--only=${name}`),
];
if (unknown.length > 0) {
  console.error(`unknown argument: ${unknown.join(' ')}\n${USAGE}`);
  process.exit(2);
}

/** Counts and durations; --quick shrinks them (the table says which). */
const SIZE = quick
  ? { durationS: 4, warmupS: 1, rounds: 1, b4Rows: 50_000, bigMessages: 100_000, subsS: 4 }
  : { durationS: 10, warmupS: 3, rounds: 2, b4Rows: 200_000, bigMessages: 1_000_000, subsS: 10 };
const CONNECTIONS = 32;
const BATCH = 1000;
const BATCH_CONNECTIONS = 4;
const ROCKETS = 10_000;
/** A rocket's fields in GraphQL that REST answers with: its own, then its buffer's. */
const ROCKET_FIELDS = 'channel type mission speed status explodedReason launchedAt updatedAt lastMessageNumber';
const BUFFER_FIELDS = 'buffer { waitingFor count oldestSince }';

const SUBSCRIBERS = { singles: 1000, alls: 10, rate: 2000 };

const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

const loadAtStart = loadavg()[0] ?? NaN;
const TMP = mkdtempSync(join(tmpdir(), 'rockets-bench-'));
let dbCount = 0;
/** A fresh SQLite file for one measure. */
const freshDb = (name: string): string => join(TMP, `${++dbCount}-${name}.db`);

/** Our server on SQLite `file`, durable as the rows say (synchronous FULL, whatever the shell sets). */
const ours = (file: string, env: Record<string, string> = {}, nodeArgs: string[] = []): Promise<Server> =>
  startServer('rockets', MAIN, {
    env: { DATABASE_URL: `sqlite:${file}`, NODE_ENV: 'production', SQLITE_SYNCHRONOUS: 'FULL', ...env },
    nodeArgs,
  });

async function withServer<T>(starting: Promise<Server>, work: (s: Server) => Promise<T>): Promise<T> {
  const s = await starting;
  try {
    return await work(s);
  } finally {
    await s.stop();
  }
}

/** Starts the servers one after the other, runs `work`, then stops every one that started. */
async function withServers<T>(
  starting: ReadonlyArray<() => Promise<Server>>,
  work: (s: Server[]) => Promise<T>,
): Promise<T> {
  const servers: Server[] = [];
  try {
    for (const start of starting) servers.push(await start());
    return await work(servers);
  } finally {
    for (const server of servers) await server.stop();
  }
}

// ---------------------------------------------------------------------------------------------------------
// The table

interface Row {
  readonly measure: string;
  readonly ours: string;
  readonly baseline: string;
  readonly ratio: string;
  readonly target: string;
  readonly result: string;
}
interface CheckRow {
  readonly run: string;
  readonly acknowledged: string;
  readonly check: string;
}
const rows: Row[] = [];
const checks: CheckRow[] = [];
/** Correctness checks and measures that failed: the bench then exits with 1. */
let failures = 0;

const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n)
    ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : 'n/a';

/**
 * A throughput row judged as a ratio to a baseline of this run; `unjudged` says why the baseline did not
 * measure what it stands for, and the row is then reported but not judged.
 */
function ratioRow(
  measure: string,
  ours: number,
  oursNote: string,
  base: string,
  baseValue: number,
  min: number,
  unjudged?: string,
): void {
  const ratio = ours / baseValue;
  rows.push({
    measure,
    ours: `${fmt(ours)}${oursNote}`,
    baseline: `${base} ${fmt(baseValue)}`,
    ratio: `${fmt(ratio, 2)}×`,
    target: `≥ ${min} × ${base}`,
    result:
      unjudged !== undefined
        ? `not judged: ${unjudged}`
        : Number.isFinite(ratio)
          ? ratio >= min
            ? 'met'
            : '**not met**'
          : 'n/a',
  });
}

function naRow(measure: string, why: string, target: string): void {
  rows.push({ measure, ours: why, baseline: '', ratio: '', target, result: 'n/a' });
}

/** Messages acknowledged (2xx with an outcome) per second. */
function okRate(r: LoadResult): number {
  const ok = (r.counts.applied ?? 0) + (r.counts.buffered ?? 0) + (r.counts.duplicate ?? 0);
  return ok / (r.durationUs / 1e6);
}
/** 2xx answers per second, for fixed requests (reads). */
const answerRate = (r: LoadResult): number => (r.requests - (r.errors.status ?? 0)) / (r.durationUs / 1e6);
const p99 = (r: LoadResult): string => `, p99 ${fmt(r.latencyUs.p99 / 1000, 1)} ms`;

/** One run of a load generator with unique messages under the channel prefix given. */
type Drive = (prefix: string, durationS: number) => Promise<LoadResult>;

interface Rounds {
  /** Every run, warm-up included: the oracle checks all that was sent. */
  readonly all: LoadResult[];
  /** The measured round with the highest rate. */
  readonly best: LoadResult;
}

const httpDrive =
  (s: Server, o: Omit<LoadOptions, 'prefix' | 'durationS'>): Drive =>
  (prefix, durationS) =>
    load(s.url, { ...o, prefix, durationS });

/** CPU a message acknowledged, in µs, during one load run, by where it was spent. */
interface CpuUse {
  readonly server: number;
  /** Every PostgreSQL process; 0 when not metered. */
  readonly postgres: number;
  readonly load: number;
}
const cpuUse = new WeakMap<LoadResult, CpuUse>();

/**
 * `drive`, noting in `cpuUse` the CPU per message of the server `pid`, of the load generator and (with
 * `postgresToo`) of PostgreSQL. What a server spends per message bounds its ratio to another whatever
 * it waits on: at the same share of the machine busy, their rates are in the inverse ratio of their CPU.
 */
const metered =
  (drive: Drive, pid: number, rate: (r: LoadResult) => number, postgresToo = false): Drive =>
  async (prefix, durationS) => {
    const pgCpu = (): number => (postgresToo ? postgresCpuSeconds() : 0);
    const [server, postgres, load] = [cpuSeconds(pid), pgCpu(), endedChildrenCpuSeconds()];
    const r = await drive(prefix, durationS);
    const messages = (rate(r) * r.durationUs) / 1e6;
    const per = (now: number, was: number): number => ((now - was) * 1e6) / messages;
    cpuUse.set(r, {
      server: per(cpuSeconds(pid), server),
      postgres: per(pgCpu(), postgres),
      load: per(endedChildrenCpuSeconds(), load),
    });
    return r;
  };

const bestOf = (runs: readonly LoadResult[], rate: (r: LoadResult) => number): LoadResult =>
  runs.reduce((a, b) => (rate(b) > rate(a) ? b : a));

/**
 * Seconds of load a server writing its rockets table behind the log (our SQLite store, PROJECTION) must
 * have taken before a round measures it in its steady state: a row is written `afterMs` after its
 * rocket changed, so a round begun after a pause (the warm-up, then another server's round) would do
 * none of that work in its first `afterMs`.
 */
const LEAD_IN_S = Math.ceil(PROJECTION.afterMs / 1000) + 1;
/** Drives whose every measured round follows, at once, an unmeasured lead-in of LEAD_IN_S (prefix `l0`, …). */
const leadIns = new WeakSet<Drive>();
const steady = (drive: Drive): Drive => {
  leadIns.add(drive);
  return drive;
};

/** A warm-up (prefix `w`), then SIZE.rounds measured runs (`m0`, `m1`, …); keeps the best. */
async function solo(drive: Drive, rate: (r: LoadResult) => number): Promise<Rounds> {
  return (await alternate([drive], rate))[0] as Rounds;
}

/**
 * Warms both up, then alternates their measured rounds (baseline first) and keeps each side's best: other
 * processes on this machine only ever slow a round down, so the best round is the least disturbed one.
 */
async function duel(
  base: Drive,
  ours: Drive,
  rate: (r: LoadResult) => number,
): Promise<{ base: Rounds; ours: Rounds }> {
  const [b, o] = (await alternate([base, ours], rate)) as [Rounds, Rounds];
  return { base: b, ours: o };
}

/** `duel` for any number of drives: each warmed up, then their measured rounds in turn (with lead-ins). */
async function alternate(drives: readonly Drive[], rate: (r: LoadResult) => number): Promise<Rounds[]> {
  const runs: LoadResult[][] = [];
  for (const drive of drives) runs.push([await drive('w', SIZE.warmupS)]);
  const measured: LoadResult[][] = drives.map(() => []);
  for (let i = 0; i < SIZE.rounds; i++)
    for (const [k, drive] of drives.entries()) {
      if (leadIns.has(drive)) runs[k]?.push(await drive(`l${i}`, LEAD_IN_S));
      const r = await drive(`m${i}`, SIZE.durationS);
      runs[k]?.push(r);
      measured[k]?.push(r);
    }
  return runs.map((all, k) => ({ all, best: bestOf(measured[k] ?? [], rate) }));
}

// ---------------------------------------------------------------------------------------------------------
// The oracle: every acknowledged message applied once and in order, every rocket as the model says

/** Waits (bounded) until no lane holds work and the event count stopped moving. */
async function idle(url: string): Promise<Health> {
  let previous = -1;
  for (let waited = 0; waited < 60_000; waited += 200) {
    const h = await fetchJson<Health>(`${url}/health`);
    if (h.lanes.depths.every((d) => d === 0) && h.events === previous) return h;
    previous = h.events;
    await sleep(200);
  }
  throw new Error('the server did not become idle within 60 s');
}

/** The server's state once idle (with `scanEvents`, its whole event log), judged against `runs`. */
async function verify(url: string, runs: readonly IngestReport[], scanEvents: boolean): Promise<Verdict> {
  const health = await idle(url);
  const rockets = await fetchJson<RocketJson[]>(`${url}/rockets`);
  const gaps = await fetchJson<GapJson[]>(`${url}/gaps`);
  let log: LogScan | undefined;
  if (scanEvents) {
    log = new LogScan();
    for (;;) {
      const page = await fetchJson<EventJson[]>(`${url}/events?after=${log.position}&limit=10000`);
      log.add(page);
      if (page.length < 10_000) break;
    }
  }
  return judge({ health, rockets, gaps, log }, runs);
}

/**
 * Checks the runs `reports` of the server at `url` and adds the verdict to the correctness table. When
 * it fails, the bench exits with 1 and the rows from `from` on (those that measured these runs) read
 * not met: a figure of a server that lost or misapplied messages meets no target.
 */
async function check(
  run: string,
  url: string,
  reports: readonly IngestReport[],
  from: number,
  scanEvents = true,
): Promise<boolean> {
  const acks = reports.reduce((n, r) => n + (r.counts.applied ?? 0) + (r.counts.buffered ?? 0), 0);
  // A check that cannot be made (the server never went idle, or died after the load) fails like a wrong one.
  const verdict = await verify(url, reports, scanEvents).catch((e: unknown) => ({
    ok: false,
    text: `**FAILED**: the check could not be made: ${e instanceof Error ? e.message : String(e)}`,
  }));
  checks.push({ run, acknowledged: fmt(acks), check: verdict.text });
  if (!verdict.ok) {
    failures++;
    condemn(from);
  }
  return verdict.ok;
}

/** The rows from `from` on measured runs whose correctness check failed. */
function condemn(from: number): void {
  for (let i = from; i < rows.length; i++) {
    const row = rows[i] as Row;
    const result = row.result === '' ? '**correctness check failed**' : '**not met** (correctness check failed)';
    rows[i] = { ...row, result };
  }
}

async function graphqlAvailable(url: string): Promise<boolean> {
  const r = await fetchText(`${url}/graphql`, 'POST', JSON.stringify({ query: '{ __typename }' }));
  if (r.status !== 200) return false;
  try {
    return (JSON.parse(r.text) as { data?: { __typename?: string } }).data?.__typename === 'Query';
  } catch {
    return false;
  }
}
const NO_GRAPHQL = 'n/a (GraphQL not available: POST /graphql does not answer `{ __typename }`)';

// ---------------------------------------------------------------------------------------------------------
// The measures

let b0: number | undefined;
let b0Cpu: CpuUse | undefined;

/**
 * B0 stands for the platform's limit only while it keeps its core busy. Below this share, something held
 * it back (its load generator, starved of its core by other work on the machine, sends too little), and a
 * ratio to it would flatter every row judged against it.
 */
const B0_BUSY_MIN = 0.8;

/** Why the rows judged against B0 are not judged in this run, or undefined when B0 kept its core busy. */
function b0Held(): string | undefined {
  if (b0 === undefined || b0Cpu === undefined) return undefined;
  const busy = (b0 * b0Cpu.server) / 1e6;
  return busy >= B0_BUSY_MIN
    ? undefined
    : `B0 was ${fmt(busy * 100)}% busy (under ${fmt(B0_BUSY_MIN * 100)}%): its load generator was held back`;
}
const REST = { mode: 'rest', connections: CONNECTIONS } as const;

/** B0 of this run (the REST and PostgreSQL rows share it), measured alone if the REST row did not run. */
async function b0Rate(): Promise<number> {
  if (b0 === undefined) {
    const r = await withServer(startServer('B0', baseline('b0-http')), (s) =>
      solo(metered(httpDrive(s, REST), s.pid, okRate), okRate),
    );
    b0 = okRate(r.best);
    b0Cpu = cpuUse.get(r.best);
  }
  return b0;
}

const us = (n: number | undefined): string => `${fmt(n ?? NaN)} µs`;

async function restIngest(): Promise<void> {
  await withServers(
    [
      () => startServer('B0', baseline('b0-http')),
      () => startServer('B5', baseline('b5-durable'), { env: { BENCH_FILE: freshDb('b5') } }),
      () => ours(freshDb('rest')),
    ],
    async ([b, d, s]) => {
      if (!b || !d || !s) return;
      const drive = (x: Server): Drive => metered(httpDrive(x, REST), x.pid, okRate);
      const [base, durable, r] = (await alternate([drive(b), drive(d), steady(drive(s))], okRate)) as [
        Rounds,
        Rounds,
        Rounds,
      ];
      b0 = okRate(base.best);
      b0Cpu = cpuUse.get(base.best);
      const from = rows.length;
      const measure = `REST \`POST /messages\`, durable SQLite (synchronous FULL), ${CONNECTIONS} connections`;
      ratioRow(measure, okRate(r.best), ` msg/s${p99(r.best)}`, 'B0', b0, 0.6, b0Held());
      const b5 = okRate(durable.best);
      rows.push({
        measure: '↳ the same, against B5 (B0 that stores each message durably before answering)',
        ours: `${fmt(okRate(r.best))} msg/s`,
        baseline: `B5 ${fmt(b5)} (${fmt(b5 / b0, 2)}× B0)`,
        ratio: `${fmt(okRate(r.best) / b5, 2)}×`,
        target: '(information)',
        result: '',
      });
      const serverCpu = (x: Rounds): number => cpuUse.get(x.best)?.server ?? NaN;
      rows.push({
        measure: '↳ CPU a message, server process (ratio: B0 ÷ ours, our ratio if both servers were always busy)',
        ours: us(serverCpu(r)),
        baseline: `B0 ${us(serverCpu(base))}, B5 ${us(serverCpu(durable))}`,
        ratio: `${fmt(serverCpu(base) / serverCpu(r), 2)}×`,
        target: '(information)',
        result: '',
      });
      await check('REST ingest, SQLite', s.url, r.all, from);
    },
  );
}

/** `submitMessage` over graphql-ws from CONNECTIONS sockets, one operation at a time each. */
const wsDrive =
  (s: Server): Drive =>
  (prefix, durationS) =>
    client<LoadResult>(
      'ws-submit',
      { wsUrl: s.wsUrl, clients: CONNECTIONS, durationMs: durationS * 1000, prefix, channels: ROCKETS },
      (durationS + 60) * 1000,
    );

/** `total` messages over ROCKETS rockets through the service (submitMessages batches, or REST). */
async function seed(url: string, total: number): Promise<SeedResult & { graphql: boolean }> {
  const graphql = await graphqlAvailable(url);
  const config = {
    url,
    graphql,
    prefix: 'big',
    channels: ROCKETS,
    total,
    batch: BATCH,
    concurrency: graphql ? BATCH_CONNECTIONS : CONNECTIONS,
  };
  return { ...(await client<SeedResult>('seed', config, 1_800_000)), graphql };
}

async function graphqlIngest(): Promise<void> {
  const gql = { mode: 'graphql', connections: CONNECTIONS } as const;
  const httpMeasure = `GraphQL \`submitMessage\` over HTTP, durable, ${CONNECTIONS} connections`;
  const wsMeasure = `GraphQL \`submitMessage\` over graphql-ws, ${CONNECTIONS} clients (one socket each)`;
  await withServer(startServer('B1', baseline('b1-mercurius')), async (b1) => {
    let b1Http = NaN;
    await withServer(ours(freshDb('graphql-http')), async (s) => {
      if (!(await graphqlAvailable(s.url))) {
        naRow(httpMeasure, NO_GRAPHQL, '≥ 0.5 × B1');
        return;
      }
      const r = await duel(httpDrive(b1, gql), steady(httpDrive(s, gql)), okRate);
      b1Http = okRate(r.base.best);
      const from = rows.length;
      ratioRow(httpMeasure, okRate(r.ours.best), ` msg/s${p99(r.ours.best)}`, 'B1', b1Http, 0.5);
      await check('GraphQL submitMessage over HTTP', s.url, r.ours.all, from);
    });
    await withServer(ours(freshDb('graphql-ws')), async (s) => {
      if (!(await graphqlAvailable(s.url))) {
        naRow(wsMeasure, NO_GRAPHQL, '≥ 0.5 × B1 (graphql-ws)');
        return;
      }
      const r = await duel(wsDrive(b1), steady(wsDrive(s)), okRate);
      const mine = okRate(r.ours.best);
      const from = rows.length;
      // Judged like for like: B1 over graphql-ws, driven by the same client in the same run.
      ratioRow(wsMeasure, mine, ` msg/s${p99(r.ours.best)}`, 'B1 (graphql-ws)', okRate(r.base.best), 0.5);
      rows.push({
        measure: '↳ the same, against B1 over HTTP (the baseline of earlier runs)',
        ours: `${fmt(mine)} msg/s`,
        baseline: `B1 (HTTP) ${fmt(b1Http)}`,
        ratio: `${fmt(mine / b1Http, 2)}×`,
        target: '(information)',
        result: '',
      });
      await check('GraphQL submitMessage over graphql-ws', s.url, r.ours.all, from);
    });
  });
}

/** B4's insert: `rows` rows timed, after `prefill` rows of other channels written untimed. */
async function b4Insert(rows: number, prefill = 0): Promise<{ rowsPerSec: number; cpuUsPerRow: number }> {
  const out = await run(process.execPath, [baseline('b4-sqlite'), 'insert'], {
    env: {
      BENCH_FILE: freshDb('b4'),
      BENCH_ROWS: String(rows),
      BENCH_BATCH: String(BATCH),
      BENCH_PREFILL: String(prefill),
    },
    core: SERVER_CORE,
    timeoutMs: 600_000,
  });
  return resultLine(out) as { rowsPerSec: number; cpuUsPerRow: number };
}

/**
 * The target is judged against B4 inserting as many rows as our best round took, into a table already
 * holding as many as ours held when that round began: a row costs SQLite more as the table and its
 * (channel, message_number) index grow, and ours is measured after its warm-up and lead-ins. Both counts
 * are of acknowledged messages, so the few thousand in flight when each earlier run stopped are left out.
 * B4 into a fresh file of SIZE.b4Rows, the earlier runs' baseline, is reported beside it.
 */
async function batchIngest(): Promise<void> {
  const fresh = (await b4Insert(SIZE.b4Rows)).rowsPerSec;
  const measure = `GraphQL \`submitMessages\`, ${BATCH} envelopes a request, ${BATCH_CONNECTIONS} connections`;
  const r = await withServer(ours(freshDb('batch')), async (s) => {
    if (!(await graphqlAvailable(s.url))) {
      naRow(measure, NO_GRAPHQL, '≥ 0.5 × B4');
      return undefined;
    }
    const rounds = await solo(
      steady(metered(httpDrive(s, { mode: 'batch', connections: BATCH_CONNECTIONS, batch: BATCH }), s.pid, okRate)),
      okRate,
    );
    // Checked while the server runs; its rows, written after B4's runs, are marked below if it failed.
    const ok = await check('GraphQL submitMessages', s.url, rounds.all, rows.length);
    return { ...rounds, ok };
  });
  if (r === undefined) return;
  const from = rows.length;
  const stored = (x: LoadResult): number => (x.counts.applied ?? 0) + (x.counts.buffered ?? 0);
  const before = r.all.slice(0, r.all.indexOf(r.best)).reduce((n, x) => n + stored(x), 0);
  const taken = stored(r.best);
  // The best of as many runs as ours had measured rounds: like ours, B4 is only ever slowed by the machine.
  let sameSize = { rowsPerSec: 0, cpuUsPerRow: NaN };
  for (let i = 0; i < SIZE.rounds; i++) {
    const b4 = await b4Insert(taken, before);
    if (b4.rowsPerSec > sameSize.rowsPerSec) sameSize = b4;
  }
  ratioRow(
    measure,
    okRate(r.best),
    ` msg/s${p99(r.best)}`,
    `B4 (${fmt(taken)} rows after ${fmt(before)})`,
    sameSize.rowsPerSec,
    0.5,
  );
  const cpu = cpuUse.get(r.best)?.server ?? NaN;
  rows.push({
    measure:
      '↳ CPU a message, server process (ratio: B4 ÷ ours, our ratio if ours were always busy and B4 never waited)',
    ours: `${fmt(cpu, 1)} µs`,
    baseline: `B4 ${fmt(sameSize.cpuUsPerRow, 1)} µs`,
    ratio: `${fmt(sameSize.cpuUsPerRow / cpu, 2)}×`,
    target: '(information)',
    result: '',
  });
  rows.push({
    measure: '↳ the same, against B4 into a fresh file, the baseline of earlier runs',
    ours: `${fmt(okRate(r.best))} msg/s`,
    baseline: `B4 (${fmt(SIZE.b4Rows)} rows) ${fmt(fresh)}`,
    ratio: `${fmt(okRate(r.best) / fresh, 2)}×`,
    target: '(information)',
    result: '',
  });
  if (!r.ok) condemn(from);
}

function resultLine(lines: readonly string[]): unknown {
  const line = lines.find((l) => l.includes('"msg":"result"') || l.includes('"msg":"projection rebuilt"'));
  if (line === undefined) throw new Error(`no result line in: ${lines.join('\n').slice(0, 500)}`);
  return JSON.parse(line);
}

async function subscriptions(): Promise<void> {
  const { singles, alls, rate } = SUBSCRIBERS;
  const config = (s: Server, r: number, prefix: string, seconds: number, after: number, transport = 'ws') => ({
    httpUrl: s.url,
    wsUrl: s.wsUrl,
    singles,
    alls,
    rate: r,
    durationMs: seconds * 1000,
    prefix,
    after,
    transport,
  });
  const timeout = (SIZE.subsS + 90) * 1000;
  // As every other measure: a warm-up of the same load on the same server, new subscribers and rockets,
  // then the measured runs, each subscribing after the head of the log its run begins at.
  // B3 keeps no log: its subscribers get what is broadcast from then on.
  const runs = async (s: Server, head: () => Promise<number>) => {
    const warm = await client<SubsResult>('subs', config(s, rate, 'w', SIZE.warmupS, await head()), timeout);
    const paced = await client<SubsResult>('subs', config(s, rate, 's', SIZE.subsS, await head()), timeout);
    const flat = await client<SubsResult>('subs', config(s, 0, 't', SIZE.subsS, await head()), timeout);
    return { warm, paced, flat };
  };
  const b3 = await withServer(startServer('B3', baseline('b3-ws')), (s) => runs(s, () => Promise.resolve(0)));
  const label = `Subscriptions: ${fmt(singles)} on one rocket each + ${alls} on all, ingest ${fmt(rate)} msg/s`;
  await withServer(ours(freshDb('subs')), async (s) => {
    if (!(await graphqlAvailable(s.url))) {
      naRow(label, NO_GRAPHQL, 'every event delivered; p99 ≤ 50 ms; ≥ 0.5 × B3');
      return;
    }
    const { warm, paced, flat } = await runs(s, async () => (await idle(s.url)).events);
    // The same subscribers as event streams (B3 has no such transport: compared with our graphql-ws run).
    const sse = await client<SubsResult>(
      'subs',
      config(s, rate, 'e', SIZE.subsS, (await idle(s.url)).events, 'sse'),
      timeout,
    );
    const delivered = (r: SubsResult): string =>
      `${fmt(r.deliveries)} of ${fmt(r.expectedDeliveries)} delivered, ${fmt(r.missing)} missing, ${fmt(r.outOfOrder)} out of order, ${fmt(r.failed)} posts failed`;
    const allDelivered = (r: SubsResult): boolean => r.missing === 0 && r.outOfOrder === 0 && r.failed === 0;
    rows.push({
      measure: `${label}: every event delivered`,
      ours: `${delivered(paced)} (warm-up: ${delivered(warm)})`,
      baseline: `B3: ${delivered(b3.paced)}`,
      ratio: '',
      target: 'every event delivered',
      result: allDelivered(paced) && allDelivered(warm) ? 'met' : '**not met**',
    });
    rows.push({
      measure: '↳ p99 publish→deliver (receive time − the event’s `recordedAt`, taken before the commit)',
      ours: `${fmt(paced.publishToDeliverMs.p99)} ms (p50 ${fmt(paced.publishToDeliverMs.p50)}, post→deliver p99 ${fmt(paced.sendToDeliverMs.p99)})`,
      baseline: `B3 ${fmt(b3.paced.publishToDeliverMs.p99)} ms (post→deliver p99 ${fmt(b3.paced.sendToDeliverMs.p99)})`,
      ratio: '',
      target: '≤ 50 ms',
      result: paced.publishToDeliverMs.p99 <= 50 ? 'met' : '**not met**',
    });
    rows.push({
      measure: `↳ the same, in the warm-up: a fresh server's first ${fmt(SIZE.warmupS)} s of this load`,
      ours: `${fmt(warm.publishToDeliverMs.p99)} ms (p50 ${fmt(warm.publishToDeliverMs.p50)})`,
      baseline: `B3 ${fmt(b3.warm.publishToDeliverMs.p99)} ms`,
      ratio: '',
      target: '(information)',
      result: '',
    });
    ratioRow('↳ deliveries/s at that ingest', paced.deliveriesPerSec, ' /s', 'B3', b3.paced.deliveriesPerSec, 0.5);
    rows.push({
      measure: '↳ deliveries/s with unthrottled ingest (32 posts in flight), same subscribers',
      ours: `${fmt(flat.deliveriesPerSec)} /s (${fmt((flat.acked * 1000) / flat.ingestMs)} msg/s; ${delivered(flat)}; p99 ${fmt(flat.publishToDeliverMs.p99)} ms)`,
      baseline: `B3 ${fmt(b3.flat.deliveriesPerSec)} (${fmt((b3.flat.acked * 1000) / b3.flat.ingestMs)} msg/s)`,
      ratio: `${fmt(flat.deliveriesPerSec / b3.flat.deliveriesPerSec, 2)}×`,
      target: '(information)',
      result: allDelivered(flat) ? '' : '**events missing**',
    });
    rows.push({
      measure: '↳ the same subscribers as server-sent events (GraphQL over SSE), ingest as paced above',
      ours: `${delivered(sse)}; p99 ${fmt(sse.publishToDeliverMs.p99)} ms (p50 ${fmt(sse.publishToDeliverMs.p50)}); ${fmt(sse.deliveriesPerSec)} deliveries/s`,
      baseline: `ours over graphql-ws: p99 ${fmt(paced.publishToDeliverMs.p99)} ms, ${fmt(paced.deliveriesPerSec)} /s`,
      ratio: `${fmt(sse.deliveriesPerSec / paced.deliveriesPerSec, 2)}×`,
      target: '(information)',
      result: allDelivered(sse) ? '' : '**events missing**',
    });
  });
}

/** RSS after the big ingest, reads with 10,000 rockets, start-up over it, rebuild vs B4's read. */
async function bigStore(): Promise<void> {
  const file = freshDb('big');
  const total = SIZE.bigMessages;
  const ingestLabel = `${fmt(total)} messages over ${fmt(ROCKETS)} rockets`;
  // Every row of this section measures the seeded store: if its check fails, none is met.
  const from = rows.length;
  let seedOk: boolean;
  const s = await ours(file);
  try {
    const seeded = await seed(s.url, total);
    const gql = seeded.graphql;
    const health = await idle(s.url);
    const mem = s.memory();
    rows.push({
      measure: `RSS after ${ingestLabel}`,
      ours: `${fmt(mem.rssMb)} MB (peak ${fmt(mem.peakMb)} MB; ingested at ${fmt((seeded.sent * 1000) / seeded.ms)} msg/s via ${gql ? '`submitMessages`' : 'REST'})`,
      baseline: '',
      ratio: '',
      target: '≤ 250 MB',
      result: mem.rssMb <= 250 ? 'met' : '**not met**',
    });
    const seedRun = { ...seeded, prefix: 'big', channels: ROCKETS, sent: total };
    seedOk = await check(`Seeding ${ingestLabel}`, s.url, [seedRun], from, false);
    if (health.rockets !== ROCKETS || health.events !== total)
      throw new Error(`seeded ${health.rockets} rockets and ${health.events} events, wanted ${ROCKETS} and ${total}`);

    // Reads: B2 serves exactly the bytes we answer for the same page.
    await part('reads', () => reads(s, total, gql));
  } finally {
    await s.stop();
  }
  await part('start-up', () => startUp(file));
  await part('rebuild', () => rebuild(file));
  if (!seedOk) condemn(from);
}

/** Runs one part of a section; a failure becomes a row and the section goes on. */
async function part(name: string, work: () => Promise<void>): Promise<void> {
  try {
    await work();
  } catch (e) {
    failedRow(name, e);
  }
}

function failedRow(name: string, e: unknown): void {
  failures++;
  const why = e instanceof Error ? e.message.slice(0, 300) : String(e);
  rows.push({ measure: `${name}: failed`, ours: why, baseline: '', ratio: '', target: '', result: '**failed**' });
}

async function reads(s: Server, total: number, gql: boolean): Promise<void> {
  const path = '/rockets?sort=speed&order=desc&limit=100';
  const page = await fetchText(`${s.url}${path}`);
  const list = JSON.parse(page.text) as RocketJson[];
  if (page.status !== 200 || list.length !== 100 || list.some((r, i) => i > 0 && r.speed > (list[i - 1]?.speed ?? 0)))
    throw new Error(`GET ${path} did not answer 100 rockets by speed, descending`);
  const bodyFile = join(TMP, 'b2-body.json');
  writeFileSync(bodyFile, page.text);
  const read = { mode: 'static', connections: CONNECTIONS, path } as const;
  const startB2 = () => startServer('B2', baseline('b2-rockets'), { env: { BENCH_BODY_FILE: bodyFile } });
  await withServer(startB2(), async (b2) => {
    const r = await duel(httpDrive(b2, read), httpDrive(s, read), answerRate);
    ratioRow(
      `\`GET ${path}\` with ${fmt(ROCKETS)} rockets (${fmt(total)} events) stored`,
      answerRate(r.ours.best),
      ` req/s${p99(r.ours.best)}`,
      'B2',
      answerRate(r.base.best),
      0.5,
    );
  });
  const gqlMeasure = `GraphQL \`rockets(first: 100, sort: SPEED, order: DESC)\` with ${fmt(ROCKETS)} rockets`;
  if (gql) await graphqlRockets(s, gqlMeasure, read, startB2);
  else naRow(gqlMeasure, NO_GRAPHQL, '≥ 0.3 × B2');
}

/** Start-up over the stored log: the projection is persisted, nothing is replayed. */
async function startUp(file: string): Promise<void> {
  const again = await ours(file);
  const h = await fetchJson<Health>(`${again.url}/health`);
  await again.stop();
  rows.push({
    measure: `Start-up to ready (spawn → listening) with ${fmt(h.events)} stored events`,
    ours: `${fmt(again.readyMs)} ms`,
    baseline: '',
    ratio: '',
    target: '≤ 2,000 ms',
    result: again.readyMs <= 2000 ? 'met' : '**not met**',
  });
}

/** `--rebuild` over the stored log against B4 reading and parsing the same rows. */
async function rebuild(file: string): Promise<void> {
  const b4Read = resultLine(
    await run(process.execPath, [baseline('b4-sqlite'), 'read'], {
      env: { BENCH_FILE: file },
      core: SERVER_CORE,
      timeoutMs: 600_000,
    }),
  ) as { rows: number; rowsPerSec: number };
  const rebuilt = resultLine(
    await run(process.execPath, [MAIN, '--rebuild'], {
      env: { DATABASE_URL: `sqlite:${file}`, NODE_ENV: 'production', SQLITE_SYNCHRONOUS: 'FULL' },
      core: SERVER_CORE,
      timeoutMs: 600_000,
    }),
  ) as { events: number; ms: number };
  ratioRow(
    `Full projection rebuild (\`--rebuild\`), ${fmt(rebuilt.events)} events`,
    (rebuilt.events * 1000) / rebuilt.ms,
    ` events/s (${fmt(rebuilt.ms)} ms)`,
    'B4 read+parse',
    b4Read.rowsPerSec,
    0.5,
  );
}

/**
 * The GraphQL page of 100 rockets against B2. It asks for the fields the REST page has; if the server refuses
 * that (its query cost limit), the row says so and measures the largest selection it accepts.
 */
async function graphqlRockets(
  s: Server,
  measure: string,
  read: Omit<LoadOptions, 'prefix' | 'durationS'>,
  startB2: () => Promise<Server>,
): Promise<void> {
  const selections = [
    `${ROCKET_FIELDS} ${BUFFER_FIELDS}`,
    ROCKET_FIELDS,
    'channel type mission speed status explodedReason',
  ];
  let refusal = '';
  for (const fields of selections) {
    const body = JSON.stringify({ query: `{ rockets(first: 100, sort: SPEED, order: DESC) { nodes { ${fields} } } }` });
    const answer = JSON.parse((await fetchText(`${s.url}/graphql`, 'POST', body)).text) as {
      data?: { rockets?: { nodes?: unknown[] } };
      errors?: Array<{ message?: string }>;
    };
    if (answer.data?.rockets?.nodes?.length !== 100) {
      refusal ||= answer.errors?.[0]?.message ?? JSON.stringify(answer).slice(0, 200);
      continue;
    }
    const query = { ...read, method: 'POST', path: '/graphql', body };
    await withServer(startB2(), async (b2) => {
      const r = await duel(httpDrive(b2, read), httpDrive(s, query), answerRate);
      const note = refusal === '' ? '' : `; only \`${fields}\`: the REST fields are refused (${refusal})`;
      ratioRow(
        measure,
        answerRate(r.ours.best),
        ` req/s${p99(r.ours.best)}${note}`,
        'B2',
        answerRate(r.base.best),
        0.3,
      );
    });
    return;
  }
  naRow(measure, `n/a (refused: ${refusal})`, '≥ 0.3 × B2');
}

/**
 * The PostgreSQL schemas this run created (or is about to) and has not dropped yet: each measure drops
 * its own when it ends, and `abort` the rest on a signal or the watchdog, which skip those `finally`s.
 */
const schemas = new Set<string>();

async function dropSchema(pg: Client, schema: string): Promise<void> {
  await pg.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  schemas.delete(schema);
}

/** Drops what is left in `schemas` from a connection of its own, within `ms`; false when it could not. */
async function dropLeftSchemas(ms: number): Promise<boolean> {
  if (schemas.size === 0) return true;
  const pg = new Client({ connectionString: PG_URL, connectionTimeoutMillis: ms });
  let timer: NodeJS.Timeout | undefined;
  const drop = async (): Promise<boolean> => {
    await pg.connect();
    for (const schema of [...schemas]) await dropSchema(pg, schema);
    return true;
  };
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([drop(), late]).catch(() => false);
  } finally {
    clearTimeout(timer);
    void pg.end().catch(() => undefined);
  }
}

/** Set once the bench is stopping: its work, failing meanwhile, then neither reports nor exits. */
let aborting = false;

/**
 * Stops the bench on a signal or the watchdog: every child killed (so no server holds a schema), the
 * schemas left dropped (within a few seconds), then exit with `code`. A second Ctrl-C ends it at once.
 */
async function abort(code: number): Promise<void> {
  if (aborting) return;
  aborting = true;
  killAll();
  // A measure cut short may be dropping its own meanwhile: what it dropped has left `schemas` too.
  if (!(await dropLeftSchemas(5000)) && schemas.size > 0)
    console.error(`could not drop the PostgreSQL schemas ${[...schemas].join(', ')} in time: drop them by hand`);
  process.exit(code);
}

/** BENCH_DATABASE_URL with `schema=` set. */
function pgUrl(schema: string): string {
  const u = new URL(PG_URL);
  u.searchParams.set('schema', schema);
  return u.toString();
}

async function postgres(): Promise<void> {
  const one = 'PostgreSQL mode, REST ingest, 1 instance, 32 connections';
  const two = 'PostgreSQL mode, REST ingest, 2 instances on one database, 16 connections each';
  const base = await b0Rate();
  const pg = new Client({ connectionString: PG_URL, connectionTimeoutMillis: 3000 });
  try {
    await pg.connect();
  } catch (e) {
    naRow(
      one,
      `n/a (PostgreSQL unreachable at BENCH_DATABASE_URL: ${e instanceof Error ? e.message : String(e)})`,
      '≥ 0.3 × B0',
    );
    return;
  }
  const mine: string[] = [];
  const urlFor = (schema: string): string => {
    mine.push(schema);
    schemas.add(schema);
    return pgUrl(schema);
  };
  const stamp = `bench_${process.pid}_${Date.now()}`;
  try {
    let first: Server;
    try {
      first = await startServer('rockets-pg', MAIN, {
        env: { DATABASE_URL: urlFor(`${stamp}_a`), NODE_ENV: 'production' },
      });
    } catch (e) {
      const why =
        e instanceof Error ? (/"error":"([^"]*)"/.exec(e.message)?.[1] ?? e.message.slice(0, 200)) : String(e);
      naRow(one, `n/a (the server does not start on PostgreSQL: ${why})`, '≥ 0.3 × B0');
      return;
    }
    await withServer(Promise.resolve(first), async (s) => {
      const r = await solo(metered(httpDrive(s, REST), s.pid, okRate, true), okRate);
      const from = rows.length;
      ratioRow(one, okRate(r.best), ` msg/s${p99(r.best)}`, 'B0', base, 0.3, b0Held());
      const c = cpuUse.get(r.best);
      const total = c === undefined ? NaN : c.server + c.postgres + c.load;
      const baseTotal = b0Cpu === undefined ? NaN : b0Cpu.server + b0Cpu.load;
      rows.push({
        measure:
          '↳ CPU a message, node + PostgreSQL + load generator (ratio: B0 ÷ ours, ours if the machine were always busy)',
        ours: `${fmt(c?.server ?? NaN)} + ${fmt(c?.postgres ?? NaN)} + ${fmt(c?.load ?? NaN)} = ${us(total)}`,
        baseline: `B0 ${fmt(b0Cpu?.server ?? NaN)} + ${fmt(b0Cpu?.load ?? NaN)} = ${us(baseTotal)}`,
        ratio: `${fmt(baseTotal / total, 2)}×`,
        target: '(information)',
        result: '',
      });
      await check('REST ingest, PostgreSQL, 1 instance', s.url, r.all, from);
    });
    const env = { DATABASE_URL: urlFor(`${stamp}_b`), NODE_ENV: 'production' };
    await withServers(
      [
        () => startServer('rockets-pg-a', MAIN, { env, core: SERVER_CORE }),
        () => startServer('rockets-pg-b', MAIN, { env, core: LOAD_CORE }),
      ],
      async ([a, b]) => {
        if (!a || !b) return;
        const half = { mode: 'rest', connections: CONNECTIONS / 2 } as const;
        /** Each run on instance a, to its twin on instance b. */
        const pairs = new Map<LoadResult, LoadResult>();
        // Both instances at once, each with its own wrk and channels: the sum is what one database takes.
        const both: Drive = async (prefix, durationS) => {
          const [ra, rb] = await Promise.all([
            load(a.url, { ...half, prefix: `a${prefix}`, durationS }),
            load(b.url, { ...half, prefix: `b${prefix}`, durationS }),
          ]);
          pairs.set(ra, rb);
          return ra;
        };
        const sum = (r: LoadResult): number => {
          const twin = pairs.get(r);
          return okRate(r) + (twin ? okRate(twin) : 0);
        };
        const r = await solo(both, sum);
        const other = pairs.get(r.best);
        const from = rows.length;
        ratioRow(
          two,
          sum(r.best),
          ` msg/s (${fmt(okRate(r.best))} + ${fmt(other ? okRate(other) : NaN)}; instances on cores 0 and 1, both wrk on core 1)`,
          'B0',
          base,
          0.3,
        );
        rows[rows.length - 1] = { ...(rows[rows.length - 1] as Row), target: 'report', result: '' };
        const all = r.all.flatMap((x) => [x, pairs.get(x)].filter((y): y is LoadResult => y !== undefined));
        await check('REST ingest, PostgreSQL, 2 instances', a.url, all, from);
      },
    );
  } finally {
    for (const schema of mine) await dropSchema(pg, schema);
    await pg.end();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Profiles

/**
 * Runs `drive` against our server under `--cpu-prof` and prints where the CPU time went; skipped when
 * `--only` leaves out `section`, the section that measures the same load.
 */
async function profiled(
  section: string,
  name: string,
  file: string,
  drive: (s: Server) => Promise<string>,
  env: Record<string, string> = {},
): Promise<void> {
  if (only && !only.includes(section)) return;
  const dir = join(TMP, `profile-${++dbCount}`);
  mkdirSync(dir);
  const figure = await withServer(ours(file, env, ['--cpu-prof', `--cpu-prof-dir=${dir}`]), drive);
  const profile = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (profile === undefined) console.log(`### ${name}\n\nno profile written (${figure})\n`);
  else console.log(formatSummary(`${name}: ${figure} under --cpu-prof`, summarise(join(dir, profile), 30)));
}

async function profiles(): Promise<void> {
  // SQLite unless `sqlite` is false: then no lead-in, as PostgreSQL writes the projection in the commit.
  const ingest =
    (o: Omit<LoadOptions, 'prefix' | 'durationS'>, sqlite = true) =>
    async (s: Server) => {
      if (o.mode !== 'rest' && !(await graphqlAvailable(s.url))) return 'GraphQL not available';
      const drive = httpDrive(s, o);
      return `${fmt(okRate((await solo(sqlite ? steady(drive) : drive, okRate)).best))} msg/s`;
    };
  await profiled('rest', 'REST POST /messages', freshDb('p'), ingest(REST));
  await profiled(
    'graphql',
    'GraphQL submitMessage over HTTP',
    freshDb('p'),
    ingest({ mode: 'graphql', connections: CONNECTIONS }),
  );
  await profiled('graphql', 'GraphQL submitMessage over graphql-ws', freshDb('p'), async (s) => {
    if (!(await graphqlAvailable(s.url))) return 'GraphQL not available';
    return `${fmt(okRate((await solo(steady(wsDrive(s)), okRate)).best))} msg/s`;
  });
  await profiled(
    'batch',
    'GraphQL submitMessages (1,000 a request)',
    freshDb('p'),
    ingest({ mode: 'batch', connections: BATCH_CONNECTIONS, batch: BATCH }),
  );
  const path = '/rockets?sort=speed&order=desc&limit=100';
  const file = freshDb('p-rockets');
  if (!only || only.includes('big')) await withServer(ours(file), (s) => seed(s.url, 3 * ROCKETS));
  await profiled('big', `GET ${path}, ${fmt(ROCKETS)} rockets`, file, async (s) => {
    const r = await solo(httpDrive(s, { mode: 'static', connections: CONNECTIONS, path }), answerRate);
    return `${fmt(answerRate(r.best))} req/s`;
  });
  const query = `{ rockets(first: 100, sort: SPEED, order: DESC) { nodes { ${ROCKET_FIELDS} ${BUFFER_FIELDS} } } }`;
  await profiled('big', `GraphQL ${query}, ${fmt(ROCKETS)} rockets`, file, async (s) => {
    if (!(await graphqlAvailable(s.url))) return 'GraphQL not available';
    const read = { mode: 'static', connections: CONNECTIONS, method: 'POST', path: '/graphql' } as const;
    const r = await solo(httpDrive(s, { ...read, body: JSON.stringify({ query }) }), answerRate);
    return `${fmt(answerRate(r.best))} req/s`;
  });
  await profiled('subs', 'Subscriptions at 2,000 msg/s', freshDb('p'), async (s) => {
    const r = await client<SubsResult>(
      'subs',
      { httpUrl: s.url, wsUrl: s.wsUrl, ...SUBSCRIBERS, durationMs: SIZE.subsS * 1000, prefix: 's', after: 0 },
      (SIZE.subsS + 90) * 1000,
    );
    return `${fmt(r.deliveriesPerSec)} deliveries/s, p99 ${fmt(r.publishToDeliverMs.p99)} ms`;
  });
  if (only && !only.includes('postgres')) return;
  const pg = new Client({ connectionString: PG_URL, connectionTimeoutMillis: 3000 });
  try {
    await pg.connect();
  } catch (e) {
    console.log(
      `### PostgreSQL\n\nnot profiled: unreachable at BENCH_DATABASE_URL (${e instanceof Error ? e.message : String(e)})\n`,
    );
    return;
  }
  // In a schema of its own, dropped after; the SQLite file `ours` is given is not used.
  const schema = `bench_profile_${process.pid}_${Date.now()}`;
  schemas.add(schema);
  try {
    await profiled('postgres', 'PostgreSQL, REST POST /messages, 1 instance', freshDb('p'), ingest(REST, false), {
      DATABASE_URL: pgUrl(schema),
    });
  } finally {
    await dropSchema(pg, schema);
    await pg.end();
  }
}

// ---------------------------------------------------------------------------------------------------------

/** Each measure, in order; the names are SECTION_NAMES, which --only is checked against. */
const SECTIONS: ReadonlyArray<readonly [(typeof SECTION_NAMES)[number], () => Promise<void>]> = [
  ['rest', restIngest],
  ['graphql', graphqlIngest],
  ['batch', batchIngest],
  ['subs', subscriptions],
  ['big', bigStore],
  ['postgres', postgres],
];

function markdown(): string {
  const cell = (s: string): string => s.replace(/\|/g, '\\|');
  const table = [
    '| measure | ours | baseline (same run) | ratio | target | result |',
    '|---|---:|---:|---:|---|---|',
    ...rows.map((r) => `| ${[r.measure, r.ours, r.baseline, r.ratio, r.target, r.result].map(cell).join(' | ')} |`),
  ];
  const correctness = [
    '| run | acknowledged | oracle |',
    '|---|---:|---|',
    ...checks.map((c) => `| ${[c.run, c.acknowledged, c.check].map(cell).join(' | ')} |`),
  ];
  return [...table, '', '### Correctness under load', '', ...correctness].join('\n');
}

function environment(command: string, seconds: number): string {
  const cpu = cpus();
  const loadGen = useWrk
    ? `wrk ${wrkVersion ?? ''} (1 thread, bench/wrk.lua: a unique message per request)`
    : 'autocannon 9 in its own process (bench/client.ts: a unique message per request)';
  return [
    `- Date: ${new Date().toISOString()}`,
    `- Command: \`${command}\` (${fmt(seconds)} s)`,
    `- Node ${process.version}; CPU: ${cpu[0]?.model ?? 'unknown'}, ${cpu.length} cores; RAM ${fmt(totalmem() / 2 ** 30, 1)} GiB`,
    `- HTTP load: ${loadGen}; WebSocket load: bench/client.ts (raw graphql-transport-ws on \`ws\`)`,
    `- Placement: ${hasTaskset ? `servers on core ${SERVER_CORE}, load generators on core ${LOAD_CORE} (taskset)` : 'not pinned (taskset missing)'}; PostgreSQL unpinned`,
    `- Sizes${quick ? ' (--quick)' : ''}: a ${SIZE.warmupS} s warm-up, then ${SIZE.rounds === 1 ? 'one measured run' : `the best of ${SIZE.rounds} measured runs`} of ${SIZE.durationS} s, baseline and ours alternating, each of our SQLite ingest runs right after ${LEAD_IN_S} s of the same load (the rockets table is written ${PROJECTION.afterMs / 1000} s behind the log); B4 inserts as many rows as our best \`submitMessages\` round took, after as many as our server held when that round began (and, for information, ${fmt(SIZE.b4Rows)} rows into a fresh file); ${fmt(SIZE.bigMessages)} messages for RSS/start-up/rebuild; subscriptions: the same warm-up, then one run of ${SIZE.subsS} s paced, one unthrottled and one paced as server-sent events`,
    `- Machine load (1-minute load average): ${loadAtStart.toFixed(2)} at the start, ${loadavg()[0]?.toFixed(2) ?? '?'} at the end: other work on this machine lowers every figure`,
    '- Our server: `node dist/src/main.js`, NODE_ENV=production, SQLITE_SYNCHRONOUS=FULL, defaults otherwise (WORKER_COUNT 3), a fresh database per measure; every server and load generator starts with only PATH, HOME, USER, the locale, TMPDIR and the PG* variables of the shell',
  ].join('\n');
}

const BASELINES = `B0 bench/baselines/b0-http.ts: bare node:http, parses the JSON body, answers 202 with the same JSON as ours.
B1 bench/baselines/b1-mercurius.ts: fastify + mercurius + graphql-jit (jit: 1) on schema/schema.graphql, submitMessage into a Map; over HTTP for the HTTP row, over graphql-ws (the same client as ours) for the graphql-ws row.
B2 bench/baselines/b2-rockets.ts: bare node:http answering the same precomputed 100-rocket JSON we answered.
B3 bench/baselines/b3-ws.ts: bare ws, each event serialised once and broadcast to the same subscribers.
B4 bench/baselines/b4-sqlite.ts: raw better-sqlite3, our events table, WAL + synchronous FULL, 1,000 rows a transaction and up to 64 an \`INSERT\` (as our store appends), after untimed rows of other channels (see Sizes); read: the columns a rebuild reads, in position order, as raw rows (\`.raw()\`) + JSON.parse.
B5 bench/baselines/b5-durable.ts: B0 that appends each message to our events table before answering, grouped as ours (one transaction and one WAL fdatasync per group, up to 64 rows an \`INSERT\`): no validation, sequencing or projection. The durable limit of this machine and disk.`;

async function main(): Promise<void> {
  const started = performance.now();
  const command = `npm run bench${argv.length > 0 ? ` -- ${argv.join(' ')}` : ''}`;
  // Bound the whole run: every wait below has its own bound, this one catches anything else.
  const watchdog = setTimeout(
    () => {
      console.error('the bench ran out of time; stopping');
      void abort(2);
    },
    (quick ? 10 : 60) * 60_000,
  );
  watchdog.unref();
  console.log(environment(command, 0).split('\n').slice(2).join('\n'));
  if (profiling) {
    await profiles();
    return;
  }
  for (const [name, section] of SECTIONS) {
    if (aborting) return;
    if (only && !only.includes(name)) continue;
    const t = performance.now();
    process.stdout.write(`${name}… `);
    try {
      await section();
    } catch (e) {
      failedRow(name, e);
    }
    console.log(`${fmt((performance.now() - t) / 1000, 1)} s`);
  }
  // Stopped meanwhile: the rows of the sections cut short are no results (and no bench/RESULTS.md).
  if (aborting) return;
  const seconds = (performance.now() - started) / 1000;
  const text = `${environment(command, seconds)}\n\n${markdown()}\n`;
  console.log(`\n${text}`);
  if (only === undefined) {
    writeFileSync(
      join(ROOT, 'bench', 'RESULTS.md'),
      `# Benchmark results\n\nWritten by \`npm run bench\` (bench/run.ts): every figure was measured in this run, and each ratio is to the baseline measured in the same run. Compare figures only within one run: this machine varies by ±20% between runs.\n\n${text}\n### Baselines\n\n${BASELINES.split(
        '\n',
      )
        .map((l) => `- ${l}`)
        .join('\n')}\n`,
    );
    console.log('wrote bench/RESULTS.md');
  }
}

// Stopped from a terminal (Ctrl-C) or by a job runner (kill): no server or load generator is left behind.
for (const [signal, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
] as const)
  process.once(signal, () => void abort(code));
process.once('exit', () => {
  killAll();
  rmSync(TMP, { recursive: true, force: true });
});
// While `abort` drops the schemas, the work it cut short ends too: `abort` exits, not this.
main().then(
  () => {
    if (aborting) return;
    if (failures > 0) console.error(`${failures} correctness checks or measures failed (see the tables)`);
    process.exit(failures > 0 ? 1 : 0);
  },
  (e: unknown) => {
    if (aborting) return;
    console.error(e);
    process.exit(1);
  },
);
