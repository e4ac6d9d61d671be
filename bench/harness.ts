/**
 * Processes for bench/run.ts: servers and load generators, each its own child process, pinned to a core
 * with taskset when it exists, killed on exit, and every wait bounded.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { LoadResult } from './client';

/** The repository, from dist/bench. */
export const ROOT = resolve(__dirname, '..', '..');
export const MAIN = join(ROOT, 'dist', 'src', 'main.js');
export const CLIENT = join(__dirname, 'client.js');
export const baseline = (name: string): string => join(__dirname, 'baselines', `${name}.js`);
const WRK_LUA = join(ROOT, 'bench', 'wrk.lua');

/** Servers go on this core, load generators on the other. */
export const SERVER_CORE = 0;
export const LOAD_CORE = 1;

const found = (cmd: string, args: string[]): boolean => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
export const hasTaskset = found('taskset', ['-c', '0', 'true']);
/** `wrk -v` prints its version and exits 1; only a missing binary makes spawnSync fail. */
export const wrkVersion = ((): string | undefined => {
  const r = spawnSync('wrk', ['-v'], { encoding: 'utf8' });
  return r.error ? undefined : (/wrk (\S+)/.exec(r.stdout)?.[1] ?? 'unknown');
})();

/** wrk where installed; autocannon otherwise, or when BENCH_LOADGEN=autocannon asks for it. */
export const useWrk = wrkVersion !== undefined && process.env.BENCH_LOADGEN !== 'autocannon';

const children = new Set<ChildProcess>();

let stopped = false;

/**
 * Kills every child still running (by its own pid), and refuses to start any after (the bench is
 * stopping, and its work goes on until it exits); run.ts calls it on exit and on a signal.
 */
export function killAll(): void {
  stopped = true;
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}

/**
 * What a child takes from the bench's own environment: where programs are, home, the user's name, locale,
 * temporary files, and libpq's PG* settings, which node-postgres reads for what BENCH_DATABASE_URL leaves
 * out (the user, a password, the host), as the bench's own connections do. Never the shell's settings of the service
 * (SQLITE_SYNCHRONOUS, WORKER_COUNT, INGEST_TOKEN, GAP_TIMEOUT, NODE_OPTIONS, …): the table says what
 * each server ran with, so the bench sets every setting it names itself, and the others are defaults.
 */
const INHERITED = /^(PATH|HOME|USER|LOGNAME|LANG|LC_[A-Z]+|TMPDIR|PG[A-Z]+)$/;

export function childEnv(env: Record<string, string>): Record<string, string> {
  const kept: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env))
    if (value !== undefined && INHERITED.test(name)) kept[name] = value;
  return { ...kept, ...env };
}

function launch(cmd: string, args: string[], env: Record<string, string>, core: number | undefined): ChildProcess {
  if (stopped) throw new Error('the bench is stopping');
  const [file, argv] = hasTaskset && core !== undefined ? ['taskset', ['-c', String(core), cmd, ...args]] : [cmd, args];
  const child = spawn(file, argv, { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

const exitOf = (child: ChildProcess): Promise<number | string> =>
  child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve(child.exitCode ?? child.signalCode ?? 'unknown')
    : new Promise((done) => child.once('exit', (code, signal) => done(code ?? signal ?? 'unknown')));

export interface Server {
  readonly name: string;
  readonly pid: number;
  readonly url: string;
  readonly wsUrl: string;
  /** From spawn to the `listening` line. */
  readonly readyMs: number;
  readonly output: string[];
  /** SIGTERM (or `signal`), then SIGKILL after `graceMs`; resolves with the exit code or signal. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | string>;
  /** Resident set size now and its peak, in MB (from /proc). */
  memory(): { rssMb: number; peakMb: number };
}

/**
 * Starts a Node server script that logs `{"msg":"listening","port":N}` on stdout (ours and every baseline
 * do), on 127.0.0.1 and a free port. Rejects with its output if it exits or is not ready in `timeoutMs`.
 */
export function startServer(
  name: string,
  script: string,
  options: { env?: Record<string, string>; core?: number; nodeArgs?: string[]; timeoutMs?: number } = {},
): Promise<Server> {
  const started = performance.now();
  const child = launch(
    process.execPath,
    [...(options.nodeArgs ?? []), script],
    { PORT: '0', HOST: '127.0.0.1', ...options.env },
    options.core ?? SERVER_CORE,
  );
  const output: string[] = [];
  const exited = exitOf(child);
  // Keep the latest lines only: a server that logs per request must not grow the orchestrator.
  const keep = (l: string): void => {
    output.push(l);
    if (output.length > 500) output.shift();
  };
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', keep);
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} was not ready in ${options.timeoutMs ?? 60_000} ms:\n${output.join('\n')}`));
    }, options.timeoutMs ?? 60_000);
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      keep(line);
      let msg: { msg?: unknown; port?: unknown } = {};
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        return;
      }
      if (msg.msg !== 'listening' || typeof msg.port !== 'number') return;
      clearTimeout(timer);
      const pid = child.pid ?? 0;
      resolvePromise({
        name,
        pid,
        url: `http://127.0.0.1:${msg.port}`,
        wsUrl: `ws://127.0.0.1:${msg.port}/graphql`,
        readyMs: performance.now() - started,
        output,
        stop: async (signal = 'SIGTERM', graceMs = 20_000) => {
          if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
          const code = await exited;
          clearTimeout(kill);
          return code;
        },
        memory: () => {
          const status = readFileSync(`/proc/${pid}/status`, 'utf8');
          const kb = (field: string): number => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
          return { rssMb: kb('VmRSS') / 1024, peakMb: kb('VmHWM') / 1024 };
        },
      });
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}) before listening:\n${output.join('\n')}`));
    });
  });
}

/** Runs a command to its end (killed after `timeoutMs`); resolves with its stdout lines, rejects on failure. */
export async function run(
  cmd: string,
  args: string[],
  options: { env?: Record<string, string>; core?: number; timeoutMs: number },
): Promise<string[]> {
  const child = launch(cmd, args, options.env ?? {}, options.core);
  const out: string[] = [];
  const err: string[] = [];
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (l) => out.push(l));
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (l) => err.push(l));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
  const code = await exitOf(child);
  clearTimeout(timer);
  if (code !== 0)
    throw new Error(`${cmd} ${args.join(' ').slice(0, 200)} failed (${code}): ${err.slice(-20).join('\n')}`);
  return out;
}

/** Runs bench/client.ts in `mode` on the load core and returns its RESULT. */
export async function client<T>(mode: string, config: object, timeoutMs: number): Promise<T> {
  const out = await run(process.execPath, [CLIENT, mode, JSON.stringify(config)], { core: LOAD_CORE, timeoutMs });
  const line = out.find((l) => l.startsWith('RESULT '));
  if (line === undefined) throw new Error(`the ${mode} client printed no result`);
  return JSON.parse(line.slice('RESULT '.length)) as T;
}

export interface LoadOptions {
  readonly mode: 'rest' | 'graphql' | 'batch' | 'static';
  readonly connections: number;
  readonly durationS: number;
  readonly prefix?: string;
  readonly channels?: number;
  readonly batch?: number;
  readonly method?: string;
  readonly path?: string;
  readonly body?: string;
}

/** HTTP load on `url` with wrk and bench/wrk.lua (1 thread), or with autocannon where wrk is missing. */
export async function load(url: string, o: LoadOptions): Promise<LoadResult> {
  const prefix = o.prefix ?? 'm';
  const channels = o.channels ?? 10_000;
  const timeoutMs = (o.durationS + 60) * 1000;
  if (!useWrk)
    return client<LoadResult>(
      'http',
      { ...o, url, prefix, channels, batch: o.batch ?? 1000, durationMs: o.durationS * 1000 },
      timeoutMs,
    );
  const out = join(tmpdir(), `rockets-bench-wrk-${process.pid}-${Date.now()}.json`);
  const env: Record<string, string> = {
    BENCH_MODE: o.mode,
    BENCH_PREFIX: prefix,
    BENCH_CHANNELS: String(channels),
    BENCH_BATCH: String(o.batch ?? 1000),
    BENCH_OUT: out,
    BENCH_METHOD: o.method ?? 'GET',
    BENCH_PATH: o.path ?? '/',
    BENCH_BODY: o.body ?? '',
  };
  const args = ['-t1', `-c${o.connections}`, `-d${o.durationS}s`, '--timeout', '10s', '-s', WRK_LUA, url];
  await run('wrk', args, { env, core: LOAD_CORE, timeoutMs });
  try {
    const r = JSON.parse(readFileSync(out, 'utf8')) as Omit<LoadResult, 'prefix' | 'channels'>;
    return { ...r, prefix, channels };
  } finally {
    rmSync(out, { force: true });
  }
}

export interface Reply {
  readonly status: number;
  readonly text: string;
  readonly headers: Record<string, string | string[] | undefined>;
}

/** One request from the orchestrator (checks, not load). */
export function fetchText(url: string, method = 'GET', body?: string): Promise<Reply> {
  return new Promise((done, reject) => {
    const headers: Record<string, string | number> = body === undefined ? {} : { 'content-type': 'application/json' };
    const req = request(url, { method, headers, timeout: 60_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        done({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), headers: res.headers });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

export async function fetchJson<T>(url: string, method = 'GET', body?: string): Promise<T> {
  const r = await fetchText(url, method, body);
  if (r.status < 200 || r.status > 299) throw new Error(`${method} ${url}: ${r.status} ${r.text.slice(0, 300)}`);
  return JSON.parse(r.text) as T;
}

/**
 * CPU time, in seconds, from `/proc/<pid>/stat`: user + system of the process itself, or (`reaped`) of
 * its children that have exited and been waited for. NaN where there is no such process or no /proc.
 */
function procCpu(pid: number | 'self', reaped = false): number {
  try {
    // Fields after the command name, which may hold spaces: state is [0], utime [11], stime [12],
    // cutime [13], cstime [14]; in clock ticks, 100 a second for /proc on Linux.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (reaped ? Number(f[13]) + Number(f[14]) : Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

/** CPU seconds used so far by the process `pid`. */
export const cpuSeconds = (pid: number): number => procCpu(pid);

/**
 * CPU seconds used so far by this process's children that have ended: a load generator once it exits
 * (`taskset` execs it, so it is our child).
 */
export const endedChildrenCpuSeconds = (): number => procCpu('self', true);

/** CPU seconds used so far by every process named `postgres`: the backends and the server's own helpers. */
export function postgresCpuSeconds(): number {
  let total = 0;
  let dirs: string[];
  try {
    dirs = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return NaN;
  }
  for (const d of dirs) {
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').trim() !== 'postgres') continue;
    } catch {
      continue; // ended meanwhile
    }
    const cpu = procCpu(Number(d));
    if (Number.isFinite(cpu)) total += cpu;
  }
  return total;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
