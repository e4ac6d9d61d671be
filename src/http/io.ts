import { isUtf8 } from 'node:buffer';
import { createHash, timingSafeEqual } from 'node:crypto';
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { finished, type Duplex } from 'node:stream';
import { brotliCompress, brotliCompressSync, constants, gzip, gzipSync } from 'node:zlib';
import type { Logger } from 'pino';
import { errorDetails, isDomainError, isOverloadedError, type DomainErrorCode } from '../domain/errors';
import { storeFaultOf, type StoreFault } from '../store/faults';

/** A body refused before it is parsed, answered with `status` and `code` on every route. */
export class BodyRefusedError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The request body exceeded the configured limit. */
export class BodyTooLargeError extends BodyRefusedError {
  constructor(readonly limit: number) {
    super(413, 'PAYLOAD_TOO_LARGE', `the request body is larger than ${limit} bytes`);
  }
}

/** The body came compressed (`Content-Encoding`), which no route reads. */
export class UnsupportedEncodingError extends BodyRefusedError {
  constructor(encoding: string) {
    super(
      415,
      'UNSUPPORTED_MEDIA_TYPE',
      `Content-Encoding "${encoding.slice(0, 100)}" is not supported: send the body uncompressed`,
    );
  }
}

/**
 * How far past the limit a refused body is still read (and discarded) before the refusal is answered.
 * A client that sends the whole body before reading the answer (Node's `http.request`, most libraries)
 * otherwise sees the connection reset under its writes, and never the 413. Bodies declared or sent
 * beyond it are answered at once, and the connection closed under them.
 */
export const DISCARD_BYTES = 4 * 1024 * 1024;

/** Requests whose client waits for `100 Continue` before it sends the body, each with its answer. */
const awaitingContinue = new WeakMap<IncomingMessage, ServerResponse>();

/**
 * Node's `checkContinue`: the client of `req` sent `Expect: 100-continue` and waits to be told to send the
 * body. It is told so only when the body is read (readBody), so a request refused before (401, 403,
 * 404, 405, a Content-Length over the limit) is answered at once and its body never sent; Node then closes
 * the connection, since the body may still come.
 */
export function continueWhenRead(req: IncomingMessage, res: ServerResponse): void {
  awaitingContinue.set(req, res);
}

/**
 * Reads the whole body, refusing more than `limit` bytes (checked against Content-Length first, then
 * while streaming) and a compressed one. Rejects with BodyTooLargeError once a refused body has ended (or
 * at once, past DISCARD_BYTES beyond the limit), with UnsupportedEncodingError once a body of a
 * `Content-Encoding` other than identity has ended, or with the socket's error if the client goes away.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const encoding = req.headers['content-encoding']?.trim() ?? '';
  const encoded = encoding !== '' && encoding.toLowerCase() !== 'identity';
  const declared = Number(req.headers['content-length']);
  const discardUpTo = limit + DISCARD_BYTES;
  if (declared > discardUpTo) {
    req.resume();
    return Promise.reject(new BodyTooLargeError(limit));
  }
  const waiting = awaitingContinue.get(req);
  if (waiting !== undefined) {
    awaitingContinue.delete(req);
    // A body declared over the limit is refused unsent: the client is not told to send it.
    if (declared > limit) return Promise.reject(new BodyTooLargeError(limit));
    waiting.writeContinue();
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = declared > limit;
    const onData = (c: Buffer): void => {
      size += c.length;
      if (!refused && size <= limit) {
        chunks.push(c);
        return;
      }
      refused = true;
      chunks.length = 0;
      if (size > discardUpTo) {
        req.removeListener('data', onData);
        req.resume();
        reject(new BodyTooLargeError(limit));
      }
    };
    req.on('data', onData);
    req.on('end', () => {
      if (refused) reject(new BodyTooLargeError(limit));
      // Refused once read, within the same bounds as any body, so the connection can serve the next request.
      else if (encoded) reject(new UnsupportedEncodingError(encoding));
      else resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
    });
    req.on('error', reject);
  });
}

/**
 * A body as text. JSON is UTF-8 (RFC 8259), whatever charset a request names; a byte sequence that is
 * not UTF-8 would otherwise be read as U+FFFD, so that two different channels (or missions) would read as
 * one. A byte order mark at the start is left out, as RFC 8259 (8.1) lets a parser do: JSON.parse would
 * refuse the body over a character no one sees. Throws BodyRefusedError (400).
 */
export function utf8Text(body: Buffer): string {
  if (!isUtf8(body))
    throw new BodyRefusedError(
      400,
      'BAD_USER_INPUT',
      'the body is not valid UTF-8: JSON is sent in UTF-8 (a body in another charset must be converted first)',
    );
  const bom = body.length >= 3 && body[0] === 0xef && body[1] === 0xbb && body[2] === 0xbf;
  return body.toString('utf8', bom ? 3 : 0);
}

/**
 * A strong validator of a body: the same bytes, the same tag, on every instance and after a restart. A route
 * whose answer comes in more than one media type (GraphQL's) names it too, so that each has its own tag.
 */
export function etagOf(body: Buffer, mediaType?: string): string {
  const hash = createHash('sha256');
  if (mediaType !== undefined) hash.update(`${mediaType}\n`);
  return `"${hash.update(body).digest('base64url').slice(0, 27)}"`;
}

/**
 * The weight of one entry of an `Accept` or `Accept-Encoding` header, given its parameters (lowercased and
 * trimmed): its `q`, 1 without one. A `q` above 1, which RFC 9110 does not allow, counts as 1, so that it
 * cannot outweigh what the client listed plainly; one that is no number counts as 0, as not wanted.
 */
export function weightOf(params: readonly string[]): number {
  const q = params.find((p) => p.startsWith('q='));
  if (q === undefined) return 1;
  const weight = Number(q.slice(2));
  return Number.isNaN(weight) ? 0 : Math.min(1, Math.max(0, weight));
}

/** Answers shorter than this are sent as they are: compressing would save a few hundred bytes for its cost. */
export const COMPRESS_MIN_BYTES = 1024;

/** A content coding answers are compressed with. */
export type Coding = 'br' | 'gzip';

/**
 * The coding to compress an answer with for an `Accept-Encoding` header: Brotli or gzip (also named
 * `x-gzip`), each named or taken through `*`, whichever has the higher `q` above 0, and Brotli when they are
 * equal (browsers take both: at the levels used here, Brotli is smaller and costs less CPU). Without the
 * header a client takes any coding (RFC 9110), but one that sends none is not a browser and may not expect
 * one: it gets the body as it is (undefined), as one that takes neither does.
 */
export function codingOf(header: string | undefined): Coding | undefined {
  if (header === undefined) return undefined;
  let br: number | undefined;
  let gzip: number | undefined;
  let any: number | undefined;
  for (const entry of header.toLowerCase().split(',')) {
    const [coding, ...params] = entry.split(';').map((p) => p.trim());
    const weight = weightOf(params);
    if (coding === 'br') br = weight;
    else if (coding === 'gzip' || coding === 'x-gzip') gzip = weight;
    else if (coding === '*') any = weight;
  }
  const brWeight = br ?? any ?? 0;
  const gzipWeight = gzip ?? any ?? 0;
  if (brWeight > 0 && brWeight >= gzipWeight) return 'br';
  return gzipWeight > 0 ? 'gzip' : undefined;
}

/** The `Vary` of an answer: `name` after what it varies on already (a CORS allowance's `origin`). */
export function withVary(res: ServerResponse, name: string): string {
  const vary = res.getHeader('vary');
  return vary === undefined ? name : `${String(vary)}, ${name}`;
}

/** The strong ETag of a body's compressed representation, made from the tag of the body as it is. */
export const codedTag = (etag: string, coding: Coding): string => `${etag.slice(0, -1)}-${coding}"`;

/** Brotli's settings: JSON and text, of a known size, at `quality`. */
const brotli = (body: Buffer, quality: number) => ({
  params: {
    [constants.BROTLI_PARAM_QUALITY]: quality,
    [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT,
    [constants.BROTLI_PARAM_SIZE_HINT]: body.length,
  },
});

/**
 * A body compressed on libuv's thread pool, off the event loop, at the fastest level of its coding. JSON
 * shrinks well there already: a listing of 10,000 rockets (2.3 MB, channel ids such as `rocket-42`) to
 * 95 KB in 2.4 ms of one core with Brotli, and to 109 KB in 3.7 ms with gzip.
 */
export const compress = (body: Buffer, coding: Coding): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const done = (err: Error | null, out: Buffer): void => (err ? reject(err) : resolve(out));
    if (coding === 'br') brotliCompress(body, brotli(body, 1), done);
    else gzip(body, { level: 1 }, done);
  });

/**
 * A body compressed once, when the server starts, for its life (the dashboard's files): gzip at its best
 * level, Brotli at quality 5. Past that, Brotli saves a few hundred bytes of the dashboard's 33 KB for up
 * to 35 ms more of start-up (quality 11: 9.3 KB in 38 ms; quality 5: 10.3 KB in 3 ms; gzip: 10.8 KB).
 */
export const compressOnce = (body: Buffer, coding: Coding): Buffer =>
  coding === 'br' ? brotliCompressSync(body, brotli(body, 5)) : gzipSync(body, { level: 9 });

/** Whether an `If-None-Match` header names `etag` (or is `*`): the client holds these bytes already. */
export const etagMatches = (header: string | undefined, etag: string): boolean =>
  header !== undefined &&
  (header.trim() === '*' || header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag));

export function sendJson(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/**
 * Answers an error of the transport itself (no route, a method a route does not take, a body refused) as
 * `{error: {code, message, requestId}}`, as domain errors are answered.
 */
export function sendProblem(
  res: ServerResponse,
  status: number,
  error: { readonly code: string; readonly message: string },
  headers?: Record<string, string>,
): void {
  const requestId = res.getHeader('x-request-id');
  sendJson(res, status, { error: requestId === undefined ? error : { ...error, requestId } }, headers);
}

const STATUS: Record<DomainErrorCode, number> = {
  BAD_USER_INPUT: 400,
  UNAUTHENTICATED: 401,
  NOT_FOUND: 404,
  CONFLICT: 409,
  // One sender is ahead of itself: slow that sender down. The whole buffer full: the server is overloaded.
  CHANNEL_BUFFER_FULL: 429,
  BUFFER_FULL: 503,
  UNAVAILABLE: 503,
  FELL_BEHIND: 503,
};

/** The HTTP status a domain error code maps to. */
export const httpStatusOf = (code: DomainErrorCode): number => STATUS[code];

/**
 * Answers an error as `{error: {code, message, issues?, requestId?}}`, and for a buffer cap also `cap` (the
 * setting), `limit`, `channel`, `messageNumber` and `waitingFor`; for a late message whose number was
 * skipped, `skipped: true`. Domain errors say what was wrong;
 * a store's disk that is full or its file damaged (StoreFault) is logged and said so, with its own code;
 * anything else is unexpected: logged with the request id, and answered with a 503 that says only
 * "Unexpected error." (the sender may retry), never the cause.
 */
export function sendError(res: ServerResponse, err: unknown, log?: Logger): void {
  const requestId = res.getHeader('x-request-id');
  if (res.headersSent) {
    res.destroy();
    return;
  }
  // The client went away (say, mid-body): no one to answer, and no fault of ours to report.
  // (A pipelined request's answer has no socket yet while the one before it is sent: that is no reason.)
  if (res.socket?.destroyed === true) {
    log?.debug({ err, requestId }, 'client went away');
    return;
  }
  if (err instanceof BodyRefusedError) {
    // A body too large may still be arriving: the connection is not kept for the next request.
    const headers: Record<string, string> = err instanceof BodyTooLargeError ? { connection: 'close' } : {};
    sendProblem(res, err.status, { code: err.code, message: err.message }, headers);
    return;
  }
  if (isDomainError(err)) {
    const headers: Record<string, string> = {};
    if (isOverloadedError(err)) headers['retry-after'] = String(err.retryAfterSeconds);
    if (err.code === 'UNAUTHENTICATED') headers['www-authenticate'] = 'Bearer';
    const body: Record<string, unknown> = { code: err.code, message: err.message, ...errorDetails(err) };
    if (requestId !== undefined) body.requestId = requestId;
    sendJson(res, httpStatusOf(err.code), { error: body }, headers);
    return;
  }
  const fault = storeFaultOf(err);
  if (fault !== undefined) {
    if (log !== undefined) logStoreFault(log, fault, err, requestId);
    const headers: Record<string, string> = {};
    if (fault.retryAfterSeconds !== undefined) headers['retry-after'] = String(fault.retryAfterSeconds);
    sendJson(res, fault.status, { error: { code: fault.code, message: fault.message, requestId } }, headers);
    return;
  }
  log?.error({ err, requestId }, 'unexpected error');
  sendJson(
    res,
    503,
    { error: { code: 'UNAVAILABLE', message: 'Unexpected error.', requestId } },
    { 'retry-after': '1' },
  );
}

/** A store fault of one kind is logged at most this often: it lasts until an operator acts, and every request meets it. */
export const FAULT_LOG_EVERY_MS = 10_000;

/** By logger (one an app): when each kind of store fault was last logged, and how many were not since. */
const faultLogs = new WeakMap<Logger, Map<StoreFault['code'], { at: number; unlogged: number }>>();

/**
 * Logs a store fault at error as `store fault`, with the request id and the cause, at most once per
 * FAULT_LOG_EVERY_MS for each kind, so that a full disk does not log a line (and a stack) for every write it
 * refuses: each line says in `unlogged` how many were not logged since the one before.
 */
export function logStoreFault(log: Logger, fault: StoreFault, err: unknown, requestId: unknown): void {
  let logs = faultLogs.get(log);
  if (logs === undefined) {
    logs = new Map<StoreFault['code'], { at: number; unlogged: number }>();
    faultLogs.set(log, logs);
  }
  const now = performance.now();
  const last = logs.get(fault.code);
  if (last !== undefined && now - last.at < FAULT_LOG_EVERY_MS) {
    last.unlogged++;
    return;
  }
  log.error({ err, requestId, unlogged: last?.unlogged ?? 0 }, 'store fault');
  logs.set(fault.code, { at: now, unlogged: 0 });
}

/** Compares two secrets in constant time (hashed first, so not even their lengths leak). */
export const sameSecret = (a: string, b: string): boolean =>
  timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());

/** The token of an `Authorization: Bearer <token>` value, or undefined. */
export function bearerOf(authorization: unknown): string | undefined {
  if (typeof authorization !== 'string') return undefined;
  const m = /^bearer\s+(\S+)\s*$/i.exec(authorization);
  return m?.[1];
}

/** Whether a caller may write: no INGEST_TOKEN is configured, or its bearer token is that one. */
export function mayWrite(authorization: unknown, ingestToken: string | undefined): boolean {
  if (ingestToken === undefined) return true;
  const token = bearerOf(authorization);
  return token !== undefined && sameSecret(token, ingestToken);
}

/**
 * Whether a browser page from the request's Origin may call us. No Origin: not a browser (allowed). The
 * server's own origin (GraphiQL, the dashboard) is always allowed; otherwise the allow-list decides, and
 * `undefined` allows any.
 */
export function originAllowed(req: IncomingMessage, allowed: readonly string[] | undefined): boolean {
  const origin = req.headers.origin;
  if (origin === undefined || allowed === undefined) return true;
  if (allowed.includes(origin.replace(/\/+$/, ''))) return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

/**
 * Headers of ours a page may read: without them a browser hides the next page's cursor (`Link`,
 * `X-Next-Cursor`), the request id, `Retry-After` and a read's `ETag` from a script on another origin.
 */
const EXPOSED_HEADERS = 'link, x-next-cursor, x-request-id, retry-after, etag';

/** CORS response headers for an allowed cross-origin request; none otherwise (the browser then refuses). */
export function corsHeaders(req: IncomingMessage, allowed: readonly string[] | undefined): Record<string, string> {
  const origin = req.headers.origin;
  if (origin === undefined || !originAllowed(req, allowed)) return {};
  return { 'access-control-allow-origin': origin, 'access-control-expose-headers': EXPOSED_HEADERS, vary: 'origin' };
}

/** The methods of a route that only reads, besides OPTIONS. */
export const READ_METHODS = 'GET, HEAD';

/**
 * Answers a method a route does not take: 405, with `Allow` listing the route's `methods` and OPTIONS,
 * which the server answers on every route (see sendPreflight).
 */
export function sendMethodNotAllowed(res: ServerResponse, methods: string): void {
  sendProblem(res, 405, { code: 'METHOD_NOT_ALLOWED', message: `use ${methods}` }, { allow: `${methods}, OPTIONS` });
}

/** Answers a CORS preflight: 204, with the allowance only for an allowed origin. */
export function sendPreflight(res: ServerResponse, cors: Record<string, string>, methods: string): void {
  const allowance =
    cors['access-control-allow-origin'] === undefined
      ? {}
      : {
          'access-control-allow-methods': methods,
          'access-control-allow-headers':
            'content-type, accept, authorization, x-request-id, if-none-match, last-event-id',
          'access-control-max-age': '600',
        };
  res.writeHead(204, { ...cors, ...allowance, allow: `${methods}, OPTIONS` });
  res.end();
}

/** Refuses an HTTP upgrade (a WebSocket handshake) with `status` and the reason as plain text. */
export function refuseUpgrade(socket: Duplex, status: number, reason: string): void {
  socket.on('error', () => socket.destroy());
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(reason)}\r\n\r\n${reason}`,
  );
}

/** Whether a request asks to switch to WebSocket: the one protocol this server upgrades to. */
export const asksForWebSocket = (req: IncomingMessage): boolean => /^websocket$/i.test(req.headers.upgrade ?? '');

/** How many requests offering an upgrade one connection may have answered as plain HTTP: past it, refused. */
const REPARSES_PER_CONNECTION = 16;
const reparsed = new WeakMap<Duplex, number>();

/**
 * A request that offered an upgrade to a protocol this server does not speak (`curl --http2` offers h2c),
 * answered as if it had not: RFC 9110 lets a server ignore `Upgrade`. Node hands such a request over with
 * its socket, past its headers, and parses nothing more of it; so the request is written again without the
 * offer, in front of what the socket holds of its body (`head`), and the socket goes back to the server
 * as a connection of its own, to be parsed and answered as any other. It goes back once the answers to the
 * requests before it on the connection (pipelined) have been sent: the new connection's first answer can
 * have the socket only then. Each time adds to what Node keeps on the socket: a connection may do so
 * REPARSES_PER_CONNECTION times.
 */
export function answerWithoutUpgrade(server: Server, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  const times = (reparsed.get(socket) ?? 0) + 1;
  reparsed.set(socket, times);
  const lines = [`${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/${req.httpVersion}`];
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? '';
    let value = raw[i + 1] ?? '';
    const lower = name.toLowerCase();
    if (lower === 'upgrade' || lower === 'http2-settings') continue;
    if (lower === 'connection') {
      value = value
        .split(',')
        .map((t) => t.trim())
        .filter((t) => !/^(upgrade|http2-settings)$/i.test(t))
        .join(', ');
      if (value === '') continue;
    }
    lines.push(`${name}: ${value}`);
  }
  const request = Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), head]);
  const handBack = (): void => {
    if (socket.destroyed) return;
    // Node's own field: the answer that holds the socket, and after it those queued behind it, one by one.
    const answering = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (answering != null) {
      finished(answering, () => setImmediate(handBack));
      return;
    }
    if (times > REPARSES_PER_CONNECTION) {
      refuseUpgrade(socket, 400, 'too many requests offering an upgrade on one connection: open another');
      return;
    }
    socket.unshift(request);
    server.emit('connection', socket);
  };
  handBack();
}
