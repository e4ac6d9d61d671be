/**
 * Errors the domain and the application service raise on purpose. Each carries a stable code that both
 * transports map: GraphQL to `extensions.code`, REST to an HTTP status. Anything that is not a
 * DomainError is unexpected and stays masked.
 */
export type DomainErrorCode =
  | 'BAD_USER_INPUT'
  | 'CONFLICT'
  | 'NOT_FOUND'
  | 'UNAUTHENTICATED'
  | 'CHANNEL_BUFFER_FULL'
  | 'BUFFER_FULL'
  | 'UNAVAILABLE'
  | 'FELL_BEHIND';

export class DomainError extends Error {
  constructor(
    readonly code: DomainErrorCode,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** One reason an input was refused: `field` is a dotted path such as `metadata.messageNumber`. */
export interface Issue {
  readonly field: string;
  readonly problem: string;
}

export class ValidationError extends DomainError {
  constructor(readonly issues: readonly Issue[]) {
    super('BAD_USER_INPUT', issues.map((i) => (i.field ? `${i.field}: ${i.problem}` : i.problem)).join('; '));
  }
}

export class ConflictError extends DomainError {
  /**
   * @param skipped the number was skipped by the gap policy (GAP_TIMEOUT) before this message came: its
   *   MessageSkipped event stands, and a late message can never be applied.
   */
  constructor(
    readonly channel: string,
    readonly messageNumber: number,
    readonly skipped = false,
  ) {
    super(
      'CONFLICT',
      skipped
        ? `message ${messageNumber} of channel "${channel}" came too late: the number was skipped after the gap timeout (GAP_TIMEOUT) and a MessageSkipped event stands in its place`
        : `message ${messageNumber} of channel "${channel}" was already received with a different body; the first one stands`,
    );
  }
}

export class NotFoundError extends DomainError {
  constructor(what: string) {
    super('NOT_FOUND', `${what} not found`);
  }
}

/** A cap of the reorder buffer was reached. The caller may retry later; nothing was stored. */
export class OverloadedError extends DomainError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
    code: 'CHANNEL_BUFFER_FULL' | 'BUFFER_FULL',
  ) {
    super(code, message);
  }
}

/** The configuration variable behind each cap of the reorder buffer. */
export const BUFFER_CAP_SETTINGS = {
  perChannel: 'MAX_BUFFERED_PER_CHANNEL',
  total: 'MAX_BUFFERED_TOTAL',
} as const;

/**
 * The message would have been buffered beyond a cap, so nothing of it was stored: either it is more than
 * MAX_BUFFERED_PER_CHANNEL numbers ahead of the one its channel waits for (CHANNEL_BUFFER_FULL: that
 * sender should send the missing message first), or the buffer holds MAX_BUFFERED_TOTAL messages across
 * channels (BUFFER_FULL: the server is overloaded). Retrying later is safe either way.
 */
export class BufferFullError extends OverloadedError {
  readonly setting: (typeof BUFFER_CAP_SETTINGS)[keyof typeof BUFFER_CAP_SETTINGS];

  constructor(
    readonly cap: keyof typeof BUFFER_CAP_SETTINGS,
    readonly limit: number,
    readonly channel: string,
    readonly messageNumber: number,
    readonly waitingFor: number,
    retryAfterSeconds: number,
  ) {
    super(
      cap === 'perChannel'
        ? `message ${messageNumber} of channel "${channel}" is more than ${BUFFER_CAP_SETTINGS.perChannel} (${limit}) numbers ahead of message ${waitingFor}, which the channel waits for; nothing was stored: send message ${waitingFor} first, or retry later`
        : `the reorder buffer is full: ${BUFFER_CAP_SETTINGS.total} (${limit}) messages wait for gaps to fill; message ${messageNumber} of channel "${channel}" was not stored: retry later`,
      retryAfterSeconds,
      cap === 'perChannel' ? 'CHANNEL_BUFFER_FULL' : 'BUFFER_FULL',
    );
    this.setting = BUFFER_CAP_SETTINGS[cap];
  }
}

export class UnauthenticatedError extends DomainError {
  constructor(message = 'a valid bearer token is required') {
    super('UNAUTHENTICATED', message);
  }
}

/**
 * The same refusal in a transport's own words: each issue's field renamed as `names` says (the service's
 * `limit` is GraphQL's `first`), so that an error names the argument or parameter the caller sent.
 */
export function inCallersTerms<T>(work: Promise<T>, names: Readonly<Record<string, string>>): Promise<T> {
  return work.catch((e: unknown) => {
    if (!(e instanceof ValidationError)) throw e;
    throw new ValidationError(e.issues.map((i) => ({ ...i, field: names[i.field] ?? i.field })));
  });
}

export const isDomainError = (e: unknown): e is DomainError => e instanceof DomainError;
export const isValidationError = (e: unknown): e is ValidationError => e instanceof ValidationError;
export const isConflictError = (e: unknown): e is ConflictError => e instanceof ConflictError;
export const isNotFoundError = (e: unknown): e is NotFoundError => e instanceof NotFoundError;
export const isOverloadedError = (e: unknown): e is OverloadedError => e instanceof OverloadedError;
export const isBufferFullError = (e: unknown): e is BufferFullError => e instanceof BufferFullError;

/**
 * What a client can act on, by code, for every transport alike (REST bodies, GraphQL extensions): the
 * issues of a bad input, the message a conflict is about (and whether its number was skipped), when to
 * retry, and which buffer cap refused a message.
 */
export function errorDetails(e: DomainError): Record<string, unknown> {
  const details: Record<string, unknown> = {};
  if (isValidationError(e)) details.issues = e.issues;
  if (isConflictError(e)) {
    details.channel = e.channel;
    details.messageNumber = e.messageNumber;
    if (e.skipped) details.skipped = true;
  }
  if (isOverloadedError(e)) details.retryAfterSeconds = e.retryAfterSeconds;
  if (isBufferFullError(e)) {
    details.channel = e.channel;
    details.messageNumber = e.messageNumber;
    details.waitingFor = e.waitingFor;
    details.cap = e.setting;
    details.limit = e.limit;
  }
  return details;
}
