import { buildApp, createLogger } from './app';
import { ConfigError, loadConfig, type Config } from './config';
import { openStore } from './store/open';
import type { Logger } from 'pino';

/** `--rebuild`: replay the event log into a fresh projection, then exit. The server must be stopped. */
async function rebuild(config: Config, log: Logger): Promise<void> {
  const store = await openStore(config.databaseUrl, { sqliteSynchronous: config.sqliteSynchronous });
  try {
    const started = performance.now();
    const replayed = await store.rebuildProjection();
    const stats = await store.stats();
    log.info(
      { events: replayed, rockets: stats.rockets, ms: Math.round(performance.now() - started) },
      'projection rebuilt',
    );
  } finally {
    await store.close();
  }
}

async function serve(config: Config, log: Logger): Promise<void> {
  const app = await buildApp(config, log);
  const port = await app.start();
  log.info({ port, store: app.store.kind, lanes: config.workerCount }, 'listening');
  const shutdown = (signal: string): void => {
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
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
}

async function main(): Promise<void> {
  let log = createLogger('info');
  try {
    const config = loadConfig();
    log = createLogger(config.logLevel);
    await (process.argv.includes('--rebuild') ? rebuild(config, log) : serve(config, log));
  } catch (e) {
    // A configuration or store error names what is wrong; it never carries DATABASE_URL.
    log.fatal({ error: e instanceof ConfigError ? e.message : String(e) }, 'cannot start');
    process.exit(1);
  }
}

void main();
