import type { RocketMessage } from '../domain/message';
import type { EventStore, SubmitOutcome } from '../store/types';
import { noTelemetry, type Telemetry } from './telemetry';

interface Job {
  readonly message: RocketMessage;
  readonly resolve: (o: SubmitOutcome) => void;
  readonly reject: (e: unknown) => void;
}

interface Lane {
  queue: Job[];
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
 * commit). Ordering never depends on timing: the store sequences by message number.
 */
export class LanePool {
  private readonly lanes: Lane[];
  private closed = false;
  /** Messages accepted and not yet settled, across lanes. */
  private inFlight = 0;
  private drained: (() => void) | undefined;
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
  submit(message: RocketMessage): Promise<SubmitOutcome> {
    if (this.closed) return Promise.reject(new Error('the lane pool is closed'));
    const lane = this.lanes[laneOf(message.channel, this.count)] as Lane;
    return new Promise((resolve, reject) => {
      lane.queue.push({ message, resolve, reject });
      lane.depth++;
      this.inFlight++;
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
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => (this.drained = resolve));
  }

  private async drain(lane: Lane): Promise<void> {
    if (lane.busy) return;
    lane.busy = true;
    while (lane.queue.length > 0) {
      const batch = lane.queue;
      lane.queue = [];
      const started = performance.now();
      try {
        const result = await this.store.commit(batch.map((j) => j.message));
        this.settled++;
        this.telemetry.committed((performance.now() - started) / 1000, batch.length);
        batch.forEach((j, i) => {
          const outcome = result.outcomes[i] as SubmitOutcome;
          this.telemetry.decided(outcome.status, j.message.messageType);
          j.resolve(outcome);
        });
      } catch (e) {
        this.settled++;
        this.telemetry.storeFailed();
        for (const j of batch) j.reject(e);
      }
      lane.depth -= batch.length;
      this.inFlight -= batch.length;
      if (this.inFlight === 0) this.drained?.();
    }
    lane.busy = false;
  }
}
