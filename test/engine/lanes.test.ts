import { validateEnvelope, type RocketMessage } from '../../src/domain/message';
import { LanePool, laneOf } from '../../src/engine/lanes';
import { MemoryStore } from '../../src/store/memory';
import type { CommitResult, EventStore } from '../../src/store/types';

const msg = (channel: string, n: number): RocketMessage => {
  const v = validateEnvelope({
    metadata: { channel, messageNumber: n, messageTime: '2022-02-02T19:39:05Z', messageType: 'RocketSpeedIncreased' },
    message: { by: 1 },
  });
  if (!v.ok) throw new Error('bad fixture');
  return v.message;
};

/** A real MemoryStore whose commits wait at a gate the test opens, and which records every batch. */
class GatedStore extends MemoryStore {
  readonly batches: string[][] = [];
  readonly gates: Array<() => void> = [];
  failNext = false;
  private arrived: (() => void) | undefined;

  /** Resolves once `n` commits are waiting at the gate. */
  waiting(n: number): Promise<void> {
    if (this.gates.length >= n) return Promise.resolve();
    return new Promise((resolve) => {
      this.arrived = () => {
        if (this.gates.length >= n) resolve();
      };
    });
  }

  override async commit(messages: readonly RocketMessage[]): Promise<CommitResult> {
    this.batches.push(messages.map((m) => `${m.channel}#${m.messageNumber}`));
    await new Promise<void>((open) => {
      this.gates.push(open);
      this.arrived?.();
    });
    if (this.failNext) {
      this.failNext = false;
      throw new Error('disk full');
    }
    return super.commit(messages);
  }
}

/** A real MemoryStore that asks for at most `maxBatch` messages a commit, and records every batch. */
class BoundedStore extends MemoryStore {
  readonly batches: string[][] = [];

  constructor(readonly maxBatch: number) {
    super();
  }

  override commit(messages: readonly RocketMessage[]): Promise<CommitResult> {
    this.batches.push(messages.map((m) => `${m.channel}#${m.messageNumber}`));
    return super.commit(messages);
  }
}

describe('LanePool', () => {
  it('maps a channel to the same lane every time', () => {
    for (const c of ['a', 'rocket-1', '193270a9-c9cf-404a-8f83-838e71d9ae67']) {
      expect(laneOf(c, 3)).toBe(laneOf(c, 3));
      expect(laneOf(c, 3)).toBeGreaterThanOrEqual(0);
      expect(laneOf(c, 3)).toBeLessThan(3);
    }
  });

  it('takes a batch as one job per lane and answers each message in the order given', async () => {
    const store = new GatedStore();
    const pool = new LanePool(store, 2);
    const channels = ['a', 'b', 'c', 'd', 'e', 'f'];
    const lanes = new Set(channels.map((c) => laneOf(c, 2)));
    expect(lanes.size).toBe(2);
    const batch = [...channels.map((c) => msg(c, 2)), ...channels.map((c) => msg(c, 1))];
    const done = pool.submitAll(batch);
    await store.waiting(2);
    // One commit per lane, each with that lane's messages in the batch's order.
    expect(store.batches).toHaveLength(2);
    for (const lane of lanes)
      expect(store.batches).toContainEqual(
        batch.filter((m) => laneOf(m.channel, 2) === lane).map((m) => `${m.channel}#${m.messageNumber}`),
      );
    store.gates.forEach((open) => open());
    const outcomes = await done;
    expect(outcomes.map((o) => `${o.channel}#${o.messageNumber} ${o.status}`)).toEqual(
      batch.map((m) => `${m.channel}#${m.messageNumber} ${m.messageNumber === 2 ? 'buffered' : 'applied'}`),
    );
    expect(await pool.submitAll([])).toEqual([]);
  });

  it('commits whatever reached a lane in one tick as one batch', async () => {
    const store = new GatedStore();
    const pool = new LanePool(store, 1);
    const done = Promise.all([pool.submit(msg('a', 1)), pool.submit(msg('b', 1)), pool.submit(msg('a', 2))]);
    await store.waiting(1);
    store.gates.forEach((open) => open());
    // Each sender gets the outcome of its own message out of the batch's, not another's.
    expect((await done).map((o) => `${o.channel}#${o.messageNumber} ${o.status}`)).toEqual([
      'a#1 applied',
      'b#1 applied',
      'a#2 applied',
    ]);
    expect(store.batches).toEqual([['a#1', 'b#1', 'a#2']]);
  });

  it('hands a store no more than its maxBatch messages a commit, unless one job alone holds more', async () => {
    const store = new BoundedStore(3);
    const pool = new LanePool(store, 1);
    // All queued in one tick: whole jobs go in order, as many as fit in 3 messages, and at least one.
    const jobs = [
      [msg('a', 1)],
      [msg('b', 1), msg('c', 1)],
      [msg('a', 2)],
      [msg('d', 1), msg('e', 1)],
      [msg('a', 3), msg('f', 1), msg('g', 1), msg('h', 1)],
      [msg('a', 4)],
      [msg('i', 1)],
      [msg('j', 1)],
    ];
    const settled = await Promise.all(jobs.map((job) => pool.submitAll(job)));
    // Each sender has the outcomes of its own messages, in its order; a's numbers applied in turn.
    expect(settled.map((outcomes) => outcomes.map((o) => `${o.channel}#${o.messageNumber} ${o.status}`))).toEqual(
      jobs.map((job) => job.map((m) => `${m.channel}#${m.messageNumber} applied`)),
    );
    expect(store.batches).toEqual([
      ['a#1', 'b#1', 'c#1'],
      ['a#2', 'd#1', 'e#1'],
      ['a#3', 'f#1', 'g#1', 'h#1'],
      ['a#4', 'i#1', 'j#1'],
    ]);
    await pool.close();
  });

  it('runs lanes concurrently: a stalled lane does not hold back another', async () => {
    const store = new GatedStore();
    const pool = new LanePool(store, 2);
    const [x, y] = ['a', 'b', 'c', 'd', 'e'].reduce<[string, string] | [string]>(
      (acc, c) => (acc.length === 2 || laneOf(c, 2) === laneOf(acc[0], 2) ? acc : [acc[0], c]),
      ['a'],
    ) as [string, string];
    const first = pool.submit(msg(x, 1));
    const second = pool.submit(msg(y, 1));
    await store.waiting(2);
    (store.gates[1] as () => void)();
    await expect(second).resolves.toMatchObject({ channel: y, status: 'applied' });
    (store.gates[0] as () => void)();
    await expect(first).resolves.toMatchObject({ channel: x, status: 'applied' });
  });

  it('keeps a channel to one batch at a time, in arrival order', async () => {
    const store = new GatedStore();
    const pool = new LanePool(store, 3);
    const one = pool.submit(msg('a', 2));
    await store.waiting(1);
    const two = pool.submit(msg('a', 1));
    (store.gates[0] as () => void)();
    await expect(one).resolves.toMatchObject({ status: 'buffered' });
    await store.waiting(2);
    expect(store.batches).toEqual([['a#2'], ['a#1']]);
    (store.gates[1] as () => void)();
    await expect(two).resolves.toMatchObject({ status: 'applied' });
    expect((await store.getRocket('a'))?.lastMessageNumber).toBe(2);
  });

  it('holds a channel’s next message for its own busy lane, even while another lane is idle', async () => {
    const store = new GatedStore();
    const pool = new LanePool(store, 3);
    const other = ['b', 'c', 'd', 'e'].find((c) => laneOf(c, 3) !== laneOf('a', 3)) as string;
    const one = pool.submit(msg('a', 2));
    await store.waiting(1);
    const two = pool.submit(msg('a', 1));
    // Submitted after a#1: had a#1 gone to an idle lane, its commit would reach the store first.
    const three = pool.submit(msg(other, 1));
    await store.waiting(2);
    expect(store.batches).toEqual([['a#2'], [`${other}#1`]]);
    (store.gates[1] as () => void)();
    (store.gates[0] as () => void)();
    await store.waiting(3);
    (store.gates[2] as () => void)();
    expect((await Promise.all([one, two, three])).map((o) => o.status)).toEqual(['buffered', 'applied', 'applied']);
    expect(store.batches).toEqual([['a#2'], [`${other}#1`], ['a#1']]);
  });

  it('rejects every message of a failed batch, records none of them, and carries on', async () => {
    const store = new GatedStore();
    store.failNext = true;
    const pool = new LanePool(store, 1);
    const failed = Promise.allSettled([pool.submit(msg('a', 1)), pool.submit(msg('b', 1))]);
    await store.waiting(1);
    (store.gates[0] as () => void)();
    expect((await failed).map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect((await store.stats()).events).toBe(0);
    const retry = pool.submit(msg('a', 1));
    await store.waiting(2);
    (store.gates[1] as () => void)();
    await expect(retry).resolves.toMatchObject({ status: 'applied' });
  });

  it('moves its version on after a failed commit as after a good one', async () => {
    const store = new GatedStore();
    store.failNext = true;
    const pool = new LanePool(store, 1);
    // A failed commit may still have landed (its WAL sync failed after the transaction), so read caches
    // keyed on the version must not keep answers from before it.
    const failed = pool.submit(msg('a', 1)).then(
      () => 'applied',
      () => pool.version,
    );
    await store.waiting(1);
    expect(pool.version).toBe(0);
    (store.gates[0] as () => void)();
    expect(await failed).toBe(1);
    const applied = pool.submit(msg('a', 1)).then(() => pool.version);
    await store.waiting(2);
    (store.gates[1] as () => void)();
    expect(await applied).toBe(2);
  });

  it('closes only after every accepted message is settled, and refuses new ones', async () => {
    const store = new GatedStore();
    const pool = new LanePool(store, 1);
    const accepted = pool.submit(msg('a', 1));
    await store.waiting(1);
    let closed = false;
    const closing = pool.close().then(() => (closed = true));
    await expect(pool.submit(msg('a', 2))).rejects.toThrow(/closed/);
    expect(closed).toBe(false);
    (store.gates[0] as () => void)();
    await accepted;
    await closing;
    expect(closed).toBe(true);
  });

  it('answers every caller of close, however many, once every accepted message is settled', async () => {
    const store = new GatedStore();
    const pool = new LanePool(store, 1);
    const accepted = pool.submit(msg('a', 1));
    await store.waiting(1);
    const closings = [pool.close(), pool.close()];
    (store.gates[0] as () => void)();
    await accepted;
    await expect(Promise.all([...closings, pool.close()])).resolves.toEqual([undefined, undefined, undefined]);
  });

  it('refuses a lane count that is not a positive integer', () => {
    const store: EventStore = new MemoryStore();
    expect(() => new LanePool(store, 0)).toThrow(RangeError);
  });
});
