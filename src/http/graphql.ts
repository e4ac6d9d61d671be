import { renderGraphiQL } from '@graphql-yoga/render-graphiql';
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { EnvelopArmorPlugin } from '@escape.tech/graphql-armor';
import {
  GraphQLError,
  NoSchemaIntrospectionCustomRule,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  type GraphQLSchema,
  type ValidationContext,
} from 'graphql';
import { createHandler, type FormatError } from 'graphql-http';
import { useServer } from 'graphql-ws/use/ws';
import {
  createYoga,
  handleStreamOrSingleExecutionResult,
  isAsyncIterable,
  type GraphiQLRenderer,
  type Plugin,
  type PromiseOrValue,
} from 'graphql-yoga';
import { WebSocketServer } from 'ws';
import type { GraphQLContext } from '../../schema/builder';
import { domainErrorOf, toGraphQLError } from '../../schema/errors';
import { schema } from '../../schema/index';
import type { Config } from '../config';
import type { RocketService } from '../engine/service';
import {
  bearerOf,
  BodyTooLargeError,
  corsHeaders,
  mayWrite,
  originAllowed,
  readBody,
  sameSecret,
  sendPreflight,
} from './io';

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
   * Armor's default weights (object 2, scalar 1, x1.5 per level): a page of rockets with every field and their
   * events with every payload costs 282, so seven such selections in one operation pass.
   */
  maxCost: 2000,
  /** Batches go through `submitMessages`, not aliases. */
  maxAliases: 15,
  /** Bounds parsing work. Large inputs belong in variables, which do not count. */
  maxTokens: 1000,
  maxDirectives: 20,
} as const;

const GRAPHQL_RESPONSE = 'application/graphql-response+json';

/** WebSocket close code for a server going down (RFC 6455). */
const GOING_AWAY = 1001;

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

const armor = (introspection: boolean): Parameters<typeof EnvelopArmorPlugin>[0] => ({
  maxDepth: { n: ARMOR_LIMITS.maxDepth, ...reportInValidation },
  costLimit: { maxCost: ARMOR_LIMITS.maxCost, ...reportInValidation },
  maxAliases: { n: ARMOR_LIMITS.maxAliases, ...reportInValidation },
  maxDirectives: { n: ARMOR_LIMITS.maxDirectives, ...reportInValidation },
  maxTokens: { n: ARMOR_LIMITS.maxTokens },
  // "Did you mean …?" would reveal the schema that disabled introspection hides.
  blockFieldSuggestion: { enabled: !introspection },
});

/**
 * Turns errors the domain raises on purpose (thrown by resolvers, subscription sources and streams) into
 * GraphQLErrors with `extensions.code`, before yoga's error masking runs: masking then lets them through and
 * still hides everything else as "Unexpected error.".
 */
function useDomainErrors(): Plugin {
  const convert = (error: unknown): unknown => {
    const domain = domainErrorOf(error);
    return domain ? toGraphQLError(domain, error instanceof GraphQLError ? error : undefined) : error;
  };
  const onResult = ({
    result,
    setResult,
  }: {
    result: ExecutionResult;
    setResult: (r: ExecutionResult) => void;
  }): void => {
    if (result.errors?.some((e) => domainErrorOf(e) !== undefined))
      setResult({ ...result, errors: result.errors.map((e) => convert(e) as GraphQLError) });
  };
  return {
    onExecute: () => ({ onExecuteDone: (payload) => handleStreamOrSingleExecutionResult(payload, onResult) }),
    onSubscribe: () => ({
      onSubscribeResult: (payload) => handleStreamOrSingleExecutionResult(payload, onResult),
      onSubscribeError: ({ error, setError }) => setError(convert(error)),
    }),
  };
}

const useNoIntrospection = (): Plugin => ({
  onValidate: ({ addValidationRule }) => addValidationRule(NoSchemaIntrospectionCustomRule),
});

/** GraphiQL's page with its scripts and styles inlined (this machine's users may have no CDN). */
function offlineGraphiQL(): GraphiQLRenderer {
  // Several megabytes of script: built once, served many times.
  let page: string | undefined;
  return (opts) => (page ??= renderGraphiQL(opts));
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

const unexpected = (): GraphQLError =>
  new GraphQLError('Unexpected error.', { extensions: { code: 'INTERNAL_SERVER_ERROR' } });

/** Yoga's internal hints (`extensions.http`) stay on the server; graphql-http sets the status itself. */
const withoutHttpHints: FormatError = (err) => {
  if (!(err instanceof GraphQLError) || err.extensions.http === undefined) return err;
  const extensions = { ...err.extensions };
  delete extensions.http;
  return new GraphQLError(err.message, {
    nodes: err.nodes,
    source: err.source,
    positions: err.positions,
    path: err.path,
    extensions,
  });
};

function sendText(res: ServerResponse, status: number, body: string, headers: Record<string, string>): void {
  res.writeHead(status, { ...headers, 'content-length': String(Buffer.byteLength(body)) });
  res.end(body);
}

/** The token a client put in `connection_init`: `{token}` or `{authorization: 'Bearer …'}`. */
function tokenOf(params: Readonly<Record<string, unknown>> | undefined): string | undefined {
  if (typeof params?.token === 'string') return params.token;
  const auth = params?.authorization ?? params?.Authorization;
  return bearerOf(auth);
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
export function createGraphQLTransport(service: RocketService, config: Config): GraphQLTransport {
  const ingestToken = config.ingestToken;
  const yoga = createYoga<Record<string, unknown>, GraphQLContext>({
    schema,
    context: { service, canWrite: true },
    graphqlEndpoint: '/graphql',
    graphiql: config.graphiql
      ? {
          title: 'Rockets',
          subscriptionsProtocol: 'WS',
          defaultQuery:
            'query Rockets {\n  rockets(first: 10) {\n    nodes { channel type mission speed status }\n  }\n}\n',
        }
      : false,
    renderGraphiQL: offlineGraphiQL(),
    landingPage: false,
    maxRequestBodySize: config.maxBodyBytes,
    plugins: [
      EnvelopArmorPlugin(armor(config.introspection)),
      ...(config.introspection ? [] : [useNoIntrospection()]),
      useDomainErrors(),
    ],
  });

  /** Parses and validates through the envelop pipeline; errors are returned, never thrown. */
  async function prepare(
    query: string,
    variables: Readonly<Record<string, unknown>> | null | undefined,
    operationName: string | null | undefined,
    canWrite: boolean,
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
    return {
      schema: enveloped.schema,
      document,
      variableValues: variables,
      operationName,
      contextValue: { ...(await enveloped.contextFactory()), canWrite },
      [ENVELOPED]: enveloped,
    };
  }

  /** Requests whose execution produced no `data` (a request error, such as variables that do not coerce). */
  const requestErrors = new WeakSet<IncomingMessage>();
  const http = createHandler<IncomingMessage, undefined, Record<string, unknown>>({
    schema,
    onSubscribe: (req, params) =>
      prepare(
        params.query,
        params.variables,
        params.operationName,
        mayWrite(req.raw.headers.authorization, ingestToken),
      ),
    execute: (args) => envelopedOf(args).execute(args),
    onOperation: (req, _args, result) => {
      if (!isAsyncIterable(result) && result.data === undefined) requestErrors.add(req.raw);
    },
    formatError: withoutHttpHints,
  });

  const allowed = config.allowedOrigins?.map((o) => o.replace(/\/+$/, ''));

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const cors = corsHeaders(req, allowed);
    if (method === 'OPTIONS') {
      sendPreflight(res, cors, 'GET, POST');
      return;
    }
    if (config.graphiql && method === 'GET' && req.headers.accept?.includes('text/html') === true) {
      await yoga.handle(req, res);
      return;
    }
    let body: string | null = null;
    if (method === 'POST') {
      try {
        body = (await readBody(req, config.maxBodyBytes)).toString('utf8');
      } catch (e) {
        if (!(e instanceof BodyTooLargeError)) throw e;
        const errors = [{ message: e.message, extensions: { code: 'PAYLOAD_TOO_LARGE' } }];
        sendText(res, 413, JSON.stringify({ errors }), {
          ...cors,
          'content-type': 'application/json; charset=utf-8',
          connection: 'close',
        });
        return;
      }
    }
    const [text, init] = await http({
      method,
      url: req.url ?? '/graphql',
      headers: req.headers,
      body,
      raw: req,
      context: undefined,
    });
    const headers = { ...cors, ...(init.headers as Record<string, string>) };
    // graphql-http answers 200 to every executed request; with application/graphql-response+json the spec
    // wants a 4xx when there is no `data`, as it answers to parse and validation errors.
    const contentType: string | undefined = headers['content-type'];
    const requestError = requestErrors.has(req) && contentType?.startsWith(GRAPHQL_RESPONSE) === true;
    sendText(res, requestError ? 400 : init.status, text ?? '', headers);
  }

  const wss = new WebSocketServer({ noServer: true, maxPayload: config.wsMaxPayload });
  const graphqlWs = useServer(
    {
      isProd: true,
      onConnect: (ctx) => {
        const expected = config.subscriptionToken;
        if (expected === undefined) return true;
        const token = tokenOf(ctx.connectionParams);
        // false closes the socket with 4403 Forbidden.
        return token !== undefined && sameSecret(token, expected);
      },
      // One bad operation answers with errors and leaves the socket (and its other operations) alone.
      onSubscribe: (ctx, _id, payload) =>
        prepare(
          payload.query,
          payload.variables,
          payload.operationName,
          mayWrite(`Bearer ${tokenOf(ctx.connectionParams) ?? ''}`, ingestToken),
        ),
      execute: (args) => envelopedOf(args).execute(args),
      subscribe: (args) => envelopedOf(args).subscribe(args),
    },
    wss,
    config.keepAliveMs,
  );

  let closing: Promise<void> | undefined;

  function refuse(socket: Duplex, status: number, reason: string): void {
    socket.on('error', () => socket.destroy());
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n` +
        `content-length: ${Buffer.byteLength(reason)}\r\n\r\n${reason}`,
    );
  }

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
        sendText(res, 500, JSON.stringify({ errors: [unexpected()] }), {
          'content-type': 'application/json; charset=utf-8',
        });
      }
    },

    upgrade: (req, socket, head) => {
      if (closing) {
        refuse(socket, 503, 'the server is shutting down');
      } else if (!originAllowed(req, allowed)) {
        refuse(socket, 403, `origin ${req.headers.origin ?? ''} is not allowed`);
      } else {
        wss.handleUpgrade(req, socket, head, (client) => {
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
