import { buildApp, createLogger } from './app';
import { ConfigError, loadConfig, mistypedSettings, type Config } from './config';
import { openStore, sqliteFileOf } from './store/open';
import { backupSqlite, type BackupResult } from './store/sqlite/backup';
import { constants } from 'node:os';
import { resolve } from 'node:path';
import type { Logger } from 'pino';

const USAGE = `Usage: node dist/src/main.js [--rebuild | --backup <file>]

Serves the rockets API (REST, GraphQL, the dashboard) on PORT, configured by environment variables
(README "Configuration"). With --rebuild it replays the event log into a fresh projection of the
database at DATABASE_URL and exits; the server must be stopped. With --backup it copies the SQLite
database at DATABASE_URL into <file>, a new file, as one consistent snapshot, and exits; a server may
go on writing meanwhile.
`;

type Command = { readonly kind: 'serve' | 'rebuild' } | { readonly kind: 'backup'; readonly target: string };

/** The command the arguments ask for, or why they ask for none. */
function commandOf(args: readonly string[]): Command | string {
  if (args.includes('--rebuild') && args.includes('--backup')) return 'give --rebuild or --backup <file>, not both';
  const [first, second, ...rest] = args;
  let extra = args;
  if (first === undefined) return { kind: 'serve' };
  if (first === '--rebuild') {
    if (second === undefined) return { kind: 'rebuild' };
    extra = args.slice(1);
  } else if (first === '--backup') {
    // An empty argument (a quoted variable left unset) names no file, only the directory it resolves in.
    if (second === undefined || second === '' || second.startsWith('-'))
      return '--backup needs the file to write: --backup <file>';
    if (rest.length === 0) return { kind: 'backup', target: second };
    extra = rest;
  }
  return `unknown argument ${extra.map((a) => `"${a}"`).join(', ')}`;
}

/**
 * SIGTERM, SIGINT and SIGHUP stop a server gracefully (a second one, of any of them, exits at once, unless
 * it repeats the first within ECHO_MS), and stop a backup, removing its partial copy.
 */
const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;

/** A repeat of the first stop signal within this many ms is its echo (see `serve`), not a second signal. */
const ECHO_MS = 500;

/** `--backup <file>`: a consistent copy of the SQLite store, taken beside a running server. */
async function backup(config: Config, log: Logger, target: string): Promise<void> {
  const file = sqliteFileOf(config.databaseUrl ?? '');
  if (file === undefined)
    throw new ConfigError(
      config.databaseUrl === 'memory:'
        ? '--backup needs a stored log: DATABASE_URL is memory:'
        : "--backup copies a SQLite database; back up PostgreSQL with pg_dump (--schema names the store's schema)",
    );
  const started = performance.now();
  // A stop signal removes the partial copy before the process ends, as the signal would have ended it.
  const stop = new AbortController();
  const interrupt = (signal: NodeJS.Signals): void => stop.abort(new BackupInterrupted(signal));
  for (const signal of STOP_SIGNALS) process.once(signal, interrupt);
  let r: BackupResult;
  try {
    r = await backupSqlite(file, target, { signal: stop.signal });
  } catch (e) {
    if (!(e instanceof BackupInterrupted)) throw e;
    log.warn({ signal: e.signal, target: resolve(target) }, 'backup interrupted: the partial copy is removed');
    process.exit(128 + constants.signals[e.signal]);
  } finally {
    for (const signal of STOP_SIGNALS) process.off(signal, interrupt);
  }
  if (r.leftovers.length > 0)
    log.warn(
      { leftovers: r.leftovers },
      'partial copies left by interrupted backups lie beside the target: delete them',
    );
  log.info(
    {
      file: r.file,
      events: r.events,
      lastPosition: r.lastPosition,
      bytes: r.bytes,
      ms: Math.round(performance.now() - started),
    },
    'backup written',
  );
}

class BackupInterrupted extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`backup interrupted by ${signal}`);
  }
}

/** `--rebuild`: replay the event log into a fresh projection, then exit. The server must be stopped. */
async function rebuild(config: Config, log: Logger): Promise<void> {
  if (config.databaseUrl === 'memory:') throw new ConfigError('--rebuild needs a stored log: DATABASE_URL is memory:');
  // `existing`: a mistyped path or schema is refused, not rebuilt as a new, empty store.
  const store = await openStore(config.databaseUrl, {
    sqliteSynchronous: config.sqliteSynchronous,
    postgresPoolSize: config.databasePoolSize,
    existing: true,
  });
  try {
    const started = performance.now();
    const replayed = await store.rebuildProjection();
    const stats = await store.stats();
    log.info(
      {
        events: replayed,
        rockets: stats.rockets,
        ms: Math.round(performance.now() - started),
        database: store.location,
      },
      'projection rebuilt',
    );
  } finally {
    await store.close();
  }
}

async function serve(config: Config, log: Logger): Promise<void> {
  const app = await buildApp(config, log);
  let port: number;
  try {
    port = await app.start();
  } catch (e) {
    await app.stop();
    // Named by the variables that chose the address: the system's own words alone name neither.
    const where = `HOST ${config.host === undefined ? '(every address)' : `"${config.host}"`} PORT ${config.port}`;
    throw new ConfigError(`cannot listen on ${where}: ${e instanceof Error ? e.message : String(e)}`);
  }
  let stopping = false;
  let firstSignal: { signal: string; at: number } | undefined;
  const shutdown = (signal: string): void => {
    // Ctrl-C under `npm start` reaches the server twice: from the terminal, and forwarded by npm. The
    // same signal within a moment of the first is that echo, not an operator's second signal.
    if (firstSignal?.signal === signal && performance.now() - firstSignal.at < ECHO_MS) {
      log.info({ signal }, 'the same signal again at once: taken as its echo, still stopping');
      return;
    }
    firstSignal ??= { signal, at: performance.now() };
    if (stopping) {
      // What was acknowledged is already durable; what is in flight was not acknowledged.
      log.warn({ signal }, 'second signal while stopping: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'stopping');
    app.stop().then(
      () => {
        log.info('stopped');
        process.exit(0);
      },
      (e: unknown) => {
        log.error({ err: e }, 'stop failed');
        process.exit(1);
      },
    );
  };
  // Before the line that says it listens: whoever waits for that line may signal at once.
  for (const signal of STOP_SIGNALS) process.on(signal, shutdown);
  log.info({ port, store: app.store.kind, database: app.store.location, lanes: config.workerCount }, 'listening');
}

async function main(): Promise<void> {
  let log = createLogger('info');
  // Why the process ends is always told, even under LOG_LEVEL=silent: an operator who silenced the
  // logs must still see why the service did not start or stopped.
  const fatalLog = (): Logger => (log.isLevelEnabled('fatal') ? log : createLogger('fatal'));
  // A fault no handler caught: logged as JSON like every other line, then the process ends (what it
  // acknowledged is durable; a supervisor restarts it).
  const fatal = (err: unknown, msg: string): void => {
    fatalLog().fatal({ err }, msg);
    process.exit(1);
  };
  process.on('uncaughtException', (err) => fatal(err, 'uncaught exception'));
  process.on('unhandledRejection', (err) => fatal(err, 'unhandled rejection'));

  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(USAGE);
    return;
  }
  const command = commandOf(args);
  if (typeof command === 'string') {
    process.stderr.write(`${command}\n\n${USAGE}`);
    process.exit(2);
  }
  try {
    const config = loadConfig();
    log = createLogger(config.logLevel);
    for (const { name, meant } of mistypedSettings(process.env))
      log.warn({ variable: name, meant }, `${name} is not a setting and is ignored: did you mean ${meant}?`);
    if (command.kind === 'backup') await backup(config, log, command.target);
    else await (command.kind === 'rebuild' ? rebuild(config, log) : serve(config, log));
  } catch (e) {
    // A configuration or store error names what is wrong; it never carries DATABASE_URL.
    const error = e instanceof ConfigError ? e.message : String(e);
    fatalLog().fatal({ error }, command.kind === 'backup' ? 'backup failed' : 'cannot start');
    process.exit(1);
  }
}

void main();
