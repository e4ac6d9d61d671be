import fc from 'fast-check';
import type { MessageType, PayloadByType, RocketMessage } from '../../src/domain/message';
import { evolve, type Rocket } from '../../src/domain/rocket';
import { MemoryStore } from '../../src/store/memory';
import {
  toMessage,
  type CommitResult,
  type EventStore,
  type RocketView,
  type SubmitStatus,
} from '../../src/store/types';
import { parse } from '../support/telemetry';

/**
 * The central promise of the service: whatever order, duplication and batching the telemetry arrives
 * in, the rockets and the event log end up exactly as if every message had arrived once, in order.
 */

type Step = { [K in MessageType]: { readonly messageType: K; readonly payload: PayloadByType[K] } }[MessageType];

const amount = fc.integer({ min: 0, max: 10_000 });
const text = fc.string({ maxLength: 12 });
const launch: fc.Arbitrary<Step> = fc
  .record({ type: text, launchSpeed: amount, mission: text })
  .map((payload) => ({ messageType: 'RocketLaunched', payload }));
const laterStep: fc.Arbitrary<Step> = fc.oneof(
  { weight: 10, arbitrary: amount.map((by): Step => ({ messageType: 'RocketSpeedIncreased', payload: { by } })) },
  { weight: 10, arbitrary: amount.map((by): Step => ({ messageType: 'RocketSpeedDecreased', payload: { by } })) },
  {
    weight: 4,
    arbitrary: text.map((newMission): Step => ({ messageType: 'RocketMissionChanged', payload: { newMission } })),
  },
  { weight: 1, arbitrary: text.map((reason): Step => ({ messageType: 'RocketExploded', payload: { reason } })) },
  { weight: 1, arbitrary: launch },
);

const channelName = fc.oneof(
  // Any name validation accepts: not blank, and not "." or "..".
  {
    weight: 9,
    arbitrary: fc.string({ minLength: 1, maxLength: 12 }).filter((s) => s.trim() !== '' && s !== '.' && s !== '..'),
  },
  { weight: 1, arbitrary: fc.constantFrom('__proto__', 'constructor', 'toString') },
);

interface History {
  readonly channel: string;
  /** Messages 1..n of the channel, in number order, each validated like a real request. */
  readonly messages: readonly RocketMessage[];
}

const history = (maxMessages: number): fc.Arbitrary<History> =>
  fc
    .record({
      channel: channelName,
      launch,
      later: fc.array(laterStep, { maxLength: maxMessages - 1, size: 'max' }),
      start: fc.integer({ min: Date.UTC(2020, 0, 1), max: Date.UTC(2030, 0, 1) }),
      stepMs: fc.integer({ min: 0, max: 90_000 }),
    })
    .map(({ channel, launch: first, later, start, stepMs }) => ({
      channel,
      messages: [first, ...later].map((step, i) =>
        parse({
          metadata: {
            channel,
            messageNumber: i + 1,
            messageTime: new Date(start + i * stepMs).toISOString(),
            messageType: step.messageType,
          },
          message: { ...step.payload },
        }),
      ),
    }));

const fleet = (maxRockets: number, maxMessages: number): fc.Arbitrary<History[]> =>
  fc.uniqueArray(history(maxMessages), {
    minLength: 1,
    maxLength: maxRockets,
    selector: (h) => h.channel,
    size: 'max',
  });

/** Sorts items by random keys: any permutation is reachable, and it shrinks towards submission order. */
function byKeys<T>(items: readonly { item: T; key: number }[]): T[] {
  return items
    .map((x, i) => ({ ...x, i }))
    .sort((a, b) => a.key - b.key || a.i - b.i)
    .map((x) => x.item);
}

/** Cuts `items` into consecutive batches whose sizes cycle through `sizes`. */
function cut<T>(items: readonly T[], sizes: readonly number[]): T[][] {
  const batches: T[][] = [];
  for (let at = 0, i = 0; at < items.length; i++) {
    const size = sizes[i % sizes.length] ?? 1;
    batches.push(items.slice(at, at + size));
    at += size;
  }
  return batches;
}

/** A copy with its own objects, as a redelivery decoded from a second request would be. */
const redelivered = (m: RocketMessage): RocketMessage => structuredClone(m);

const key = (m: { channel: string; messageNumber: number }) => JSON.stringify([m.channel, m.messageNumber]);

/** A clock that moves one millisecond per reading: deterministic, and no timer involved. */
function tickingClock(): () => Date {
  let t = Date.UTC(2024, 0, 1);
  return () => new Date(t++);
}

const foldHistory = (messages: readonly RocketMessage[]): Rocket | undefined =>
  messages.reduce<Rocket | undefined>((s, m) => evolve(s, m), undefined);

/** Commits the batches `parallel` at a time, as concurrent requests would; results in batch order. */
async function deliver(store: EventStore, batches: RocketMessage[][], parallel: number): Promise<CommitResult[]> {
  const results: CommitResult[] = [];
  for (let i = 0; i < batches.length; i += parallel)
    results.push(...(await Promise.all(batches.slice(i, i + parallel).map((b) => store.commit(b)))));
  return results;
}

/** Everything a reader can observe about the given channels. */
async function snapshot(store: EventStore, channels: readonly string[]) {
  const head = await store.headPosition();
  return {
    rockets: await Promise.all(channels.map((c) => store.getRocket(c))),
    list: await store.listRockets({ sort: 'channel', order: 'asc' }),
    events: await store.readEvents({ limit: head + 1 }),
    stats: await store.stats(),
    head,
  };
}

/** Asserts the store holds exactly the fleet's histories, as in-order delivery into `reference` left them. */
async function expectInOrderState(store: EventStore, reference: EventStore, histories: readonly History[]) {
  const total = histories.reduce((n, h) => n + h.messages.length, 0);
  expect(await store.stats()).toStrictEqual({ rockets: histories.length, events: total, buffered: 0 });
  expect(await store.headPosition()).toBe(total);

  for (const h of histories) {
    const expected: RocketView = {
      ...(foldHistory(h.messages) as Rocket),
      buffer: { waitingFor: h.messages.length + 1, count: 0, oldestSince: null },
    };
    expect(await store.getRocket(h.channel)).toStrictEqual(expected);
    expect(await reference.getRocket(h.channel)).toStrictEqual(expected);

    const events = await store.readEvents({ channel: h.channel, limit: total + 1 });
    expect(events.map((e) => e.messageNumber)).toEqual(h.messages.map((_, i) => i + 1));
    expect(events.map(toMessage)).toStrictEqual(h.messages);
  }

  for (const sort of ['channel', 'speed', 'updatedAt'] as const)
    for (const order of ['asc', 'desc'] as const)
      expect(await store.listRockets({ sort, order })).toStrictEqual(await reference.listRockets({ sort, order }));

  const log = await store.readEvents({ limit: total + 1 });
  expect(log.map((e) => e.position)).toEqual(log.map((_, i) => i + 1));

  expect(await store.rebuildProjection()).toBe(total);
  for (const h of histories) expect((await store.getRocket(h.channel))?.lastMessageNumber).toBe(h.messages.length);
}

async function inOrder(histories: readonly History[]): Promise<MemoryStore> {
  const reference = new MemoryStore(tickingClock());
  const result = await reference.commit(histories.flatMap((h) => h.messages));
  expect(result.outcomes.every((o) => o.status === 'applied')).toBe(true);
  return reference;
}

describe('delivery in any order, with redeliveries, in any batches', () => {
  const scenario = fleet(30, 40).chain((histories) => {
    const messages = histories.flatMap((h) => h.messages);
    return fc.record({
      histories: fc.constant(histories),
      // One random sort key per delivery of each message: the first is the original, the rest redeliveries.
      keys: fc.array(fc.array(fc.nat(), { minLength: 1, maxLength: 3 }), {
        minLength: messages.length,
        maxLength: messages.length,
      }),
      sizes: fc.array(fc.integer({ min: 1, max: 60 }), { minLength: 1, maxLength: 8 }),
      parallel: fc.integer({ min: 1, max: 6 }),
    });
  });

  it('ends with the same rockets and event log as in-order delivery, acknowledging every redelivery as a duplicate', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async ({ histories, keys, sizes, parallel }) => {
        const messages = histories.flatMap((h) => h.messages);
        const deliveries = byKeys(
          messages.flatMap((m, i) =>
            (keys[i] ?? [0]).map((k, copy) => ({ item: copy === 0 ? m : redelivered(m), key: k })),
          ),
        );
        const batches = cut(deliveries, sizes);
        const store = new MemoryStore(tickingClock());

        const results = await deliver(store, batches, parallel);

        const statuses = new Map<string, SubmitStatus[]>();
        let appended = 0;
        results.forEach((result, b) => {
          const batch = batches[b] ?? [];
          expect(result.outcomes.map(key)).toEqual(batch.map(key));
          for (const o of result.outcomes) statuses.set(key(o), [...(statuses.get(key(o)) ?? []), o.status]);
          expect(result.events.map((e) => e.position)).toEqual(result.events.map((_, i) => appended + i + 1));
          appended += result.events.length;
        });
        for (const [i, m] of messages.entries()) {
          const s = statuses.get(key(m)) ?? [];
          expect(s).toHaveLength((keys[i] ?? [0]).length);
          expect(s.filter((x) => x === 'applied' || x === 'buffered')).toHaveLength(1);
          expect(s.filter((x) => x === 'duplicate')).toHaveLength(s.length - 1);
        }

        await expectInOrderState(store, await inOrder(histories), histories);
      }),
      { numRuns: 60 },
    );
  });
});

type Variant = 'time' | 'payload' | 'type';

/** The same (channel, number) with different content: what a confused or malicious sender might resend. */
function conflicting(m: RocketMessage, how: Variant): RocketMessage {
  const metadata = {
    channel: m.channel,
    messageNumber: m.messageNumber,
    messageTime: m.messageTime,
    messageType: m.messageType,
  };
  switch (how) {
    case 'time':
      return parse({
        metadata: { ...metadata, messageTime: new Date(Date.parse(m.messageTime) + 1000).toISOString() },
        message: { ...m.payload },
      });
    case 'payload': {
      const changed = Object.fromEntries(
        Object.entries(m.payload).map(([k, v]) => [k, typeof v === 'number' ? v + 1 : `${v}!`]),
      );
      return parse({ metadata, message: changed });
    }
    case 'type':
      return m.messageType === 'RocketExploded'
        ? parse({ metadata: { ...metadata, messageType: 'RocketSpeedIncreased' }, message: { by: 1 } })
        : parse({ metadata: { ...metadata, messageType: 'RocketExploded' }, message: { reason: 'conflict' } });
    default: {
      const unreachable: never = how;
      throw new Error(`unknown variant ${String(unreachable)}`);
    }
  }
}

describe('a redelivery with different content', () => {
  const scenario = fleet(8, 20).chain((histories) => {
    const count = histories.reduce((n, h) => n + h.messages.length, 0);
    return fc.record({
      histories: fc.constant(histories),
      keys: fc.array(fc.nat(), { minLength: count, maxLength: count }),
      conflicts: fc.array(
        fc.record({ pick: fc.nat(), how: fc.constantFrom<Variant>('time', 'payload', 'type'), delay: fc.nat(50) }),
        { minLength: 1, maxLength: 12 },
      ),
      sizes: fc.array(fc.integer({ min: 1, max: 20 }), { minLength: 1, maxLength: 6 }),
    });
  });

  it('is refused as a conflict, whether the first body is buffered or applied, and changes nothing', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async ({ histories, keys, conflicts, sizes }) => {
        const messages = histories.flatMap((h) => h.messages);
        const channels = histories.map((h) => h.channel);
        type Delivery = { message: RocketMessage; conflict: boolean };
        // A variant always sorts after its original, so the original is the body that stands.
        const deliveries = byKeys<Delivery>([
          ...messages.map((m, i) => ({ item: { message: m, conflict: false }, key: keys[i] ?? 0 })),
          ...conflicts.map(({ pick, how, delay }) => {
            const i = pick % messages.length;
            const original = messages[i] as RocketMessage;
            return { item: { message: conflicting(original, how), conflict: true }, key: (keys[i] ?? 0) + 1 + delay };
          }),
        ]);
        const store = new MemoryStore(tickingClock());

        // Originals go in batches; each variant goes alone, so its commit can be compared before and after.
        const originals: RocketMessage[] = [];
        const flush = async () => {
          for (const batch of cut(originals.splice(0), sizes)) await store.commit(batch);
        };
        for (const d of deliveries) {
          if (!d.conflict) {
            originals.push(d.message);
            continue;
          }
          await flush();
          const before = await snapshot(store, channels);
          const result = await store.commit([d.message]);
          expect(result).toStrictEqual({
            outcomes: [{ status: 'conflict', channel: d.message.channel, messageNumber: d.message.messageNumber }],
            events: [],
            rockets: [],
          });
          expect(await snapshot(store, channels)).toStrictEqual(before);
        }
        await flush();

        await expectInOrderState(store, await inOrder(histories), histories);
      }),
      { numRuns: 60 },
    );
  });

  it('is refused as a conflict within one batch too, and the first body stands', async () => {
    await fc.assert(
      fc.asyncProperty(fleet(4, 12), fc.constantFrom<Variant>('time', 'payload', 'type'), async (histories, how) => {
        const messages = histories.flatMap((h) => h.messages);
        const store = new MemoryStore(tickingClock());
        const result = await store.commit([...messages, ...messages.map((m) => conflicting(m, how))]);
        expect(result.outcomes.map((o) => o.status)).toEqual([
          ...messages.map(() => 'applied'),
          ...messages.map(() => 'conflict'),
        ]);
        await expectInOrderState(store, await inOrder(histories), histories);
      }),
      { numRuns: 40 },
    );
  });
});
