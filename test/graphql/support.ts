import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print } from 'graphql';
import { createClient, type Client, type ClientOptions } from 'graphql-ws';
import WebSocket from 'ws';
import { buildApp, type App } from '../../src/app';
import { loadConfig, type Config } from '../../src/config';
import type { Issue } from '../../src/domain/errors';
import type { EventStore } from '../../src/store/types';
import type { MessageEnvelopeInput, MessageType, RocketLaunchedInput } from '../generated/graphql';
import { send } from '../support/process';
import { timeOf } from '../support/telemetry';

export interface TestServer {
  readonly app: App;
  /** `http://127.0.0.1:<port>` */
  readonly http: string;
  /** `ws://127.0.0.1:<port>/graphql` */
  readonly ws: string;
}

/**
 * The real server (REST, GraphQL, graphql-ws) on a free port (or `port`), with the memory store unless told
 * otherwise, logging nothing; `now` replaces the server clock.
 */
export async function startServer(overrides: Partial<Config> = {}, now?: () => Date, port = 0): Promise<TestServer> {
  const config = { ...loadConfig({}), databaseUrl: 'memory:', logLevel: 'silent', ...overrides };
  const app = await buildApp(config, undefined, now);
  port = await app.start(port, '127.0.0.1');
  return { app, http: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}/graphql` };
}

export interface GraphQLErrorJson {
  readonly message: string;
  readonly path?: ReadonlyArray<string | number>;
  readonly extensions?: { readonly code?: string; readonly issues?: Issue[]; readonly [key: string]: unknown };
}

export interface GraphQLReply<R> {
  readonly status: number;
  readonly contentType: string | undefined;
  readonly body: { readonly data?: R | null; readonly errors?: GraphQLErrorJson[] };
}

/** One GraphQL-over-HTTP POST of a typed operation, on its own connection. */
export async function post<R, V>(
  server: TestServer,
  document: TypedDocumentNode<R, V>,
  variables: V,
  headers: Record<string, string> = {},
): Promise<GraphQLReply<R>> {
  return postRaw<R>(server, { query: print(document), variables }, headers);
}

/** A POST of any body, for operations the typed documents cannot express (bombs, syntax errors). */
export async function postRaw<R = unknown>(
  server: TestServer,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<GraphQLReply<R>> {
  const reply = await send(`${server.http}/graphql`, 'POST', JSON.stringify(body), {
    'content-type': 'application/json',
    accept: 'application/graphql-response+json',
    ...headers,
  });
  const contentType = reply.headers['content-type'];
  return {
    status: reply.status,
    contentType: typeof contentType === 'string' ? contentType : undefined,
    body: reply.body as GraphQLReply<R>['body'],
  };
}

/** The data of a typed operation that must succeed; fails the test with the errors otherwise. */
export async function data<R, V>(server: TestServer, document: TypedDocumentNode<R, V>, variables: V): Promise<R> {
  const reply = await post(server, document, variables);
  if (reply.body.errors !== undefined || reply.body.data == null)
    throw new Error(`expected data, got ${reply.status} ${JSON.stringify(reply.body)}`);
  return reply.body.data;
}

/**
 * Holds every commit of `store` until the returned function is called (once a test has seen what happens while
 * a commit is under way). Release it before the store's server stops: a stop waits for every commit.
 */
export function holdCommits(store: EventStore): () => void {
  const commit = store.commit.bind(store);
  let release = (): void => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  jest.spyOn(store, 'commit').mockImplementation(async (m) => {
    await released;
    return commit(m);
  });
  return release;
}

/**
 * Yields to the event loop until `check` holds: for state with no event to wait on (listener counts). Bounded
 * by the test's own timeout.
 */
export async function until(check: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await check())) await new Promise((resolve) => setImmediate(resolve));
}

/** A graphql-ws client over `ws`, connecting at once and never retrying, so failures surface in the test. */
export function wsClient(server: Pick<TestServer, 'ws'>, options: Partial<ClientOptions> = {}): Client {
  return createClient({ url: server.ws, webSocketImpl: WebSocket, lazy: false, retryAttempts: 0, ...options });
}

export interface Result<R> {
  readonly data?: R | null;
  readonly errors?: readonly GraphQLErrorJson[];
}

/**
 * What `Subscription` needs of a client: to run an operation and hand its results to callbacks. graphql-ws's
 * client and graphql-sse's have it.
 */
export interface SubscribingClient {
  subscribe(
    request: { query: string; variables: Record<string, unknown> },
    sink: { next(result: never): void; error(e: unknown): void; complete(): void },
  ): () => void;
}

/** Everything one subscription delivers, with a way to wait for more. */
export class Subscription<R> {
  readonly results: Array<Result<R>> = [];
  /** Set when the subscription ended with an error (GraphQL errors or a close event). */
  failure: unknown;
  completed = false;
  private readonly waiters = new Set<() => void>();
  private readonly stop: () => void;

  constructor(
    client: SubscribingClient,
    document: TypedDocumentNode<R, Record<string, unknown>>,
    variables: Record<string, unknown> = {},
  ) {
    this.stop = client.subscribe(
      { query: print(document), variables },
      {
        next: (r: Result<R>) => {
          this.results.push(r);
          this.wake();
        },
        error: (e) => {
          this.failure = e;
          this.wake();
        },
        complete: () => {
          this.completed = true;
          this.wake();
        },
      },
    );
  }

  /** The data of every result so far (results with errors are left out). */
  get items(): R[] {
    return this.results.flatMap((r) => (r.data == null ? [] : [r.data]));
  }

  /** Resolves once `check` holds for the items received; rejects if the subscription ends first. */
  async until(check: (items: R[]) => boolean): Promise<R[]> {
    for (;;) {
      if (check(this.items)) return this.items;
      if (this.failure !== undefined) throw new Error(`subscription failed: ${JSON.stringify(this.failure)}`);
      if (this.completed) throw new Error('subscription completed before the expected items arrived');
      await new Promise<void>((resolve) => this.waiters.add(resolve));
    }
  }

  /** Resolves once the subscription has ended, with an error or by completing. */
  async ended(): Promise<void> {
    while (this.failure === undefined && !this.completed)
      await new Promise<void>((resolve) => this.waiters.add(resolve));
  }

  unsubscribe(): void {
    this.stop();
  }

  private wake(): void {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) w();
  }
}

export interface ProtocolMessage {
  readonly type: string;
  readonly id?: string;
  readonly payload?: unknown;
}

/**
 * A WebSocket speaking graphql-ws by hand, for what a well-behaved client never does: send garbage, stop
 * reading, present a bad token. Messages are queued; `next()` takes them in order.
 */
export class RawSocket {
  readonly closed: Promise<{ code: number; reason: string }>;
  private readonly queue: ProtocolMessage[] = [];
  private waiter: (() => void) | undefined;

  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data: Buffer) => {
      this.queue.push(JSON.parse(data.toString('utf8')) as ProtocolMessage);
      this.waiter?.();
    });
    this.closed = new Promise((resolve) =>
      socket.once('close', (code: number, reason: Buffer) => {
        resolve({ code, reason: reason.toString('utf8') });
        this.waiter?.();
      }),
    );
  }

  /** Opens the socket; rejects with the HTTP status if the upgrade is refused. */
  static open(
    url: string,
    headers: Record<string, string> = {},
    protocol = 'graphql-transport-ws',
  ): Promise<RawSocket> {
    const socket = new WebSocket(url, protocol, { headers });
    return new Promise((resolve, reject) => {
      socket.once('open', () => resolve(new RawSocket(socket)));
      socket.once('unexpected-response', (_req, res) => {
        res.resume();
        reject(new Error(`upgrade refused: ${res.statusCode ?? 0}`));
        socket.terminate();
      });
      socket.once('error', reject);
    });
  }

  send(message: ProtocolMessage): void {
    this.socket.send(JSON.stringify(message));
  }

  /** `connection_init`, then the server's `connection_ack`. */
  async init(payload?: Record<string, unknown>): Promise<void> {
    this.send({ type: 'connection_init', ...(payload ? { payload } : {}) });
    const ack = await this.next();
    if (ack.type !== 'connection_ack') throw new Error(`expected connection_ack, got ${JSON.stringify(ack)}`);
  }

  subscribe(id: string, query: string, variables: Record<string, unknown> = {}): void {
    this.send({ type: 'subscribe', id, payload: { query, variables } });
  }

  /** The next message from the server; rejects if the socket closes first. */
  async next(): Promise<ProtocolMessage> {
    for (;;) {
      const m = this.queue.shift();
      if (m) return m;
      if (this.socket.readyState === WebSocket.CLOSED) throw new Error('socket closed');
      await new Promise<void>((resolve) => (this.waiter = resolve));
      this.waiter = undefined;
    }
  }

  /** Skips messages until one matches. */
  async nextWhere(match: (m: ProtocolMessage) => boolean): Promise<ProtocolMessage> {
    for (;;) {
      const m = await this.next();
      if (match(m)) return m;
    }
  }

  get open(): boolean {
    return this.socket.readyState === WebSocket.OPEN;
  }

  /** Cuts the connection (a paused socket could not finish a closing handshake) and waits until it is gone. */
  async close(): Promise<void> {
    if (this.socket.readyState !== WebSocket.CLOSED) this.socket.terminate();
    await this.closed;
  }
}

/** GraphQL inputs for each message type, as a producer would send them (times from the telemetry fixtures). */
export const messages = (channel: string) => {
  const metadata = (messageNumber: number, messageType: MessageType, messageTime = timeOf(messageNumber)) => ({
    channel,
    messageNumber,
    messageTime,
    messageType,
  });
  return {
    launched: (n: number, p: Partial<RocketLaunchedInput> = {}, time?: string): MessageEnvelopeInput => ({
      metadata: metadata(n, 'ROCKET_LAUNCHED', time),
      message: { rocketLaunched: { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS', ...p } },
    }),
    increased: (n: number, by: number): MessageEnvelopeInput => ({
      metadata: metadata(n, 'ROCKET_SPEED_INCREASED'),
      message: { rocketSpeedIncreased: { by } },
    }),
    decreased: (n: number, by: number): MessageEnvelopeInput => ({
      metadata: metadata(n, 'ROCKET_SPEED_DECREASED'),
      message: { rocketSpeedDecreased: { by } },
    }),
    missionChanged: (n: number, newMission: string): MessageEnvelopeInput => ({
      metadata: metadata(n, 'ROCKET_MISSION_CHANGED'),
      message: { rocketMissionChanged: { newMission } },
    }),
    exploded: (n: number, reason: string): MessageEnvelopeInput => ({
      metadata: metadata(n, 'ROCKET_EXPLODED'),
      message: { rocketExploded: { reason } },
    }),
  };
};
