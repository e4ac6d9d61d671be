import type { RocketMessage } from '../../src/domain/message';
import { evolve, type Rocket } from '../../src/domain/rocket';
import { decide, nextExpected, type ChannelState } from '../../src/domain/sequencing';
import { gapsToSkip, joinSkips, planBatch, skipMessages, splitSkips, type PlanSource } from '../../src/store/plan';
import { rocket } from '../support/telemetry';

const fold = (messages: readonly RocketMessage[]): Rocket | undefined =>
  messages.reduce<Rocket | undefined>((s, m) => evolve(s, m), undefined);

/** A channel that has applied `applied` (numbers 1..n) and holds `pending` in its buffer. */
const channelState = (applied: RocketMessage[], pending: RocketMessage[] = []): ChannelState => ({
  rocket: fold(applied),
  pending: new Map(pending.map((m) => [m.messageNumber, m])),
});

const key = (m: RocketMessage) => `${m.channel}#${m.messageNumber}`;

const r = rocket('rocket-1');

describe('decide', () => {
  describe('applies', () => {
    it('the first message of a channel nobody has heard of', () => {
      const d = decide(channelState([]), r.launched(1));
      expect(d).toStrictEqual({ outcome: 'applied', applied: [r.launched(1)], rocket: fold([r.launched(1)]) });
    });

    it('the next expected message', () => {
      const history = [r.launched(1), r.increased(2, 10)];
      expect(decide(channelState(history), r.decreased(3, 4))).toStrictEqual({
        outcome: 'applied',
        applied: [r.decreased(3, 4)],
        rocket: fold([...history, r.decreased(3, 4)]),
      });
    });

    it('#2 together with every consecutive buffered message it unblocks, and stops at the next gap', () => {
      const state = channelState([r.launched(1)], [r.increased(3, 30), r.increased(4, 40), r.increased(6, 60)]);
      const d = decide(state, r.increased(2, 20));
      expect(d).toStrictEqual({
        outcome: 'applied',
        applied: [r.increased(2, 20), r.increased(3, 30), r.increased(4, 40)],
        rocket: fold([r.launched(1), r.increased(2, 20), r.increased(3, 30), r.increased(4, 40)]),
      });
      if (d.outcome === 'applied') expect(d.rocket.speed).toBe(590);
    });

    it('a launch that arrives last, once everything after it was buffered', () => {
      const later = [r.increased(2, 1), r.missionChanged(3, 'M'), r.exploded(4, 'E')];
      const d = decide(channelState([], later), r.launched(1));
      expect(d).toStrictEqual({
        outcome: 'applied',
        applied: [r.launched(1), ...later],
        rocket: fold([r.launched(1), ...later]),
      });
    });

    it('without changing the state it was given: the store persists the decision', () => {
      const state = channelState([r.launched(1)], [r.increased(3, 30)]);
      const rocketBefore = state.rocket;
      decide(state, r.increased(2, 20));
      expect(state.rocket).toBe(rocketBefore);
      expect([...state.pending.keys()]).toEqual([3]);
    });
  });

  describe('buffers', () => {
    it('#3 while #2 is still missing', () => {
      expect(decide(channelState([r.launched(1)]), r.increased(3, 1))).toStrictEqual({ outcome: 'buffered' });
    });

    it('anything but #1 on a channel nobody has heard of', () => {
      expect(decide(channelState([]), r.increased(2, 1))).toStrictEqual({ outcome: 'buffered' });
      expect(decide(channelState([]), r.increased(Number.MAX_SAFE_INTEGER, 1))).toStrictEqual({ outcome: 'buffered' });
    });

    it('a message beyond others already buffered', () => {
      expect(decide(channelState([r.launched(1)], [r.increased(3, 1)]), r.increased(5, 1))).toStrictEqual({
        outcome: 'buffered',
      });
    });
  });

  describe('acknowledges a duplicate', () => {
    it('of an applied message, given its applied twin', () => {
      const state = channelState([r.launched(1), r.increased(2, 5)]);
      expect(decide(state, r.increased(2, 5), r.increased(2, 5))).toStrictEqual({ outcome: 'duplicate' });
      expect(decide(state, r.launched(1), r.launched(1))).toStrictEqual({ outcome: 'duplicate' });
    });

    it('of a buffered message, without asking for a twin', () => {
      const state = channelState([r.launched(1)], [r.increased(3, 5)]);
      expect(decide(state, r.increased(3, 5))).toStrictEqual({ outcome: 'duplicate' });
    });
  });

  describe('reports a conflict', () => {
    it('for an applied number redelivered with a different payload, time or type', () => {
      const state = channelState([r.launched(1), r.increased(2, 5)]);
      const twin = r.increased(2, 5);
      expect(decide(state, r.increased(2, 6), twin)).toStrictEqual({ outcome: 'conflict' });
      expect(decide(state, r.increased(2, 5, '2030-01-01T00:00:00Z'), twin)).toStrictEqual({ outcome: 'conflict' });
      expect(decide(state, r.decreased(2, 5), twin)).toStrictEqual({ outcome: 'conflict' });
    });

    it('for a buffered number redelivered with different content', () => {
      const state = channelState([r.launched(1)], [r.exploded(3, 'A')]);
      expect(decide(state, r.exploded(3, 'B'))).toStrictEqual({ outcome: 'conflict' });
      expect(decide(state, r.missionChanged(3, 'A'))).toStrictEqual({ outcome: 'conflict' });
    });
  });

  it('requires the applied twin for a number below the next expected one', () => {
    const state = channelState([r.launched(1), r.increased(2, 5)]);
    expect(nextExpected(state)).toBe(3);
    expect(() => decide(state, r.increased(2, 5))).toThrow('decide needs the applied message #2');
  });
});

/**
 * A committed store, as a plain value: applied histories (numbers 1..n per channel) and buffers.
 * It refuses questions the planner must never ask, so the contract of PlanSource is checked too.
 */
function committed(applied: RocketMessage[], pending: RocketMessage[] = []): PlanSource {
  const of = (channel: string, list: RocketMessage[]) => list.filter((m) => m.channel === channel);
  return {
    channel: (channel) => channelState(of(channel, applied), of(channel, pending)),
    appliedMessage: (channel, n) => {
      const log = of(channel, applied);
      if (n >= log.length + 1) throw new Error(`asked for #${n} of ${channel}, which is not below the next expected`);
      return log[n - 1];
    },
  };
}

describe('planBatch', () => {
  const s = rocket('rocket-2');

  it('reports one outcome per message, in submission order, across channels', () => {
    const plan = planBatch(
      [s.increased(2, 1), r.launched(1), s.launched(1), r.launched(1), s.increased(2, 1)],
      committed([]),
    );
    expect(plan.outcomes).toStrictEqual([
      { status: 'buffered', channel: 'rocket-2', messageNumber: 2 },
      { status: 'applied', channel: 'rocket-1', messageNumber: 1 },
      { status: 'applied', channel: 'rocket-2', messageNumber: 1 },
      { status: 'duplicate', channel: 'rocket-1', messageNumber: 1 },
      { status: 'duplicate', channel: 'rocket-2', messageNumber: 2 },
    ]);
    expect(plan.applied.map(key)).toEqual(['rocket-1#1', 'rocket-2#1', 'rocket-2#2']);
  });

  it('applies a reversed batch in number order, buffering nothing in the end', () => {
    const plan = planBatch([r.increased(3, 30), r.increased(2, 20), r.launched(1)], committed([]));
    expect(plan.outcomes.map((o) => o.status)).toEqual(['buffered', 'buffered', 'applied']);
    expect(plan.applied).toStrictEqual([r.launched(1), r.increased(2, 20), r.increased(3, 30)]);
    expect(plan.rockets).toStrictEqual([fold(plan.applied)]);
    expect(plan.buffered).toEqual([]);
    expect(plan.released).toEqual([]);
  });

  it('writes neither a buffered nor a released entry for a message buffered and applied in the same batch', () => {
    const plan = planBatch([r.increased(2, 1), r.launched(1), r.increased(4, 1)], committed([]));
    expect(plan.applied.map(key)).toEqual(['rocket-1#1', 'rocket-1#2']);
    expect(plan.buffered.map(key)).toEqual(['rocket-1#4']);
    expect(plan.released).toEqual([]);
  });

  it('releases messages buffered by earlier commits once this batch applies them', () => {
    const plan = planBatch([r.increased(2, 20)], committed([r.launched(1)], [r.increased(3, 30), r.increased(5, 50)]));
    expect(plan.outcomes.map((o) => o.status)).toEqual(['applied']);
    expect(plan.applied.map(key)).toEqual(['rocket-1#2', 'rocket-1#3']);
    expect(plan.released.map(key)).toEqual(['rocket-1#3']);
    expect(plan.buffered).toEqual([]);
  });

  it('releases only what came from before the batch when old and new buffered messages are applied together', () => {
    const plan = planBatch(
      [r.increased(4, 40), r.increased(2, 20)],
      committed([r.launched(1)], [r.increased(3, 30), r.increased(6, 60)]),
    );
    expect(plan.outcomes.map((o) => o.status)).toEqual(['buffered', 'applied']);
    expect(plan.applied.map(key)).toEqual(['rocket-1#2', 'rocket-1#3', 'rocket-1#4']);
    expect(plan.released.map(key)).toEqual(['rocket-1#3']);
    expect(plan.buffered).toEqual([]);
    expect(plan.rockets.map((k) => [k.channel, k.speed])).toEqual([['rocket-1', 590]]);
  });

  it('acknowledges a redelivery within the batch of a message applied earlier in it', () => {
    const plan = planBatch([r.launched(1), r.increased(2, 5), r.launched(1), r.increased(2, 5)], committed([]));
    expect(plan.outcomes.map((o) => o.status)).toEqual(['applied', 'applied', 'duplicate', 'duplicate']);
    expect(plan.applied.map(key)).toEqual(['rocket-1#1', 'rocket-1#2']);
  });

  it('acknowledges a redelivery of a message this batch applied by draining the buffer', () => {
    const plan = planBatch([r.increased(2, 5), r.increased(3, 7)], committed([r.launched(1)], [r.increased(3, 7)]));
    expect(plan.outcomes.map((o) => o.status)).toEqual(['applied', 'duplicate']);
    const conflicting = planBatch(
      [r.increased(2, 5), r.increased(3, 8)],
      committed([r.launched(1)], [r.increased(3, 7)]),
    );
    expect(conflicting.outcomes.map((o) => o.status)).toEqual(['applied', 'conflict']);
    expect(conflicting.applied.map((m) => m.payload)).toEqual([{ by: 5 }, { by: 7 }]);
  });

  it('buffers a message once when it is redelivered within the batch, and refuses a different body for it', () => {
    const plan = planBatch([r.increased(3, 1), r.increased(3, 1), r.increased(3, 2)], committed([r.launched(1)]));
    expect(plan.outcomes.map((o) => o.status)).toEqual(['buffered', 'duplicate', 'conflict']);
    expect(plan.buffered).toStrictEqual([r.increased(3, 1)]);
    expect(plan.rockets).toEqual([]);
  });

  it('tells redeliveries from conflicts for messages applied by earlier commits', () => {
    const source = committed([r.launched(1), r.increased(2, 5)]);
    const plan = planBatch(
      [r.increased(2, 5), r.increased(2, 6), r.launched(1), r.launched(1, { mission: 'OTHER' })],
      source,
    );
    expect(plan.outcomes.map((o) => o.status)).toEqual(['duplicate', 'conflict', 'duplicate', 'conflict']);
    expect(plan.applied).toEqual([]);
    expect(plan.rockets).toEqual([]);
  });

  it('keeps the first of two different bodies for one number within the batch', () => {
    const plan = planBatch([r.launched(1, { mission: 'FIRST' }), r.launched(1, { mission: 'SECOND' })], committed([]));
    expect(plan.outcomes.map((o) => o.status)).toEqual(['applied', 'conflict']);
    expect(plan.rockets.map((k) => k.mission)).toEqual(['FIRST']);
  });

  it('returns the final state of each changed rocket, and only of those', () => {
    const plan = planBatch(
      [r.increased(2, 1), s.increased(3, 1), r.increased(3, 1), s.launched(1)],
      committed([r.launched(1), s.launched(1)]),
    );
    expect(plan.rockets).toStrictEqual([fold([r.launched(1), r.increased(2, 1), r.increased(3, 1)])]);
    expect(plan.outcomes.map((o) => o.status)).toEqual(['applied', 'buffered', 'applied', 'duplicate']);
    expect(plan.buffered.map(key)).toEqual(['rocket-2#3']);

    const both = planBatch(
      [r.increased(2, 1), s.increased(2, 5), r.increased(3, 1), s.increased(3, 5), r.increased(4, 1)],
      committed([r.launched(1), s.launched(1)]),
    );
    expect(both.rockets).toStrictEqual([
      fold([r.launched(1), r.increased(2, 1), r.increased(3, 1), r.increased(4, 1)]),
      fold([s.launched(1), s.increased(2, 5), s.increased(3, 5)]),
    ]);
  });

  it('plans nothing for an empty batch', () => {
    expect(planBatch([], committed([]))).toStrictEqual({
      outcomes: [],
      applied: [],
      rockets: [],
      buffered: [],
      released: [],
    });
  });
});

describe('planBatch with buffer caps', () => {
  const s = rocket('rocket-2');
  const budget = (buffered: number, perChannel = 2, total = 3) => ({ limits: { perChannel, total }, buffered });

  it('refuses a message more than the per-channel cap ahead of the next expected number, keeping nothing of it', () => {
    const plan = planBatch(
      [r.increased(3, 3), r.increased(4, 4), r.increased(5, 5)],
      committed([r.launched(1)]),
      budget(0),
    );
    expect(plan.outcomes).toStrictEqual([
      { status: 'buffered', channel: 'rocket-1', messageNumber: 3 },
      { status: 'buffered', channel: 'rocket-1', messageNumber: 4 },
      { status: 'refused', channel: 'rocket-1', messageNumber: 5, cap: 'perChannel', limit: 2, waitingFor: 2 },
    ]);
    expect(plan.buffered.map(key)).toEqual(['rocket-1#3', 'rocket-1#4']);
  });

  it('never refuses the next expected message, and measures the cap from the number it moved the channel to', () => {
    const plan = planBatch(
      [r.increased(2, 2), r.increased(5, 5)],
      committed([r.launched(1)], [r.increased(3, 3)]),
      budget(3),
    );
    expect(plan.outcomes.map((o) => o.status)).toEqual(['applied', 'buffered']);
    expect(plan.applied.map(key)).toEqual(['rocket-1#2', 'rocket-1#3']);
  });

  it('refuses at the total cap, counting what the batch buffers and drains', () => {
    const plan = planBatch(
      [s.increased(3, 3), r.increased(3, 3), s.increased(2, 2), r.increased(4, 4)],
      committed([r.launched(1), s.launched(1)]),
      budget(1),
    );
    expect(plan.outcomes.map((o) => (o.status === 'refused' ? `refused:${o.cap}` : o.status))).toEqual([
      'buffered',
      'buffered',
      'applied',
      'buffered',
    ]);
    const full = planBatch(
      [r.increased(3, 3), s.increased(3, 3)],
      committed([r.launched(1), s.launched(1)]),
      budget(2),
    );
    expect(full.outcomes[1]).toStrictEqual({
      status: 'refused',
      channel: 'rocket-2',
      messageNumber: 3,
      cap: 'total',
      limit: 3,
      waitingFor: 2,
    });
  });

  it('tells duplicates and conflicts of buffered messages as always at a cap', () => {
    const plan = planBatch(
      [r.increased(3, 3), r.increased(3, 4), r.increased(9, 9)],
      committed([r.launched(1)], [r.increased(3, 3)]),
      budget(3),
    );
    expect(plan.outcomes.map((o) => o.status)).toEqual(['duplicate', 'conflict', 'refused']);
  });

  it('marks a conflict with a skipped number as such', () => {
    const [skip] = skipMessages([{ channel: 'rocket-1', from: 2, to: 2 }], '2024-05-01T12:00:00.000Z', 'timeout');
    const plan = planBatch(
      [r.increased(2, 2), r.launched(1, { mission: 'X' })],
      committed([r.launched(1), skip as RocketMessage]),
    );
    expect(plan.outcomes).toStrictEqual([
      { status: 'conflict', channel: 'rocket-1', messageNumber: 2, skipped: true },
      { status: 'conflict', channel: 'rocket-1', messageNumber: 1 },
    ]);
  });
});

describe('gapsToSkip', () => {
  const b = (messageNumber: number, receivedAt: number) => ({ messageNumber, receivedAt });

  it('skips nothing while every buffered message arrived at or after the cutoff', () => {
    expect(gapsToSkip('c', 2, [b(4, 100), b(5, 50)], 50)).toEqual([]);
    expect(gapsToSkip('c', 2, [], 1_000)).toEqual([]);
  });

  it('skips the missing numbers below the lowest buffered one once the oldest is stale', () => {
    expect(gapsToSkip('c', 2, [b(5, 100), b(4, 10)], 50)).toEqual([{ channel: 'c', from: 2, to: 3 }]);
  });

  it('goes on to the next gap only while a message behind it is stale too', () => {
    const buffered = [b(3, 10), b(4, 10), b(7, 60), b(9, 20)];
    expect(gapsToSkip('c', 2, buffered, 50)).toEqual([
      { channel: 'c', from: 2, to: 2 },
      { channel: 'c', from: 5, to: 6 },
      { channel: 'c', from: 8, to: 8 },
    ]);
    expect(gapsToSkip('c', 2, [b(3, 10), b(7, 60)], 50)).toEqual([{ channel: 'c', from: 2, to: 2 }]);
  });

  it('gives one MessageSkipped per number, which the planner applies with what they unblock', () => {
    const gaps = gapsToSkip('rocket-1', 2, [b(4, 0)], 1);
    const skips = skipMessages(gaps, '2024-05-01T12:00:00.000Z', 'timeout');
    expect(skips.map((m) => [m.messageNumber, m.messageType, m.messageTime, m.payload])).toEqual([
      [2, 'MessageSkipped', '2024-05-01T12:00:00.000Z', { reason: 'timeout' }],
      [3, 'MessageSkipped', '2024-05-01T12:00:00.000Z', { reason: 'timeout' }],
    ]);
    const plan = planBatch(skips, committed([r.launched(1)], [r.increased(4, 4)]));
    expect(plan.applied.map(key)).toEqual(['rocket-1#2', 'rocket-1#3', 'rocket-1#4']);
    expect(plan.released.map(key)).toEqual(['rocket-1#4']);
    expect(plan.rockets).toMatchObject([{ channel: 'rocket-1', speed: 504, lastMessageNumber: 4 }]);
  });
});

describe('splitSkips and joinSkips', () => {
  const g = (channel: string, from: number, to: number) => ({ channel, from, to });

  it('takes the first numbers up to the budget, cutting a gap where it runs out, and leaves the rest', () => {
    const gaps = [g('a', 2, 4), g('b', 1, 5), g('c', 7, 7)];
    expect(splitSkips(gaps, 3)).toEqual([[g('a', 2, 4)], [g('b', 1, 5), g('c', 7, 7)]]);
    expect(splitSkips(gaps, 5)).toEqual([
      [g('a', 2, 4), g('b', 1, 2)],
      [g('b', 3, 5), g('c', 7, 7)],
    ]);
    expect(splitSkips(gaps, 9)).toEqual([gaps, []]);
    expect(splitSkips([], 1)).toEqual([[], []]);
  });

  it('joins a gap cut over transactions again, and nothing else', () => {
    const cut = [g('a', 2, 4), g('b', 1, 2), g('b', 3, 5), g('a', 5, 6), g('a', 8, 9)];
    expect(joinSkips(cut)).toEqual([g('a', 2, 6), g('b', 1, 5), g('a', 8, 9)]);
    // Taking a split's parts in turn gives back what was split.
    const gaps = [g('a', 2, 40), g('b', 1, 25), g('a', 42, 42)];
    const parts: ReturnType<typeof g>[] = [];
    for (let left = gaps; left.length > 0;) {
      const [taken, rest] = splitSkips(left, 7);
      expect(taken.reduce((n, x) => n + x.to - x.from + 1, 0)).toBeLessThanOrEqual(7);
      parts.push(...taken);
      left = rest;
    }
    expect(joinSkips(parts)).toEqual(gaps);
  });
});
