import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { pino, type Logger } from 'pino';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Config } from './config';
import { Hub } from './engine/hub';
import { LanePool } from './engine/lanes';
import { RocketService } from './engine/service';
import { createDashboard } from './http/dashboard';
import { createGraphQLTransport } from './http/graphql/transport';
import {
  READ_METHODS,
  answerWithoutUpgrade,
  asksForWebSocket,
  continueWhenRead,
  corsHeaders,
  refuseUpgrade,
  sendError,
  sendMethodNotAllowed,
  sendPreflight,
  sendProblem,
} from './http/io';
import { Metrics } from './http/metrics';
import { createRestRoutes, methodsOf } from './http/rest';
import { openStore } from './store/open';
import type { EventStore } from './store/types';

/** How long a graceful stop waits for in-flight requests before cutting connections. */
const STOP_GRACE_MS = 10_000;

/**
 * How long a stop waits for a connection that has sent nothing to send its request: one may be on the wire
 * already, not yet read, and it is answered (with `Connection: close`) rather than cut.
 */
const SILENT_GRACE_MS = 250;

/** On a connection's socket: the answer to the request last read on it. */
const ANSWER = Symbol('answer');
type AnsweringSocket = Socket & { [ANSWER]?: ServerResponse };

/**
 * The parsed targets of the ingest routes, which most requests name exactly: no URL to build per message.
 * Shared by every such request, so no handler may change a URL it is given.
 */
const PLAIN_TARGETS = new Map(['/messages', '/graphql'].map((path) => [path, new URL(path, 'http://localhost')]));

/** A dot segment (`.` or `..`, either dot percent-encoded or not) or a backslash in a path. */
const RESOLVED_PATH = /\\|(?:^|\/)(?:\.|%2e){1,2}(?:\/|$)/i;

/**
 * A request target as a URL. An origin-form target is a path as sent: resolved against a base,
 * `//x/messages` would read as host x and path /messages, and be routed as a route it does not name.
 * Throws on a malformed one.
 */
const urlOf = (target: string): URL => {
  // A URL parser resolves dot segments (`%2e` too) and reads `\` as `/`: `/x/../messages` would be routed as
  // /messages, `/rockets/%2e%2e/events` as /events. No route is named so: such a target is refused.
  if (RESOLVED_PATH.test(target.split(/[?#]/, 1)[0] as string)) throw new Error('a path a URL parser would rewrite');
  return target.startsWith('/') ? new URL(`http://localhost${target}`) : new URL(target, 'http://localhost');
};

/** The status of a request Node's parser refused, by its error code (as Node's own answer gives it). */
const CLIENT_ERROR_STATUS: Readonly<Record<string, string>> = {
  ERR_HTTP_REQUEST_TIMEOUT: '408 Request Timeout',
  HPE_HEADER_OVERFLOW: '431 Request Header Fields Too Large',
  HPE_CHUNK_EXTENSIONS_OVERFLOW: '413 Payload Too Large',
};

export interface App {
  readonly service: RocketService;
  readonly store: EventStore;
  readonly server: Server;
  readonly log: Logger;
  /** Listens; resolves to the bound port (pass 0 for a free one). */
  start(port?: number, host?: string): Promise<number>;
  /**
   * Graceful stop: refuses new connections, lets accepted messages finish and commit, closes live
   * subscribers, then closes the store. Idempotent.
   */
  stop(): Promise<void>;
}

/**
 * Wires store, lanes, hub and service behind one HTTP server: REST, GraphQL and graphql-ws on one port.
 * `now` is the server clock (buffer arrival times, the gap policy, recordedAt); tests inject their own.
 */
export async function buildApp(
  config: Config,
  log: Logger = createLogger(config.logLevel),
  now?: () => Date,
): Promise<App> {
  const store = await openStore(config.databaseUrl, {
    now,
    sqliteSynchronous: config.sqliteSynchronous,
    postgresPoolSize: config.databasePoolSize,
    bufferLimits: config.bufferLimits,
    // While it is down, this instance's subscribers wait for what other instances write (nothing is lost:
    // it catches up once back), and nothing else would show it.
    onListener: (event) => {
      if (event.state === 'listening') log.info({ backendPid: event.pid }, 'PostgreSQL LISTEN connection up');
      else
        log.warn(
          { err: event.error },
          'PostgreSQL LISTEN connection lost: live events from other instances wait until it is back (retrying)',
        );
    },
  });
  const metrics = config.metrics ? new Metrics() : undefined;
  const lanes = new LanePool(store, config.workerCount, metrics);
  const hub = new Hub(store, config.subscriberBuffer, metrics);
  const service = new RocketService(
    store,
    lanes,
    hub,
    metrics,
    { gapTimeoutMs: config.gapTimeoutMs },
    { catchUpRetryMs: config.catchUpRetryMs },
  );
  const stopGapSweep = service.startGapSweep({
    skipped: (gaps) =>
      log.warn(
        {
          channels: new Set(gaps.map((g) => g.channel)).size,
          gaps: gaps.length,
          numbers: gaps.reduce((n, g) => n + g.to - g.from + 1, 0),
          first: gaps.slice(0, 10),
        },
        'gaps skipped after GAP_TIMEOUT',
      ),
    failed: (err) => log.error({ err }, 'gap sweep failed'),
  });
  metrics?.observe(lanes, store, hub);
  const rest = createRestRoutes(service, { maxBodyBytes: config.maxBodyBytes, ingestToken: config.ingestToken, log });
  const graphql = createGraphQLTransport(service, config, log);
  const dashboard = config.dashboard ? createDashboard(log) : undefined;
  /** The methods a route other than /graphql answers besides OPTIONS; undefined for no route. */
  const routeMethodsOf = (path: string): string | undefined =>
    methodsOf(path) ?? (path === '/metrics' && metrics ? READ_METHODS : dashboard?.methodsOf(path));
  const nextRequestId = requestIds();
  const debug = log.isLevelEnabled('debug');

  const answer = (req: IncomingMessage, res: ServerResponse): void => {
    // Stopping: the answer closes its connection, so that the client sends its next request elsewhere
    // instead of on a socket about to be cut.
    if (stopping !== undefined) res.setHeader('connection', 'close');
    else (req.socket as AnsweringSocket)[ANSWER] = res;
    const requestId = requestIdOf(req) ?? nextRequestId();
    if (debug) logRequest(log, req, res, requestId);
    // A read asked before, of a store that has not changed since, answered again before any routing. A
    // browser's cross-origin read (it sends an Origin) takes the route below, which adds the CORS headers.
    if (req.headers.origin === undefined && rest.replay(req, res, requestId)) return;
    res.setHeader('x-request-id', requestId);
    let url: URL;
    try {
      url = PLAIN_TARGETS.get(req.url ?? '/') ?? urlOf(req.url ?? '/');
    } catch {
      sendProblem(res, 400, { code: 'BAD_REQUEST', message: 'malformed request target' });
      return;
    }
    if (url.pathname === '/graphql') {
      graphql.handle(req, res, url).catch((e: unknown) => {
        sendError(res, e, log);
      });
      return;
    }
    // The methods of the route asked for, besides OPTIONS; undefined for no route, which is a 404 below
    // whatever the method and origin.
    const methods = routeMethodsOf(url.pathname);
    // Whether an answer carries a CORS allowance depends on the Origin sent: caches are told so, also in the
    // answer to a request that sent none (the CORS headers below set the same).
    res.setHeader('vary', 'origin');
    if (methods !== undefined && req.method === 'OPTIONS') {
      // A CORS preflight, or a plain question of what a route allows: its own methods.
      sendPreflight(res, corsHeaders(req, config.allowedOrigins), methods);
      return;
    }
    if (req.headers.origin !== undefined) {
      const cors = corsHeaders(req, config.allowedOrigins);
      // CORS only keeps an answer from a page; a "simple" cross-site POST (text/plain, no preflight) would
      // still be stored. A write to a route from an origin not allowed is refused before it is read.
      if (
        methods !== undefined &&
        req.method !== 'GET' &&
        req.method !== 'HEAD' &&
        cors['access-control-allow-origin'] === undefined
      ) {
        sendProblem(res, 403, { code: 'FORBIDDEN', message: 'this origin may not write here' });
        return;
      }
      // Every answer to an allowed origin carries the allowance, a 404 too: a page can read what went wrong.
      for (const [name, value] of Object.entries(cors)) res.setHeader(name, value);
    }
    if (url.pathname === '/metrics' && metrics) {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        sendMethodNotAllowed(res, READ_METHODS);
        return;
      }
      metrics.respond(req, res).catch((e: unknown) => {
        sendError(res, e, log);
      });
      return;
    }
    if (dashboard?.handle(req, res, url) === true) return;
    void rest.handle(req, res, url).then((handled) => {
      if (!handled) sendProblem(res, 404, { code: 'NOT_FOUND', message: `no route for ${url.pathname}` });
    });
  };
  const server = createServer(
    {
      // Slow or stalled clients must not hold sockets forever; the check runs often enough to notice.
      headersTimeout: config.headersTimeoutMs,
      requestTimeout: config.requestTimeoutMs,
      connectionsCheckingInterval: Math.max(50, Math.min(30_000, config.headersTimeoutMs / 4)),
    },
    answer,
  );
  // A client that waits for `100 Continue` before it sends a body is told so only when the body is read.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    continueWhenRead(req, res);
    answer(req, res);
  });
  // A connection that has moved no byte for SOCKET_TIMEOUT_MS (or, idle between requests, for the keep-alive
  // timeout) is cut if it is idle, or if what it was sent waits unread: a client that pipelines requests and
  // reads none of the answers holds them in this process's memory. One waiting for an answer still being made
  // (a commit held up, a quiet event stream) is kept. WebSockets set no timeout of their own.
  server.timeout = config.socketTimeoutMs;
  server.on('timeout', (socket: Socket & { _httpMessage?: ServerResponse | null }) => {
    if (socket._httpMessage == null || socket.writableLength > 0) socket.destroy();
  });
  // The open connections, for a stop to end those busy with an answer once it is sent.
  const sockets = new Set<AnsweringSocket>();
  server.on('connection', (socket: AnsweringSocket) => {
    // A socket handed back after a request that offered an upgrade (`answerWithoutUpgrade`) is known already.
    if (sockets.has(socket)) return;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('upgrade', (req, socket, head) => {
    if (!asksForWebSocket(req)) {
      answerWithoutUpgrade(server, req, socket, head);
      return;
    }
    let path: string | undefined;
    try {
      path = urlOf(req.url ?? '/').pathname;
    } catch {
      // A malformed request target: refused below with a 400. Thrown here, it would end the process.
    }
    if (path === '/graphql') graphql.upgrade(req, socket, head);
    else if (path === undefined) refuseUpgrade(socket, 400, 'the request target is not a valid URL');
    else refuseUpgrade(socket, 404, `WebSocket connections are taken on /graphql only (graphql-ws), not on ${path}`);
  });
  // A request Node's parser refused: answered as Node would (a status for what was wrong, and nothing where an
  // answer has begun on the connection), without a body to leak.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex & { _httpMessage?: ServerResponse | null }) => {
    const status = CLIENT_ERROR_STATUS[err.code ?? ''] ?? '400 Bad Request';
    const answering = socket._httpMessage;
    if (answering != null && !answering.headersSent && answering.req.complete) {
      // What broke came after a request read whole, whose answer is still being made (a commit under way):
      // a 400 now would be read as that answer, a stored message taken for a refused one. That answer goes
      // first, and closes the connection; what came after it gets none.
      answering.setHeader('connection', 'close');
      return;
    }
    if (socket.writable && answering?.headersSent !== true)
      socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    else socket.destroy();
  });
  // A CONNECT (a proxy's tunnel), which no resource here takes: Node would drop it without a word.
  server.on('connect', (_req, socket: Duplex) => refuseUpgrade(socket, 501, 'CONNECT is not served: this is no proxy'));

  let stopping: Promise<void> | undefined;
  return {
    service,
    store,
    server,
    log,
    start: (port = config.port, host = config.host) =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve((server.address() as AddressInfo).port);
        });
      }),
    stop: () =>
      (stopping ??= (async () => {
        const deadline = Date.now() + STOP_GRACE_MS;
        const bounded = (done: Promise<unknown>): Promise<unknown> =>
          Promise.race([done, new Promise((resolve) => setTimeout(resolve, deadline - Date.now()).unref())]);
        // In-flight requests finish (and commit) unless they take longer than the bound, and their answers
        // say Connection: close, which ends each connection once its answer is sent: a client learns to go
        // elsewhere, and the stop need not wait for keep-alive to time out. So are the answers to requests
        // that come meanwhile. A connection that has sent nothing yet (a client's spare one: fetch opens
        // them) is not idle to Node, and would hold the stop until its client gave up on it: it is closed
        // unless it sends a request soon.
        for (const socket of sockets) {
          if (socket.bytesRead === 0) closeIfSilent(socket);
          else endAfterAnswer(socket);
        }
        // Node's close() cuts every connection it counts idle, and it counts one idle once its answer has
        // ended, though that answer may still be on its way out (a large one to a slow reader: a GraphiQL
        // page, a long listing). Those go out first; a request that comes meanwhile is answered, and its
        // connection closed with the answer.
        await bounded(Promise.all([...sockets].map(answerSent)));
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        await graphql.close();
        await bounded(closed);
        server.closeAllConnections();
        await stopGapSweep();
        await lanes.close();
        hub.close();
        await store.close();
      })()),
  };
}

/** Closes a connection that has still sent nothing after SILENT_GRACE_MS. */
function closeIfSilent(socket: Socket): void {
  setTimeout(() => {
    if (socket.bytesRead === 0) socket.destroy();
  }, SILENT_GRACE_MS).unref();
}

/** Resolves once the answer a connection has made is sent (or the connection closed); at once if none is. */
function answerSent(socket: Socket & { _httpMessage?: ServerResponse | null }): Promise<void> {
  const res = socket._httpMessage;
  if (res == null || !res.writableEnded || res.writableFinished) return Promise.resolve();
  return new Promise((resolve) => {
    res.once('finish', resolve);
    res.once('close', resolve);
  });
}

/** Ends a connection once the answer it is busy with is sent; an idle one Node closes itself. */
function endAfterAnswer(socket: AnsweringSocket): void {
  const res = socket[ANSWER];
  if (res === undefined || res.writableFinished) return;
  if (!res.headersSent) res.setHeader('connection', 'close');
  else res.once('finish', () => socket.end());
}

/**
 * JSON logs on stdout; credentials never reach them. Written synchronously: at info there are only a few
 * lines, and none may be lost or reordered when the process exits right after logging.
 */
export function createLogger(level: string): Logger {
  return pino(
    {
      level,
      base: undefined,
      redact: {
        paths: ['authorization', 'token', 'password', 'headers.authorization', 'headers.cookie', '*.token'],
        censor: '[redacted]',
      },
    },
    pino.destination({ dest: 1, sync: true }),
  );
}

/** A caller's own request id, if it is a sane one; it is echoed in logs and error bodies. */
function requestIdOf(req: IncomingMessage): string | undefined {
  const id = req.headers['x-request-id'];
  return typeof id === 'string' && /^[\w.:-]{1,64}$/.test(id) ? id : undefined;
}

function requestIds(): () => string {
  const prefix = randomBytes(4).toString('hex');
  let n = 0;
  return () => `${prefix}-${(++n).toString(36)}`;
}

/**
 * The path of a request target, for the log: no query string, and of an absolute-form target
 * (`http://user:secret@host/path`) only the path, never its credentials.
 */
function pathOf(target: string | undefined): string {
  const path = (target ?? '/').split('?')[0] as string;
  if (path.startsWith('/')) return path;
  try {
    return new URL(path).pathname;
  } catch {
    return '(malformed target)';
  }
}

/** One debug line per request, when it finishes. Never at info: a line per message would flood. */
function logRequest(log: Logger, req: IncomingMessage, res: ServerResponse, requestId: string): void {
  const started = performance.now();
  res.once('finish', () => {
    log.debug(
      {
        requestId,
        method: req.method,
        path: pathOf(req.url),
        status: res.statusCode,
        ms: Math.round((performance.now() - started) * 100) / 100,
      },
      'request',
    );
  });
}
