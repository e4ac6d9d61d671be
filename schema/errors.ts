import { GraphQLError } from 'graphql';
import {
  isBufferFullError,
  isConflictError,
  isDomainError,
  isOverloadedError,
  isValidationError,
  type DomainError,
} from '../src/domain/errors';

/**
 * What a client can act on, by code: the issues of a bad input, the message a conflict is about (and whether
 * its number was skipped), when to retry, and which buffer cap refused a message.
 */
export function domainErrorExtensions(e: DomainError): Record<string, unknown> {
  const extensions: Record<string, unknown> = { code: e.code };
  if (isValidationError(e)) extensions.issues = e.issues;
  if (isConflictError(e)) {
    extensions.channel = e.channel;
    extensions.messageNumber = e.messageNumber;
    if (e.skipped) extensions.skipped = true;
  }
  if (isOverloadedError(e)) extensions.retryAfterSeconds = e.retryAfterSeconds;
  if (isBufferFullError(e)) {
    extensions.channel = e.channel;
    extensions.messageNumber = e.messageNumber;
    extensions.waitingFor = e.waitingFor;
    extensions.setting = e.setting;
    extensions.limit = e.limit;
  }
  return extensions;
}

/** The domain error behind `error`: itself, or the original error of a GraphQLError located at a field. */
export function domainErrorOf(error: unknown): DomainError | undefined {
  if (isDomainError(error)) return error;
  if (error instanceof GraphQLError && isDomainError(error.originalError)) return error.originalError;
  return undefined;
}

/**
 * A deliberate error as the client sees it: the domain's message and `extensions.code`, keeping the location
 * and path of `located`. It carries no `originalError`, so error masking passes it through unchanged; an error
 * that is not a DomainError is never given to this function and stays masked.
 */
export function toGraphQLError(e: DomainError, located?: GraphQLError): GraphQLError {
  return new GraphQLError(e.message, {
    nodes: located?.nodes,
    source: located?.source,
    positions: located?.positions,
    path: located?.path,
    extensions: domainErrorExtensions(e),
  });
}
