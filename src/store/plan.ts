import type { RocketMessage } from '../domain/message';
import type { Rocket } from '../domain/rocket';
import { decide, nextExpected, type ChannelState } from '../domain/sequencing';
import type { SubmitOutcome } from './types';

/** What a store can tell the planner, synchronously, about the state before the batch. */
export interface PlanSource {
  /** The channel's rocket and buffer as committed. */
  channel(channel: string): ChannelState;
  /** An applied message as committed; asked only for numbers below the channel's next expected one. */
  appliedMessage(channel: string, messageNumber: number): RocketMessage | undefined;
}

/** Everything one commit must write, worked out before any write. */
export interface BatchPlan {
  readonly outcomes: SubmitOutcome[];
  /** Messages to append to the log, in apply order. */
  readonly applied: RocketMessage[];
  /** Final state of each rocket the batch changed. */
  readonly rockets: Map<string, Rocket>;
  /** Messages to add to the buffer (not those buffered and then applied within this batch). */
  readonly buffered: RocketMessage[];
  /** Buffered messages from earlier commits that this batch applied: remove them from the buffer. */
  readonly released: RocketMessage[];
}

interface Working {
  rocket: Rocket | undefined;
  pending: Map<number, RocketMessage>;
  /** Numbers buffered by this batch. */
  added: Set<number>;
  /** Messages applied by this batch, by number, so a redelivery within the batch finds its twin. */
  appliedHere: Map<number, RocketMessage>;
}

/**
 * Runs `decide` over a batch, message by message, keeping each channel's state in memory so that later
 * messages of the batch see the effect of earlier ones. Pure apart from reading `source`.
 */
export function planBatch(messages: readonly RocketMessage[], source: PlanSource): BatchPlan {
  const plan: BatchPlan = { outcomes: [], applied: [], rockets: new Map(), buffered: [], released: [] };
  const work = new Map<string, Working>();
  for (const m of messages) {
    let w = work.get(m.channel);
    if (w === undefined) {
      const s = source.channel(m.channel);
      w = { rocket: s.rocket, pending: new Map(s.pending), added: new Set(), appliedHere: new Map() };
      work.set(m.channel, w);
    }
    const state: ChannelState = w;
    const twin =
      m.messageNumber < nextExpected(state)
        ? (w.appliedHere.get(m.messageNumber) ?? source.appliedMessage(m.channel, m.messageNumber))
        : undefined;
    const d = decide(state, m, twin);
    plan.outcomes.push({ status: d.outcome, channel: m.channel, messageNumber: m.messageNumber });
    if (d.outcome === 'buffered') {
      w.pending.set(m.messageNumber, m);
      w.added.add(m.messageNumber);
    } else if (d.outcome === 'applied') {
      for (const a of d.applied) {
        plan.applied.push(a);
        w.appliedHere.set(a.messageNumber, a);
        if (w.pending.delete(a.messageNumber) && !w.added.delete(a.messageNumber)) plan.released.push(a);
      }
      w.rocket = d.rocket;
      plan.rockets.set(m.channel, d.rocket);
    }
  }
  for (const w of work.values()) for (const n of w.added) plan.buffered.push(w.pending.get(n) as RocketMessage);
  return plan;
}
