import type { MessageType, Payload, RocketMessage } from '../domain/message';
import type { Rocket, RocketStatus } from '../domain/rocket';

/** An applied message as the event log holds it. `position` is global and grows in commit order. */
export interface StoredEvent {
  readonly position: number;
  readonly channel: string;
  readonly messageNumber: number;
  readonly messageType: MessageType;
  /** The sender's RFC 3339 text, as received. */
  readonly messageTime: string;
  readonly payload: Payload;
  /** Server time of the commit that recorded it (UTC ISO). */
  readonly recordedAt: string;
}

/** What the reorder buffer holds for one channel. */
export interface BufferInfo {
  /** The number the channel waits for: lastMessageNumber + 1. */
  readonly waitingFor: number;
  readonly count: number;
  /** When the oldest buffered message was received (UTC ISO), or null when nothing is buffered. */
  readonly oldestSince: string | null;
}

export interface RocketView extends Rocket {
  readonly buffer: BufferInfo;
}

export type SubmitStatus = 'applied' | 'buffered' | 'duplicate' | 'conflict';

export interface SubmitOutcome {
  readonly status: SubmitStatus;
  readonly channel: string;
  readonly messageNumber: number;
}

export interface CommitResult {
  /** One per submitted message, in submission order. */
  readonly outcomes: readonly SubmitOutcome[];
  /** Events this commit appended, in position order. */
  readonly events: readonly StoredEvent[];
  /** The new state of every rocket this commit changed, after the whole commit. */
  readonly rockets: readonly Rocket[];
}

export const ROCKET_SORT_FIELDS = ['channel', 'type', 'mission', 'speed', 'status', 'launchedAt', 'updatedAt'] as const;
export type RocketSortField = (typeof ROCKET_SORT_FIELDS)[number];

/**
 * The sort key of a rocket: nullable text sorts as the empty string, so every key is comparable.
 * Text compares by code point (SQL `COLLATE "C"` / BINARY); `channel` breaks ties in the same direction.
 */
export type SortKey = string | number;

export interface RocketListQuery {
  readonly sort: RocketSortField;
  readonly order: 'asc' | 'desc';
  readonly status?: RocketStatus | undefined;
  /** Only rockets strictly after this (key, channel) in the chosen order. */
  readonly after?: { readonly key: SortKey; readonly channel: string } | undefined;
  /** At most this many; all when undefined. */
  readonly limit?: number | undefined;
}

export interface EventQuery {
  /** Events of one channel, or of all channels when undefined. */
  readonly channel?: string | undefined;
  /** Only events with a position above this. */
  readonly afterPosition?: number | undefined;
  /** Only events with a message number above this (meaningful with `channel`). */
  readonly afterMessageNumber?: number | undefined;
  /** At most this many, in position order. */
  readonly limit: number;
}

export interface StoreStats {
  readonly rockets: number;
  readonly events: number;
  /** Messages held in the reorder buffer across all channels. */
  readonly buffered: number;
}

export type AppendListener = (events: readonly StoredEvent[], rockets: readonly Rocket[]) => void;

export type StoreKind = 'memory' | 'sqlite' | 'postgres';

/**
 * The event store: the event log, the rockets projection and the reorder buffer, changed together.
 *
 * Every implementation runs the same contract suite (`test/store/contract.ts`).
 */
export interface EventStore {
  readonly kind: StoreKind;
  /**
   * Sequences a batch with `decide` and records the result atomically: appended events, the updated
   * projection and the buffer change in one transaction. Resolves only once that transaction is
   * durable; rejects (recording nothing of this call) if it cannot be. Messages of one channel are
   * taken in array order. Validation happens before: every message here is valid.
   */
  commit(messages: readonly RocketMessage[]): Promise<CommitResult>;
  getRocket(channel: string): Promise<RocketView | undefined>;
  listRockets(query: RocketListQuery): Promise<RocketView[]>;
  /** Applied events in position order. */
  readEvents(query: EventQuery): Promise<StoredEvent[]>;
  /** The highest position in the log, 0 when it is empty. */
  headPosition(): Promise<number>;
  stats(): Promise<StoreStats>;
  /**
   * Registers a listener for appended events: called once per commit of any writer (in PostgreSQL, of
   * any instance) that appended events, in position order with no gap, after that commit is durable,
   * with the new state of the rockets it changed. Returns a function that removes the listener.
   * A listener that throws is a bug: the store logs nothing and carries on.
   */
  onAppend(listener: AppendListener): () => void;
  /** Rebuilds the rockets projection from the event log alone; resolves to the number of events replayed. */
  rebuildProjection(): Promise<number>;
  close(): Promise<void>;
}

/** The sort key of a rocket for `field`, shared by every store and by cursors. */
export function sortKey(r: Rocket, field: RocketSortField): SortKey {
  const v = r[field];
  return v ?? '';
}

/** A stored event back as the message it was applied from. */
export function toMessage(e: StoredEvent): RocketMessage {
  return {
    channel: e.channel,
    messageNumber: e.messageNumber,
    messageTime: e.messageTime,
    messageType: e.messageType,
    payload: e.payload,
  } as RocketMessage;
}

/** Calls every listener; one that throws does not stop the others or the commit that fed them. */
export function notify(
  listeners: Iterable<AppendListener>,
  events: readonly StoredEvent[],
  rockets: readonly Rocket[],
): void {
  for (const l of listeners) {
    try {
      l(events, rockets);
    } catch {
      // A listener's failure is its own; the commit is already durable.
    }
  }
}
