import SchemaBuilder from '@pothos/core';
import type { RocketService } from '../src/engine/service';

/** What every resolver receives: the one application service, shared with the REST shim. */
export interface GraphQLContext {
  readonly service: RocketService;
  /** False when INGEST_TOKEN is set and the caller did not present it: mutations refuse. */
  readonly canWrite: boolean;
  /** Set for an operation run as an event stream (server-sent events): see `StreamResume`. */
  readonly resume?: StreamResume;
}

/**
 * How an event stream resumes `eventAppended`: each event's position goes out as its SSE `id`, and a client
 * that reconnects sends the last one back (`Last-Event-ID`), after which the log is read again.
 */
export interface StreamResume {
  /** The position the reconnecting client last received; undefined on a first connection. */
  readonly after: number | undefined;
  /** Told each event's position as the subscription takes it, before its result is sent. */
  seen(position: number): void;
}

/** The Pothos builder. It defines no types: each type file registers its own, and `index.ts` assembles them. */
export const builder = new SchemaBuilder<{
  Context: GraphQLContext;
  Scalars: {
    /** Written by the service as UTC ISO 8601 text; never taken as input. */
    DateTime: { Input: Date; Output: string };
    /** Message numbers and positions reach 2^53 - 1, beyond GraphQL's 32-bit Int. */
    SafeInt: { Input: number; Output: number };
  };
  DefaultFieldNullability: false;
}>({ defaultFieldNullability: false });

/** A GraphQL argument given as null means the same as one left out: the service's default. */
export const optional = <T>(v: T | null | undefined): T | undefined => v ?? undefined;
