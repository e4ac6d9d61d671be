import type { RocketMessage } from '../domain/message';
import { takeWithin, type EventStore, type SubmitOutcome } from '../store/types';
import { noTelemetry, type Telemetry } from './telemetry';

/** Messages of one lane from one submission, settled together: one promise however many they are. */
interface Job {
  readonly messages: readonly RocketMessage[];
  readonly resolve: (outcomes: SubmitOutcome[]) => void;
  readonly reject: (e: unknown) => void;
}

interface Lane {
  readonly queue: Job[];
  busy: boolean;
  /** Messages handed to this lane and not yet settled. */
  depth: number;
}

/** FNV-1a: a channel always hashes to the same lane, in every process. */
export function laneOf(channel: string, lanes: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < channel.length; i++) {
    h ^= channel.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % lanes;
}

/**
 * The worker pool: `count` lanes, each a queue that commits one batch at a time. A channel always maps
 * to the same lane, so a channel's messages reach the store in arrival order and one batch at a time;
 * lanes commit concurrently. Whatever reaches an idle lane within one tick goes into one batch (group
 * commit), up to the store's `maxBatch` messages: the jobs beyond wait for the lane's next batch.
 * Ordering never depends on timing: the store sequences by message number.
 */
export class LanePool {
  private readonly lanes: Lane[];
  private closed = false;
  /** Messages accepted and not yet settled, across lanes. */
  private inFlight = 0;
  private drained: (() => void) | undefined;
  private closing: Promise<void> | undefined;
  private settled = 0;

  constructor(
    private readonly store: EventStore,
    readonly count: number,
    private readonly telemetry: Telemetry = noTelemetry,
  ) {
    if (!Number.isInteger(count) || count < 1) throw new RangeError('the lane count must be a positive integer');
    this.lanes = Array.from({ length: count }, () => ({ queue: [], busy: false, depth: 0 }));
  }

  /** Resolves once the message is durably recorded; rejects if the store failed (nothing acknowledged). */
  async submit(message: RocketMessage): Promise<SubmitOutcome> {
    return (await this.enqueue(this.laneFor(message.channel), [message]))[0] as SubmitOutcome;
  }

  /**
   * `submit` for many messages at once, with one outcome per message in their order: each lane takes its
   * share as one job. Rejects if the store failed for any lane (the other lanes' messages may be recorded:
   * a retry finds them as duplicates).
   */
  async submitAll(messages: readonly RocketMessage[]): Promise<SubmitOutcome[]> {
    if (this.count === 1 || messages.length <= 1)
      return this.enqueue(this.laneFor(messages[0]?.channel ?? ''), messages);
    const shares = new Map<Lane, { messages: RocketMessage[]; at: number[] }>();
    messages.forEach((m, i) => {
      const lane = this.laneFor(m.channel);
      let share = shares.get(lane);
      if (share === undefined) shares.set(lane, (share = { messages: [], at: [] }));
      share.messages.push(m);
      share.at.push(i);
    });
    const outcomes = new Array<SubmitOutcome>(messages.length);
    await Promise.all(
      [...shares].map(async ([lane, share]) => {
        const settled = await this.enqueue(lane, share.messages);
        share.at.forEach((i, k) => (outcomes[i] = settled[k] as SubmitOutcome));
      }),
    );
    return outcomes;
  }

  private laneFor(channel: string): Lane {
    return this.lanes[laneOf(channel, this.count)] as Lane;
  }

  private enqueue(lane: Lane, messages: readonly RocketMessage[]): Promise<SubmitOutcome[]> {
    if (this.closed) return Promise.reject(new Error('the lane pool is closed'));
    if (messages.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      lane.queue.push({ messages, resolve, reject });
      lane.depth += messages.length;
      this.inFlight += messages.length;
      if (!lane.busy && lane.queue.length === 1) setImmediate(() => void this.drain(lane));
    });
  }

  /**
   * Grows after every commit this pool made, successful or not (a failed one may still have landed), before
   * its senders hear of it: read caches compare it to tell whether the store may have changed.
   */
  get version(): number {
    return this.settled;
  }

  /** Queue depth of each lane. */
  depths(): number[] {
    return this.lanes.map((l) => l.depth);
  }

  /** Stops taking messages and resolves once every accepted message is settled. */
  close(): Promise<void> {
    this.closed = true;
    // One promise for every caller: a second close must not take the first one's resolver.
    this.closing ??= this.inFlight === 0 ? Promise.resolve() : new Promise((resolve) => (this.drained = resolve));
    return this.closing;
  }

  private async drain(lane: Lane): Promise<void> {
    if (lane.busy) return;
    lane.busy = true;
    while (lane.queue.length > 0) {
      const batch = takeWithin(lane.queue, this.store.maxBatch);
      const messages = batch.length === 1 ? (batch[0] as Job).messages : batch.flatMap((j) => j.messages);
      const started = performance.now();
      try {
        const result = await this.store.commit(messages);
        this.settled++;
        this.telemetry.committed((performance.now() - started) / 1000, messages.length);
        let at = 0;
        for (const j of batch) {
          const outcomes = result.outcomes.slice(at, (at += j.messages.length));
          outcomes.forEach((o, i) => this.telemetry.decided(o.status, (j.messages[i] as RocketMessage).messageType));
          j.resolve(outcomes);
        }
      } catch (e) {
        this.settled++;
        this.telemetry.storeFailed();
        for (const j of batch) j.reject(e);
      }
      lane.depth -= messages.length;
      this.inFlight -= messages.length;
      if (this.inFlight === 0) this.drained?.();
    }
    lane.busy = false;
  }
}
