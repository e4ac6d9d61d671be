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
  return relocated(e.message, domainErrorExtensions(e), located);
}

/**
 * A new error, with no `originalError`, at the place of `located` in the query (its locations and path), with
 * this message and these extensions. graphql-jit's errors carry locations without the nodes graphql-js
 * computes them from, so they are copied as they are: otherwise a query would be answered with them the
 * first time (graphql-js runs it) and without them after (graphql-jit does).
 */
export function relocated(
  message: string,
  extensions: Readonly<Record<string, unknown>>,
  located: GraphQLError | undefined,
): GraphQLError {
  const error = new GraphQLError(message, {
    nodes: located?.nodes,
    source: located?.source,
    positions: located?.positions,
    path: located?.path,
    extensions,
  });
  if (error.locations === undefined && located?.locations !== undefined)
    Object.defineProperty(error, 'locations', { value: located.locations, enumerable: true });
  return error;
}
