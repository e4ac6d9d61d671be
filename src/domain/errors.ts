/**
 * Errors the domain and the application service raise on purpose. Each carries a stable code that both
 * transports map: GraphQL to `extensions.code`, REST to an HTTP status. Anything that is not a
 * DomainError is unexpected and stays masked.
 */
export type DomainErrorCode =
  'BAD_USER_INPUT' | 'CONFLICT' | 'NOT_FOUND' | 'UNAUTHENTICATED' | 'OVERLOADED' | 'UNAVAILABLE' | 'FELL_BEHIND';

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
  constructor(
    readonly channel: string,
    readonly messageNumber: number,
  ) {
    super(
      'CONFLICT',
      `message ${messageNumber} of channel "${channel}" was already received with a different body; the first one stands`,
    );
  }
}

export class NotFoundError extends DomainError {
  constructor(what: string) {
    super('NOT_FOUND', `${what} not found`);
  }
}

/** A bound was reached (buffer caps, shutdown). The caller may retry later; nothing was stored. */
export class OverloadedError extends DomainError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super('OVERLOADED', message);
  }
}

export class UnauthenticatedError extends DomainError {
  constructor(message = 'a valid bearer token is required') {
    super('UNAUTHENTICATED', message);
  }
}

export const isDomainError = (e: unknown): e is DomainError => e instanceof DomainError;
export const isValidationError = (e: unknown): e is ValidationError => e instanceof ValidationError;
export const isConflictError = (e: unknown): e is ConflictError => e instanceof ConflictError;
export const isNotFoundError = (e: unknown): e is NotFoundError => e instanceof NotFoundError;
export const isOverloadedError = (e: unknown): e is OverloadedError => e instanceof OverloadedError;
