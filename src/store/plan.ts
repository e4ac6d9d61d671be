import { MESSAGE_SKIPPED, type RocketMessage, type SkipMessage } from '../domain/message';
import type { Rocket } from '../domain/rocket';
import { decide, nextExpected, type ChannelState } from '../domain/sequencing';
import type { BufferLimits, SkippedGap, SubmitOutcome } from './types';

/** What a store can tell the planner, synchronously, about the state before the batch. */
export interface PlanSource {
  /** The channel's rocket and buffer as committed. */
  channel(channel: string): ChannelState;
  /** An applied message as committed; asked only for numbers below the channel's next expected one. */
  appliedMessage(channel: string, messageNumber: number): RocketMessage | undefined;
}

/** The buffer's bounds, and how many messages all channels buffer before the batch. */
export interface BufferBudget {
  readonly limits: BufferLimits;
  readonly buffered: number;
}

/** Everything one commit must write, worked out before any write. */
export interface BatchPlan {
  readonly outcomes: SubmitOutcome[];
  /** Messages to append to the log, in apply order. */
  readonly applied: RocketMessage[];
  /** Final state of each rocket the batch changed, one per channel. */
  readonly rockets: Rocket[];
  /** Messages to add to the buffer (not those buffered and then applied within this batch). */
  readonly buffered: RocketMessage[];
  /** Buffered messages from earlier commits that this batch applied: remove them from the buffer. */
  readonly released: RocketMessage[];
}

interface Working {
  rocket: Rocket | undefined;
  /** Whether this batch applied a message of the channel, so `rocket` belongs in the plan. */
  changed: boolean;
  /** The source's map until this batch changes it, then a copy (most batches change none). */
  pending: ReadonlyMap<number, RocketMessage>;
  ownPending: boolean;
  /** Numbers buffered by this batch; created by the first. */
  added: Set<number> | undefined;
  /**
   * Messages applied by this batch, in number order from `firstApplied`, so a redelivery within the batch
   * finds its twin: a channel applies a contiguous run of numbers. Created by the first.
   */
  appliedHere: RocketMessage[] | undefined;
  firstApplied: number;
}

/** The working buffer of a channel, copied the first time this batch changes it. */
function ownPending(w: Working): Map<number, RocketMessage> {
  if (!w.ownPending) {
    w.pending = new Map(w.pending);
    w.ownPending = true;
  }
  return w.pending as Map<number, RocketMessage>;
}

/**
 * Runs `decide` over a batch, message by message, keeping each channel's state in memory so that later
 * messages of the batch see the effect of earlier ones. Pure apart from reading `source`.
 *
 * With a `budget`, a message that would be buffered beyond a cap is `refused` instead and nothing is kept
 * of it: more than `limits.perChannel` numbers ahead of the one its channel waits for, or while all
 * channels together buffer `limits.total`. The message a channel waits for is never refused (it only ever
 * drains the buffer), so no cap can deadlock a channel; duplicates and conflicts are told as always.
 */
export function planBatch(messages: readonly RocketMessage[], source: PlanSource, budget?: BufferBudget): BatchPlan {
  // Batches run to a thousand messages over as many channels: each allocation per message counts.
  const plan: BatchPlan = { outcomes: [], applied: [], rockets: [], buffered: [], released: [] };
  const work = new Map<string, Working>();
  let total = budget?.buffered ?? 0;
  for (const m of messages) {
    let w = work.get(m.channel);
    if (w === undefined) {
      const s = source.channel(m.channel);
      w = {
        rocket: s.rocket,
        changed: false,
        pending: s.pending,
        ownPending: false,
        added: undefined,
        appliedHere: undefined,
        firstApplied: 0,
      };
      work.set(m.channel, w);
    }
    const state: ChannelState = w;
    const expected = nextExpected(state);
    const twin =
      m.messageNumber < expected
        ? (w.appliedHere?.[m.messageNumber - w.firstApplied] ?? source.appliedMessage(m.channel, m.messageNumber))
        : undefined;
    const d = decide(state, m, twin);
    const { channel, messageNumber } = m;
    if (d.outcome === 'buffered') {
      const limits = budget?.limits;
      const cap =
        limits === undefined
          ? undefined
          : messageNumber - expected > limits.perChannel
            ? 'perChannel'
            : total >= limits.total
              ? 'total'
              : undefined;
      if (limits !== undefined && cap !== undefined) {
        plan.outcomes.push({
          status: 'refused',
          channel,
          messageNumber,
          cap,
          limit: limits[cap],
          waitingFor: expected,
        });
        continue;
      }
      ownPending(w).set(messageNumber, m);
      (w.added ??= new Set()).add(messageNumber);
      total++;
      plan.outcomes.push({ status: 'buffered', channel, messageNumber });
    } else if (d.outcome === 'applied') {
      if (w.appliedHere === undefined) {
        w.firstApplied = messageNumber;
        w.appliedHere = d.applied.slice();
      } else for (const a of d.applied) w.appliedHere.push(a);
      for (const a of d.applied) {
        plan.applied.push(a);
        if (w.pending.has(a.messageNumber)) {
          ownPending(w).delete(a.messageNumber);
          total--;
          if (w.added?.delete(a.messageNumber) !== true) plan.released.push(a);
        }
      }
      w.rocket = d.rocket;
      w.changed = true;
      plan.outcomes.push({ status: 'applied', channel, messageNumber });
    } else if (d.outcome === 'conflict' && twin?.messageType === MESSAGE_SKIPPED) {
      plan.outcomes.push({ status: 'conflict', channel, messageNumber, skipped: true });
    } else {
      plan.outcomes.push({ status: d.outcome, channel, messageNumber });
    }
  }
  for (const w of work.values()) {
    if (w.changed) plan.rockets.push(w.rocket as Rocket);
    if (w.added !== undefined) for (const n of w.added) plan.buffered.push(w.pending.get(n) as RocketMessage);
  }
  return plan;
}

/** A buffered message's number and when it was received (epoch milliseconds). */
export interface BufferedAt {
  readonly messageNumber: number;
  readonly receivedAt: number;
}

/** Channels one skip transaction handles at most. */
export const SKIP_CHANNELS_PER_TRANSACTION = 100;

/**
 * Numbers one skip transaction records at most. A channel skips at most its buffer's span, but
 * MAX_BUFFERED_PER_CHANNEL may be up to a million: a hundred channels a million numbers behind would make
 * one transaction of a hundred million events, planned in one go (and, in SQLite, written while the event
 * loop waits). A channel cut short stays stale, and the sweep's next transaction takes it on.
 */
export const SKIP_NUMBERS_PER_TRANSACTION = 10_000;

/** `gaps` split after their first `budget` numbers: those one transaction records, and those left. Pure. */
export function splitSkips(
  gaps: readonly SkippedGap[],
  budget = SKIP_NUMBERS_PER_TRANSACTION,
): [taken: SkippedGap[], left: SkippedGap[]] {
  const taken: SkippedGap[] = [];
  for (const [i, g] of gaps.entries()) {
    const size = g.to - g.from + 1;
    if (size <= budget) {
      taken.push(g);
      budget -= size;
      continue;
    }
    if (budget > 0) taken.push({ ...g, to: g.from + budget - 1 });
    const rest = budget > 0 ? { ...g, from: g.from + budget } : g;
    return [taken, [rest, ...gaps.slice(i + 1)]];
  }
  return [taken, []];
}

/**
 * What a sweep skipped, a gap split over transactions as one range again: ranges of a channel that continue
 * one another are joined (two gaps the policy finds apart always have a buffered number between them). Pure.
 */
export function joinSkips(gaps: readonly SkippedGap[]): SkippedGap[] {
  const out: SkippedGap[] = [];
  const last = new Map<string, number>();
  for (const g of gaps) {
    const i = last.get(g.channel);
    const before = i === undefined ? undefined : out[i];
    if (i !== undefined && before !== undefined && before.to + 1 === g.from) out[i] = { ...before, to: g.to };
    else {
      last.set(g.channel, out.length);
      out.push(g);
    }
  }
  return out;
}

/**
 * The gap policy for one channel, as ranges of numbers to skip: while the oldest message still buffered
 * was received before `cutoff` (epoch ms), every missing number from the one the channel waits for up to
 * the lowest buffered one; the run of buffered messages after it then applies and the check repeats.
 * Every number skipped lies below a buffered one, so a channel never skips more numbers than its buffer
 * spans. Pure.
 */
export function gapsToSkip(
  channel: string,
  waitingFor: number,
  buffered: readonly BufferedAt[],
  cutoff: number,
): SkippedGap[] {
  const sorted = buffered
    .filter((b) => b.messageNumber >= waitingFor)
    .sort((a, b) => a.messageNumber - b.messageNumber);
  // oldest[i]: the earliest arrival among sorted[i..], the messages still buffered once those below i applied.
  const oldest: number[] = new Array<number>(sorted.length);
  for (let i = sorted.length - 1, min = Infinity; i >= 0; i--)
    oldest[i] = min = Math.min(min, sorted[i]?.receivedAt ?? min);
  const gaps: SkippedGap[] = [];
  let next = waitingFor;
  let i = 0;
  while (i < sorted.length && (oldest[i] ?? Infinity) < cutoff) {
    const low = (sorted[i] as BufferedAt).messageNumber;
    if (low > next) gaps.push({ channel, from: next, to: low - 1 });
    next = low;
    while (i < sorted.length && sorted[i]?.messageNumber === next) {
      i++;
      next++;
    }
  }
  return gaps;
}

/** The MessageSkipped events of some gaps, in number order: the planner applies them as any message. */
export function skipMessages(gaps: readonly SkippedGap[], messageTime: string, reason: string): SkipMessage[] {
  const out: SkipMessage[] = [];
  for (const g of gaps)
    for (let n = g.from; n <= g.to; n++)
      out.push({
        channel: g.channel,
        messageNumber: n,
        messageTime,
        messageType: MESSAGE_SKIPPED,
        payload: { reason },
      });
  return out;
}
