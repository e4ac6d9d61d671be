import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { UnauthenticatedError, ValidationError, inCallersTerms } from '../domain/errors';
import type { Rocket } from '../domain/rocket';
import { MAX_PAGE, type RocketPage, type RocketService } from '../engine/service';
import type { Gap, RocketView, StoredEvent } from '../store/types';
import {
  COMPRESS_MIN_BYTES,
  READ_METHODS,
  codedTag,
  codingOf,
  compress,
  etagMatches,
  etagOf,
  mayWrite,
  readBody,
  sendError,
  sendJson,
  sendMethodNotAllowed,
  utf8Text,
  type Coding,
} from './io';
import { ENTRY_BYTES, KeptAnswers } from './kept-answers';
import { OPENAPI } from './openapi';

/** A rocket's state without the buffer: what time travel answers. */
const pastRocketJson = (r: Rocket) => ({
  channel: r.channel,
  type: r.type,
  mission: r.mission,
  speed: r.speed,
  status: r.status,
  explodedReason: r.explodedReason,
  launchedAt: r.launchedAt,
  updatedAt: r.updatedAt,
  lastMessageNumber: r.lastMessageNumber,
});

/** A rocket as REST answers it: the seed's fields plus what the reorder buffer holds for it. */
export const rocketJson = (r: RocketView) => ({ ...pastRocketJson(r), buffer: r.buffer });

export const eventJson = (e: StoredEvent) => ({
  position: e.position,
  channel: e.channel,
  messageNumber: e.messageNumber,
  messageType: e.messageType,
  messageTime: e.messageTime,
  payload: e.payload,
  recordedAt: e.recordedAt,
});

/** An open gap of the reorder buffer: the channel, the number it waits for, how many wait behind it, since when. */
export const gapJson = (g: Gap) => ({
  channel: g.channel,
  waitingFor: g.waitingFor,
  count: g.count,
  oldestSince: g.oldestSince,
});

/** A query-string count: absent stays undefined; anything but digits becomes NaN, which the service refuses. */
function count(q: URLSearchParams, name: string): number | undefined {
  const v = param(q, name);
  if (v === undefined) return undefined;
  return /^\d{1,16}$/.test(v) ? Number(v) : NaN;
}

/** A query parameter, or undefined. One given more than once is refused: no copy is more right than another. */
function param(q: URLSearchParams, name: string): string | undefined {
  const values = q.getAll(name);
  if (values.length > 1)
    throw new ValidationError([{ field: name, problem: `is given ${values.length} times: give it once` }]);
  return values[0];
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new ValidationError([{ field: 'channel', problem: 'is not a valid percent-encoded path segment' }]);
  }
}

/**
 * JSON bodies serialised once per object answered: the service hands out the same page or rocket object for the
 * same question until the store may have changed, so a repeated `GET /rockets` or `GET /rockets/:channel`
 * costs no serialisation. An entry goes when the service drops its object.
 */
function serialisedOnce<T extends object>(json: (value: T) => unknown): (value: T) => Buffer {
  const bodies = new WeakMap<T, Buffer>();
  return (value) => {
    let body = bodies.get(value);
    if (body === undefined) {
      body = Buffer.from(JSON.stringify(json(value)));
      bodies.set(value, body);
    }
    return body;
  };
}

/**
 * A 200 answer of a read: its headers as name, value, name, value (with the length and the validator), its
 * body, and the headers of the 304 sent in its place to a client that holds its bytes already.
 */
interface Answer {
  readonly headers: readonly string[];
  readonly body: Buffer;
  readonly etag: string;
  readonly notModified: readonly string[];
}

/**
 * What every read's answer but `/health`'s tells caches, the browser's too: keep it, but ask again each time
 * (`no-cache`: it is the live state, and an `If-None-Match` with its ETag gets a 304 while it has not
 * changed); and keep one per Origin, as an answer to a page of another origin carries that origin's
 * allowance (CORS), and one to no origin none; and one per Accept-Encoding, as a client that takes Brotli or
 * gzip gets a larger answer compressed.
 */
const REVALIDATE = ['cache-control', 'no-cache', 'vary', 'origin, accept-encoding'];

/** Bytes the REST answer cache keeps at most: bodies, targets, headers, and what each entry costs besides. */
const ANSWER_CACHE_SIZE = 8 * 1024 * 1024;
/** Targets longer than this are answered, not kept. */
const ANSWER_CACHE_MAX_TARGET = 2048;

const weightOf = (target: string, a: Answer): number =>
  ENTRY_BYTES + target.length + a.body.length + a.headers.reduce((n, h) => n + h.length, 0) + a.etag.length;

const pageBody = serialisedOnce((page: RocketPage) => page.rockets.map(rocketJson));
const rocketBody = serialisedOnce(rocketJson);

/** ETags of bodies serialised once (see serialisedOnce), so that a body answered again is not hashed again. */
const etags = new WeakMap<Buffer, string>();

/** The ETag of a body serialised once (see serialisedOnce), hashed when first answered. */
function keptTag(body: Buffer): string {
  let etag = etags.get(body);
  if (etag === undefined) {
    etag = etagOf(body);
    etags.set(body, etag);
  }
  return etag;
}

/** The headers of a 304 in place of an answer tagged `etag`. */
const notModifiedBy = (etag: string): string[] => ['etag', etag, ...REVALIDATE];

/** A 200 with a JSON body already serialised, and its ETag. */
function jsonAnswer(body: Buffer, etag: string, headers: Record<string, string> = {}): Answer {
  const notModified = notModifiedBy(etag);
  return {
    headers: [
      'content-type',
      'application/json; charset=utf-8',
      'content-length',
      String(body.length),
      ...notModified,
      ...Object.entries(headers).flat(),
    ],
    body,
    etag,
    notModified,
  };
}

/**
 * The compressed representations of answers, each made once per coding (a kept answer is sent again and
 * again). One lives as long as its answer and is smaller than it; a client takes one coding, and browsers
 * all take Brotli, so the answer cache's bound at most doubles in practice (triples at worst).
 */
const codedAnswers: Record<Coding, WeakMap<Answer, Promise<Answer>>> = { br: new WeakMap(), gzip: new WeakMap() };

/** An answer's representation in `coding`: its body compressed, with its own length and ETag. */
function coded(answer: Answer, coding: Coding): Promise<Answer> {
  let made = codedAnswers[coding].get(answer);
  if (made === undefined) {
    made = compress(answer.body, coding).then((body) => {
      const etag = codedTag(answer.etag, coding);
      const headers = ['content-encoding', coding];
      for (let i = 0; i < answer.headers.length; i += 2) {
        const name = answer.headers[i] as string;
        const value = name === 'content-length' ? String(body.length) : name === 'etag' ? etag : answer.headers[i + 1];
        headers.push(name, value as string);
      }
      return { headers, body, etag, notModified: notModifiedBy(etag) };
    });
    codedAnswers[coding].set(answer, made);
  }
  return made;
}

/**
 * Sends an answer, or a 304 without its body when the request's `If-None-Match` names its ETag; `more`
 * headers (name, value, ...) join its own. A client that takes Brotli or gzip gets an answer of 1 KiB or
 * more compressed, with the ETag of that representation.
 */
function send(req: IncomingMessage, res: ServerResponse, answer: Answer, ...more: string[]): void {
  const encodings = req.headers['accept-encoding'];
  const coding = encodings !== undefined && answer.body.length >= COMPRESS_MIN_BYTES ? codingOf(encodings) : undefined;
  if (coding !== undefined) {
    sendCoded(req, res, answer, coding, more);
    return;
  }
  if (etagMatches(req.headers['if-none-match'], answer.etag)) {
    res.writeHead(304, more.length === 0 ? (answer.notModified as string[]) : [...answer.notModified, ...more]);
    res.end();
    return;
  }
  res.writeHead(200, more.length === 0 ? (answer.headers as string[]) : [...answer.headers, ...more]);
  res.end(answer.body);
}

/** `send` for a client that takes a coding: the 304 needs no compressing, only the tag it would have. */
function sendCoded(req: IncomingMessage, res: ServerResponse, answer: Answer, coding: Coding, more: string[]): void {
  const etag = codedTag(answer.etag, coding);
  if (etagMatches(req.headers['if-none-match'], etag)) {
    res.writeHead(304, [...notModifiedBy(etag), ...more]);
    res.end();
    return;
  }
  coded(answer, coding).then(
    (a) => {
      res.writeHead(200, more.length === 0 ? (a.headers as string[]) : [...a.headers, ...more]);
      res.end(a.body);
    },
    (e: unknown) => {
      sendError(res, e);
    },
  );
}

/** Answers a read with `value` as JSON, its ETag, and a 304 for a client that holds it already. */
const sendRead = (
  req: IncomingMessage,
  res: ServerResponse,
  value: unknown,
  headers?: Record<string, string>,
): void => {
  const body = Buffer.from(JSON.stringify(value));
  send(req, res, jsonAnswer(body, etagOf(body), headers));
};

/**
 * The headers that lead from a full page of events to the next, as `GET /rockets` pages: `Link` to the
 * same query with `after` set to the page's last `cursor`, and that cursor in `X-Next-Cursor`. A page
 * shorter than its limit (by default, the largest page) is the last; a full one may be followed by an
 * empty one.
 */
function nextPage(
  path: string,
  q: URLSearchParams,
  events: readonly StoredEvent[],
  limit: number | undefined,
  cursor: (e: StoredEvent) => number,
): Record<string, string> {
  const last = events[events.length - 1];
  if (last === undefined || events.length < (limit ?? MAX_PAGE)) return {};
  const next = new URLSearchParams(q);
  next.set('after', String(cursor(last)));
  return { link: `<${path}?${next.toString()}>; rel="next"`, 'x-next-cursor': String(cursor(last)) };
}

/** The OpenAPI document's answer, made when first asked for. */
let openApi: Answer | undefined;

/** `/rockets/:channel` and `/rockets/:channel/events`. */
const ROCKET_PATH = /^\/rockets\/([^/]+)(\/events)?$/;

/**
 * The query parameters each route reads, by path (`/rockets/:channel` and its `/events` by name). Any
 * other is refused: a misspelt one (`?sortt=speed`) would otherwise be ignored without a word, and the
 * client would take the answer for the one it asked for.
 */
export const PARAMETERS: Readonly<Record<string, readonly string[]>> = {
  '/messages': [],
  '/health': [],
  '/openapi.json': [],
  '/gaps': ['limit'],
  '/events': ['after', 'limit'],
  '/rockets': ['sort', 'order', 'status', 'limit', 'after'],
  '/rockets/:channel': ['asOf'],
  '/rockets/:channel/events': ['after', 'limit'],
};

/** The read routes with a fixed path: those of `PARAMETERS`, the one list of routes the router answers. */
const READ_PATHS: ReadonlySet<string> = new Set(
  Object.keys(PARAMETERS).filter((route) => route !== '/messages' && !route.includes(':')),
);

/**
 * The methods a REST path answers besides OPTIONS (which the server answers on every route, listing
 * these), or undefined for a path that is no route.
 */
export function methodsOf(path: string): string | undefined {
  if (path === '/messages') return 'POST';
  if (READ_PATHS.has(path) || ROCKET_PATH.test(path)) return READ_METHODS;
  return undefined;
}

/** The refusal of the first query parameter `path`'s route does not read, naming those it does; or undefined. */
function unknownParameter(q: URLSearchParams, path: string): ValidationError | undefined {
  const m = ROCKET_PATH.exec(path);
  const route = m === null ? path : m[2] === undefined ? '/rockets/:channel' : '/rockets/:channel/events';
  const known = PARAMETERS[route] ?? [];
  for (const name of q.keys()) {
    if (known.includes(name)) continue;
    const takes = known.length === 0 ? 'takes none' : `takes ${known.join(', ')}`;
    return new ValidationError([{ field: name, problem: `is not a query parameter of ${route}, which ${takes}` }]);
  }
  return undefined;
}

/**
 * A message body as JSON, whatever its Content-Type says: some senders mislabel JSON, and refusing
 * it would lose data. Throws BodyRefusedError for bytes that are not UTF-8, ValidationError for
 * text that is not JSON.
 */
function jsonOf(bytes: Buffer): unknown {
  const text = utf8Text(bytes);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ValidationError([
      { field: '', problem: `the body is not valid JSON (${e instanceof Error ? e.message : 'parse error'})` },
    ]);
  }
}

/**
 * The seed's REST routes, as a thin shim over the same application service GraphQL uses. Answers and
 * returns true when it owns the path; false lets the caller answer 404.
 */
export function createRestRoutes(
  service: RocketService,
  options: { readonly maxBodyBytes: number; readonly ingestToken?: string | undefined; readonly log?: Logger },
) {
  const { maxBodyBytes, ingestToken, log } = options;
  /**
   * Answers of `GET /rockets` and `GET /rockets/:channel` by request target (path and query, as sent): a
   * repeated read costs a map lookup and a write, with no URL, validation, service call or promise.
   */
  const answers = new KeptAnswers<Answer>(ANSWER_CACHE_SIZE, weightOf);
  /** Sends a read's answer, and keeps it for its target if the store has not changed since `since`. */
  const answer = (req: IncomingMessage, res: ServerResponse, since: number | undefined, a: Answer): void => {
    const target = req.url ?? '';
    if (target.length <= ANSWER_CACHE_MAX_TARGET) answers.set(target, since, a);
    send(req, res, a);
  };
  async function postMessage(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!mayWrite(req.headers.authorization, ingestToken)) {
      req.resume();
      throw new UnauthenticatedError('POST /messages needs Authorization: Bearer <INGEST_TOKEN>');
    }
    // A body refused unread (413, 415) is no message refused by its content: it is not counted.
    const bytes = await readBody(req, maxBodyBytes);
    let body: unknown;
    try {
      body = jsonOf(bytes);
    } catch (refusal) {
      // A body that holds no JSON value is a message refused by its content, counted as one that holds no
      // envelope is.
      throw service.refuseUnreadable(refusal);
    }
    const outcome = await service.submit(body);
    sendJson(res, 202, outcome);
  }

  async function route(req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> {
    const path = url.pathname;
    const q = url.searchParams;
    const methods = methodsOf(path);
    if (methods === undefined) return false;
    const method = req.method ?? 'GET';
    if (method !== methods && !methods.split(', ').includes(method)) {
      sendMethodNotAllowed(res, methods);
      return true;
    }
    // Most requests (every POST /messages) carry no query: nothing to look up.
    const refusal = q.size === 0 ? undefined : unknownParameter(q, path);
    if (refusal !== undefined) {
      req.resume();
      throw refusal;
    }

    if (path === '/messages') {
      await postMessage(req, res);
      return true;
    }
    if (path === '/health') {
      sendJson(res, 200, await service.health());
      return true;
    }
    if (path === '/openapi.json') {
      if (openApi === undefined) {
        const body = Buffer.from(JSON.stringify(OPENAPI));
        openApi = jsonAnswer(body, etagOf(body));
      }
      send(req, res, openApi);
      return true;
    }
    if (path === '/gaps') {
      sendRead(req, res, (await service.gaps({ limit: count(q, 'limit') })).map(gapJson));
      return true;
    }
    if (path === '/events') {
      const limit = count(q, 'limit');
      const events = await service.events({ afterPosition: count(q, 'after'), limit });
      sendRead(
        req,
        res,
        events.map(eventJson),
        nextPage(path, q, events, limit, (e) => e.position),
      );
      return true;
    }
    if (path === '/rockets') {
      const since = service.readVersion();
      const page = await service.rockets({
        sort: param(q, 'sort'),
        order: param(q, 'order'),
        status: param(q, 'status'),
        limit: count(q, 'limit'),
        after: param(q, 'after'),
      });
      const headers: Record<string, string> = {};
      if (page.nextCursor !== null) {
        const next = new URLSearchParams(q);
        next.set('after', page.nextCursor);
        headers.link = `</rockets?${next.toString()}>; rel="next"`;
        headers['x-next-cursor'] = page.nextCursor;
      }
      const body = pageBody(page);
      answer(req, res, since, jsonAnswer(body, keptTag(body), headers));
      return true;
    }
    const m = ROCKET_PATH.exec(path);
    if (m) {
      const channel = decodeSegment(m[1] as string);
      const asOf = m[2] === undefined ? param(q, 'asOf') : undefined;
      if (asOf !== undefined) {
        // Time travel: a message number, or a server time (RFC 3339). Unencoded in a query string, the `+`
        // of an offset reads as a space, which an RFC 3339 time never holds there.
        // Digits are a message number, however many: one past 2^53 - 1 is refused as a number, not as a time.
        const point = /^\d+$/.test(asOf)
          ? { messageNumber: Number(asOf) }
          : { time: asOf.replace(/ (\d\d:\d\d)$/, '+$1') };
        // An issue with it names the parameter the client sent, not the service's field.
        const past = await inCallersTerms(service.rocketAsOf(channel, point), {
          'asOf.messageNumber': 'asOf',
          'asOf.time': 'asOf',
        });
        sendRead(req, res, { ...pastRocketJson(past), asOf: point });
        return true;
      }
      const since = service.readVersion();
      const rocket = await service.rocket(channel);
      if (m[2] === undefined) {
        const body = rocketBody(rocket);
        answer(req, res, since, jsonAnswer(body, keptTag(body)));
      } else {
        // Here `after` is a message number: an issue with it names the parameter the client sent.
        const limit = count(q, 'limit');
        const events = await inCallersTerms(service.events({ channel, afterMessageNumber: count(q, 'after'), limit }), {
          afterMessageNumber: 'after',
        });
        sendRead(
          req,
          res,
          events.map(eventJson),
          nextPage(path, q, events, limit, (e) => e.messageNumber),
        );
      }
      return true;
    }
    return false;
  }

  return {
    /**
     * Answers a `GET` or `HEAD` of `/rockets` or `/rockets/:channel` asked before with the same target, if the
     * store cannot have changed since: returns true once answered, false to route the request.
     */
    replay(req: IncomingMessage, res: ServerResponse, requestId: string): boolean {
      if (req.method !== 'GET' && req.method !== 'HEAD') return false;
      const hit = answers.get(req.url ?? '', service.readVersion());
      if (hit === undefined) return false;
      send(req, res, hit, 'x-request-id', requestId);
      return true;
    },
    /** Answers the request if the path is a REST route; resolves to false otherwise. Never rejects. */
    async handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> {
      try {
        return await route(req, res, url);
      } catch (e) {
        sendError(res, e, log);
        return true;
      }
    },
  };
}
