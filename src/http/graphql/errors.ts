/**
 * What the GraphQL transports answer when something goes wrong: the domain's errors given their codes,
 * unexpected ones masked (and logged with their request's id), and graphql-http's own refusals coded like
 * every other error. Kept apart from the transports, which only choose where each applies.
 */
import { STATUS_CODES } from 'node:http';
import {
  GraphQLError,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  type GraphQLErrorExtensions,
  type GraphQLFormattedError,
} from 'graphql';
import type { FormatError } from 'graphql-http';
import { handleStreamOrSingleExecutionResult, maskError, type Plugin } from 'graphql-yoga';
import type { Logger } from 'pino';
import { domainErrorOf, relocated, toGraphQLError } from '../../../schema/errors';
import { describe } from '../../domain/message';
import { storeFaultOf, type StoreFault } from '../../store/faults';
import { logStoreFault } from '../io';
import { operationsOf } from './jit';

/**
 * An error of the request itself, given `BAD_USER_INPUT` unless it has a code; one caused by anything but
 * GraphQL (a store that failed while a subscription started, say) is left to masking.
 */
const badInput = (e: GraphQLError): GraphQLError =>
  (e.extensions as GraphQLErrorExtensions | undefined)?.code === undefined && onlyGraphQL(e)
    ? relocated(e.message, { ...e.extensions, code: 'BAD_USER_INPUT' }, e)
    : e;

/** Whether every error down the chain of causes is a GraphQL one, as yoga's masking asks. */
function onlyGraphQL(e: GraphQLError): boolean {
  let cause: unknown = e;
  while (cause instanceof GraphQLError) {
    if (cause.originalError === undefined) return true;
    cause = cause.originalError;
  }
  return false;
}

/** Errors logged with their request's id, before masking: yoga's own line for them is left out. */
const loggedWithRequest = new WeakSet<object>();

/**
 * The errors of an HTTP request's result that masking will hide, logged as REST logs them: `unexpected
 * error` (or `store fault`, see logStoreFault) with the request id its answer carries in `x-request-id`, so
 * a user's report leads to the line.
 * Errors of graphql-ws operations (no request id) are left to yoga's logger.
 */
function logUnexpected(log: Logger, errors: readonly GraphQLError[], requestId: string | undefined): void {
  if (requestId === undefined) return;
  for (const e of errors) {
    if (domainErrorOf(e) !== undefined || maskUnexpected(e, 'Unexpected error.', false) === e) continue;
    loggedWithRequest.add(e);
    const fault = storeFaultOf(e);
    if (fault === undefined) log.error({ err: e.originalError ?? e, requestId }, 'unexpected error');
    else logStoreFault(log, fault, e.originalError ?? e, requestId);
  }
}

/**
 * Turns errors the domain raises on purpose (thrown by resolvers, subscription sources and streams) into
 * GraphQLErrors with `extensions.code`, before yoga's error masking runs: masking then lets them through and
 * still hides everything else as "Unexpected error.". An operation that did not run (no `data`) failed on
 * its variables: those errors get `BAD_USER_INPUT`.
 */
export function useDomainErrors(log: Logger): Plugin {
  const convert = (error: unknown): unknown => {
    const domain = domainErrorOf(error);
    return domain ? toGraphQLError(domain, error instanceof GraphQLError ? error : undefined) : error;
  };
  const onResult = ({
    args,
    result,
    setResult,
  }: {
    args: ExecutionArgs;
    result: ExecutionResult;
    setResult: (r: ExecutionResult) => void;
  }): void => {
    if (result.errors === undefined) return;
    logUnexpected(log, result.errors, (args.contextValue as { requestId?: string } | undefined)?.requestId);
    if (result.data === undefined) {
      // Not run at all: its variables did not coerce (graphql-js says so without a code), or a subscription's
      // source refused its arguments.
      setResult({
        ...result,
        errors: result.errors.map((e) => (domainErrorOf(e) ? (convert(e) as GraphQLError) : badInput(e))),
      });
      return;
    }
    if (result.errors.some((e) => domainErrorOf(e) !== undefined))
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

/**
 * The error for a valid document whose operation to run cannot be told: it names none that is there, or
 * names none and holds several. graphql-http and graphql-ws would answer it without a code.
 */
export function unresolvedOperation(document: DocumentNode, operationName: string | null | undefined): GraphQLError {
  const count = operationsOf(document).length;
  const message =
    operationName == null
      ? `the document holds ${count} operations: name the one to run in operationName`
      : `the document holds no operation named "${operationName}"`;
  return new GraphQLError(message, { extensions: { code: 'OPERATION_RESOLUTION_FAILURE' } });
}

/** A subscription asked for one answer: graphql-http refuses it with no code, not saying where to go instead. */
export const subscriptionOverHttp = (): GraphQLError =>
  new GraphQLError(
    'subscriptions run over WebSocket (graphql-ws, protocol graphql-transport-ws) on /graphql, or over HTTP as an event stream (Accept: text/event-stream), not as one answer',
    { extensions: { code: 'BAD_REQUEST' } },
  );

/**
 * `extensions` of every masked error. As REST answers anything unexpected with a 503 and `Retry-After`
 * (a store that failed, such as a dropped database connection, recorded nothing), a GraphQL client is
 * told it may retry, in the words of the other retryable errors.
 */
export const UNEXPECTED = { code: 'UNAVAILABLE', retryAfterSeconds: 1, unexpected: true } as const;

/**
 * A socket already running its limit of operations: each subscription holds its own feed, catch-up page
 * and buffer, so one socket must not hold them without bound. The operation is refused; the socket and
 * its other operations go on.
 */
export const tooManyOperations = (limit: number): GraphQLError =>
  new GraphQLError(
    `this socket already runs ${limit} operations (WS_MAX_OPERATIONS): complete one before starting another`,
    { extensions: { code: 'TOO_MANY_OPERATIONS', limit } },
  );

/** The code of a request graphql-http refused on its own, by status. */
const REFUSAL_CODES: Readonly<Record<number, string>> = {
  400: 'BAD_REQUEST',
  406: 'NOT_ACCEPTABLE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
};
/** What to do about such a refusal that came with no message. */
const REFUSAL_MESSAGES: Readonly<Record<number, string>> = {
  406: '/graphql answers application/graphql-response+json or application/json: accept one of them',
  415: '/graphql reads a JSON body: send Content-Type: application/json',
};

/** What a refused request sent, read again only to say what was wrong with it (never for a good request). */
export interface RefusedRequest {
  /** As graphql-http was asked: `GET` (a HEAD too) reads the URL's parameters, `POST` the JSON body. */
  readonly method: string;
  readonly url: string;
  readonly body: string | null;
}

/**
 * What a request sent as one parameter (`''`: its whole body): its value, or why it is not JSON; undefined
 * when that cannot be told.
 */
function sent(request: RefusedRequest, name: string): { value: unknown } | { notJson: string } | undefined {
  const parse = (text: string): { value: unknown } | { notJson: string } => {
    try {
      return { value: JSON.parse(text) as unknown };
    } catch (e) {
      return { notJson: e instanceof Error ? e.message : 'parse error' };
    }
  };
  if (request.method === 'GET') {
    // As graphql-http reads them: `variables` and `extensions` are JSON, the others text.
    const text = new URLSearchParams(request.url.split('?')[1]).get(name);
    if (text === null || text === '') return undefined;
    return name === 'variables' || name === 'extensions' ? parse(text) : { value: text };
  }
  if (request.body === null || request.body === '') return undefined;
  if (name === '') return parse(request.body);
  const body = parse(request.body);
  if (!('value' in body) || typeof body.value !== 'object' || body.value === null) return undefined;
  return { value: (body.value as Record<string, unknown>)[name] };
}

/** The kind of what a request sent as `name` (`a string`, `an array`), or undefined when that cannot be told. */
function kindSent(request: RefusedRequest | undefined, name: string): string | undefined {
  const what = request && sent(request, name);
  return what !== undefined && 'value' in what ? describe(what.value) : undefined;
}

/** `, got a string` for what a request sent as `name`, or nothing when that cannot be told. */
function got(request: RefusedRequest | undefined, name: string): string {
  const kind = kindSent(request, name);
  return kind === undefined ? '' : `, got ${kind}`;
}

/** How a refusal names a parameter: in the URL for a GET, in the JSON body for a POST. */
const param = (request: RefusedRequest | undefined, name: string): string =>
  request?.method === 'GET' ? `the ${name} parameter` : `"${name}" in the body`;

const notAnObject = (request: RefusedRequest | undefined): string =>
  `the body must be a JSON object with the GraphQL document in "query"${got(request, '')}`;

/** Says what was wrong with a refused request and what to send instead. */
type Explain = (request: RefusedRequest | undefined) => string;

/**
 * graphql-http's terse refusals of a request it could not read (handler.js, parseRequestParams), each as what
 * was wrong and what to send instead.
 */
const CLEAR_REFUSALS: ReadonlyMap<string, Explain> = new Map<string, Explain>([
  [
    'Missing body',
    () =>
      'the body is empty: send a JSON object with the GraphQL document in "query", such as {"query":"{ __typename }"}',
  ],
  [
    'Unparsable JSON body',
    (request) => {
      const body = request && sent(request, '');
      const why = body !== undefined && 'notJson' in body ? ` (${body.notJson})` : '';
      return `the body is not valid JSON${why}: send a JSON object with the GraphQL document in "query"`;
    },
  ],
  ['JSON body must be an object', notAnObject],
  [
    'Missing query',
    (request) => {
      if (request?.method === 'GET')
        return 'the URL has no query parameter: send the GraphQL document in it, such as ?query={__typename}';
      // graphql-http takes an array (a batch, which it does not run) for an object without a query.
      const body = request && sent(request, '');
      return body !== undefined && 'value' in body && Array.isArray(body.value)
        ? notAnObject(request)
        : 'the body has no "query": send the GraphQL document in it, as a string';
    },
  ],
  [
    'Invalid query',
    (request) => `${param(request, 'query')} must be a string holding the GraphQL document${got(request, 'query')}`,
  ],
  [
    'Invalid variables',
    (request) =>
      `${param(request, 'variables')} must be a JSON object of the operation's variables, or null${got(request, 'variables')}`,
  ],
  [
    'Invalid operationName',
    (request) =>
      `${param(request, 'operationName')} must be a string naming the operation to run, or null${got(request, 'operationName')}`,
  ],
  [
    'Invalid extensions',
    (request) => `${param(request, 'extensions')} must be a JSON object, or null${got(request, 'extensions')}`,
  ],
  [
    'Unparsable URL',
    (request) => {
      for (const name of ['variables', 'extensions']) {
        const what = request && sent(request, name);
        if (what !== undefined && 'notJson' in what)
          return `the ${name} parameter is not valid JSON (${what.notJson}): send it as a URL-encoded JSON object`;
      }
      return "the URL's parameters could not be read: send query, variables, operationName and extensions URL-encoded";
    },
  ],
]);

/**
 * A refusal of graphql-http (a body that is not JSON, no query, a media type it does not read, an Accept
 * it cannot answer) as every other error is sent: `errors` with a message and `extensions.code`, its terse
 * message replaced by what was wrong and what to send instead (`request`, read again, names the parameter).
 * Undefined when the answer already is so (parse and validation errors, and ours).
 */
export function coded(text: string | null, status: number, request?: RefusedRequest): string | undefined {
  const code = REFUSAL_CODES[status] ?? 'BAD_REQUEST';
  if (text === null || text === '')
    return JSON.stringify({
      errors: [{ message: REFUSAL_MESSAGES[status] ?? STATUS_CODES[status] ?? 'refused', extensions: { code } }],
    });
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return undefined;
  }
  const errors = (body as { errors?: unknown }).errors;
  if (!Array.isArray(errors)) return undefined;
  const bare = (e: unknown): boolean =>
    typeof e === 'object' && e !== null && (e as GraphQLFormattedError).extensions?.code === undefined;
  if (!errors.some(bare)) return undefined;
  const clear = (message: string): string =>
    (status === 400 ? CLEAR_REFUSALS.get(message)?.(request) : undefined) ?? message;
  return JSON.stringify({
    ...(body as object),
    errors: errors.map((e: unknown) => {
      if (!bare(e)) return e;
      const { message, extensions } = e as GraphQLFormattedError;
      return { ...(e as object), message: clear(message), extensions: { ...extensions, code } };
    }),
  });
}

/** A store fault in the words of the other errors: its message and code, and when to try again if ever. */
function faultError(fault: StoreFault, located: GraphQLError | undefined): GraphQLError {
  const extensions =
    fault.retryAfterSeconds === undefined
      ? { code: fault.code }
      : { code: fault.code, retryAfterSeconds: fault.retryAfterSeconds };
  return relocated(fault.message, extensions, located);
}

/** The error said for `cause`, which no GraphQL error explains: its store fault, or "Unexpected error.". */
export function unexpected(cause?: unknown): GraphQLError {
  const fault = storeFaultOf(cause);
  return fault !== undefined
    ? faultError(fault, undefined)
    : new GraphQLError('Unexpected error.', { extensions: { ...UNEXPECTED } });
}

/**
 * Yoga's masking (the message, no cause, the location kept), with UNEXPECTED as its extensions; a store
 * fault is said as what it is (a full disk, a damaged file), with the location kept.
 */
export const maskUnexpected: typeof maskError = (error, message, isDev) => {
  const fault = storeFaultOf(error);
  if (fault !== undefined) return faultError(fault, error instanceof GraphQLError ? error : undefined);
  const m = maskError(error, message, isDev);
  if (m === error || !(m instanceof GraphQLError)) return m;
  return relocated(m.message, { ...m.extensions, ...UNEXPECTED }, error instanceof GraphQLError ? error : m);
};

/** Yoga's internal hints (`extensions.http`) stay on the server; graphql-http sets the status itself. */
export const withoutHttpHints: FormatError = (err) => (err instanceof GraphQLError ? withoutHints(err) : err);

export function withoutHints(err: GraphQLError): GraphQLError {
  // graphql-jit's errors may carry no extensions at all.
  if ((err.extensions as GraphQLErrorExtensions | undefined)?.http === undefined) return err;
  const extensions = { ...err.extensions };
  delete extensions.http;
  return relocated(err.message, extensions, err);
}

/**
 * Yoga's logger as the server's pino logger, so that what yoga (and this transport, through it) logs is a
 * JSON line at LOG_LEVEL like every other: the strings as the message, an error under `err`, anything else
 * under `details`.
 */
export function yogaLogger(log: Logger): Record<'debug' | 'info' | 'warn' | 'error', (...args: unknown[]) => void> {
  const at =
    (level: 'debug' | 'info' | 'warn' | 'error') =>
    (...args: unknown[]): void => {
      const err = args.find((a) => a instanceof Error);
      if (err !== undefined && loggedWithRequest.has(err)) return;
      const text = args.filter((a) => typeof a === 'string').join(' ');
      const details = args.filter((a) => typeof a !== 'string' && !(a instanceof Error));
      const fields = { ...(err === undefined ? {} : { err }), ...(details.length > 0 ? { details } : {}) };
      log[level](fields, text !== '' ? text : err instanceof Error ? err.message : 'graphql');
    };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
