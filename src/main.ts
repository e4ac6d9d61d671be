import { buildApp } from './app';
import { ConfigError, loadConfig } from './config';
import { openStore } from './store/open';

/** `--rebuild`: replay the event log into a fresh projection, then exit. The server must be stopped. */
async function rebuild(): Promise<void> {
  const config = loadConfig();
  const store = await openStore(config.databaseUrl, { sqliteSynchronous: config.sqliteSynchronous });
  try {
    const started = performance.now();
    const replayed = await store.rebuildProjection();
    const stats = await store.stats();
    console.log(
      JSON.stringify({
        msg: 'projection rebuilt',
        events: replayed,
        rockets: stats.rockets,
        ms: Math.round(performance.now() - started),
      }),
    );
  } finally {
    await store.close();
  }
}

async function serve(): Promise<void> {
  const config = loadConfig();
  const app = await buildApp(config);
  const port = await app.start();
  console.log(JSON.stringify({ msg: 'listening', port, store: app.store.kind, lanes: config.workerCount }));
  const shutdown = (signal: string): void => {
    console.log(JSON.stringify({ msg: 'stopping', signal }));
    app.stop().then(
      () => process.exit(0),
      (e: unknown) => {
        console.error(JSON.stringify({ msg: 'stop failed', error: String(e) }));
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
}

async function main(): Promise<void> {
  try {
    await (process.argv.includes('--rebuild') ? rebuild() : serve());
  } catch (e) {
    console.error(JSON.stringify({ msg: 'fatal', error: e instanceof ConfigError ? e.message : String(e) }));
    process.exit(1);
  }
}

void main();
