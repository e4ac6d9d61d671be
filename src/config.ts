import { DEFAULT_BUFFER_LIMITS, type BufferLimits } from './store/types';

/** Everything the service reads from its environment, checked once at start. */
export interface Config {
  readonly port: number;
  readonly host: string | undefined;
  /** unset: SQLite at ./data/rockets.db; `sqlite:<path>`; `memory:`; `postgres://…`. */
  readonly databaseUrl: string | undefined;
  readonly workerCount: number;
  /** PostgreSQL only: connections of the instance's pool (besides its one LISTEN connection). */
  readonly databasePoolSize: number;
  readonly sqliteSynchronous: 'FULL' | 'NORMAL';
  /** Largest request body accepted on any route, in bytes. */
  readonly maxBodyBytes: number;
  /**
   * Items of earlier commits one live subscriber may have waiting before it is dropped (or moved back
   * to catch-up).
   */
  readonly subscriberBuffer: number;
  /** MAX_BUFFERED_PER_CHANNEL and MAX_BUFFERED_TOTAL: beyond them a message is refused (429 / 503). */
  readonly bufferLimits: BufferLimits;
  /**
   * GAP_TIMEOUT: a gap whose oldest buffered message waited longer than this many milliseconds is skipped.
   * Undefined (the default) waits forever.
   */
  readonly gapTimeoutMs: number | undefined;
  /**
   * How long a catch-up read of `eventAppended` the store failed is tried again; the service's default
   * (30 s) when undefined. No variable sets it: tests shorten it.
   */
  readonly catchUpRetryMs?: number | undefined;
  readonly graphiql: boolean;
  readonly introspection: boolean;
  /** When set, `connection_init` must carry `{token}` (or `{authorization: 'Bearer …'}`) equal to it. */
  readonly subscriptionToken: string | undefined;
  /** When set, writes (POST /messages, the mutations) need `Authorization: Bearer <token>`. */
  readonly ingestToken: string | undefined;
  /**
   * Origins (besides the server's own) allowed to open WebSockets and make CORS requests; undefined
   * allows any. ALLOWED_ORIGINS unset means any in development and none but the server's own under
   * NODE_ENV=production; `*` means any.
   */
  readonly allowedOrigins: readonly string[] | undefined;
  readonly wsMaxPayload: number;
  /** Operations one WebSocket may run at once (subscriptions, and queries or mutations not yet answered). */
  readonly wsMaxOperations: number;
  readonly keepAliveMs: number;
  /** A client must send its request headers within this time (slowloris bound). */
  readonly headersTimeoutMs: number;
  /** A client must send its whole request within this time. */
  readonly requestTimeoutMs: number;
  /**
   * A connection that moves no byte for this long is cut if what it was sent waits unread (a client that
   * stopped reading its answers); one waiting for an answer still being made, or a quiet event stream, is
   * kept; 0 for never. WebSockets keep themselves alive, and are cut by their own rules.
   */
  readonly socketTimeoutMs: number;
  /** Serve Prometheus metrics at GET /metrics. */
  readonly metrics: boolean;
  /** Serve the live dashboard at GET /. */
  readonly dashboard: boolean;
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

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const MAX_DURATION_MS = 365 * 24 * 3_600_000;

/**
 * A duration such as `500ms`, `30s`, `5m` or `1h`, in milliseconds; undefined for unset, empty, `0`
 * (with a unit or not) or `never` (which mean no timeout). Throws ConfigError naming the variable for anything else.
 */
export function duration(env: Env, name: string): number | undefined {
  const raw = env[name]?.trim().toLowerCase();
  if (raw === undefined || raw === '' || raw === '0' || raw === 'never') return undefined;
  const m = /^(\d{1,12})(ms|s|m|h)$/.exec(raw);
  const ms = m ? Number(m[1]) * (DURATION_UNITS[m[2] as string] ?? NaN) : NaN;
  if (ms === 0) return undefined;
  if (!(ms >= 1 && ms <= MAX_DURATION_MS))
    throw new ConfigError(
      `${name} must be a duration such as 500ms, 30s, 5m or 1h (at most 365 days), or 0 or never for none, got "${env[name] ?? ''}"`,
    );
  return ms;
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
function level(raw: string | undefined): string {
  const l = raw === undefined || raw.trim() === '' ? 'info' : raw.trim().toLowerCase();
  if (!LEVELS.includes(l)) throw new ConfigError(`LOG_LEVEL must be one of ${LEVELS.join(', ')}, got "${raw ?? ''}"`);
  return l;
}

/**
 * A secret: undefined when unset or empty. One that begins or ends with whitespace is refused: a header
 * value is trimmed on the way in, so no client could ever send it (a newline kept from a secret file).
 */
function secret(env: Env, name: string): string | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  if (raw !== raw.trim())
    throw new ConfigError(
      `${name} must not begin or end with whitespace (a newline from a file?): no client could send it`,
    );
  return raw;
}

/**
 * One entry of ALLOWED_ORIGINS, as browsers send an `Origin`: scheme, host and a port other than the
 * scheme's own, lower case, nothing after (a trailing slash is dropped). An origin is compared as sent,
 * so any other spelling could never match: refused, with the spelling that would, where there is one.
 */
function origin(raw: string): string {
  const o = raw.replace(/\/+$/, '');
  if (o === '' || o === '*') return o;
  let url: URL | undefined;
  try {
    url = new URL(o);
  } catch {
    url = undefined;
  }
  if (url?.origin === o) return o;
  const hint = url && url.origin !== 'null' ? `; did you mean "${url.origin}"?` : ' such as "https://example.com"';
  throw new ConfigError(
    `ALLOWED_ORIGINS: "${raw}" is not an origin as browsers send it (scheme://host[:port], lower case)${hint}`,
  );
}

/** Every variable the service reads (besides pg's own `PG*` variables, which pg reads). */
export const SETTINGS: readonly string[] = [
  'PORT',
  'HOST',
  'DATABASE_URL',
  'WORKER_COUNT',
  'DATABASE_POOL_SIZE',
  'MAX_BUFFERED_PER_CHANNEL',
  'MAX_BUFFERED_TOTAL',
  'GAP_TIMEOUT',
  'SQLITE_SYNCHRONOUS',
  'MAX_BODY_BYTES',
  'SUBSCRIBER_BUFFER',
  'GRAPHIQL',
  'INTROSPECTION',
  'INGEST_TOKEN',
  'SUBSCRIPTION_TOKEN',
  'ALLOWED_ORIGINS',
  'WS_MAX_PAYLOAD',
  'WS_MAX_OPERATIONS',
  'WS_KEEPALIVE_MS',
  'HEADERS_TIMEOUT_MS',
  'REQUEST_TIMEOUT_MS',
  'SOCKET_TIMEOUT_MS',
  'METRICS',
  'DASHBOARD',
  'LOG_LEVEL',
  'NODE_ENV',
];

/** Edits (insertions, deletions, substitutions, swaps of neighbours) that turn `a` into `b`. */
function edits(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  const at = (i: number, j: number): number => (d[i] as number[])[j] as number;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      let best = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, at(i - 2, j - 2) + 1);
      (d[i] as number[])[j] = best;
    }
  return at(a.length, b.length);
}

/**
 * Variables set that are probably a setting mistyped, each with the setting meant: a setting's name in
 * another case, or one or two edits away from it (one for names of up to six letters, so that `HOME` is
 * not taken for `HOST`). Such a variable is otherwise ignored, like any the service does not read, and
 * the setting keeps its default: the server says so at start. Values are never read here.
 */
export function mistypedSettings(env: Env): { readonly name: string; readonly meant: string }[] {
  const found: { name: string; meant: string }[] = [];
  for (const name of Object.keys(env)) {
    if (SETTINGS.includes(name)) continue;
    const upper = name.toUpperCase();
    let meant: string | undefined;
    let least = Infinity;
    for (const setting of SETTINGS) {
      const allowed = setting.length <= 6 ? 1 : 2;
      if (Math.abs(upper.length - setting.length) > allowed) continue;
      const n = edits(upper, setting);
      if (n <= allowed && n < least) {
        least = n;
        meant = setting;
      }
    }
    if (meant !== undefined) found.push({ name, meant });
  }
  return found;
}

/** Reads the configuration; throws ConfigError naming the variable when a value is not acceptable. */
export function loadConfig(env: Env = process.env): Config {
  const production = env.NODE_ENV === 'production';
  const sync = (env.SQLITE_SYNCHRONOUS?.trim() || 'FULL').toUpperCase();
  if (sync !== 'FULL' && sync !== 'NORMAL')
    throw new ConfigError(`SQLITE_SYNCHRONOUS must be FULL or NORMAL, got "${env.SQLITE_SYNCHRONOUS ?? ''}"`);
  const origins = env.ALLOWED_ORIGINS?.split(',')
    .map((o) => origin(o.trim()))
    .filter((o) => o !== '');
  const headersTimeoutMs = int(env, 'HEADERS_TIMEOUT_MS', 10_000, 100, 600_000);
  const requestTimeoutMs = int(env, 'REQUEST_TIMEOUT_MS', 30_000, 100, 3_600_000);
  // Node refuses a server whose headers may take longer than the whole request.
  if (headersTimeoutMs > requestTimeoutMs)
    throw new ConfigError(
      `HEADERS_TIMEOUT_MS (${headersTimeoutMs}) must not exceed REQUEST_TIMEOUT_MS (${requestTimeoutMs})`,
    );
  return {
    port: int(env, 'PORT', 8088, 0, 65535),
    host: env.HOST === '' ? undefined : env.HOST,
    databaseUrl: env.DATABASE_URL === '' ? undefined : env.DATABASE_URL,
    workerCount: int(env, 'WORKER_COUNT', 3, 1, 256),
    databasePoolSize: int(env, 'DATABASE_POOL_SIZE', 10, 2, 1000),
    sqliteSynchronous: sync,
    maxBodyBytes: int(env, 'MAX_BODY_BYTES', 1024 * 1024, 1024, 64 * 1024 * 1024),
    subscriberBuffer: int(env, 'SUBSCRIBER_BUFFER', 1000, 1, 1_000_000),
    bufferLimits: {
      perChannel: int(env, 'MAX_BUFFERED_PER_CHANNEL', DEFAULT_BUFFER_LIMITS.perChannel, 1, 1_000_000),
      total: int(env, 'MAX_BUFFERED_TOTAL', DEFAULT_BUFFER_LIMITS.total, 1, 100_000_000),
    },
    gapTimeoutMs: duration(env, 'GAP_TIMEOUT'),
    graphiql: bool(env, 'GRAPHIQL', !production),
    introspection: bool(env, 'INTROSPECTION', !production),
    subscriptionToken: secret(env, 'SUBSCRIPTION_TOKEN'),
    ingestToken: secret(env, 'INGEST_TOKEN'),
    allowedOrigins:
      origins === undefined || origins.length === 0
        ? production
          ? []
          : undefined
        : origins.includes('*')
          ? undefined
          : origins,
    wsMaxPayload: int(env, 'WS_MAX_PAYLOAD', 1024 * 1024, 1024, 64 * 1024 * 1024),
    wsMaxOperations: int(env, 'WS_MAX_OPERATIONS', 100, 1, 100_000),
    keepAliveMs: int(env, 'WS_KEEPALIVE_MS', 12_000, 0, 600_000),
    headersTimeoutMs,
    requestTimeoutMs,
    socketTimeoutMs: int(env, 'SOCKET_TIMEOUT_MS', 60_000, 0, 3_600_000),
    metrics: bool(env, 'METRICS', true),
    dashboard: bool(env, 'DASHBOARD', true),
    logLevel: level(env.LOG_LEVEL),
  };
}
