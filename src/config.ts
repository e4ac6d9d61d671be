/** Everything the service reads from its environment, checked once at start. */
export interface Config {
  readonly port: number;
  readonly host: string | undefined;
  /** unset: SQLite at ./data/rockets.db; `sqlite:<path>`; `memory:`; `postgres://…`. */
  readonly databaseUrl: string | undefined;
  readonly workerCount: number;
  readonly sqliteSynchronous: 'FULL' | 'NORMAL';
  /** Largest request body accepted on any route, in bytes. */
  readonly maxBodyBytes: number;
  /** Items one live subscriber may have waiting before it is dropped (or moved back to catch-up). */
  readonly subscriberBuffer: number;
  readonly graphiql: boolean;
  readonly introspection: boolean;
  /** When set, `connection_init` must carry `{token}` (or `{authorization: 'Bearer …'}`) equal to it. */
  readonly subscriptionToken: string | undefined;
  /** Origins allowed to open WebSockets and make CORS requests; undefined allows any. */
  readonly allowedOrigins: readonly string[] | undefined;
  readonly wsMaxPayload: number;
  readonly keepAliveMs: number;
  /** Serve Prometheus metrics at GET /metrics. */
  readonly metrics: boolean;
  /** pino level: fatal, error, warn, info, debug, trace or silent. */
  readonly logLevel: string;
}

export class ConfigError extends Error {}

type Env = Record<string, string | undefined>;

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < min || n > max)
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
  return n;
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name]?.toLowerCase();
  if (raw === undefined || raw === '') return fallback;
  if (['1', 'true', 'yes', 'on'].includes(raw)) return true;
  if (['0', 'false', 'no', 'off'].includes(raw)) return false;
  throw new ConfigError(`${name} must be true or false, got "${raw}"`);
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
function level(raw: string | undefined): string {
  const l = (raw ?? 'info').toLowerCase();
  if (!LEVELS.includes(l)) throw new ConfigError(`LOG_LEVEL must be one of ${LEVELS.join(', ')}`);
  return l;
}

/** Reads the configuration; throws ConfigError naming the variable when a value is not acceptable. */
export function loadConfig(env: Env = process.env): Config {
  const production = env.NODE_ENV === 'production';
  const sync = (env.SQLITE_SYNCHRONOUS ?? 'FULL').toUpperCase();
  if (sync !== 'FULL' && sync !== 'NORMAL') throw new ConfigError('SQLITE_SYNCHRONOUS must be FULL or NORMAL');
  const origins = env.ALLOWED_ORIGINS?.split(',')
    .map((o) => o.trim())
    .filter((o) => o !== '');
  return {
    port: int(env, 'PORT', 8088, 0, 65535),
    host: env.HOST === '' ? undefined : env.HOST,
    databaseUrl: env.DATABASE_URL === '' ? undefined : env.DATABASE_URL,
    workerCount: int(env, 'WORKER_COUNT', 3, 1, 256),
    sqliteSynchronous: sync,
    maxBodyBytes: int(env, 'MAX_BODY_BYTES', 1024 * 1024, 1024, 64 * 1024 * 1024),
    subscriberBuffer: int(env, 'SUBSCRIBER_BUFFER', 1000, 1, 1_000_000),
    graphiql: bool(env, 'GRAPHIQL', !production),
    introspection: bool(env, 'INTROSPECTION', !production),
    subscriptionToken: env.SUBSCRIPTION_TOKEN === '' ? undefined : env.SUBSCRIPTION_TOKEN,
    allowedOrigins: origins === undefined || origins.length === 0 || origins.includes('*') ? undefined : origins,
    wsMaxPayload: int(env, 'WS_MAX_PAYLOAD', 1024 * 1024, 1024, 64 * 1024 * 1024),
    keepAliveMs: int(env, 'WS_KEEPALIVE_MS', 12_000, 0, 600_000),
    metrics: bool(env, 'METRICS', true),
    logLevel: level(env.LOG_LEVEL),
  };
}
