import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { pino, type Logger } from 'pino';
import type { AddressInfo } from 'node:net';
import type { Config } from './config';
import { Hub } from './engine/hub';
import { LanePool } from './engine/lanes';
import { RocketService } from './engine/service';
import { createGraphQLTransport } from './http/graphql';
import { sendError, sendJson } from './http/io';
import { Metrics } from './http/metrics';
import { createRestRoutes } from './http/rest';
import { openStore } from './store/open';
import type { EventStore } from './store/types';

/** How long a graceful stop waits for in-flight requests before cutting connections. */
const STOP_GRACE_MS = 10_000;

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

/** Wires store, lanes, hub and service behind one HTTP server: REST, GraphQL and graphql-ws on one port. */
export async function buildApp(config: Config, log: Logger = createLogger(config.logLevel)): Promise<App> {
  const store = await openStore(config.databaseUrl, { sqliteSynchronous: config.sqliteSynchronous });
  const metrics = config.metrics ? new Metrics() : undefined;
  const lanes = new LanePool(store, config.workerCount, metrics);
  const hub = new Hub(store, config.subscriberBuffer, metrics);
  const service = new RocketService(store, lanes, hub, metrics);
  metrics?.observe(lanes, store, hub);
  const rest = createRestRoutes(service, config.maxBodyBytes, log);
  const graphql = createGraphQLTransport(service, config);
  const nextRequestId = requestIds();
  const debug = log.isLevelEnabled('debug');

  const server = createServer((req, res) => {
    res.setHeader('x-request-id', requestIdOf(req) ?? nextRequestId());
    if (debug) logRequest(log, req, res);
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      sendJson(res, 400, { error: { code: 'BAD_REQUEST', message: 'malformed request target' } });
      return;
    }
    if (url.pathname === '/graphql') {
      graphql.handle(req, res, url).catch((e: unknown) => {
        sendError(res, e, log);
      });
      return;
    }
    if (url.pathname === '/metrics' && metrics) {
      metrics.respond(res).catch((e: unknown) => {
        sendError(res, e, log);
      });
      return;
    }
    void rest.handle(req, res, url).then((handled) => {
      if (!handled) sendJson(res, 404, { error: { code: 'NOT_FOUND', message: `no route for ${url.pathname}` } });
    });
  });
  // Slow or stalled clients must not hold sockets forever.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.on('upgrade', (req, socket, head) => {
    if (new URL(req.url ?? '/', 'http://localhost').pathname === '/graphql') graphql.upgrade(req, socket, head);
    else socket.destroy();
  });
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    else socket.destroy();
  });

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
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        await graphql.close();
        // In-flight requests finish (and commit) unless they take longer than the bound.
        const bound = new Promise<void>((resolve) => setTimeout(resolve, STOP_GRACE_MS).unref());
        await Promise.race([closed, bound]);
        server.closeAllConnections();
        await lanes.close();
        hub.close();
        await store.close();
      })()),
  };
}

/** JSON logs on stdout; credentials never reach them. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: undefined,
    redact: {
      paths: ['authorization', 'token', 'password', 'headers.authorization', 'headers.cookie', '*.token'],
      censor: '[redacted]',
    },
  });
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

/** One debug line per request, when it finishes. Never at info: a line per message would flood. */
function logRequest(log: Logger, req: IncomingMessage, res: ServerResponse): void {
  const started = performance.now();
  res.once('finish', () => {
    log.debug(
      {
        requestId: res.getHeader('x-request-id'),
        method: req.method,
        path: req.url?.split('?')[0],
        status: res.statusCode,
        ms: Math.round((performance.now() - started) * 100) / 100,
      },
      'request',
    );
  });
}
