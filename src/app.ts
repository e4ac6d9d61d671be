import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Config } from './config';
import { Hub } from './engine/hub';
import { LanePool } from './engine/lanes';
import { RocketService } from './engine/service';
import { createGraphQLTransport } from './http/graphql';
import { sendError, sendJson } from './http/io';
import { createRestRoutes } from './http/rest';
import { openStore } from './store/open';
import type { EventStore } from './store/types';

/** How long a graceful stop waits for in-flight requests before cutting connections. */
const STOP_GRACE_MS = 10_000;

export interface App {
  readonly service: RocketService;
  readonly store: EventStore;
  readonly server: Server;
  /** Listens; resolves to the bound port (pass 0 for a free one). */
  start(port?: number, host?: string): Promise<number>;
  /**
   * Graceful stop: refuses new connections, lets accepted messages finish and commit, closes live
   * subscribers, then closes the store. Idempotent.
   */
  stop(): Promise<void>;
}

/** Wires store, lanes, hub and service behind one HTTP server: REST, GraphQL and graphql-ws on one port. */
export async function buildApp(config: Config): Promise<App> {
  const store = await openStore(config.databaseUrl, { sqliteSynchronous: config.sqliteSynchronous });
  const lanes = new LanePool(store, config.workerCount);
  const hub = new Hub(store, config.subscriberBuffer);
  const service = new RocketService(store, lanes, hub);
  const rest = createRestRoutes(service, config.maxBodyBytes);
  const graphql = createGraphQLTransport(service, config);

  const server = createServer((req, res) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      sendJson(res, 400, { error: { code: 'BAD_REQUEST', message: 'malformed request target' } });
      return;
    }
    if (url.pathname === '/graphql') {
      graphql.handle(req, res, url).catch((e: unknown) => {
        sendError(res, e);
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
