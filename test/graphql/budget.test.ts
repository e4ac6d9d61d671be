import { OperationTypeNode, type GraphQLResolveInfo } from 'graphql';
import { ValidationError } from '../../src/domain/errors';
import type { StoredEvent } from '../../src/store/types';
import { EVENTS_PER_OPERATION, withinBudget } from '../../schema/budget';

/**
 * withinBudget with reads the test settles by hand, in the order it chooses: what the HTTP tests cannot
 * steer, as the memory store answers every read at once.
 */
const query = { operation: { operation: OperationTypeNode.QUERY } } as GraphQLResolveInfo;
const subscription = { operation: { operation: OperationTypeNode.SUBSCRIPTION } } as GraphQLResolveInfo;

const eventsOf = (n: number): StoredEvent[] =>
  Array.from({ length: n }, (_, i) => ({
    position: i + 1,
    channel: 'c',
    messageNumber: i + 1,
    messageType: 'RocketSpeedIncreased',
    messageTime: '2024-01-01T00:00:00Z',
    payload: { by: 1 },
    recordedAt: '2024-01-01T00:00:00.000Z',
  }));

/** A read that waits for the test: `limit` is what it was asked for once it started. */
class HeldRead {
  limit: number | undefined;
  private release: ((events: StoredEvent[]) => void) | undefined;
  private fail: ((e: Error) => void) | undefined;

  /** The read function to hand to withinBudget. */
  readonly read = (limit: number): Promise<StoredEvent[]> => {
    this.limit = limit;
    return new Promise((resolve, reject) => {
      this.release = resolve;
      this.fail = reject;
    });
  };

  get started(): boolean {
    return this.limit !== undefined;
  }

  /** Answers what a store holding `held` events would: at most the limit asked. */
  settle(held: number): void {
    this.release?.(eventsOf(Math.min(held, this.limit ?? 0)));
  }

  reject(e: Error): void {
    this.fail?.(e);
  }
}

/** Lets every promise that can settle do so. */
const settled = () => new Promise((resolve) => setImmediate(resolve));

const outcome = (p: Promise<StoredEvent[]>): Promise<number | 'refused'> =>
  p.then(
    (events) => events.length,
    (e: unknown) => {
      if (e instanceof ValidationError && e.issues[0]?.field === 'events') return 'refused';
      throw e;
    },
  );

describe('withinBudget', () => {
  it('starts the fields that fit in what is left at once, side by side', async () => {
    const context = {};
    const [a, b] = [new HeldRead(), new HeldRead()];
    const pa = withinBudget(context, query, 4000, a.read);
    const pb = withinBudget(context, query, 6000, b.read);
    await settled();
    expect([a.limit, b.limit]).toEqual([4000, 6000]);
    b.settle(6000);
    a.settle(4000);
    expect(await Promise.all([outcome(pa), outcome(pb)])).toEqual([4000, 6000]);
  });

  it.each([
    ['in order', false],
    ['in reverse', true],
  ])('answers fields that leave first out and fit in all, started %s', async (_, reverse) => {
    const context = {};
    const [five, two] = [new HeldRead(), new HeldRead()];
    const start = (r: HeldRead) => outcome(withinBudget(context, query, undefined, r.read));
    const [early, late] = reverse ? [two, five] : [five, two];
    const [pEarly, pLate] = [start(early), start(late)];
    await settled();
    // The first to start reserves the whole budget; the other waits for it rather than being refused.
    expect([early.limit, late.started]).toEqual([EVENTS_PER_OPERATION, false]);
    const held = (r: HeldRead) => (r === five ? 5 : 2);
    early.settle(held(early));
    await settled();
    expect(late.limit).toBe(EVENTS_PER_OPERATION - held(early) + 1);
    late.settle(held(late));
    expect(await Promise.all([pEarly, pLate])).toEqual([held(early), held(late)]);
  });

  it.each([
    ['in order', false],
    ['in reverse', true],
  ])('makes a field that does not fit wait for every read under way, settled %s', async (_, reverse) => {
    const context = {};
    const [a, b, c] = [new HeldRead(), new HeldRead(), new HeldRead()];
    const outcomes = [
      outcome(withinBudget(context, query, 100, a.read)),
      outcome(withinBudget(context, query, 100, b.read)),
      outcome(withinBudget(context, query, undefined, c.read)),
    ];
    await settled();
    expect([a.limit, b.limit, c.limit]).toEqual([100, 100, undefined]);
    const [first, second] = reverse ? [b, a] : [a, b];
    first.settle(7);
    await settled();
    // 9,893 left is less than it wants, and the other read may yet give back 100: it waits on.
    expect(c.started).toBe(false);
    second.settle(7);
    await settled();
    expect(c.limit).toBe(EVENTS_PER_OPERATION - 14 + 1);
    c.settle(3);
    expect(await Promise.all(outcomes)).toEqual([7, 7, 3]);
  });

  it('refuses the field that goes beyond the budget, and those after it without a read', async () => {
    const context = {};
    const reads = [new HeldRead(), new HeldRead(), new HeldRead(), new HeldRead()];
    const [a, b] = reads as [HeldRead, HeldRead, ...HeldRead[]];
    const outcomes = reads.map((r) => outcome(withinBudget(context, query, 6000, r.read)));
    await settled();
    expect(reads.map((r) => r.limit)).toEqual([6000, undefined, undefined, undefined]);
    a.settle(6000);
    await settled();
    // 4,000 left: the next reads one more, to learn whether the operation is over.
    expect(reads.map((r) => r.limit)).toEqual([6000, 4001, undefined, undefined]);
    b.settle(6000);
    expect(await Promise.all(outcomes)).toEqual([6000, 'refused', 'refused', 'refused']);
    expect(reads.map((r) => r.limit)).toEqual([6000, 4001, undefined, undefined]);
  });

  it('answers a short field that reads no more than is left', async () => {
    const context = {};
    const [a, b] = [new HeldRead(), new HeldRead()];
    const pa = outcome(withinBudget(context, query, 6000, a.read));
    const pb = outcome(withinBudget(context, query, 6000, b.read));
    await settled();
    a.settle(6000);
    await settled();
    expect(b.limit).toBe(4001);
    b.settle(4000);
    expect(await Promise.all([pa, pb])).toEqual([6000, 4000]);
  });

  it('gives back what a failed read reserved', async () => {
    const context = {};
    const [a, b] = [new HeldRead(), new HeldRead()];
    const pa = withinBudget(context, query, undefined, a.read);
    const pb = outcome(withinBudget(context, query, undefined, b.read));
    await settled();
    a.reject(new Error('store down'));
    await expect(pa).rejects.toThrow('store down');
    await settled();
    expect(b.limit).toBe(EVENTS_PER_OPERATION);
    b.settle(3);
    expect(await pb).toBe(3);
  });

  it('counts each operation apart, and each execution of a subscription apart', async () => {
    const [q1, q2] = [new HeldRead(), new HeldRead()];
    const queries = [
      outcome(withinBudget({}, query, undefined, q1.read)),
      outcome(withinBudget({}, query, undefined, q2.read)),
    ];
    await settled();
    expect([q1.limit, q2.limit]).toEqual([EVENTS_PER_OPERATION, EVENTS_PER_OPERATION]);
    q1.settle(EVENTS_PER_OPERATION);
    q2.settle(EVENTS_PER_OPERATION);
    expect(await Promise.all(queries)).toEqual([EVENTS_PER_OPERATION, EVENTS_PER_OPERATION]);

    // One subscription, two updates: two `events` fields in the execution of the first share its budget,
    // and the execution of the second has one of its own.
    const live = {};
    const [first, second] = [{ channel: 'c' }, { channel: 'c' }];
    const on = (root: object) => ({ ...subscription, rootValue: root }) as GraphQLResolveInfo;
    const [a, b, c] = [new HeldRead(), new HeldRead(), new HeldRead()];
    const pa = outcome(withinBudget(live, on(first), undefined, a.read));
    const pb = outcome(withinBudget(live, on(first), undefined, b.read));
    const pc = outcome(withinBudget(live, on(second), undefined, c.read));
    await settled();
    expect([a.limit, b.started, c.limit]).toEqual([EVENTS_PER_OPERATION, false, EVENTS_PER_OPERATION]);
    a.settle(EVENTS_PER_OPERATION);
    c.settle(EVENTS_PER_OPERATION);
    await settled();
    // The second field of the first execution reads the one event that shows it is over.
    expect(b.limit).toBe(1);
    b.settle(1);
    expect(await Promise.all([pa, pb, pc])).toEqual([EVENTS_PER_OPERATION, 'refused', EVENTS_PER_OPERATION]);
  });
});
