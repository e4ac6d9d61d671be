import type { EventType, Payload, RocketMessage } from '../domain/message';
import type { Rocket, RocketStatus } from '../domain/rocket';

/** An applied message as the event log holds it. `position` is global and grows in commit order. */
export interface StoredEvent {
  readonly position: number;
  readonly channel: string;
  readonly messageNumber: number;
  readonly messageType: EventType;
  /** The sender's RFC 3339 text, as received (for a MessageSkipped, the server time of the skip). */
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

/** Open gaps of the reorder buffer, one per channel that holds buffered messages (with a rocket or not). */
export interface Gap extends BufferInfo {
  readonly channel: string;
  readonly oldestSince: string;
}

/** Numbers `from`..`to` of a channel that the gap policy skipped, each recorded as a MessageSkipped event. */
export interface SkippedGap {
  readonly channel: string;
  readonly from: number;
  readonly to: number;
}

/** The bounds of the reorder buffer. */
export interface BufferLimits {
  /**
   * How far ahead of the number it waits for a channel buffers: a message numbered above
   * `waitingFor + perChannel` is refused. So at most this many messages wait per channel, and a skip
   * never has to record more than this many numbers.
   */
  readonly perChannel: number;
  /** Messages buffered across all channels. */
  readonly total: number;
}

/** MAX_BUFFERED_PER_CHANNEL and MAX_BUFFERED_TOTAL when not configured. */
export const DEFAULT_BUFFER_LIMITS: BufferLimits = { perChannel: 1_000, total: 100_000 };

export type BufferCap = keyof BufferLimits;

export type SubmitStatus = 'applied' | 'buffered' | 'duplicate' | 'conflict' | 'refused';

export type SubmitOutcome =
  | {
      readonly status: 'applied' | 'buffered' | 'duplicate';
      readonly channel: string;
      readonly messageNumber: number;
    }
  | {
      readonly status: 'conflict';
      readonly channel: string;
      readonly messageNumber: number;
      /** The number was skipped by the gap policy: the MessageSkipped event is the first one that stands. */
      readonly skipped?: true;
    }
  | {
      /** It would have been buffered beyond a cap: nothing was stored for it. */
      readonly status: 'refused';
      readonly channel: string;
      readonly messageNumber: number;
      readonly cap: BufferCap;
      /** The value of that cap. */
      readonly limit: number;
      readonly waitingFor: number;
    };

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
  /** Where the data lives, for logs: a file, `memory`, or a PostgreSQL server, database and schema (never credentials). */
  readonly location: string;
  /**
   * Sequences a batch with `decide` and records the result atomically: appended events, the updated
   * projection and the buffer change in one transaction. Resolves only once that transaction is
   * durable; rejects (recording nothing of this call) if it cannot be. Messages of one channel are
   * taken in array order. Validation happens before: every message here is valid.
   */
  commit(messages: readonly RocketMessage[]): Promise<CommitResult>;
  /**
   * The most messages one commit() call should carry, or undefined for no bound. Callers that merge
   * submissions into one call merge no more than this (see `takeWithin`); one submission larger than
   * it still goes whole, as a call is atomic. PostgreSQL sets it: each channel of a transaction holds
   * a lock in a table that every session of the server shares.
   */
  readonly maxBatch?: number | undefined;
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
  /** Open gaps, oldest `oldestSince` first (then by channel), at most `limit` of them. */
  listGaps(limit: number): Promise<Gap[]>;
  /**
   * The gap policy. In each channel whose oldest buffered message was received more than `olderThanMs`
   * before the store's clock, records a MessageSkipped event (payload `{reason}`, messageTime the store
   * clock's time) for every missing number below the lowest buffered one, and applies the buffered
   * messages that unblocks; again while the oldest message still buffered is that old. Each channel's
   * skip is atomic, serialised with commits of that channel (in PostgreSQL under the same lock, so
   * concurrent sweeps by several instances skip a number once), and reaches `onAppend` listeners like
   * any commit. Resolves to the ranges skipped; rejects if the store failed (what was skipped before
   * the failure stays skipped).
   */
  skipGaps(olderThanMs: number, reason: string): Promise<SkippedGap[]>;
  /** Rebuilds the rockets projection from the event log alone; resolves to the number of events replayed. */
  rebuildProjection(): Promise<number>;
  close(): Promise<void>;
}

/** The sort key of a rocket for `field`, shared by every store and by cursors. */
export function sortKey(r: Rocket, field: RocketSortField): SortKey {
  const v = r[field];
  return v ?? '';
}

/** An applied message as the log holds it, at `position`, recorded at `recordedAt` (UTC ISO). */
export function toStoredEvent(m: RocketMessage, position: number, recordedAt: string): StoredEvent {
  return {
    position,
    channel: m.channel,
    messageNumber: m.messageNumber,
    messageType: m.messageType,
    messageTime: m.messageTime,
    payload: m.payload,
    recordedAt,
  };
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

/**
 * Removes from the front of `queue` the entries to merge into one commit() call and returns them: as
 * many as hold at most `max` messages in all (every one when `max` is undefined), and always the first
 * one, however many it holds. The rest stay queued, in order, for the next call.
 */
export function takeWithin<T extends { readonly messages: readonly unknown[] }>(
  queue: T[],
  max: number | undefined,
): T[] {
  if (max === undefined) return queue.splice(0);
  let taken = 1;
  let total = queue[0]?.messages.length ?? 0;
  for (; taken < queue.length; taken++) {
    total += (queue[taken] as T).messages.length;
    if (total > max) break;
  }
  return queue.splice(0, taken);
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
