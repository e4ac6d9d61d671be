import { GraphQLError } from 'graphql';
import { errorDetails, isDomainError, type DomainError } from '../src/domain/errors';

/** `extensions` of a deliberate error: its code and the details every transport gives. */
export function domainErrorExtensions(e: DomainError): Record<string, unknown> {
  return { code: e.code, ...errorDetails(e) };
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
