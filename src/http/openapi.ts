/**
 * The REST API described as OpenAPI 3.1, served at `GET /openapi.json`: the routes, their parameters, and
 * the shape of every answer, refusals included. Built from the same constants the routes and the domain
 * check against, and checked against the routes and their real answers by the test suite
 * (test/http/openapi.test.ts), so it says what the server does.
 */
import { BUFFER_CAP_SETTINGS, type DomainErrorCode } from '../domain/errors';
import { EVENT_TYPES, MAX_CHANNEL_LENGTH, MAX_TEXT_LENGTH, MESSAGE_TYPES, PAYLOAD_FIELDS } from '../domain/message';
import { ROCKET_STATUSES } from '../domain/rocket';
import { MAX_PAGE } from '../engine/service';
import { ROCKET_SORT_FIELDS } from '../store/types';
import type { StoreFault } from '../store/faults';

type Schema = Readonly<Record<string, unknown>>;

const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` });
const nullable = (schema: Schema): Schema => ({ anyOf: [schema, { type: 'null' }] });
const object = (properties: Record<string, Schema>, optional: readonly string[] = []): Schema => ({
  type: 'object',
  properties,
  required: Object.keys(properties).filter((p) => !optional.includes(p)),
  additionalProperties: false,
});

const SAFE_INTEGER = Number.MAX_SAFE_INTEGER;
const count: Schema = { type: 'integer', minimum: 0, maximum: SAFE_INTEGER };
const messageNumber: Schema = { type: 'integer', minimum: 1, maximum: SAFE_INTEGER };
const time: Schema = { type: 'string', format: 'date-time' };
const channel: Schema = { type: 'string', minLength: 1, maxLength: MAX_CHANNEL_LENGTH };

/** A payload as the contract takes it: text of at most MAX_TEXT_LENGTH, amounts from 0 to 2^53 − 1. */
const payload = (type: keyof typeof PAYLOAD_FIELDS, extraAllowed: boolean): Schema => {
  const fields = Object.entries(PAYLOAD_FIELDS[type]).map(([name, field]): [string, Schema] => [
    name,
    field.kind === 'text'
      ? { type: 'string', maxLength: MAX_TEXT_LENGTH }
      : { type: 'number', minimum: 0, maximum: SAFE_INTEGER },
  ]);
  const schema = object(Object.fromEntries(fields));
  return extraAllowed ? { ...schema, additionalProperties: true } : schema;
};

/** A rocket's own fields, now (with its buffer) or as it was (with the point in time asked for). */
const rocketFields: Record<string, Schema> = {
  channel: { type: 'string' },
  type: nullable({ type: 'string' }),
  mission: nullable({ type: 'string' }),
  speed: { type: 'number', minimum: 0, maximum: SAFE_INTEGER },
  status: { enum: [...ROCKET_STATUSES] },
  explodedReason: nullable({ type: 'string' }),
  launchedAt: nullable(time),
  updatedAt: time,
  lastMessageNumber: messageNumber,
};

/**
 * The codes a REST refusal carries in `error.code` (the fields some of them add are optional in
 * `Error`): the domain's, and those of the transport (src/app.ts, src/http/io.ts).
 */
const ERROR_CODES: readonly (
  | DomainErrorCode
  | StoreFault['code']
  | 'PAYLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'METHOD_NOT_ALLOWED'
  | 'FORBIDDEN'
  | 'BAD_REQUEST'
)[] = [
  'BAD_USER_INPUT',
  'CONFLICT',
  'NOT_FOUND',
  'UNAUTHENTICATED',
  'CHANNEL_BUFFER_FULL',
  'BUFFER_FULL',
  'UNAVAILABLE',
  'STORAGE_FULL',
  'STORE_DAMAGED',
  'PAYLOAD_TOO_LARGE',
  'UNSUPPORTED_MEDIA_TYPE',
  'METHOD_NOT_ALLOWED',
  'FORBIDDEN',
  'BAD_REQUEST',
];

const schemas: Record<string, Schema> = {
  Envelope: {
    type: 'object',
    description:
      'A message as senders send it (the seed’s envelope). Unknown extra fields are ignored. A channel holding NUL or a lone surrogate, a time whose instant in UTC falls outside the years 0000–9999, and fractions of a second finer than nanoseconds are refused too.',
    required: ['metadata', 'message'],
    properties: {
      metadata: {
        type: 'object',
        required: ['channel', 'messageNumber', 'messageTime', 'messageType'],
        properties: {
          channel: { ...channel, not: { enum: ['.', '..'] }, pattern: '\\S' },
          messageNumber,
          messageTime: { ...time, description: 'RFC 3339, any offset, at most 9 digits of fractional seconds' },
          messageType: { enum: [...MESSAGE_TYPES] },
        },
      },
      message: { type: 'object' },
    },
    allOf: MESSAGE_TYPES.map((type) => ({
      if: {
        type: 'object',
        properties: { metadata: { type: 'object', properties: { messageType: { const: type } } } },
      },
      then: { type: 'object', properties: { message: payload(type, true) } },
    })),
  },
  SubmitResult: object({
    status: { enum: ['applied', 'buffered', 'duplicate'] },
    channel: { type: 'string' },
    messageNumber,
  }),
  Buffer: {
    ...object({ waitingFor: messageNumber, count, oldestSince: nullable(time) }),
    description:
      'What the reorder buffer holds for a rocket: the number it waits for, how many wait behind it, since when.',
  },
  Rocket: object({ ...rocketFields, buffer: ref('Buffer') }),
  PastRocket: {
    ...object({ ...rocketFields, asOf: { oneOf: [object({ messageNumber }), object({ time })] } }),
    description: 'A rocket as it was right after a message, or at a server time (time travel): no buffer.',
  },
  Event: {
    type: 'object',
    required: ['position', 'channel', 'messageNumber', 'messageType', 'messageTime', 'payload', 'recordedAt'],
    additionalProperties: false,
    properties: {
      position: { ...messageNumber, description: 'The event’s place in the whole log' },
      channel: { type: 'string' },
      messageNumber,
      messageType: { enum: [...EVENT_TYPES] },
      messageTime: { type: 'string', description: 'As the sender wrote it (for MessageSkipped, the server time)' },
      payload: { type: 'object' },
      recordedAt: time,
    },
    allOf: EVENT_TYPES.map((type) => ({
      if: { type: 'object', properties: { messageType: { const: type } } },
      then: { type: 'object', properties: { payload: payload(type, false) } },
    })),
  },
  Gap: object({ channel: { type: 'string' }, waitingFor: messageNumber, count, oldestSince: time }),
  Health: object({
    status: { const: 'ok' },
    store: { enum: ['sqlite', 'postgres', 'memory'] },
    lanes: object({ count: { type: 'integer', minimum: 1 }, depths: { type: 'array', items: count } }),
    rockets: count,
    events: count,
    buffered: count,
    subscribers: count,
  }),
  Error: object({
    error: object(
      {
        code: { enum: [...ERROR_CODES] },
        message: { type: 'string' },
        requestId: { type: 'string' },
        issues: { type: 'array', items: object({ field: { type: 'string' }, problem: { type: 'string' } }) },
        channel: { type: 'string' },
        messageNumber,
        skipped: { const: true },
        retryAfterSeconds: { type: 'integer', minimum: 0 },
        waitingFor: messageNumber,
        cap: { enum: Object.values(BUFFER_CAP_SETTINGS) },
        limit: count,
      },
      ['requestId', 'issues', 'channel', 'messageNumber', 'skipped', 'retryAfterSeconds', 'waitingFor', 'cap', 'limit'],
    ),
  }),
};

const json = (schema: Schema, description: string, headers?: Record<string, unknown>) => ({
  description,
  ...(headers ? { headers } : {}),
  content: { 'application/json': { schema } },
});
const refusal = (description: string, headers?: Record<string, unknown>) => json(ref('Error'), description, headers);

const header = (description: string, schema: Schema = { type: 'string' }) => ({ description, schema });
/** A header every such answer carries. */
const always = (description: string, schema?: Schema) => ({ ...header(description, schema), required: true });
const ETAG = always('A strong validator of the body: send it back in If-None-Match');
const NEXT_PAGE = {
  ETag: ETAG,
  Link: header('`<…>; rel="next"`: the next page, on a full page'),
  'X-Next-Cursor': header('The cursor of the next page, to pass as `after`'),
};
const RETRY_AFTER = { 'Retry-After': always('Seconds to wait before sending again', { type: 'integer' }) };
/** A read the store failed (or something else unexpected did): src/http/io.ts sendError. */
const UNAVAILABLE = refusal(
  "UNAVAILABLE: the store failed (or something unexpected did); retry. STORAGE_FULL: the server's disk is full; retry once space is freed",
  RETRY_AFTER,
);
/** A store whose file is damaged: src/store/faults.ts. */
const DAMAGED = refusal(
  "STORE_DAMAGED: the server's store is damaged (a SQLite page that is not what it should be): retrying will not help until it is repaired",
);

/**
 * Answers given before the server knows which operation a request is, so on any path (see the info
 * description): a method the path does not take, a write from an origin not allowed, a target that is
 * no URL. POST /messages, the one write, lists the 403 too.
 */
const responses = {
  MethodNotAllowed: refusal('METHOD_NOT_ALLOWED: a method the path does not take (HEAD and GET of /messages too)', {
    Allow: always('The methods the path takes, OPTIONS included: `GET, HEAD, OPTIONS` or `POST, OPTIONS`'),
  }),
  Forbidden: refusal(
    'FORBIDDEN: a method other than GET, HEAD and OPTIONS, from a page of an origin ALLOWED_ORIGINS does not allow: refused before its body is read, nothing stored',
  ),
  BadRequestTarget: refusal('BAD_REQUEST: the request target is no URL (`GET http://[bad/rockets`)'),
};

const query = (name: string, schema: Schema, description: string) => ({ name, in: 'query', schema, description });
const limit = query(
  'limit',
  { type: 'integer', minimum: 1, maximum: MAX_PAGE },
  `At most this many (default and most ${MAX_PAGE})`,
);
const channelPath = { name: 'channel', in: 'path', required: true, schema: channel };
const ifNoneMatch = { name: 'If-None-Match', in: 'header', schema: { type: 'string' }, description: 'An ETag held' };

/**
 * A read: 200 with its ETag, 304 to a client that holds it, 400 for a bad parameter, 503 when the store
 * failed.
 */
const read = (
  summary: string,
  parameters: readonly unknown[],
  ok: ReturnType<typeof json>,
  more: Record<string, unknown> = {},
) => ({
  get: {
    summary,
    parameters: [...parameters, ifNoneMatch],
    responses: {
      200: ok,
      304: { description: 'Not modified: the If-None-Match named this answer’s ETag', headers: { ETag: ETAG } },
      400: refusal('A parameter is malformed, given twice, or not one this route reads'),
      500: DAMAGED,
      503: UNAVAILABLE,
      ...more,
    },
  },
});

const paths = {
  '/messages': {
    post: {
      summary: 'Submit one message; answered once it is durably recorded',
      description:
        'The body is parsed as JSON whatever its Content-Type. A message from the future waits in the reorder buffer; the same message again is a duplicate and changes nothing.',
      // Open unless the server is given an INGEST_TOKEN.
      security: [{}, { ingestToken: [] }],
      requestBody: { required: true, content: { 'application/json': { schema: ref('Envelope') } } },
      responses: {
        202: json(ref('SubmitResult'), 'Recorded: applied, buffered, or a duplicate of one recorded before'),
        400: refusal('Not a valid envelope, or a body that is not UTF-8 JSON: nothing stored'),
        401: refusal('INGEST_TOKEN is set and the request does not carry it as a bearer token'),
        403: responses.Forbidden,
        409: refusal('The same channel and number with other content (or a number the gap policy skipped)'),
        413: refusal('The body is larger than MAX_BODY_BYTES'),
        415: refusal('A compressed body (Content-Encoding)'),
        429: refusal('The channel’s reorder buffer is full (CHANNEL_BUFFER_FULL): nothing stored, retry', RETRY_AFTER),
        503: refusal(
          "The whole reorder buffer is full (BUFFER_FULL: nothing stored), or the store failed (nothing acknowledged; a message stored after all is answered duplicate), or the server's disk is full (STORAGE_FULL: nothing stored): retry",
          RETRY_AFTER,
        ),
        500: DAMAGED,
      },
    },
  },
  '/rockets': read(
    'Every rocket, sorted, filtered and paged',
    [
      query(
        'sort',
        { enum: [...ROCKET_SORT_FIELDS], default: 'channel' },
        'The field to sort by (channel breaks ties)',
      ),
      query('order', { enum: ['asc', 'desc'], default: 'asc' }, 'The direction'),
      query('status', { enum: [...ROCKET_STATUSES] }, 'Only rockets in this status'),
      query(
        'limit',
        { type: 'integer', minimum: 1, maximum: MAX_PAGE },
        `At most this many (at most ${MAX_PAGE}); every rocket, unpaged, when left out`,
      ),
      query('after', { type: 'string' }, 'The cursor of a page (X-Next-Cursor), for the same sort'),
    ],
    json({ type: 'array', items: ref('Rocket') }, 'A page of rockets', NEXT_PAGE),
  ),
  '/rockets/{channel}': read(
    'One rocket, or it as it was (time travel, with asOf)',
    [
      channelPath,
      query('asOf', { type: 'string' }, 'A message number (digits), or a server time (RFC 3339): the state then'),
    ],
    json({ oneOf: [ref('Rocket'), ref('PastRocket')] }, 'The rocket (with asOf, as it was then)', { ETag: ETAG }),
    { 404: refusal('No such rocket (with asOf: none yet at that point)') },
  ),
  '/rockets/{channel}/events': read(
    'A rocket’s applied events, in number order',
    [channelPath, query('after', count, 'Only events after this message number'), limit],
    json({ type: 'array', items: ref('Event') }, 'A page of events', NEXT_PAGE),
    { 404: refusal('No such rocket') },
  ),
  '/events': read(
    'Every applied event, in the order of the log',
    [query('after', count, 'Only events after this position'), limit],
    json({ type: 'array', items: ref('Event') }, 'A page of events', NEXT_PAGE),
  ),
  '/gaps': read(
    'Open gaps of the reorder buffer, oldest first',
    [limit],
    json({ type: 'array', items: ref('Gap') }, 'Channels with buffered messages, rocket or not', { ETag: ETAG }),
  ),
  '/health': {
    get: {
      summary: 'Whether the server is up, with its store, lanes and counts',
      responses: {
        200: json(ref('Health'), 'Up'),
        400: refusal('A query parameter: this route reads none'),
        500: DAMAGED,
        503: UNAVAILABLE,
      },
    },
  },
  '/openapi.json': {
    get: {
      summary: 'This document',
      parameters: [ifNoneMatch],
      responses: {
        200: { description: 'OpenAPI 3.1', headers: { ETag: ETAG }, content: { 'application/json': {} } },
        304: { description: 'Not modified', headers: { ETag: ETAG } },
        400: refusal('A query parameter: this route reads none'),
      },
    },
  },
};

/** The document, built once. */
export const OPENAPI = {
  openapi: '3.1.0',
  info: {
    title: 'rockets REST API',
    version: '1.0.0',
    description:
      'The seed’s REST routes, as a shim over the service GraphQL serves at /graphql (see schema/schema.graphql). Every route answers OPTIONS (204, with Allow), and each read answers HEAD as GET. Errors are `{"error": {"code", "message", …}}`. Some answers come before the server knows which operation a request is, on any path (components.responses): a method a path does not take gets 405 with Allow (MethodNotAllowed); a method other than GET, HEAD and OPTIONS from a page of an origin ALLOWED_ORIGINS does not allow, 403 before that (Forbidden); a request target that is no URL, 400 (BadRequestTarget). Reads carry a strong ETag and answer 304 to an If-None-Match that names it; an answer of 1 KiB or more is compressed for a client whose Accept-Encoding takes Brotli or gzip (Brotli when it weighs both alike), with its own ETag.',
  },
  jsonSchemaDialect: 'https://spec.openapis.org/oas/3.1/dialect/base',
  paths,
  components: {
    schemas,
    responses,
    securitySchemes: {
      ingestToken: { type: 'http', scheme: 'bearer', description: 'The INGEST_TOKEN the server is given, if any' },
    },
  },
} as const;
