/**
 * What a group commit plans from, in memory: the preloaded state with the plans before it laid over
 * (Overlay), or the rows this instance last saw committed (ChannelCache); and what its plans net out to
 * write (netEffect). No SQL here: the store decides which source to use and writes the result.
 */
import type { RocketMessage } from '../../domain/message';
import type { Rocket } from '../../domain/rocket';
import type { ChannelState } from '../../domain/sequencing';
import type { BatchPlan, PlanSource } from '../plan';
import { keyOf, type Loaded } from './rows';

/**
 * What the batches of one transaction plan from, batch after batch: the loaded state plus the effect of
 * the batches planned before, so that each call of a group sees the calls before it as committed.
 */
export class Overlay implements PlanSource {
  private readonly rockets: Map<string, Rocket>;
  private readonly pending = new Map<string, Map<number, RocketMessage>>();
  private readonly applied: Map<string, RocketMessage>;

  constructor(private readonly loaded: Loaded) {
    this.rockets = new Map(loaded.rockets);
    this.applied = new Map(loaded.twins);
  }

  channel(channel: string): ChannelState {
    return { rocket: this.rockets.get(channel), pending: this.pendingOf(channel) };
  }

  /**
   * An applied message of the log, or of a batch planned before. After a preload, none is an answer (it
   * read every number of the transaction's messages); on `loaded.twins === NOT_LOADED` it throws
   * NotLoaded: the message may be in the log.
   */
  appliedMessage(channel: string, n: number): RocketMessage | undefined {
    const m = this.applied.get(keyOf(channel, n));
    if (m === undefined && this.loaded.twins === NOT_LOADED) throw new NotLoaded();
    return m;
  }

  /** Takes a planned batch in: the batches planned next see it. */
  advance(plan: BatchPlan): void {
    for (const rocket of plan.rockets) this.rockets.set(rocket.channel, rocket);
    for (const m of plan.applied) {
      this.applied.set(keyOf(m.channel, m.messageNumber), m);
      this.pendingOf(m.channel).delete(m.messageNumber);
    }
    for (const m of plan.buffered) this.pendingOf(m.channel).set(m.messageNumber, m);
  }

  private pendingOf(channel: string): Map<number, RocketMessage> {
    let p = this.pending.get(channel);
    if (p === undefined) this.pending.set(channel, (p = new Map(this.loaded.pending.get(channel))));
    return p;
  }
}

/** The twins of a plan from ChannelCache: none was read. */
export const NOT_LOADED: ReadonlyMap<string, RocketMessage> = new Map();

/** A plan from ChannelCache asked for an applied message: it must be planned from the database. */
export class NotLoaded extends Error {}

/**
 * What this instance last saw committed for recently used channels that buffer nothing: the rocket row,
 * or null for none. Only a hint: a commit planned from it checks it on the server, under the channels'
 * locks, before it writes (see PostgresStore). Bounded; the least recently committed channel goes first.
 */
export class ChannelCache {
  private readonly rockets = new Map<string, Rocket | null>();

  constructor(private readonly capacity: number) {}

  get(channel: string): Rocket | null | undefined {
    return this.rockets.get(channel);
  }

  set(channel: string, rocket: Rocket | null): void {
    this.rockets.delete(channel);
    this.rockets.set(channel, rocket);
    if (this.rockets.size > this.capacity) {
      const oldest = this.rockets.keys().next();
      if (oldest.done !== true) this.rockets.delete(oldest.value);
    }
  }

  delete(channel: string): void {
    this.rockets.delete(channel);
  }

  clear(): void {
    this.rockets.clear();
  }
}

/**
 * Whether plans made as if nothing were buffered may depend on how much is: a message of them was
 * buffered, if only until a later one of its batch drained it. The total cap is decided message by
 * message, so with the buffer at the cap that message is refused, and the plans are not what they were.
 */
export const buffersAny = (plans: readonly BatchPlan[]): boolean =>
  plans.some((p) => p.outcomes.some((o) => o.status === 'buffered'));

/** What a transaction writes: the net effect of its plans, taken in order. */
export interface NetEffect {
  /** Final state of each rocket changed. */
  readonly rockets: Map<string, Rocket>;
  /** Rows to delete from `pending`: buffered before the transaction, applied in it. */
  readonly released: RocketMessage[];
  /** Rows to add to `pending`: buffered in the transaction and still buffered at its end. */
  readonly buffered: RocketMessage[];
  /** Events to append, in apply order. */
  readonly applied: RocketMessage[];
}

export function netEffect(plans: readonly BatchPlan[]): NetEffect {
  const rockets = new Map<string, Rocket>();
  const released = new Map<string, RocketMessage>();
  const buffered = new Map<string, RocketMessage>();
  const applied: RocketMessage[] = [];
  for (const p of plans) {
    for (const rocket of p.rockets) rockets.set(rocket.channel, rocket);
    for (const m of p.released) {
      const key = keyOf(m.channel, m.messageNumber);
      // Released by a later call of the group than the one that buffered it: never written at all.
      if (!buffered.delete(key)) released.set(key, m);
    }
    for (const m of p.buffered) buffered.set(keyOf(m.channel, m.messageNumber), m);
    for (const m of p.applied) applied.push(m);
  }
  return { rockets, released: [...released.values()], buffered: [...buffered.values()], applied };
}
