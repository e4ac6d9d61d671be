/**
 * GraphQL over Server-Sent Events, the "distinct connections" mode of the protocol graphql-sse and yoga
 * speak: one operation a request, its results as `next` events, then `complete`. For clients with no
 * WebSocket (`EventSource`, `curl -N`, proxies that do not pass an upgrade).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import {
  GraphQLError,
  getOperationAST,
  OperationTypeNode,
  type ExecutionArgs,
  type ExecutionResult,
  type GraphQLFormattedError,
} from 'graphql';
import { parseRequestParams, type RequestParams, type Response as HttpResponse } from 'graphql-http';
import { isAsyncIterable, type PromiseOrValue } from 'graphql-yoga';
import type { Logger } from 'pino';
import type { StreamResume } from '../../../schema/builder';
import { bearerOf, mayWrite, sameSecret, sendJson, weightOf } from '../io';
import { coded, unexpected, withoutHints } from './errors';

export interface EventStreamOptions {
  /**
   * Parses and validates as every other transport does; errors are returned, never thrown. `resume` goes into
   * the operation's context.
   */
  prepare(
    params: RequestParams,
    canWrite: boolean,
    requestId: string | undefined,
    resume: StreamResume,
  ): Promise<ExecutionArgs | readonly GraphQLError[]>;
  execute(args: ExecutionArgs): PromiseOrValue<ExecutionResult>;
  subscribe(args: ExecutionArgs): PromiseOrValue<AsyncIterableIterator<ExecutionResult> | ExecutionResult>;
  readonly ingestToken: string | undefined;
  readonly subscriptionToken: string | undefined;
  /** How often an open stream sends a comment, so that idle proxies keep it; 0 for never. */
  readonly keepAliveMs: number;
  readonly log: Logger;
}

export interface EventStreams {
  /**
   * Answers a request to `/graphql` that asks for `text/event-stream` (`prefersEventStream`). `method` is
   * GET, HEAD or POST, and `body` the text of a POST's body.
   */
  handle(
    req: IncomingMessage,
    res: ServerResponse,
    cors: Readonly<Record<string, string>>,
    method: string,
    body: string | null,
  ): Promise<void>;
  /**
   * Ends every open stream without `complete`, so that clients reconnect (elsewhere), and refuses new ones
   * with a 503.
   */
  close(): void;
}

const EVENT_STREAM = 'text/event-stream';

/**
 * Whether a request asks for an event stream: `text/event-stream` is the first of the media ranges it
 * accepts with the highest `q`. EventSource and graphql-sse's client send it alone; a client that also
 * takes JSON, listed first or weighted higher (urql's fetch sends `text/event-stream` fourth), gets JSON.
 */
export function prefersEventStream(accept: string | undefined): boolean {
  if (accept === undefined || !/text\/event-stream/i.test(accept)) return false;
  let best: string | undefined;
  let bestQ = 0;
  for (const entry of accept.toLowerCase().split(',')) {
    const [range = '', ...params] = entry.split(';').map((s) => s.trim());
    const weight = weightOf(params);
    if (weight > bestQ) {
      best = range;
      bestQ = weight;
    }
  }
  return best === EVENT_STREAM;
}

/** Headers of a stream: never stored, and not held back by a buffering proxy (nginx reads the last one). */
const STREAM_HEADERS = {
  'content-type': `${EVENT_STREAM}; charset=utf-8`,
  'cache-control': 'no-store',
  'x-accel-buffering': 'no',
} as const;

const JSON_TYPE = 'application/json; charset=utf-8';

/**
 * One event of the protocol: `next` with a result (and the position of its log event as its `id`, or an empty
 * `id` that clears the client's), or `complete`.
 */
const nextEvent = (result: unknown, id?: number | ''): string =>
  `${id === undefined ? '' : id === '' ? 'id:\n' : `id: ${id}\n`}event: next\ndata: ${JSON.stringify(result)}\n\n`;
const COMPLETE_EVENT = 'event: complete\ndata:\n\n';
/** Bytes of an event written at once at most: the pieces of a large one go one by one (see `send`). */
const PIECE = 64 * 1024;
/** A comment: sent first (some browsers show a stream only after its first bytes) and as a keep-alive. */
const COMMENT = ':\n\n';

/** Errors as a result sends them: a GraphQL error without yoga's hints, anything else masked (and logged). */
function errorsOf(e: unknown, log: Logger): GraphQLFormattedError[] {
  if (e instanceof GraphQLError) return [withoutHints(e).toJSON()];
  log.error({ err: e }, 'event stream failed');
  return [unexpected(e).toJSON()];
}

export function createEventStreams(options: EventStreamOptions): EventStreams {
  const { log } = options;
  /** Ends each open stream (for `close`). */
  const open = new Set<() => void>();
  /** Set by `close`: a stream asked for after it is refused. Read through `stopping`: it changes under awaits. */
  let closing = false;
  const stopping = (): boolean => closing;

  /**
   * Streams `run`'s results until it ends (then `complete`), the client goes (its subscription is returned), or
   * the server stops (the stream ends without `complete`). A stream pipelined behind another answer on its
   * connection starts when that answer ends, and holds nothing until then. Past the answer's high-water mark
   * (16 KiB unsent), an event waits for the connection to drain (see `send`), so a client that stops reading
   * fills its subscription's bounded buffer, not the server's memory; a connection that does not drain within
   * `keepAliveMs` is cut, as graphql-ws cuts a socket that misses a pong. `resetId`: a result that is not a
   * stream (an error) goes out with an empty `id`, which makes a browser forget the `Last-Event-ID` it
   * resumed with.
   */
  async function stream(
    req: IncomingMessage,
    res: ServerResponse,
    cors: Readonly<Record<string, string>>,
    run: () => PromiseOrValue<AsyncIterableIterator<ExecutionResult> | ExecutionResult>,
    /** The position of the log event a result was made of, if any, once (`Positions.take`). */
    idOf: () => number | undefined = () => undefined,
    resetId = false,
  ): Promise<void> {
    let iterator: AsyncIterableIterator<ExecutionResult> | undefined;
    let pings: NodeJS.Timeout | undefined;
    /** Set when the client goes or the server stops; read through `ended`, as it changes under the awaits. */
    let over = false;
    const ended = (): boolean => over;
    /** Resumes a wait: for the connection to drain, or for this answer's turn on it. */
    let wake: (() => void) | undefined;
    const socket = req.socket;
    const end = (): void => {
      if (over) return;
      over = true;
      clearInterval(pings);
      open.delete(end);
      res.off('close', end);
      forget();
      wake?.();
      Promise.resolve(iterator?.return?.()).catch((e: unknown) => log.error({ err: e }, 'event stream end failed'));
    };
    open.add(end);
    res.once('close', end);
    // The connection's end, not only the response's: a response queued behind another hears nothing of it.
    const forget = onConnectionClose(socket, end);
    /** Ends the answer once the stream has ended without `complete`: the client went, or the server stops. */
    const abandon = (): void => {
      if (!res.headersSent) refuseWhileStopping(res, cors);
      else if (!res.writableEnded) res.end();
    };
    if (res.socket === null) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        res.once('socket', () => resolve());
      });
      wake = undefined;
      if (ended()) {
        abandon();
        return;
      }
    }
    res.writeHead(200, { ...cors, ...STREAM_HEADERS });
    res.write(COMMENT);
    /** Set while a large event goes out in pieces: a comment between two of them would break it. */
    let inPieces = false;
    if (options.keepAliveMs > 0)
      pings = setInterval(() => {
        if (!inPieces) res.write(COMMENT);
      }, options.keepAliveMs);
    /**
     * Until the connection has taken what waits for it (`drain`); one that does not within `keepAliveMs` is
     * cut. What waits is one piece of an event at most (and comments), so this asks a client to take 64 KiB
     * in that time, however large the event.
     */
    const drained = (): Promise<void> =>
      new Promise((resolve) => {
        const stalled = options.keepAliveMs > 0 ? setTimeout(() => res.destroy(), options.keepAliveMs) : undefined;
        const go = (): void => {
          res.off('drain', go);
          clearTimeout(stalled);
          wake = undefined;
          resolve();
        };
        wake = go;
        res.on('drain', go);
      });
    /**
     * Writes an event; past the high-water mark, waits for the connection to drain. A large one (a query's
     * page of events) goes in pieces, each written once the connection has taken the one before.
     */
    const send = async (event: string): Promise<void> => {
      if (event.length <= PIECE) {
        if (!ended() && !res.write(event)) await drained();
        return;
      }
      const bytes = Buffer.from(event);
      inPieces = true;
      for (let at = 0; at < bytes.length && !ended(); at += PIECE)
        if (!res.write(bytes.subarray(at, at + PIECE))) await drained();
      inPieces = false;
    };

    try {
      const result = await run();
      if (!isAsyncIterable(result)) await send(nextEvent(formatted(result), resetId ? '' : undefined));
      else if (ended()) await result.return?.();
      else {
        iterator = result;
        for await (const next of iterator) {
          await send(nextEvent(formatted(next), idOf()));
          if (ended()) break;
        }
      }
    } catch (e) {
      // A subscription that ended with an error (FELL_BEHIND, say): it is its last result.
      await send(nextEvent({ errors: errorsOf(e, log) }));
    }
    if (ended()) {
      abandon();
      return;
    }
    end();
    res.end(COMPLETE_EVENT);
  }

  return {
    async handle(req, res, cors, method, body) {
      if (stopping()) {
        refuseWhileStopping(res, cors);
        return;
      }
      const asked = method === 'HEAD' ? 'GET' : method;
      const url = req.url ?? '/graphql';
      /**
       * A refusal before any stream, as JSON: its `errors`, each with a code (`coded` adds one where there is
       * none, and a message where there are no errors).
       */
      const refuse = (status: number, errors: readonly GraphQLFormattedError[], headers = {}): void => {
        const text = errors.length === 0 ? null : JSON.stringify({ errors });
        const answer = coded(text, status, { method: asked, url, body }) ?? text ?? '';
        res.writeHead(status, {
          ...cors,
          ...headers,
          'content-type': JSON_TYPE,
          'content-length': String(Buffer.byteLength(answer)),
        });
        res.end(answer);
      };
      let parsed: HttpResponse | RequestParams;
      try {
        parsed = await parseRequestParams({ method: asked, url, headers: req.headers, body, raw: req, context: null });
      } catch (e) {
        // Parameters of the wrong shape (no query, variables that are not an object): thrown, with a message
        // `coded` makes clearer.
        if (!(e instanceof Error)) throw e;
        refuse(400, [{ message: e.message }]);
        return;
      }
      if (isRefusal(parsed)) {
        // A body that is not JSON, or a method or media type graphql-http does not take.
        const [text, init] = parsed;
        const errors = text === null ? [] : (JSON.parse(text) as { errors: GraphQLFormattedError[] }).errors;
        refuse(init.status, errors, init.headers);
        return;
      }
      // An empty id is none (the stream sent no id, or reset it).
      const lastEventId = req.headers['last-event-id'];
      const after =
        lastEventId === undefined || lastEventId === ''
          ? undefined
          : typeof lastEventId === 'string'
            ? positionOf(lastEventId)
            : null;
      if (after === null) {
        const message = `Last-Event-ID must be the id of an event this server sent (a position), got "${String(lastEventId)}"`;
        refuse(400, [{ message, extensions: { code: 'BAD_REQUEST' } }]);
        return;
      }
      const positions = new Positions(after);
      const requestId = res.getHeader('x-request-id');
      const prepared = await options.prepare(
        parsed,
        mayWrite(req.headers.authorization, options.ingestToken),
        typeof requestId === 'string' ? requestId : undefined,
        positions,
      );
      // The server began to stop while this one was prepared.
      if (stopping()) {
        refuseWhileStopping(res, cors);
        return;
      }
      if (isErrorList(prepared)) {
        // Errors of the operation, not of the request: a GraphQL result, as graphql-sse's server sends them (its
        // client retries any answer but a 200).
        if (method === 'HEAD') res.writeHead(200, { ...cors, ...STREAM_HEADERS }).end();
        else await stream(req, res, cors, () => ({ errors: prepared.map(withoutHints) }));
        return;
      }
      const args = prepared;
      const operation = getOperationAST(args.document, args.operationName)?.operation;
      if (operation === OperationTypeNode.MUTATION && asked === 'GET') {
        const message = 'mutations need POST: a GET (or HEAD) of /graphql only runs queries and subscriptions';
        refuse(405, [{ message, extensions: { code: 'METHOD_NOT_ALLOWED' } }], { allow: 'POST' });
        return;
      }
      if (operation === OperationTypeNode.SUBSCRIPTION && !admitted(req.headers.authorization)) {
        const message = 'subscriptions need the subscription token: send Authorization: Bearer <SUBSCRIPTION_TOKEN>';
        refuse(401, [{ message, extensions: { code: 'UNAUTHENTICATED' } }], { 'www-authenticate': 'Bearer' });
        return;
      }
      if (method === 'HEAD') {
        res.writeHead(200, { ...cors, ...STREAM_HEADERS }).end();
        return;
      }
      await stream(
        req,
        res,
        cors,
        () => (operation === OperationTypeNode.SUBSCRIPTION ? options.subscribe(args) : options.execute(args)),
        () => positions.take(),
        after !== undefined,
      );
    },

    close() {
      closing = true;
      for (const end of [...open]) end();
    },
  };

  function admitted(authorization: string | undefined): boolean {
    const secret = options.subscriptionToken;
    if (secret === undefined) return true;
    const token = bearerOf(authorization);
    return token !== undefined && sameSecret(token, secret);
  }
}

/**
 * The positions of the log events a stream's results are made of (`eventAppended`'s), each sent as the
 * result's `id`: a client that reconnects sends the last one back as `Last-Event-ID`, and goes on after it.
 */
class Positions implements StreamResume {
  private last: number | undefined;

  constructor(readonly after: number | undefined) {}

  seen(position: number): void {
    this.last = position;
  }

  /** The position of the result about to be sent, if it was made of a log event. */
  take(): number | undefined {
    const last = this.last;
    this.last = undefined;
    return last;
  }
}

/** A `Last-Event-ID` as a position: a whole number up to 2^53 - 1; null for anything else. */
function positionOf(id: string): number | null {
  if (!/^\d{1,16}$/.test(id)) return null;
  const n = Number(id);
  return Number.isSafeInteger(n) ? n : null;
}

/** A stream asked for while the server stops: 503, to be asked again (of another instance) in a second. */
function refuseWhileStopping(res: ServerResponse, cors: Readonly<Record<string, string>>): void {
  const errors = [
    { message: 'the server is shutting down', extensions: { code: 'UNAVAILABLE', retryAfterSeconds: 1 } },
  ];
  sendJson(res, 503, { errors }, { ...cors, 'retry-after': '1' });
}

/** The streams waiting on each connection's end: one `close` listener a connection, however many streams. */
const waitingOn = new WeakMap<Socket, Set<() => void>>();

/** Calls `then` when `socket` closes (at once if it has); returns what stops that. */
function onConnectionClose(socket: Socket, then: () => void): () => void {
  if (socket.destroyed) {
    queueMicrotask(then);
    return () => undefined;
  }
  let waiting = waitingOn.get(socket);
  if (waiting === undefined) {
    const all = (waiting = new Set());
    waitingOn.set(socket, all);
    socket.once('close', () => {
      waitingOn.delete(socket);
      for (const f of all) f();
    });
  }
  waiting.add(then);
  const set = waiting;
  return () => set.delete(then);
}

const isRefusal = (p: HttpResponse | RequestParams): p is HttpResponse => Array.isArray(p);
const isErrorList = (p: ExecutionArgs | readonly GraphQLError[]): p is readonly GraphQLError[] => Array.isArray(p);

/** A result as it is sent: its errors without yoga's hints, as over graphql-ws. */
function formatted(result: ExecutionResult): ExecutionResult {
  return result.errors === undefined ? result : { ...result, errors: result.errors.map(withoutHints) };
}
