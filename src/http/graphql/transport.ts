/**
 * The GraphQL layer on the shared node:http server: GraphQL over HTTP through graphql-http, graphql-ws on the
 * same path, and GraphiQL, all running operations through one yoga envelop pipeline.
 */
import type * as RenderGraphiQL from '@graphql-yoga/render-graphiql';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { EnvelopArmorPlugin } from '@escape.tech/graphql-armor';
import {
  GraphQLError,
  getOperationAST,
  NoSchemaIntrospectionCustomRule,
  OperationTypeNode,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  type GraphQLSchema,
  type ValidationContext,
} from 'graphql';
import { createHandler, type Request as HttpRequest, type Response as HttpResponse } from 'graphql-http';
import { useServer } from 'graphql-ws/use/ws';
import { createYoga, isAsyncIterable, type Plugin, type PromiseOrValue } from 'graphql-yoga';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import type { GraphQLContext, StreamResume } from '../../../schema/builder';
import { schema } from '../../../schema/index';
import type { Config } from '../../config';
import type { RocketService } from '../../engine/service';
import { storeFaultOf } from '../../store/faults';
import {
  bearerOf,
  BodyRefusedError,
  BodyTooLargeError,
  corsHeaders,
  codedTag,
  codingOf,
  compress,
  COMPRESS_MIN_BYTES,
  etagMatches,
  etagOf,
  mayWrite,
  originAllowed,
  readBody,
  refuseUpgrade,
  sameSecret,
  sendPreflight,
  utf8Text,
  type Coding,
} from '../io';
import { AnswerCache, type KeptReply, type Question } from './answer-cache';
import { BatchingWebSocket } from './batching-websocket';
import {
  coded,
  maskUnexpected,
  subscriptionOverHttp,
  tooManyOperations,
  unexpected,
  unresolvedOperation,
  useDomainErrors,
  withoutHints,
  withoutHttpHints,
  yogaLogger,
} from './errors';
import { createEventStreams, prefersEventStream } from './event-stream';
import { useGraphQlJitWhereItFits } from './jit';
import { SharedSubscriptions } from './shared-subscriptions';

export interface GraphQLTransport {
  /** Answers a request to `/graphql`. Never rejects: failures become GraphQL error responses. */
  handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void>;
  /** Takes over an HTTP upgrade to `/graphql` for graphql-ws, or refuses it (403 for an origin not allowed). */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /**
   * Closes every WebSocket with 1001 (Going Away) and a reason, ending their subscriptions, and stops taking
   * new ones. Sockets that do not finish the closing handshake within a second are cut.
   */
  close(): Promise<void>;
}

/**
 * graphql-armor limits, checked before execution; a request over any of them gets a GraphQL error
 * (HTTP 400 with `application/graphql-response+json`) naming the limit. Introspection is exempt from depth
 * and cost, so GraphiQL works; it is not exempt from the token limit, and GraphiQL's introspection query
 * takes about 200 tokens.
 */
export const ARMOR_LIMITS = {
  /** The schema has no cycles: its deepest operation, rockets > edges > node > events > payload > field, is 6. */
  maxDepth: 8,
  /**
   * Armor's default weights: object 2, scalar 1, x1.5 per level, and a selection on a field with a literal
   * `first: n` counts n times (a variable or no `first` counts once). So the page REST answers, 100 rockets
   * with every field and `buffer`, costs 3,987.5 as `nodes`, 4,737.5 with `pageInfo { hasNextPage endCursor }`,
   * and 7,606.25 as `edges { cursor node }` with the whole `pageInfo`: all pass, with room to spare. Two such
   * `edges` pages in one operation (15,212.5) do not, nor does a page of 100 rockets with every field of their
   * events (14,759.375 with only `channel` beside them), nor a page of 1,000 rockets with every field (39,875).
   * A `first` given as a variable, or left out, counts once: every field of every rocket and of their events
   * then costs 282, and the alias and token limits bound how many such selections one operation holds. What
   * such an operation may read of the event log is bounded apart (schema/budget.ts: 10,000 events).
   */
  maxCost: 10_000,
  /** Batches go through `submitMessages`, not aliases. */
  maxAliases: 15,
  /** Bounds parsing work. Large inputs belong in variables, which do not count. */
  maxTokens: 1000,
  maxDirectives: 20,
} as const;

const GRAPHQL_RESPONSE = 'application/graphql-response+json';

/**
 * The methods `/graphql` answers besides OPTIONS: HEAD is answered as GET is, without the body (as REST
 * answers it), so a HEAD that checks the endpoint sees what a GET would.
 */
const GRAPHQL_METHODS = 'GET, HEAD, POST';

/** WebSocket close code for a server going down (RFC 6455). */
const GOING_AWAY = 1001;
/** graphql-ws's close code for a `subscribe` whose id an operation of the socket already has. */
const ID_IN_USE = 4409;

/** How long `close()` waits for clients to answer the closing handshake before cutting them. */
const WS_CLOSE_GRACE_MS = 1000;

/**
 * Validation-time limits report into the validation context, so they come back with the other validation
 * errors (armor's default throws out of `validate`). The token limit acts while parsing and throws a syntax
 * error, which is how parse failures are answered anyway.
 */
const reportInValidation = {
  propagateOnRejection: false,
  onReject: [(ctx: ValidationContext | null, error: GraphQLError) => ctx?.reportError(error)],
};

const armor = (): Parameters<typeof EnvelopArmorPlugin>[0] => ({
  maxDepth: { n: ARMOR_LIMITS.maxDepth, ...reportInValidation },
  costLimit: { maxCost: ARMOR_LIMITS.maxCost, ...reportInValidation },
  // Armor exempts `__typename` by default; an alias costs parsing and answer space whatever it names.
  maxAliases: { n: ARMOR_LIMITS.maxAliases, allowList: [], ...reportInValidation },
  maxDirectives: { n: ARMOR_LIMITS.maxDirectives, ...reportInValidation },
  maxTokens: { n: ARMOR_LIMITS.maxTokens },
  // Armor's only takes "Did you mean …?" out of some validation errors: useNoSuggestions takes it out of all.
  blockFieldSuggestion: { enabled: false },
});

const useNoIntrospection = (): Plugin => ({
  onValidate: ({ addValidationRule }) => addValidationRule(NoSchemaIntrospectionCustomRule),
});

/** graphql-js's hints at names of the schema: fields, arguments, types, input fields, enum values. */
const SUGGESTION = /\s*Did you mean [^?]*\?/g;

function withoutSuggestions<E extends Error>(errors: readonly E[]): (E | GraphQLError)[] {
  return errors.map((e) => {
    const message = e.message.replace(SUGGESTION, '');
    if (message === e.message || !(e instanceof GraphQLError)) return e;
    const { nodes, source, positions, path, originalError, extensions } = e;
    return new GraphQLError(message, { nodes, source, positions, path, originalError, extensions });
  });
}

/**
 * Takes graphql-js's "Did you mean …?" out of every error: it would reveal the schema that disabled
 * introspection hides. Validation suggests field, argument, type and enum value names; the coercion of
 * variables, which runs with the execution, suggests input fields and enum values.
 */
const useNoSuggestions = (): Plugin => {
  const fromResult = ({ result, setResult }: { result: unknown; setResult: (r: ExecutionResult) => void }) => {
    if (isAsyncIterable(result)) return;
    const r = result as ExecutionResult;
    if (r.errors !== undefined) setResult({ ...r, errors: withoutSuggestions(r.errors) });
  };
  return {
    onValidate:
      () =>
      ({ result, setResult }) => {
        if (result.length > 0) setResult(withoutSuggestions(result));
      },
    onExecute: () => ({ onExecuteDone: fromResult }),
    onSubscribe: () => ({ onSubscribeResult: fromResult }),
  };
};

/** What GraphiQL starts with: our title, subscriptions over graphql-ws, and a first query. */
const GRAPHIQL = {
  title: 'Rockets',
  subscriptionsProtocol: 'WS',
  defaultQuery: 'query Rockets {\n  rockets(first: 10) {\n    nodes { channel type mission speed status }\n  }\n}\n',
} as const;
const GRAPHIQL_TYPE = 'text/html; charset=utf-8';

/**
 * GraphiQL's page with its scripts and styles inlined (this machine's users may have no CDN), and its
 * ETag. The module holds them as nine megabytes of source: loaded when the page is first asked for (about
 * 60 MB of resident memory a server that nobody opens GraphiQL on never pays), then built once. Sent as any
 * read is (`sendRead`): compressed once per coding (2.8 MB, in 86 ms of a pool thread with gzip), and
 * `304` to a browser that has it.
 */
function offlineGraphiQL(): () => { readonly body: Buffer; readonly tag: string } {
  let page: { readonly body: Buffer; readonly tag: string } | undefined;
  return () => {
    if (page === undefined) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use, on purpose.
      const { renderGraphiQL } = require('@graphql-yoga/render-graphiql') as typeof RenderGraphiQL;
      const body = Buffer.from(renderGraphiQL(GRAPHIQL));
      page = { body, tag: etagOf(body, GRAPHIQL_TYPE) };
    }
    return page;
  };
}

/** What the transports use of yoga's envelop pipeline (`yoga.getEnveloped()`), typed. */
interface Enveloped {
  readonly schema: GraphQLSchema;
  parse(source: string): DocumentNode;
  validate(schema: GraphQLSchema, document: DocumentNode): readonly GraphQLError[];
  contextFactory(): PromiseOrValue<Record<string, unknown>>;
  execute(args: ExecutionArgs): PromiseOrValue<ExecutionResult>;
  subscribe(args: ExecutionArgs): PromiseOrValue<AsyncIterableIterator<ExecutionResult> | ExecutionResult>;
}

/** Execution arguments that remember the envelop pipeline which parsed and validated them. */
const ENVELOPED = Symbol('enveloped');
type PreparedArgs = ExecutionArgs & { contextValue: Record<string, unknown>; readonly [ENVELOPED]: Enveloped };

function envelopedOf(args: ExecutionArgs): Enveloped {
  const enveloped = (args as Partial<PreparedArgs>)[ENVELOPED];
  if (!enveloped) throw new Error('execution arguments did not come from prepare()');
  return enveloped;
}

const isErrorList = (p: PreparedArgs | readonly GraphQLError[]): p is readonly GraphQLError[] => Array.isArray(p);

/**
 * The media type graphql-http answers with for an `Accept` header, as its handler chooses it (the first
 * acceptable entry wins); only asked for requests graphql-http has accepted already.
 */
function responseMediaType(accept: string | undefined): string {
  for (const entry of (accept ?? '*/*').replace(/\s/g, '').toLowerCase().split(',')) {
    const [mediaType, ...params] = entry.split(';');
    const charset = params.find((p) => p.includes('charset=')) ?? 'charset=utf-8';
    if (mediaType === GRAPHQL_RESPONSE && charset === 'charset=utf-8') return `${GRAPHQL_RESPONSE}; charset=utf-8`;
    if (
      (mediaType === 'application/json' || mediaType === 'application/*' || mediaType === '*/*') &&
      (charset === 'charset=utf-8' || charset === 'charset=utf8')
    )
      return 'application/json; charset=utf-8';
  }
  return 'application/json; charset=utf-8';
}

/**
 * A 405 of a GraphQL-over-HTTP request: an `errors` list with `METHOD_NOT_ALLOWED` and the message, in
 * the media type the request accepts, with `Allow`.
 */
function methodNotAllowed(accept: string | undefined, allow: string, message: string): HttpResponse {
  const errors = [{ message, extensions: { code: 'METHOD_NOT_ALLOWED' } }];
  return [
    JSON.stringify({ errors }),
    {
      status: 405,
      statusText: 'Method Not Allowed',
      headers: { allow, 'content-type': responseMediaType(accept) },
    },
  ];
}

/**
 * GraphQL over HTTP: a subscription is refused with BAD_REQUEST (graphql-ws runs it), and a mutation
 * over GET (or HEAD, asked as GET) is a 405 with `Allow: POST`. Answered before graphql-http's own
 * refusals, so that they say why, with a code, in a body of the media type asked for (graphql-http's
 * subscription refusal has no code under `application/json`, and its 405 a body of no type).
 */
function notOverHttp(
  req: IncomingMessage,
  /** Asked with GET, or HEAD (asked as GET). */
  overGet: boolean,
  prepared: PreparedArgs | readonly GraphQLError[],
): PreparedArgs | readonly GraphQLError[] | HttpResponse {
  if (isErrorList(prepared)) return prepared;
  const operation = getOperationAST(prepared.document, prepared.operationName)?.operation;
  if (operation === OperationTypeNode.SUBSCRIPTION) return [subscriptionOverHttp()];
  if (operation !== OperationTypeNode.MUTATION || !overGet) return prepared;
  return methodNotAllowed(
    req.headers.accept,
    'POST',
    'mutations need POST: a GET (or HEAD) of /graphql only runs queries',
  );
}

function sendText(res: ServerResponse, status: number, body: string, headers: Record<string, string>): void {
  res.writeHead(status, { ...headers, 'content-length': String(Buffer.byteLength(body)) });
  res.end(body);
}

/**
 * What a query's answer over GET (or HEAD) tells caches, the browser's too, as REST's reads do: keep it, but
 * ask again each time, with `If-None-Match`; and keep one per Origin (the CORS allowance), per Accept (the
 * media type of the answer) and per Accept-Encoding (Brotli, gzip or neither).
 */
const REVALIDATE = { 'cache-control': 'no-cache', vary: 'origin, accept, accept-encoding' } as const;

/** The coding an answer of `length` goes compressed with: 1 KiB or more, to a client that takes one. */
const codingFor = (req: IncomingMessage, length: number): Coding | undefined =>
  length >= COMPRESS_MIN_BYTES ? codingOf(req.headers['accept-encoding']) : undefined;

/**
 * Compressed bodies of the answer cache's, made once per coding (a kept answer is sent again and again). One
 * lives as long as its body and is smaller than it; browsers all take Brotli, so the answer cache's bound at
 * most doubles in practice (triples at worst).
 */
const codedBodies: Record<Coding, WeakMap<Buffer, Promise<Buffer>>> = { br: new WeakMap(), gzip: new WeakMap() };

const varyOnCoding = (vary: string): string => (/accept-encoding/i.test(vary) ? vary : `${vary}, accept-encoding`);

/**
 * Sends a 200 with `body` compressed. A body of the answer cache (`kept`) is compressed once; any other each
 * time. Compressing does not fail on a buffer; if it did, the connection is cut rather than answered with half
 * a promise.
 */
function sendCoded(
  res: ServerResponse,
  headers: Record<string, string>,
  body: Buffer,
  coding: Coding,
  kept: boolean,
): void {
  let made = kept ? codedBodies[coding].get(body) : undefined;
  if (made === undefined) {
    made = compress(body, coding);
    if (kept) codedBodies[coding].set(body, made);
  }
  // Whatever else the answer varies on, a compressed one varies on Accept-Encoding (an answer to POST too).
  const vary = headers.vary === undefined ? 'accept-encoding' : varyOnCoding(headers.vary);
  made.then(
    (compressed) => {
      res.writeHead(200, {
        ...headers,
        vary,
        'content-encoding': coding,
        'content-length': String(compressed.length),
      });
      res.end(compressed);
    },
    () => res.destroy(),
  );
}

/**
 * Sends a query's 200 over GET with `body` and its strong ETag, or a 304 without the body when the request's
 * `If-None-Match` names that tag. `cors` are the request's CORS headers; `headers` hold them and the body's
 * own (its media type). Compressed (`codingFor`), the answer is another representation, with its own tag.
 */
function sendRead(
  req: IncomingMessage,
  res: ServerResponse,
  cors: Record<string, string>,
  headers: Record<string, string>,
  body: Buffer,
  tag: string,
  kept: boolean,
): void {
  const coding = codingFor(req, body.length);
  const etag = coding === undefined ? tag : codedTag(tag, coding);
  if (etagMatches(req.headers['if-none-match'], etag)) {
    res.writeHead(304, { ...cors, ...REVALIDATE, etag });
    res.end();
    return;
  }
  if (coding !== undefined) {
    sendCoded(res, { ...headers, ...REVALIDATE, etag }, body, coding, kept);
    return;
  }
  res.writeHead(200, { ...headers, ...REVALIDATE, etag, 'content-length': String(body.length) });
  res.end(body);
}

/**
 * Whether a client's `connection_init` carries `secret`, as `{token}` or `{authorization: 'Bearer …'}`: a
 * client given different ingest and subscription tokens sends both, one in each field.
 */
function carries(params: Readonly<Record<string, unknown>> | undefined, secret: string): boolean {
  const token = params?.token;
  const bearer = bearerOf(params?.authorization ?? params?.Authorization);
  return (
    (typeof token === 'string' && sameSecret(token, secret)) || (bearer !== undefined && sameSecret(bearer, secret))
  );
}

/**
 * The GraphQL layer on the shared node:http server: queries and mutations over HTTP, subscriptions (and any
 * operation) over graphql-ws on the same path, and GraphiQL.
 *
 * Yoga defines the server (schema, plugins, masking, caches, GraphiQL), but the HTTP hot path does not go
 * through its Fetch-API layer: graphql-http's spec-compliant handler parses the request, and yoga's envelop
 * pipeline (`getEnveloped()`: parse and validation caches, armor, error masking) parses, validates and
 * executes. graphql-ws uses the same pipeline, so every transport has the same rules.
 */
export function createGraphQLTransport(service: RocketService, config: Config, log: Logger): GraphQLTransport {
  const ingestToken = config.ingestToken;
  const graphiql = offlineGraphiQL();
  const shared = new SharedSubscriptions(undefined, () => service.readVersion());
  const yoga = createYoga<Record<string, unknown>, GraphQLContext>({
    schema,
    context: { service, canWrite: true },
    graphqlEndpoint: '/graphql',
    // Served by `handle` (`offlineGraphiQL`), as a read with its ETag and compressed.
    graphiql: false,
    landingPage: false,
    maxRequestBodySize: config.maxBodyBytes,
    logging: yogaLogger(log),
    maskedErrors: { maskError: maskUnexpected },
    plugins: [
      EnvelopArmorPlugin(armor()),
      ...(config.introspection ? [] : [useNoIntrospection(), useNoSuggestions()]),
      // Replaces only the executor: domain errors and yoga's masking work on its results as on graphql-js's.
      useGraphQlJitWhereItFits((r) => yoga.logger.error('graphql-jit compilation failed', r)),
      // After graphql-jit, which leaves subscriptions alone: one execution of each live event per question.
      shared.plugin(),
      useDomainErrors(log),
    ],
  });

  /**
   * Documents that passed validation. Yoga's parse cache hands out one document object per query text, and
   * every validation rule here is fixed for the server's life, so such a document passes again: this skips the
   * validation hooks of every plugin (yoga's own validation cache answers only after them).
   */
  const valid = new WeakSet<DocumentNode>();

  /** Parses and validates through the envelop pipeline; errors are returned, never thrown. */
  async function prepare(
    query: string,
    variables: Readonly<Record<string, unknown>> | null | undefined,
    operationName: string | null | undefined,
    canWrite: boolean,
    requestId?: string,
    resume?: StreamResume,
  ): Promise<PreparedArgs | readonly GraphQLError[]> {
    const enveloped: Enveloped = yoga.getEnveloped({});
    let document: DocumentNode;
    try {
      document = enveloped.parse(query);
    } catch (e) {
      if (!(e instanceof GraphQLError)) {
        yoga.logger.error(e);
        return [unexpected()];
      }
      return [
        e.extensions.code === undefined
          ? new GraphQLError(e.message, {
              source: e.source,
              positions: e.positions,
              extensions: { code: 'GRAPHQL_PARSE_FAILED' },
            })
          : e,
      ];
    }
    if (!valid.has(document)) {
      let errors: readonly GraphQLError[];
      try {
        errors = enveloped.validate(enveloped.schema, document);
      } catch (e) {
        // A validation rule that throws instead of reporting: answered like any validation error.
        if (!(e instanceof GraphQLError)) {
          yoga.logger.error(e);
          return [unexpected()];
        }
        errors = [e];
      }
      if (errors.length > 0) return errors;
      valid.add(document);
    }
    if (getOperationAST(document, operationName) === null) return [unresolvedOperation(document, operationName)];
    return {
      schema: enveloped.schema,
      document,
      variableValues: variables,
      operationName,
      contextValue: { ...(await enveloped.contextFactory()), canWrite, requestId, ...(resume ? { resume } : {}) },
      [ENVELOPED]: enveloped,
    };
  }

  /** Requests whose execution produced no `data` (a request error, such as variables that do not coerce). */
  const requestErrors = new WeakSet<IncomingMessage>();
  const answers = new AnswerCache();
  /** Requests whose answer may be kept if they turn out to be queries: computed after this read version. */
  const cacheable = new WeakMap<IncomingMessage, { readonly question: Question; readonly version: number }>();
  /**
   * Requests answered from the cache: `handle` sends these bytes as the body graphql-http's answer leaves out
   * (so a hit costs neither encoding nor measuring the text again).
   */
  const cachedBodies = new WeakMap<IncomingMessage, Buffer>();
  /** Keeps the answer to a request as graphql-http was given it (see `handle`) as its reply. */
  const keepReply = (req: HttpRequest<IncomingMessage, string | undefined>, version: number, answer: Buffer): void => {
    const { accept } = req.raw.headers;
    const sent = typeof req.body === 'string' ? req.body : req.url; // `handle` gives a POST's body as text
    const reply = { answer, type: responseMediaType(accept) };
    answers.keepReply(req.method, req.raw.headers['content-type'], accept, sent, version, reply);
  };
  const ok = (req: IncomingMessage, body: string | null): HttpResponse => [
    body,
    { status: 200, statusText: 'OK', headers: { 'content-type': responseMediaType(req.headers.accept) } },
  ];
  const http = createHandler<IncomingMessage, string | undefined, Record<string, unknown>>({
    schema,
    onSubscribe: (req, params) => {
      const version = service.readVersion();
      if (version !== undefined) {
        // The same question was parsed, validated and answered without errors at this version: answer it again.
        const hit = answers.get(params, version);
        if (hit !== undefined) {
          cachedBodies.set(req.raw, hit);
          keepReply(req, version, hit);
          return ok(req.raw, null);
        }
        cacheable.set(req.raw, { question: params, version });
      }
      const prepared = prepare(
        params.query,
        params.variables,
        params.operationName,
        mayWrite(req.raw.headers.authorization, ingestToken),
        req.context,
      );
      return prepared.then((p) => notOverHttp(req.raw, req.method === 'GET', p));
    },
    execute: (args) => envelopedOf(args).execute(args),
    onOperation: (req, args, result) => {
      if (isAsyncIterable(result)) return undefined;
      if (result.data === undefined) requestErrors.add(req.raw);
      if (result.data === undefined || result.errors !== undefined) return undefined;
      // A result without errors, answered as graphql-http would, but serialised without its error-replacing
      // JSON replacer (called for every value of the result: a fifth of the time of a page of rockets).
      const body = JSON.stringify(result);
      const keep = cacheable.get(req.raw);
      if (keep && getOperationAST(args.document, args.operationName)?.operation === OperationTypeNode.QUERY) {
        const answer = Buffer.from(body);
        answers.set(keep.question, keep.version, answer);
        keepReply(req, keep.version, answer);
      }
      return ok(req.raw, body);
    },
    formatError: withoutHttpHints,
  });

  const streams = createEventStreams({
    prepare: (params, canWrite, requestId, resume) =>
      prepare(params.query, params.variables, params.operationName, canWrite, requestId, resume),
    execute: (args) => envelopedOf(args).execute(args),
    subscribe: (args) => envelopedOf(args).subscribe(args),
    ingestToken,
    subscriptionToken: config.subscriptionToken,
    keepAliveMs: config.keepAliveMs,
    log,
  });

  const allowed = config.allowedOrigins;
  /** The ETags of kept replies (`answers.replyTo`), each hashed once: a reply has one body and media type. */
  const replyTags = new WeakMap<KeptReply, string>();
  const tagOf = (reply: KeptReply): string => {
    let tag = replyTags.get(reply);
    if (tag === undefined) replyTags.set(reply, (tag = etagOf(reply.answer, reply.type)));
    return tag;
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const cors = corsHeaders(req, allowed);
    if (method === 'OPTIONS') {
      sendPreflight(res, cors, GRAPHQL_METHODS);
      return;
    }
    if (method !== 'GET' && method !== 'HEAD' && method !== 'POST') {
      req.resume();
      const [text, init] = methodNotAllowed(
        req.headers.accept,
        `${GRAPHQL_METHODS}, OPTIONS`,
        `/graphql answers ${GRAPHQL_METHODS} and OPTIONS, not ${method}`,
      );
      sendText(res, init.status, text ?? '', { ...cors, ...(init.headers as Record<string, string>) });
      return;
    }
    if (config.graphiql && method !== 'POST' && req.headers.accept?.includes('text/html') === true) {
      // A HEAD is answered as the GET: Node sends no body to a HEAD.
      const page = graphiql();
      sendRead(req, res, cors, { ...cors, 'content-type': GRAPHIQL_TYPE }, page.body, page.tag, true);
      return;
    }
    let body: string | null = null;
    if (method === 'POST') {
      try {
        body = utf8Text(await readBody(req, config.maxBodyBytes));
      } catch (e) {
        if (!(e instanceof BodyRefusedError)) throw e;
        const errors = [{ message: e.message, extensions: { code: e.code } }];
        sendText(res, e.status, JSON.stringify({ errors }), {
          ...cors,
          'content-type': 'application/json; charset=utf-8',
          ...(e instanceof BodyTooLargeError ? { connection: 'close' } : {}),
        });
        return;
      }
    }
    if (prefersEventStream(req.headers.accept)) {
      await streams.handle(req, res, cors, method, body);
      return;
    }
    // A HEAD is answered as its GET (Node sends no body to a HEAD, and keeps the GET's length).
    const asked = method === 'HEAD' ? 'GET' : method;
    const url = req.url ?? '/graphql';
    // The same request as one answered from the cache at this version: its answer again, unparsed.
    const { accept, 'content-type': sentType } = req.headers;
    const reply = answers.replyTo(asked, sentType, accept, body ?? url, service.readVersion());
    if (reply !== undefined) {
      if (asked === 'GET') {
        sendRead(req, res, cors, { ...cors, 'content-type': reply.type }, reply.answer, tagOf(reply), true);
        return;
      }
      // Answers to POST are not kept by caches: no validators. Written out here, as this is a hot path.
      const coding = codingFor(req, reply.answer.length);
      if (coding !== undefined) {
        sendCoded(res, { ...cors, 'content-type': reply.type }, reply.answer, coding, true);
        return;
      }
      res.writeHead(200, { ...cors, 'content-type': reply.type, 'content-length': String(reply.answer.length) });
      res.end(reply.answer);
      return;
    }
    const requestId = res.getHeader('x-request-id');
    const [text, init] = await http({
      method: asked,
      url,
      headers: req.headers,
      body,
      raw: req,
      // The id the answer carries in `x-request-id`, for the log of its unexpected errors.
      context: typeof requestId === 'string' ? requestId : undefined,
    });
    const headers = { ...cors, ...(init.headers as Record<string, string>) };
    if (init.status >= 400 && init.status < 500) {
      // graphql-http's own refusals come with a bare message or none; the request is read again only here,
      // to say which of its parameters was wrong.
      const refusal = coded(text, init.status, { method: asked, url, body });
      if (refusal !== undefined) {
        sendText(res, init.status, refusal, { ...headers, 'content-type': 'application/json; charset=utf-8' });
        return;
      }
    }
    const contentType: string | undefined = headers['content-type'];
    const cached = cachedBodies.get(req);
    // graphql-http answers 200 to every executed request; with application/graphql-response+json the spec
    // wants a 4xx when there is no `data`, as it answers to parse and validation errors.
    const requestError = requestErrors.has(req) && contentType?.startsWith(GRAPHQL_RESPONSE) === true;
    const status = requestError ? 400 : init.status;
    if (asked === 'GET' && status === 200) {
      // A query's answer, errors and all: a tag names these bytes, whatever they say.
      const answer = cached ?? Buffer.from(text ?? '');
      sendRead(req, res, cors, headers, answer, etagOf(answer, contentType), cached !== undefined);
      return;
    }
    if (cached) {
      const coding = codingFor(req, cached.length);
      if (coding !== undefined) sendCoded(res, headers, cached, coding, true);
      else {
        res.writeHead(init.status, { ...headers, 'content-length': String(cached.length) });
        res.end(cached);
      }
      return;
    }
    // The hot path of mutations sends the text as it is; only an answer worth compressing is made a buffer
    // (measured in UTF-16 units, which the bytes are at least).
    const coding = status === 200 && text !== null ? codingFor(req, text.length) : undefined;
    if (coding !== undefined) {
      sendCoded(res, headers, Buffer.from(text ?? ''), coding, false);
      return;
    }
    sendText(res, status, text ?? '', headers);
  }

  /**
   * The operations each socket runs, from their `subscribe` until they have ended, by id. graphql-ws's own
   * list forgets an operation as soon as the client completes it, though a query may still execute and a
   * subscription still start; counted there, `WS_MAX_OPERATIONS` could be passed by completing each
   * operation as it is sent, and an id could be taken again while its operation still runs.
   */
  const operations = new WeakMap<object, Set<string>>();
  const runningOn = (ctx: object): Set<string> => {
    let running = operations.get(ctx);
    if (running === undefined) operations.set(ctx, (running = new Set()));
    return running;
  };

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: config.wsMaxPayload,
    WebSocket: BatchingWebSocket,
  });
  const graphqlWs = useServer(
    {
      isProd: true,
      // false closes the socket with 4403 Forbidden.
      onConnect: (ctx) =>
        config.subscriptionToken === undefined || carries(ctx.connectionParams, config.subscriptionToken),
      // One bad operation answers with errors and leaves the socket (and its other operations) alone. Its
      // errors lose yoga's HTTP hints, as over HTTP.
      onSubscribe: async (ctx, id, payload) => {
        const running = runningOn(ctx);
        if (running.has(id)) {
          // The id of an operation the client completed and the server still finishes: graphql-ws would send
          // that one's result and `complete` under this one's id, and forget this one's subscription, which
          // would then run until the server stops. Closed as graphql-ws closes for an id in use.
          // The id is the client's, of any length; a close reason holds at most 123 bytes.
          const reason = 'an operation with this id is still finishing: subscribe with another id';
          ctx.extra.socket.close(ID_IN_USE, reason);
          return [new GraphQLError(reason)];
        }
        if (running.size >= config.wsMaxOperations) return [tooManyOperations(config.wsMaxOperations)];
        running.add(id);
        const prepared = await prepare(
          payload.query,
          payload.variables,
          payload.operationName,
          ingestToken === undefined || carries(ctx.connectionParams, ingestToken),
        );
        if (!isErrorList(prepared)) return prepared;
        running.delete(id);
        return prepared.map(withoutHints);
      },
      // Called once an operation has ended, whether the client completed it or not (the socket's close too).
      onComplete: (ctx, id) => {
        runningOn(ctx).delete(id);
      },
      execute: (args) => envelopedOf(args).execute(args),
      subscribe: (args) => envelopedOf(args).subscribe(args),
      // So do the errors of running one (variables that do not coerce, say), sent as its result.
      onNext: (_ctx, _id, _payload, _args, result) =>
        result.errors === undefined ? undefined : { ...result, errors: result.errors.map(withoutHints) },
    },
    wss,
    config.keepAliveMs,
  );

  let closing: Promise<void> | undefined;

  return {
    handle: async (req, res) => {
      try {
        await handle(req, res);
      } catch (e) {
        yoga.logger.error(e);
        if (res.headersSent) {
          res.destroy();
          return;
        }
        const error = unexpected(e);
        const retryAfter = error.extensions.retryAfterSeconds;
        sendText(res, storeFaultOf(e)?.status ?? 503, JSON.stringify({ errors: [error] }), {
          'content-type': 'application/json; charset=utf-8',
          ...(typeof retryAfter === 'number' ? { 'retry-after': String(retryAfter) } : {}),
        });
      }
    },

    upgrade: (req, socket, head) => {
      if (closing) {
        refuseUpgrade(socket, 503, 'the server is shutting down');
      } else if (!originAllowed(req, allowed)) {
        refuseUpgrade(socket, 403, `origin ${req.headers.origin ?? ''} is not allowed`);
      } else {
        wss.handleUpgrade(req, socket, head, (client) => {
          client.attach(socket);
          wss.emit('connection', client, req);
          // graphql-ws logs any socket error as a bug of the server. A WebSocket only emits one for a client's
          // protocol violation (an oversized or malformed frame), which ws answers itself by closing with 1009
          // or 1002: not worth an error log a client could flood.
          client.removeAllListeners('error');
          client.on('error', (e) => yoga.logger.debug('WebSocket closed on a client error', e));
        });
      }
    },

    close: () =>
      (closing ??= (async () => {
        streams.close();
        const open = [...wss.clients];
        const gone = Promise.all(open.map((s) => new Promise((resolve) => s.once('close', resolve))));
        for (const s of open) s.close(GOING_AWAY, 'the server is shutting down');
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([gone, new Promise((resolve) => (timer = setTimeout(resolve, WS_CLOSE_GRACE_MS)))]);
        clearTimeout(timer);
        for (const s of wss.clients) s.terminate();
        await graphqlWs.dispose();
        await yoga.dispose();
      })()),
  };
}
