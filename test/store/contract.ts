import type { RocketMessage } from '../../src/domain/message';
import { evolve, type Rocket, type RocketStatus } from '../../src/domain/rocket';
import { SKIP_NUMBERS_PER_TRANSACTION } from '../../src/store/plan';
import {
  ROCKET_SORT_FIELDS,
  sortKey,
  type AppendListener,
  type BufferLimits,
  type CommitResult,
  type EventStore,
  type RocketListQuery,
  type RocketSortField,
  type RocketView,
  type SortKey,
  type StoredEvent,
  type SubmitStatus,
} from '../../src/store/types';
import { SAME_INSTANT } from '../support/telemetry';

/** A clock the test moves by hand; give `now` to the store under test. */
export interface TestClock {
  readonly now: () => Date;
  readonly advance: (ms: number) => void;
}

export function createTestClock(start = '2024-05-01T12:00:00.000Z'): TestClock {
  let t = Date.parse(start);
  return {
    now: () => new Date(t),
    advance: (ms) => {
      t += ms;
    },
  };
}

/** One isolated store for one test: an empty store, the clock it reads, and how to dispose of both. */
export interface StoreUnderTest {
  readonly store: EventStore;
  readonly clock: TestClock;
  /** Closes the store and removes whatever it created (files, schemas). */
  cleanup(): Promise<void>;
  /**
   * Writes `row` into the store's projection behind its back, as damage only a rebuild repairs: it
   * replaces the rocket of its channel, or adds one. Commits and reads must be idle. The store's own read
   * caches may go on answering from what they held: only what the store reads from its projection after
   * this shows the damage.
   */
  tamperRocket(row: Rocket): Promise<void>;
}

/** How a test wants its store configured; unset options take the store's defaults. */
export interface StoreOptions {
  readonly bufferLimits?: BufferLimits | undefined;
}

export type StoreFactory = (options: StoreOptions) => Promise<StoreUnderTest>;

// ---------------------------------------------------------------------------------------------------
// Messages

const EPOCH = Date.UTC(2022, 1, 2, 19, 39, 5);

/** The message time of message `n` in these tests: one second apart, UTC ISO, so it is also `updatedAt`. */
export const at = (n: number): string => new Date(EPOCH + n * 1000).toISOString();

export function launched(
  channel: string,
  n: number,
  p: { type?: string; launchSpeed?: number; mission?: string } = {},
  messageTime = at(n),
): RocketMessage {
  return {
    channel,
    messageNumber: n,
    messageTime,
    messageType: 'RocketLaunched',
    payload: { type: p.type ?? 'Falcon-9', launchSpeed: p.launchSpeed ?? 500, mission: p.mission ?? 'ARTEMIS' },
  };
}

export const increased = (channel: string, n: number, by: number, messageTime = at(n)): RocketMessage => ({
  channel,
  messageNumber: n,
  messageTime,
  messageType: 'RocketSpeedIncreased',
  payload: { by },
});

export const decreased = (channel: string, n: number, by: number, messageTime = at(n)): RocketMessage => ({
  channel,
  messageNumber: n,
  messageTime,
  messageType: 'RocketSpeedDecreased',
  payload: { by },
});

export const missionChanged = (channel: string, n: number, newMission: string, messageTime = at(n)): RocketMessage => ({
  channel,
  messageNumber: n,
  messageTime,
  messageType: 'RocketMissionChanged',
  payload: { newMission },
});

export const exploded = (channel: string, n: number, reason: string, messageTime = at(n)): RocketMessage => ({
  channel,
  messageNumber: n,
  messageTime,
  messageType: 'RocketExploded',
  payload: { reason },
});

/** The same (channel, number) with a different body. */
const variant = (m: RocketMessage): RocketMessage => ({
  ...m,
  messageTime: new Date(Date.parse(m.messageTime) + 1).toISOString(),
});

/** The rocket the domain says these messages (in order) produce. */
export const fold = (messages: readonly RocketMessage[]): Rocket | undefined =>
  messages.reduce<Rocket | undefined>((r, m) => evolve(r, m), undefined);

/** A rocket view without its buffer: what the projection holds. */
export function stripBuffer(v: RocketView): Rocket {
  return {
    channel: v.channel,
    type: v.type,
    mission: v.mission,
    speed: v.speed,
    status: v.status,
    explodedReason: v.explodedReason,
    launchedAt: v.launchedAt,
    updatedAt: v.updatedAt,
    lastMessageNumber: v.lastMessageNumber,
  };
}

const ALL = Number.MAX_SAFE_INTEGER;

// ---------------------------------------------------------------------------------------------------
// Reference ordering, independent of every store

/** Code-point order, written out plainly. */
function compareCodePoints(a: string, b: string): number {
  const x = Array.from(a, (c) => c.codePointAt(0) ?? 0);
  const y = Array.from(b, (c) => c.codePointAt(0) ?? 0);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

function compareKey(a: SortKey, b: SortKey): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return compareCodePoints(String(a), String(b));
}

/** Is (key, channel) strictly after the cursor in this order? */
function isAfter(key: SortKey, channel: string, after: { key: SortKey; channel: string }, order: 'asc' | 'desc') {
  const c = compareKey(key, after.key) || compareCodePoints(channel, after.channel);
  return order === 'asc' ? c > 0 : c < 0;
}

function expectedListing(rockets: readonly Rocket[], q: RocketListQuery): string[] {
  const dir = q.order === 'asc' ? 1 : -1;
  const after = q.after;
  const list = rockets
    .filter((r) => q.status === undefined || r.status === q.status)
    .filter((r) => after === undefined || isAfter(sortKey(r, q.sort), r.channel, after, q.order))
    .sort(
      (a, b) => dir * (compareKey(sortKey(a, q.sort), sortKey(b, q.sort)) || compareCodePoints(a.channel, b.channel)),
    )
    .map((r) => r.channel);
  return q.limit === undefined ? list : list.slice(0, q.limit);
}

// ---------------------------------------------------------------------------------------------------
// Listener recording, store-agnostic: a store may call listeners before `commit` resolves or later
// (PostgreSQL's LISTEN), so tests wait for a position to arrive instead of assuming either.

interface Recorder {
  readonly calls: { events: StoredEvent[]; rockets: Rocket[] }[];
  readonly events: StoredEvent[];
  /** Resolves once an event at or beyond `position` has arrived. */
  until(position: number): Promise<void>;
  readonly off: () => void;
}

function record(store: EventStore): Recorder {
  const calls: { events: StoredEvent[]; rockets: Rocket[] }[] = [];
  const events: StoredEvent[] = [];
  let waiters: { position: number; resolve: () => void }[] = [];
  let head = 0;
  const listener: AppendListener = (es, rs) => {
    calls.push({ events: [...es], rockets: [...rs] });
    events.push(...es);
    for (const e of es) head = Math.max(head, e.position);
    const ready = waiters.filter((w) => w.position <= head);
    waiters = waiters.filter((w) => w.position > head);
    for (const w of ready) w.resolve();
  };
  const off = store.onAppend(listener);
  return {
    calls,
    events,
    off,
    until: (position) =>
      position <= head ? Promise.resolve() : new Promise((resolve) => waiters.push({ position, resolve })),
  };
}

// ---------------------------------------------------------------------------------------------------
// A tiny seeded generator, so a failing randomized run can be replayed from its seed.

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
  return items;
}

const sameBody = (a: RocketMessage, b: RocketMessage): boolean =>
  a.messageType === b.messageType &&
  a.messageTime === b.messageTime &&
  JSON.stringify(a.payload) === JSON.stringify(b.payload);

/**
 * The contract every EventStore passes. `factory` is called before each test and must return an empty,
 * isolated store reading the returned clock, configured with the given options; `cleanup` is called after
 * each test.
 */
export function describeStoreContract(name: string, factory: StoreFactory): void {
  describe(`${name} store contract`, () => {
    let h: StoreUnderTest;
    let store: EventStore;
    /** Options of the stores of the tests about to run; a describe block sets its own in beforeAll. */
    let options: StoreOptions = {};

    beforeEach(async () => {
      h = await factory(options);
      store = h.store;
    });

    afterEach(async () => {
      await h.cleanup();
    });

    const statuses = (r: CommitResult): SubmitStatus[] => r.outcomes.map((o) => o.status);
    const submit = async (...messages: RocketMessage[]): Promise<SubmitStatus[]> =>
      statuses(await store.commit(messages));
    /** Each message in its own commit, one after the other. */
    const oneByOne = async (...messages: RocketMessage[]): Promise<SubmitStatus[]> => {
      const out: SubmitStatus[] = [];
      for (const m of messages) out.push(...(await submit(m)));
      return out;
    };
    const rocket = async (channel: string): Promise<Rocket | undefined> => {
      const v = await store.getRocket(channel);
      return v && stripBuffer(v);
    };
    const allEvents = (): Promise<StoredEvent[]> => store.readEvents({ limit: ALL });
    const numbersOf = (events: readonly StoredEvent[]): number[] => events.map((e) => e.messageNumber);
    const positionsOf = (events: readonly StoredEvent[]): number[] => events.map((e) => e.position);
    const expectIncreasing = (ns: readonly number[]): void => {
      for (let i = 1; i < ns.length; i++) expect(ns[i]).toBeGreaterThan(ns[i - 1] as number);
    };

    describe('sequencing', () => {
      it('applies a launch and shows the rocket with an empty buffer', async () => {
        const m = launched('r1', 1, { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' });
        const result = await store.commit([m]);
        expect(result.outcomes).toEqual([{ status: 'applied', channel: 'r1', messageNumber: 1 }]);
        expect(result.events).toHaveLength(1);
        expect(result.events[0]).toMatchObject({
          channel: 'r1',
          messageNumber: 1,
          messageType: 'RocketLaunched',
          messageTime: at(1),
          payload: { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' },
        });
        const expected: Rocket = {
          channel: 'r1',
          type: 'Falcon-9',
          mission: 'ARTEMIS',
          speed: 500,
          status: 'flying',
          explodedReason: null,
          launchedAt: at(1),
          updatedAt: at(1),
          lastMessageNumber: 1,
        };
        expect(result.rockets).toEqual([expected]);
        expect(await store.getRocket('r1')).toEqual({
          ...expected,
          buffer: { waitingFor: 2, count: 0, oldestSince: null },
        });
      });

      it('applies messages that arrive in order and reflects every field', async () => {
        expect(
          await oneByOne(
            launched('r1', 1, { launchSpeed: 500 }),
            increased('r1', 2, 3000),
            missionChanged('r1', 3, 'SHUTTLE_MIR'),
            decreased('r1', 4, 1000),
          ),
        ).toEqual(['applied', 'applied', 'applied', 'applied']);
        expect(await rocket('r1')).toEqual({
          channel: 'r1',
          type: 'Falcon-9',
          mission: 'SHUTTLE_MIR',
          speed: 2500,
          status: 'flying',
          explodedReason: null,
          launchedAt: at(1),
          updatedAt: at(4),
          lastMessageNumber: 4,
        });
      });

      it('keeps the sender message time text as received and derives UTC times from it', async () => {
        await submit(launched('r1', 1, {}, '2022-02-02T19:39:05.86337+01:00'));
        const [event] = await allEvents();
        expect(event?.messageTime).toBe('2022-02-02T19:39:05.86337+01:00');
        expect(event?.recordedAt).toBe(new Date(event?.recordedAt ?? NaN).toISOString());
        expect(await rocket('r1')).toMatchObject({
          launchedAt: '2022-02-02T18:39:05.863Z',
          updatedAt: '2022-02-02T18:39:05.863Z',
        });
      });

      it('applies #3 only after #2 arrives', async () => {
        expect(await oneByOne(launched('r1', 1), increased('r1', 3, 7))).toEqual(['applied', 'buffered']);
        expect(await rocket('r1')).toMatchObject({ speed: 500, lastMessageNumber: 1 });
        const result = await store.commit([increased('r1', 2, 10)]);
        expect(statuses(result)).toEqual(['applied']);
        expect(numbersOf(result.events)).toEqual([2, 3]);
        expect(result.rockets).toEqual([await rocket('r1')]);
        expect(await rocket('r1')).toMatchObject({ speed: 517, lastMessageNumber: 3, updatedAt: at(3) });
        expect(numbersOf(await allEvents())).toEqual([1, 2, 3]);
      });

      it('buffers #4 after #1, then drains it once #2 and #3 arrive (#1, #4, #2, #3)', async () => {
        const ms = [launched('r1', 1), increased('r1', 4, 4), increased('r1', 2, 2), increased('r1', 3, 3)];
        expect(await oneByOne(...ms)).toEqual(['applied', 'buffered', 'applied', 'applied']);
        expect(await rocket('r1')).toEqual(fold([ms[0], ms[2], ms[3], ms[1]] as RocketMessage[]));
        expect(await rocket('r1')).toMatchObject({ speed: 509, lastMessageNumber: 4 });
        expect(numbersOf(await allEvents())).toEqual([1, 2, 3, 4]);
        expect((await store.getRocket('r1'))?.buffer).toEqual({ waitingFor: 5, count: 0, oldestSince: null });
      });

      it('buffers everything until #1 arrives, then applies all four in number order (#4, #2, #3, #1)', async () => {
        expect(
          await oneByOne(increased('r1', 4, 4), increased('r1', 2, 2), increased('r1', 3, 3), launched('r1', 1)),
        ).toEqual(['buffered', 'buffered', 'buffered', 'applied']);
        const events = await allEvents();
        expect(numbersOf(events)).toEqual([1, 2, 3, 4]);
        expectIncreasing(positionsOf(events));
        expect(await rocket('r1')).toMatchObject({ speed: 509, lastMessageNumber: 4, updatedAt: at(4) });
      });

      it('shows no rocket for an unknown channel', async () => {
        expect(await store.getRocket('nobody')).toBeUndefined();
      });

      it('shows no rocket for a channel that has only buffered messages', async () => {
        expect(await submit(increased('r1', 2, 5))).toEqual(['buffered']);
        expect(await store.getRocket('r1')).toBeUndefined();
        expect(await store.listRockets({ sort: 'channel', order: 'asc' })).toEqual([]);
        expect(await store.stats()).toEqual({ rockets: 0, events: 0, buffered: 1 });
        expect(await store.headPosition()).toBe(0);
      });

      it('keeps channels independent', async () => {
        await oneByOne(launched('a', 1), increased('b', 2, 5), launched('b', 1, { launchSpeed: 10 }));
        expect(await rocket('a')).toMatchObject({ speed: 500, lastMessageNumber: 1 });
        expect(await rocket('b')).toMatchObject({ speed: 15, lastMessageNumber: 2 });
      });
    });

    describe('duplicates and conflicts', () => {
      it('acknowledges a redelivered applied message as a duplicate and changes nothing', async () => {
        await oneByOne(launched('r1', 1), increased('r1', 2, 5));
        const before = { rocket: await store.getRocket('r1'), events: await allEvents(), stats: await store.stats() };
        const result = await store.commit([increased('r1', 2, 5)]);
        expect(result).toEqual({
          outcomes: [{ status: 'duplicate', channel: 'r1', messageNumber: 2 }],
          events: [],
          rockets: [],
        });
        expect(await store.getRocket('r1')).toEqual(before.rocket);
        expect(await allEvents()).toEqual(before.events);
        expect(await store.stats()).toEqual(before.stats);
      });

      it('acknowledges a redelivered buffered message as a duplicate and keeps its first arrival time', async () => {
        await oneByOne(launched('r1', 1), increased('r1', 3, 5));
        const before = await store.getRocket('r1');
        h.clock.advance(60_000);
        expect(await submit(increased('r1', 3, 5))).toEqual(['duplicate']);
        expect(await store.getRocket('r1')).toEqual(before);
        expect(before?.buffer.count).toBe(1);
      });

      it('reports a conflict for an applied number with a different body, and the first one stands', async () => {
        await oneByOne(launched('r1', 1), increased('r1', 2, 5));
        const events = await allEvents();
        expect(await submit(increased('r1', 2, 999))).toEqual(['conflict']);
        expect(await submit(variant(launched('r1', 1)))).toEqual(['conflict']);
        expect(await rocket('r1')).toMatchObject({ speed: 505 });
        expect(await allEvents()).toEqual(events);
      });

      it('reports a conflict for a buffered number with a different body, and the first one stands', async () => {
        await oneByOne(launched('r1', 1), increased('r1', 3, 5));
        expect(await submit(increased('r1', 3, 999))).toEqual(['conflict']);
        expect((await store.getRocket('r1'))?.buffer.count).toBe(1);
        await submit(increased('r1', 2, 10));
        expect(await rocket('r1')).toMatchObject({ speed: 515, lastMessageNumber: 3 });
        expect((await allEvents())[2]?.payload).toEqual({ by: 5 });
      });

      it('sorts out reordering, duplicates and conflicts within one commit', async () => {
        const result = await store.commit([
          increased('r1', 3, 3),
          launched('r1', 1),
          increased('r1', 2, 2),
          increased('r1', 3, 3),
          launched('r1', 1),
          increased('r1', 2, 222),
          increased('r1', 5, 5),
          increased('r1', 5, 5),
          increased('r1', 5, 555),
        ]);
        expect(statuses(result)).toEqual([
          'buffered',
          'applied',
          'applied',
          'duplicate',
          'duplicate',
          'conflict',
          'buffered',
          'duplicate',
          'conflict',
        ]);
        expect(numbersOf(result.events)).toEqual([1, 2, 3]);
        expectIncreasing(positionsOf(result.events));
        expect(result.events).toEqual(await allEvents());
        expect(result.rockets).toEqual([await rocket('r1')]);
        expect(await store.getRocket('r1')).toMatchObject({
          speed: 505,
          lastMessageNumber: 3,
          buffer: { waitingFor: 4, count: 1 },
        });
      });

      it('reports the state after the whole commit for a rocket changed several times in it', async () => {
        const result = await store.commit([launched('r1', 1), increased('r1', 2, 1), launched('r2', 1)]);
        expect(result.rockets).toHaveLength(2);
        expect(result.rockets.find((r) => r.channel === 'r1')).toMatchObject({ speed: 501, lastMessageNumber: 2 });
      });

      it('records nothing but acknowledges everything for a commit of only duplicates and buffered messages', async () => {
        await submit(launched('r1', 1));
        const result = await store.commit([launched('r1', 1), increased('r1', 3, 1)]);
        expect(result.events).toEqual([]);
        expect(result.rockets).toEqual([]);
        expect(await store.headPosition()).toBe((await allEvents())[0]?.position);
      });

      it('accepts an empty commit', async () => {
        expect(await store.commit([])).toEqual({ outcomes: [], events: [], rockets: [] });
      });

      it('takes one instant written another way for a duplicate, applied or buffered', async () => {
        const time = '2022-01-01T00:00:00Z';
        const third = '2022-01-01T00:00:03.5+00:00';
        await oneByOne(launched('r1', 1, {}, time), increased('r1', 3, 5, third));
        const before = { events: await allEvents(), stats: await store.stats() };
        expect(await store.getRocket('r1')).toMatchObject({
          launchedAt: '2022-01-01T00:00:00.000Z',
          buffer: { count: 1 },
        });
        for (const same of SAME_INSTANT)
          expect([same, await submit(launched('r1', 1, {}, same))]).toEqual([same, ['duplicate']]);
        for (const same of ['2022-01-01t01:00:03.50+01:00', '2022-01-01 00:00:03.5z'])
          expect([same, await submit(increased('r1', 3, 5, same))]).toEqual([same, ['duplicate']]);
        // In one commit with the message it repeats, and once that buffered message has applied.
        const twice = [increased('r1', 2, 1), increased('r1', 2, 1, '2022-02-02T20:39:07+01:00')];
        const result = await store.commit(twice);
        expect(statuses(result)).toEqual(['applied', 'duplicate']);
        const late = increased('r1', 3, 5, '2021-12-31T23:00:03.5-01:00');
        expect(await submit(late)).toEqual(['duplicate']);
        // The first one stands: its text in the log, and the state it made.
        const events = await allEvents();
        expect(events.slice(0, 1)).toEqual(before.events);
        expect(events.map((e) => e.messageTime)).toEqual([time, at(2), third]);
        const launchedAt = '2022-01-01T00:00:00.000Z';
        expect(await rocket('r1')).toMatchObject({ launchedAt, speed: 506 });
        expect(await store.stats()).toEqual({ ...before.stats, events: 3, buffered: 0 });
      });

      it('reports a conflict for another instant, to the nanosecond and leap second', async () => {
        await oneByOne(
          launched('r1', 1, {}, '2022-01-01T00:00:00.123456789Z'),
          increased('r1', 2, 5, '2016-12-31T23:59:60Z'),
          increased('r1', 4, 5, '2022-01-01T00:00:04.000000001Z'),
        );
        const events = await allEvents();
        expect(
          await oneByOne(
            launched('r1', 1, {}, '2022-01-01T00:00:00.123456788Z'),
            launched('r1', 1, {}, '2022-01-01T00:00:00.123Z'),
            increased('r1', 2, 5, '2016-12-31T23:59:59Z'),
            increased('r1', 4, 5, '2022-01-01T00:00:04Z'),
            launched('r1', 1, {}, '2022-01-01T01:00:00.12345679+01:00'),
          ),
        ).toEqual(['conflict', 'conflict', 'conflict', 'conflict', 'conflict']);
        expect(
          await oneByOne(
            launched('r1', 1, {}, '2022-01-01T01:00:00.123456789+01:00'),
            increased('r1', 2, 5, '2017-01-01T00:59:60.000+01:00'),
            increased('r1', 4, 5, '2022-01-01T01:00:04.000000001+01:00'),
          ),
        ).toEqual(['duplicate', 'duplicate', 'duplicate']);
        expect(await allEvents()).toEqual(events);
      });
    });

    describe('concurrent commits (same tick)', () => {
      it('applies a message delivered twice at once exactly once', async () => {
        const results = await Promise.all([store.commit([launched('r1', 1)]), store.commit([launched('r1', 1)])]);
        expect(results.flatMap(statuses).sort()).toEqual(['applied', 'duplicate']);
        expect(numbersOf(await allEvents())).toEqual([1]);
      });

      it('keeps whichever of two conflicting bodies it applied, and reports the other as a conflict', async () => {
        const a = launched('r1', 1, { mission: 'A' });
        const b = launched('r1', 1, { mission: 'B' });
        const results = await Promise.all([store.commit([a]), store.commit([b])]);
        expect(results.flatMap(statuses).sort()).toEqual(['applied', 'conflict']);
        const winner = results[0].outcomes[0]?.status === 'applied' ? a : b;
        expect((await allEvents()).map((e) => e.payload)).toEqual([winner.payload]);
        expect(await rocket('r1')).toEqual(fold([winner]));
      });

      it('keeps whichever of two conflicting buffered bodies it buffered first', async () => {
        const a = increased('r1', 2, 10);
        const b = increased('r1', 2, 20);
        const results = await Promise.all([store.commit([a]), store.commit([b])]);
        expect(results.flatMap(statuses).sort()).toEqual(['buffered', 'conflict']);
        const winner = results[0].outcomes[0]?.status === 'buffered' ? a : b;
        const first = launched('r1', 1, { launchSpeed: 0 });
        await submit(first);
        expect(await rocket('r1')).toEqual(fold([first, winner]));
      });

      it('sequences out-of-order messages spread over concurrent commits', async () => {
        const results = await Promise.all([
          store.commit([increased('r1', 3, 3)]),
          store.commit([increased('r1', 2, 2)]),
          store.commit([launched('r1', 1)]),
          store.commit([increased('r1', 4, 4), launched('r1', 1)]),
        ]);
        expect(results.flatMap(statuses).filter((s) => s === 'applied').length).toBeGreaterThanOrEqual(1);
        expect(results.flatMap(statuses).filter((s) => s === 'duplicate')).toHaveLength(1);
        const events = await allEvents();
        expect(numbersOf(events)).toEqual([1, 2, 3, 4]);
        expectIncreasing(positionsOf(events));
        expect(await store.getRocket('r1')).toMatchObject({
          speed: 509,
          lastMessageNumber: 4,
          buffer: { waitingFor: 5, count: 0, oldestSince: null },
        });
        // Every appended event is reported by exactly one commit.
        const reported = results.flatMap((r) => r.events).sort((x, y) => x.position - y.position);
        expect(reported).toEqual(events);
      });

      it('gives each concurrent commit its own outcomes and events', async () => {
        const [ra, rb] = await Promise.all([
          store.commit([launched('a', 1)]),
          store.commit([launched('b', 1), increased('b', 2, 1), increased('b', 9, 1)]),
        ]);
        expect(ra.outcomes.map((o) => o.channel)).toEqual(['a']);
        expect(rb.outcomes.map((o) => `${o.channel}#${o.messageNumber}:${o.status}`)).toEqual([
          'b#1:applied',
          'b#2:applied',
          'b#9:buffered',
        ]);
        expect(ra.events.map((e) => e.channel)).toEqual(['a']);
        expect(rb.events.map((e) => e.messageNumber)).toEqual([1, 2]);
        expect(ra.rockets.map((r) => r.channel)).toEqual(['a']);
        expect(rb.rockets).toEqual([await rocket('b')]);
      });
    });

    describe('state rules', () => {
      it('stops the rocket at speed 0 when a decrease goes below zero', async () => {
        await oneByOne(launched('r1', 1, { launchSpeed: 100 }), decreased('r1', 2, 250), increased('r1', 3, 30));
        expect(await rocket('r1')).toMatchObject({ speed: 30, lastMessageNumber: 3 });
        await submit(decreased('r1', 4, 30));
        expect(await rocket('r1')).toMatchObject({ speed: 0 });
      });

      it('records messages after RocketExploded but lets them change nothing but the last number and time', async () => {
        await oneByOne(launched('r1', 1, { launchSpeed: 100 }), exploded('r1', 2, 'PRESSURE_VESSEL_FAILURE'));
        const boom = await rocket('r1');
        expect(boom).toMatchObject({ status: 'exploded', explodedReason: 'PRESSURE_VESSEL_FAILURE', speed: 100 });
        expect(
          await oneByOne(
            increased('r1', 3, 50),
            missionChanged('r1', 4, 'OTHER'),
            exploded('r1', 5, 'SECOND_REASON'),
            launched('r1', 6, { launchSpeed: 1 }),
          ),
        ).toEqual(['applied', 'applied', 'applied', 'applied']);
        expect(await rocket('r1')).toEqual({ ...boom, updatedAt: at(6), lastMessageNumber: 6 });
        expect(numbersOf(await allEvents())).toEqual([1, 2, 3, 4, 5, 6]);
      });

      it('records a second RocketLaunched but lets it change nothing: a rocket launches once', async () => {
        await oneByOne(launched('r1', 1, { type: 'Falcon-9', launchSpeed: 100, mission: 'A' }), increased('r1', 2, 5));
        await submit(launched('r1', 3, { type: 'Other', launchSpeed: 9, mission: 'B' }));
        expect(await rocket('r1')).toMatchObject({
          type: 'Falcon-9',
          mission: 'A',
          speed: 105,
          launchedAt: at(1),
          updatedAt: at(3),
          lastMessageNumber: 3,
        });
        expect(numbersOf(await allEvents())).toEqual([1, 2, 3]);
      });

      it('keeps null fields null for a rocket that has not launched yet', async () => {
        await oneByOne(increased('r1', 1, 5), missionChanged('r1', 2, 'M'));
        expect(await rocket('r1')).toEqual({
          channel: 'r1',
          type: null,
          mission: 'M',
          speed: 5,
          status: 'flying',
          explodedReason: null,
          launchedAt: null,
          updatedAt: at(2),
          lastMessageNumber: 2,
        });
      });

      it('keeps fractional and large speeds exactly', async () => {
        await oneByOne(launched('r1', 1, { launchSpeed: 0.1 }), increased('r1', 2, 0.2));
        await submit(increased('r1', 3, 1e15));
        expect((await rocket('r1'))?.speed).toBe(0.1 + 0.2 + 1e15);
        await oneByOne(launched('r2', 1, { launchSpeed: 0.1 }), increased('r2', 2, 0.2));
        expect((await rocket('r2'))?.speed).toBe(0.1 + 0.2);
      });

      it('holds the speed at 2^53 - 1 past it: in the rocket, its listing, a rebuild', async () => {
        const max = Number.MAX_SAFE_INTEGER;
        const messages = [launched('r1', 1, { launchSpeed: max }), increased('r1', 2, max)];
        messages.push(increased('r1', 3, 1));
        expect(await oneByOne(...messages)).toEqual(['applied', 'applied', 'applied']);
        expect(await rocket('r1')).toMatchObject({ speed: max, lastMessageNumber: 3 });
        // Every amount is recorded as sent: only the state is held.
        expect((await allEvents()).map((e) => e.payload)).toEqual(messages.map((m) => m.payload));
        expect(await submit(decreased('r1', 4, 1))).toEqual(['applied']);
        expect(await rocket('r1')).toMatchObject({ speed: max - 1 });
        // Within one commit, and sorted by speed among others.
        const r2 = launched('r2', 1, { launchSpeed: max - 2 });
        expect(await submit(r2, increased('r2', 2, 3), increased('r2', 3, 1))).toEqual([
          'applied',
          'applied',
          'applied',
        ]);
        const bySpeed = await store.listRockets({ sort: 'speed', order: 'desc' });
        expect(bySpeed.map((r) => [r.channel, r.speed])).toEqual([
          ['r2', max],
          ['r1', max - 1],
        ]);
        const live = await store.listRockets({ sort: 'channel', order: 'asc' });
        await store.rebuildProjection();
        expect(await store.listRockets({ sort: 'channel', order: 'asc' })).toEqual(live);
        expect(await rocket('r2')).toMatchObject({ speed: max });
      });
    });

    describe('positions', () => {
      it('starts empty at head position 0', async () => {
        expect(await store.headPosition()).toBe(0);
        expect(await allEvents()).toEqual([]);
      });

      it('gives strictly increasing positions that are never reused', async () => {
        await oneByOne(launched('a', 1), launched('b', 1));
        await Promise.all([store.commit([increased('a', 2, 1)]), store.commit([increased('b', 2, 1)])]);
        await submit(increased('a', 3, 1));
        const events = await allEvents();
        expect(events).toHaveLength(5);
        expectIncreasing(positionsOf(events));
        expect(new Set(positionsOf(events)).size).toBe(5);
        expect(await store.headPosition()).toBe(events[4]?.position);
        await store.rebuildProjection();
        const next = await store.commit([increased('a', 4, 1)]);
        expect(next.events[0]?.position).toBeGreaterThan(events[4]?.position ?? Infinity);
        expect(await store.headPosition()).toBe(next.events[0]?.position);
      });

      it('answers a large commit with each event as the log holds it, at its position', async () => {
        // More events than one SQLite INSERT writes, interleaved over channels, after an earlier commit.
        await submit(launched('z', 1));
        const channels = ['a', 'b', 'c'];
        const messages = Array.from({ length: 150 }, (_, i) => {
          const channel = channels[i % 3] as string;
          const n = Math.floor(i / 3) + 1;
          return n === 1 ? launched(channel, 1) : increased(channel, n, i);
        });
        const result = await store.commit(messages);
        expect(statuses(result)).toEqual(messages.map(() => 'applied'));
        const logged = await allEvents();
        expect(logged).toHaveLength(151);
        expect(result.events).toEqual(logged.slice(1));
        expect(await store.headPosition()).toBe(logged[150]?.position);
      });
    });

    describe('buffer info', () => {
      it('reports what a channel waits for, how many are buffered and since when', async () => {
        await submit(launched('r1', 1));
        expect((await store.getRocket('r1'))?.buffer).toEqual({ waitingFor: 2, count: 0, oldestSince: null });
        h.clock.advance(5_000);
        const firstBuffered = h.clock.now().toISOString();
        await submit(increased('r1', 3, 1));
        h.clock.advance(5_000);
        const secondBuffered = h.clock.now().toISOString();
        await submit(increased('r1', 5, 1));
        h.clock.advance(5_000);
        expect((await store.getRocket('r1'))?.buffer).toEqual({ waitingFor: 2, count: 2, oldestSince: firstBuffered });
        await submit(increased('r1', 2, 1));
        expect((await store.getRocket('r1'))?.buffer).toEqual({
          waitingFor: 4,
          count: 1,
          oldestSince: secondBuffered,
        });
        await submit(increased('r1', 4, 1));
        expect((await store.getRocket('r1'))?.buffer).toEqual({ waitingFor: 6, count: 0, oldestSince: null });
      });

      it('reports buffer info in listings too', async () => {
        await oneByOne(launched('a', 1), launched('b', 1), launched('c', 1));
        h.clock.advance(1000);
        const t = h.clock.now().toISOString();
        await submit(increased('b', 4, 1));
        h.clock.advance(1000);
        const u = h.clock.now().toISOString();
        await oneByOne(increased('b', 3, 1), increased('c', 3, 1));
        h.clock.advance(1000);
        const list = await store.listRockets({ sort: 'channel', order: 'asc' });
        expect(list.map((r) => [r.channel, r.buffer])).toEqual([
          ['a', { waitingFor: 2, count: 0, oldestSince: null }],
          ['b', { waitingFor: 2, count: 2, oldestSince: t }],
          ['c', { waitingFor: 2, count: 1, oldestSince: u }],
        ]);
      });
    });

    describe('listing rockets', () => {
      // Ties on every key, null keys next to '' keys, and text where code-point order differs from
      // UTF-16 order ('ｚ' U+FF5A sorts before '😀' U+1F600 by code point, after it by UTF-16 unit).
      const fixture: RocketMessage[][] = [
        [launched('Z', 1, { type: 'Z', launchSpeed: 100, mission: 'a' }, at(1))],
        [launched('a', 1, { type: 'a', launchSpeed: 100, mission: 'Z' }, at(1))],
        [launched('é', 1, { type: 'é', launchSpeed: 300, mission: '😀' }, at(2))],
        [launched('ｚ', 1, { type: 'ｚ', launchSpeed: 300, mission: 'ｚ' }, at(3))],
        [launched('😀', 1, { type: '😀', launchSpeed: 50, mission: 'é' }, at(3))],
        [launched('b', 1, { type: '', launchSpeed: 0, mission: '' }, at(4))],
        [increased('c', 1, 100, at(4))],
        [increased('c2', 1, 0, at(1)), missionChanged('c2', 2, '', at(5))],
        [launched('d', 1, { type: 'Falcon', launchSpeed: 700, mission: 'X' }, at(2)), exploded('d', 2, 'BOOM', at(6))],
        [launched('e', 1, { type: 'Falcon', launchSpeed: 700, mission: 'X' }, at(2)), exploded('e', 2, 'BOOM', at(6))],
        [launched('ab', 1, { type: 'Falcon', launchSpeed: 100.5, mission: 'Y' }, at(7))],
        [launched('Za', 1, { type: 'Z', launchSpeed: 99.5, mission: 'a' }, at(7))],
      ];
      const queries: [RocketSortField, 'asc' | 'desc'][] = ROCKET_SORT_FIELDS.flatMap((f) => [
        [f, 'asc'] as [RocketSortField, 'asc' | 'desc'],
        [f, 'desc'] as [RocketSortField, 'asc' | 'desc'],
      ]);
      let rockets: Rocket[];

      beforeEach(async () => {
        for (const ms of fixture) await store.commit(ms);
        rockets = fixture.map((ms) => fold(ms) as Rocket);
      });

      it.each(queries)(
        'lists every rocket by %s %s, ties broken by channel in the same direction',
        async (sort, order) => {
          const list = await store.listRockets({ sort, order });
          expect(list.map((r) => r.channel)).toEqual(expectedListing(rockets, { sort, order }));
          expect(list.map(stripBuffer)).toEqual(
            expectedListing(rockets, { sort, order }).map((c) => rockets.find((r) => r.channel === c)),
          );
        },
      );

      it('orders text by code point: Z before a before é before ｚ before 😀', async () => {
        const byChannel = await store.listRockets({ sort: 'channel', order: 'asc', status: 'flying' });
        expect(byChannel.map((r) => r.channel)).toEqual(['Z', 'Za', 'a', 'ab', 'b', 'c', 'c2', 'é', 'ｚ', '😀']);
        const byType = await store.listRockets({ sort: 'type', order: 'asc' });
        expect(byType.map((r) => r.type)).toEqual([
          '',
          null,
          null,
          'Falcon',
          'Falcon',
          'Falcon',
          'Z',
          'Z',
          'a',
          'é',
          'ｚ',
          '😀',
        ]);
      });

      it('sorts missing text as the empty string, tied with it and broken by channel', async () => {
        const list = await store.listRockets({ sort: 'mission', order: 'asc' });
        expect(list.slice(0, 3).map((r) => [r.channel, r.mission])).toEqual([
          ['b', ''],
          ['c', null],
          ['c2', ''],
        ]);
        const desc = await store.listRockets({ sort: 'launchedAt', order: 'desc' });
        expect(desc.slice(-2).map((r) => r.channel)).toEqual(['c2', 'c']);
      });

      it('filters by status', async () => {
        const exploded = await store.listRockets({ sort: 'channel', order: 'asc', status: 'exploded' });
        expect(exploded.map((r) => r.channel)).toEqual(['d', 'e']);
        const flying = await store.listRockets({ sort: 'speed', order: 'desc', status: 'flying' });
        expect(flying.map((r) => r.channel)).toEqual(
          expectedListing(rockets, { sort: 'speed', order: 'desc', status: 'flying' }),
        );
      });

      it('returns at most `limit` rockets', async () => {
        const list = await store.listRockets({ sort: 'speed', order: 'asc', limit: 3 });
        expect(list.map((r) => r.channel)).toEqual(
          expectedListing(rockets, { sort: 'speed', order: 'asc' }).slice(0, 3),
        );
        expect(await store.listRockets({ sort: 'speed', order: 'asc', limit: 0 })).toEqual([]);
      });

      it.each(queries)(
        'pages through every rocket by %s %s with `after`, never repeating or skipping one',
        async (sort, order) => {
          for (const status of [undefined, 'flying'] as (RocketStatus | undefined)[]) {
            for (const limit of [1, 3]) {
              const seen: string[] = [];
              let after: { key: SortKey; channel: string } | undefined;
              for (let page = 0; page < 50; page++) {
                const list = await store.listRockets({ sort, order, status, after, limit });
                seen.push(...list.map((r) => r.channel));
                const last = list[list.length - 1];
                if (list.length < limit || last === undefined) break;
                after = { key: sortKey(last, sort), channel: last.channel };
              }
              expect(seen).toEqual(expectedListing(rockets, { sort, order, status }));
            }
          }
        },
      );

      it('treats a cursor as a place in the order, even between or beyond existing rockets', async () => {
        const cursors: { sort: RocketSortField; key: SortKey; channel: string }[] = [
          { sort: 'speed', key: 100, channel: '' },
          { sort: 'speed', key: 100, channel: 'Z' },
          { sort: 'speed', key: 150, channel: 'zzz' },
          { sort: 'speed', key: -1, channel: '' },
          { sort: 'speed', key: 1e9, channel: '' },
          { sort: 'type', key: '', channel: 'b' },
          { sort: 'type', key: 'F', channel: '' },
          { sort: 'mission', key: 'é', channel: '' },
          { sort: 'channel', key: 'aa', channel: 'aa' },
          { sort: 'status', key: 'flying', channel: 'c' },
          { sort: 'status', key: 'exploded', channel: 'd' },
          { sort: 'status', key: 'exploded', channel: 'zz' },
          { sort: 'status', key: 'e', channel: 'a' },
          { sort: 'status', key: 'g', channel: 'a' },
          { sort: 'launchedAt', key: '', channel: 'c' },
          { sort: 'updatedAt', key: at(4), channel: 'b' },
        ];
        for (const c of cursors) {
          for (const order of ['asc', 'desc'] as const) {
            for (const status of [undefined, 'flying', 'exploded'] as const) {
              const q: RocketListQuery = { sort: c.sort, order, status, after: { key: c.key, channel: c.channel } };
              const list = await store.listRockets(q);
              expect([q, list.map((r) => r.channel)]).toEqual([q, expectedListing(rockets, q)]);
            }
          }
        }
      });

      it('keeps paging correctly when the rocket under the cursor changes between pages', async () => {
        const first = await store.listRockets({ sort: 'speed', order: 'asc', limit: 4 });
        const last = first[3] as RocketView;
        await submit(increased(last.channel, last.lastMessageNumber + 1, 10_000));
        const rest = await store.listRockets({
          sort: 'speed',
          order: 'asc',
          after: { key: sortKey(last, 'speed'), channel: last.channel },
        });
        const now = (await store.listRockets({ sort: 'speed', order: 'asc' })).map(stripBuffer);
        expect(rest.map((r) => r.channel)).toEqual(
          expectedListing(now, { sort: 'speed', order: 'asc', after: { key: last.speed, channel: last.channel } }),
        );
        expect(rest.map((r) => r.channel)).toContain(last.channel);
      });
    });

    describe('reading events', () => {
      let p: number[];

      beforeEach(async () => {
        await oneByOne(
          launched('A', 1),
          launched('B', 1),
          increased('A', 2, 1),
          increased('B', 2, 1),
          increased('A', 3, 1),
        );
        p = positionsOf(await allEvents());
      });

      const key = (e: StoredEvent): string => `${e.channel}${e.messageNumber}`;

      it('reads the whole log in position order', async () => {
        expect((await allEvents()).map(key)).toEqual(['A1', 'B1', 'A2', 'B2', 'A3']);
        expectIncreasing(p);
      });

      it('reads one channel', async () => {
        expect((await store.readEvents({ channel: 'A', limit: ALL })).map(key)).toEqual(['A1', 'A2', 'A3']);
        expect(await store.readEvents({ channel: 'nobody', limit: ALL })).toEqual([]);
      });

      it('reads after a position', async () => {
        expect((await store.readEvents({ afterPosition: p[1], limit: ALL })).map(key)).toEqual(['A2', 'B2', 'A3']);
        expect((await store.readEvents({ channel: 'A', afterPosition: p[2], limit: ALL })).map(key)).toEqual(['A3']);
        // Positions of the other channel's events, between and after A's.
        expect((await store.readEvents({ channel: 'A', afterPosition: p[1], limit: ALL })).map(key)).toEqual([
          'A2',
          'A3',
        ]);
        expect((await store.readEvents({ channel: 'A', afterPosition: p[3], limit: 1 })).map(key)).toEqual(['A3']);
        expect(await store.readEvents({ channel: 'B', afterPosition: p[4], limit: ALL })).toEqual([]);
        expect(await store.readEvents({ afterPosition: p[4], limit: ALL })).toEqual([]);
        expect((await store.readEvents({ afterPosition: 0, limit: ALL })).map(key)).toHaveLength(5);
      });

      it('reads after a message number of a channel', async () => {
        expect((await store.readEvents({ channel: 'A', afterMessageNumber: 1, limit: ALL })).map(key)).toEqual([
          'A2',
          'A3',
        ]);
        expect(
          (await store.readEvents({ channel: 'A', afterMessageNumber: 1, afterPosition: p[2], limit: ALL })).map(key),
        ).toEqual(['A3']);
        expect(await store.readEvents({ channel: 'B', afterMessageNumber: 2, limit: ALL })).toEqual([]);
      });

      it('reads at most `limit` events', async () => {
        expect((await store.readEvents({ limit: 2 })).map(key)).toEqual(['A1', 'B1']);
        expect((await store.readEvents({ channel: 'B', limit: 1 })).map(key)).toEqual(['B1']);
        expect((await store.readEvents({ afterPosition: p[0], limit: 2 })).map(key)).toEqual(['B1', 'A2']);
      });

      it('gives back each event exactly as committed', async () => {
        const [a1] = await store.readEvents({ channel: 'A', limit: 1 });
        expect(a1).toEqual({
          position: p[0],
          channel: 'A',
          messageNumber: 1,
          messageType: 'RocketLaunched',
          messageTime: at(1),
          payload: { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' },
          recordedAt: a1?.recordedAt,
        });
      });
    });

    describe('stats', () => {
      it('counts rockets, events and buffered messages', async () => {
        expect(await store.stats()).toEqual({ rockets: 0, events: 0, buffered: 0 });
        await oneByOne(launched('a', 1), increased('a', 2, 1), increased('a', 5, 1), increased('b', 3, 1));
        await submit(launched('c', 1));
        expect(await store.stats()).toEqual({ rockets: 2, events: 3, buffered: 2 });
      });
    });

    describe('rebuilding the projection', () => {
      it('rebuilds exactly the live rockets from the event log after a messy history', async () => {
        const random = mulberry32(7);
        const channels = ['r1', 'r2', 'Z', 'é', '😀', 'ghost'];
        const deliveries: RocketMessage[] = [];
        for (const c of channels) {
          for (let n = 1; n <= 12; n++) {
            if (c === 'ghost' && n === 1) continue;
            const kind = n === 1 ? 0 : Math.floor(random() * 5);
            const m =
              kind === 0
                ? launched(c, n, { launchSpeed: Math.floor(random() * 1000), mission: `M${n}` })
                : kind === 1
                  ? increased(c, n, random() * 500)
                  : kind === 2
                    ? decreased(c, n, random() * 800)
                    : kind === 3
                      ? missionChanged(c, n, `M${n}`)
                      : exploded(c, n, `R${n}`);
            deliveries.push(m);
            if (random() < 0.3) deliveries.push(m);
          }
        }
        shuffle(deliveries, random);
        for (let i = 0; i < deliveries.length; i += 5) await store.commit(deliveries.slice(i, i + 5));
        const live = await store.listRockets({ sort: 'channel', order: 'asc' });
        const stats = await store.stats();
        expect(live.length).toBe(5);

        expect(await store.rebuildProjection()).toBe(stats.events);
        expect(await store.listRockets({ sort: 'channel', order: 'asc' })).toEqual(live);
        expect(await store.stats()).toEqual(stats);
        expect(await store.getRocket('ghost')).toBeUndefined();

        // Sequencing carries on from the rebuilt state.
        expect(await submit(launched('ghost', 1))).toEqual(['applied']);
        expect((await store.getRocket('ghost'))?.lastMessageNumber).toBe(12);
      });

      it('replaces a damaged projection with the rockets the log replays', async () => {
        const a = [launched('a', 1, { launchSpeed: 100 }), increased('a', 2, 50), missionChanged('a', 3, 'M3')];
        const b = [launched('b', 1, { launchSpeed: 300 }), exploded('b', 2, 'BOOM')];
        await oneByOne(a[1] as RocketMessage, ...b, a[0] as RocketMessage, a[2] as RocketMessage, increased('c', 2, 1));
        const replayed = [fold(a), fold(b)] as Rocket[];
        const [ra, rb] = replayed as [Rocket, Rocket];
        const listed = async (): Promise<Rocket[]> =>
          (await store.listRockets({ sort: 'channel', order: 'asc' })).map(stripBuffer);
        expect(await listed()).toEqual(replayed);

        // Two stale rows (wrong speed, status, reason, last message number) and a rocket of a channel that
        // has no events at all.
        const damagedA: Rocket = { ...ra, speed: 1, status: 'exploded', explodedReason: 'X', lastMessageNumber: 1 };
        const damagedB: Rocket = { ...rb, speed: 999, explodedReason: 'WRONG', lastMessageNumber: 7 };
        const ghost: Rocket = { ...ra, channel: 'ghost', speed: 42, lastMessageNumber: 9 };
        await h.tamperRocket(damagedA);
        await h.tamperRocket(damagedB);
        await h.tamperRocket(ghost);
        // The damage took: the listing reads the projection itself.
        expect(await listed()).toEqual([damagedA, damagedB, ghost]);

        expect(await store.rebuildProjection()).toBe(5);
        expect(await listed()).toEqual(replayed);
        expect((await store.listRockets({ sort: 'speed', order: 'desc' })).map((r) => r.channel)).toEqual(['b', 'a']);
        expect(await rocket('a')).toEqual(ra);
        expect(await rocket('b')).toEqual(rb);
        expect(await store.getRocket('ghost')).toBeUndefined();
        expect(await store.stats()).toEqual({ rockets: 2, events: 5, buffered: 1 });

        // Sequencing carries on from the replayed last message numbers, not the damaged ones.
        expect(await submit(increased('a', 4, 10), increased('b', 3, 1), launched('c', 1))).toEqual([
          'applied',
          'applied',
          'applied',
        ]);
        expect(await rocket('a')).toEqual(fold([...a, increased('a', 4, 10)]));
        expect(await rocket('b')).toEqual(fold([...b, increased('b', 3, 1)]));
        expect((await rocket('c'))?.lastMessageNumber).toBe(2);
      });

      it('rebuilds an empty log to no rockets', async () => {
        expect(await store.rebuildProjection()).toBe(0);
        expect(await store.stats()).toEqual({ rockets: 0, events: 0, buffered: 0 });
      });
    });

    describe('append listeners', () => {
      it('hears every appended event once, in position order, with the rockets it changed', async () => {
        const rec = record(store);
        await oneByOne(launched('a', 1), increased('a', 3, 1), launched('b', 1));
        await Promise.all([
          store.commit([increased('a', 2, 1)]),
          store.commit([increased('b', 2, 1)]),
          store.commit([increased('b', 2, 1)]),
        ]);
        const head = await store.headPosition();
        await rec.until(head);
        expect(rec.events).toEqual(await allEvents());
        for (const call of rec.calls) {
          expect(call.events.length).toBeGreaterThan(0);
          expectIncreasing(positionsOf(call.events));
          expect(new Set(call.rockets.map((r) => r.channel))).toEqual(new Set(call.events.map((e) => e.channel)));
        }
        const latest = new Map<string, Rocket>();
        for (const call of rec.calls) for (const r of call.rockets) latest.set(r.channel, r);
        expect(latest.get('a')).toEqual(await rocket('a'));
        expect(latest.get('b')).toEqual(await rocket('b'));
        rec.off();
      });

      it('is not called for a commit that appends nothing', async () => {
        const rec = record(store);
        await submit(increased('a', 2, 1));
        await submit(increased('a', 2, 1));
        const r = await store.commit([launched('a', 1)]);
        await rec.until(r.events[1]?.position ?? Infinity);
        expect(rec.calls.every((c) => c.events.length > 0)).toBe(true);
        expect(rec.events.map((e) => e.messageNumber)).toEqual([1, 2]);
        rec.off();
      });

      it('stops calling a listener once it is removed', async () => {
        const removed = record(store);
        const kept = record(store);
        const first = await store.commit([launched('a', 1)]);
        await removed.until(first.events[0]?.position ?? Infinity);
        removed.off();
        const second = await store.commit([increased('a', 2, 1)]);
        await kept.until(second.events[0]?.position ?? Infinity);
        expect(removed.events.map((e) => e.messageNumber)).toEqual([1]);
        expect(kept.events.map((e) => e.messageNumber)).toEqual([1, 2]);
        kept.off();
      });

      it('carries on when a listener throws', async () => {
        const off = store.onAppend(() => {
          throw new Error('listener bug');
        });
        const rec = record(store);
        const r1 = await store.commit([launched('a', 1)]);
        const r2 = await store.commit([increased('a', 2, 1)]);
        expect(statuses(r1)).toEqual(['applied']);
        expect(statuses(r2)).toEqual(['applied']);
        await rec.until(r2.events[0]?.position ?? Infinity);
        expect(rec.events.map((e) => e.messageNumber)).toEqual([1, 2]);
        expect(await rocket('a')).toMatchObject({ speed: 501 });
        off();
        rec.off();
      });
    });

    describe('buffer caps', () => {
      // At most 3 numbers ahead of the one a channel waits for, and 5 messages buffered in all.
      beforeAll(() => {
        options = { bufferLimits: { perChannel: 3, total: 5 } };
      });
      afterAll(() => {
        options = {};
      });

      it('refuses a message more than the per-channel cap ahead of the number its channel waits for, storing nothing', async () => {
        expect(await oneByOne(launched('r1', 1), increased('r1', 3, 3), increased('r1', 5, 5))).toEqual([
          'applied',
          'buffered',
          'buffered',
        ]);
        const before = { view: await store.getRocket('r1'), events: await allEvents(), stats: await store.stats() };
        const result = await store.commit([increased('r1', 6, 6)]);
        expect(result).toEqual({
          outcomes: [
            { status: 'refused', channel: 'r1', messageNumber: 6, cap: 'perChannel', limit: 3, waitingFor: 2 },
          ],
          events: [],
          rockets: [],
        });
        expect(await store.getRocket('r1')).toEqual(before.view);
        expect(await allEvents()).toEqual(before.events);
        expect(await store.stats()).toEqual(before.stats);
        expect(before.view?.buffer.count).toBe(2);
      });

      it('accepts the message a channel waits for at the cap, and then the numbers it brought within reach', async () => {
        await oneByOne(launched('r1', 1), increased('r1', 3, 3), increased('r1', 4, 4), increased('r1', 5, 5));
        expect(await submit(increased('r1', 6, 6))).toEqual(['refused']);
        expect(await submit(increased('r1', 2, 2))).toEqual(['applied']);
        expect(numbersOf(await allEvents())).toEqual([1, 2, 3, 4, 5]);
        expect((await store.getRocket('r1'))?.buffer).toEqual({ waitingFor: 6, count: 0, oldestSince: null });
        expect(await oneByOne(increased('r1', 9, 9), increased('r1', 10, 10))).toEqual(['buffered', 'refused']);
        expect(await store.stats()).toMatchObject({ buffered: 1 });
      });

      it('still tells a redelivery at the cap a duplicate, and a different body a conflict', async () => {
        await oneByOne(launched('r1', 1), increased('r1', 4, 4));
        await oneByOne(increased('r2', 2, 2), increased('r2', 3, 3), increased('r3', 2, 2));
        expect(await store.stats()).toMatchObject({ buffered: 4 });
        expect(await submit(increased('r1', 1, 1))).toEqual(['conflict']);
        expect(await submit(launched('r1', 1))).toEqual(['duplicate']);
        expect(await submit(increased('r2', 4, 4))).toEqual(['buffered']);
        // Total cap reached: redeliveries of buffered messages are still duplicates, other bodies conflicts.
        expect(await oneByOne(increased('r1', 4, 4), increased('r2', 3, 3), increased('r2', 3, 333))).toEqual([
          'duplicate',
          'duplicate',
          'conflict',
        ]);
        expect(await store.stats()).toMatchObject({ buffered: 5 });
      });

      it('refuses any channel at the total cap, but never the message a channel waits for', async () => {
        await oneByOne(increased('a', 2, 2), increased('a', 3, 3), increased('a', 4, 4));
        await oneByOne(increased('b', 2, 2), increased('b', 3, 3));
        const result = await store.commit([increased('c', 2, 2), increased('b', 4, 4), increased('a', 5, 5)]);
        expect(result.outcomes).toEqual([
          { status: 'refused', channel: 'c', messageNumber: 2, cap: 'total', limit: 5, waitingFor: 1 },
          { status: 'refused', channel: 'b', messageNumber: 4, cap: 'total', limit: 5, waitingFor: 1 },
          // Beyond both caps: the per-channel one is told, being the one its sender can act on.
          { status: 'refused', channel: 'a', messageNumber: 5, cap: 'perChannel', limit: 3, waitingFor: 1 },
        ]);
        expect(await store.stats()).toEqual({ rockets: 0, events: 0, buffered: 5 });
        expect(await submit(launched('c', 1))).toEqual(['applied']);
        expect(await submit(launched('a', 1))).toEqual(['applied']);
        expect(numbersOf(await store.readEvents({ channel: 'a', limit: ALL }))).toEqual([1, 2, 3, 4]);
        expect(await store.stats()).toEqual({ rockets: 2, events: 5, buffered: 2 });
        expect(await submit(increased('c', 3, 3))).toEqual(['buffered']);
      });

      it('refuses at the total cap a message that a later one of the same commit would have drained', async () => {
        await oneByOne(increased('a', 2, 2), increased('a', 3, 3), increased('a', 4, 4));
        await oneByOne(increased('b', 2, 2), increased('b', 3, 3));
        // c#2 would be buffered while 5 are: refused, whatever c#1 after it would have done to the buffer.
        expect(await submit(increased('c', 2, 2), launched('c', 1))).toEqual(['refused', 'applied']);
        expect(await submit(increased('d', 2, 2), launched('d', 1), increased('d', 2, 2))).toEqual([
          'refused',
          'applied',
          'applied',
        ]);
        const c = await store.getRocket('c');
        expect(numbersOf(await store.readEvents({ channel: 'c', limit: ALL }))).toEqual([1]);
        expect(c?.buffer).toEqual({ waitingFor: 2, count: 0, oldestSince: null });
        expect(await store.stats()).toEqual({ rockets: 2, events: 3, buffered: 5 });
      });

      it('counts what a commit buffers and drains as it goes, message by message', async () => {
        const result = await store.commit([
          increased('a', 2, 2),
          increased('a', 3, 3),
          increased('a', 4, 4),
          increased('b', 2, 2),
          increased('b', 3, 3),
          increased('c', 2, 2),
          launched('a', 1),
          increased('c', 2, 2),
          increased('c', 3, 3),
        ]);
        expect(statuses(result)).toEqual([
          'buffered',
          'buffered',
          'buffered',
          'buffered',
          'buffered',
          'refused',
          'applied',
          'buffered',
          'buffered',
        ]);
        expect(numbersOf(result.events)).toEqual([1, 2, 3, 4]);
        expect(await store.stats()).toEqual({ rockets: 1, events: 4, buffered: 4 });
        expect(await submit(increased('d', 2, 2))).toEqual(['buffered']);
        expect(await submit(increased('d', 3, 3))).toEqual(['refused']);
      });
    });

    describe('open gaps', () => {
      it('lists every channel with buffered messages, oldest first, including channels without a rocket', async () => {
        const t0 = h.clock.now().toISOString();
        await oneByOne(launched('r1', 1), increased('r1', 3, 3), launched('done', 1));
        h.clock.advance(1000);
        const t1 = h.clock.now().toISOString();
        await submit(increased('ghost', 2, 2));
        h.clock.advance(1000);
        const t2 = h.clock.now().toISOString();
        await submit(increased('r1', 5, 5));
        expect(await store.listGaps(100)).toEqual([
          { channel: 'r1', waitingFor: 2, count: 2, oldestSince: t0 },
          { channel: 'ghost', waitingFor: 1, count: 1, oldestSince: t1 },
        ]);
        expect(await store.listGaps(1)).toEqual([{ channel: 'r1', waitingFor: 2, count: 2, oldestSince: t0 }]);

        // #2 fills r1's first gap: #3 applies, #5 still waits (for #4), since t2.
        await submit(increased('r1', 2, 2));
        expect(await store.listGaps(100)).toEqual([
          { channel: 'ghost', waitingFor: 1, count: 1, oldestSince: t1 },
          { channel: 'r1', waitingFor: 4, count: 1, oldestSince: t2 },
        ]);
        expect((await store.getRocket('r1'))?.buffer).toEqual({ waitingFor: 4, count: 1, oldestSince: t2 });
      });

      it('orders gaps of the same age by channel, and lists nothing once every gap is filled', async () => {
        await submit(increased('b', 2, 2), increased('a', 2, 2), increased('é', 2, 2), increased('Z', 2, 2));
        expect((await store.listGaps(100)).map((g) => g.channel)).toEqual(['Z', 'a', 'b', 'é']);
        await submit(launched('a', 1), launched('b', 1), launched('é', 1), launched('Z', 1));
        expect(await store.listGaps(100)).toEqual([]);
      });
    });

    describe('the gap policy (skipGaps)', () => {
      const TIMEOUT = 30_000;
      const REASON = 'not received within GAP_TIMEOUT (30s)';

      it('skips nothing while the oldest buffered message has not waited longer than the timeout', async () => {
        await oneByOne(launched('r1', 1), increased('r1', 4, 4));
        h.clock.advance(TIMEOUT);
        const before = { events: await allEvents(), view: await store.getRocket('r1') };
        expect(await store.skipGaps(TIMEOUT, REASON)).toEqual([]);
        expect(await allEvents()).toEqual(before.events);
        expect(await store.getRocket('r1')).toEqual(before.view);
      });

      it('then records a MessageSkipped event for each missing number and applies what they unblock', async () => {
        await oneByOne(launched('r1', 1), increased('r1', 4, 4), increased('r1', 5, 5));
        h.clock.advance(TIMEOUT + 1);
        const skippedAt = h.clock.now().toISOString();
        expect(await store.skipGaps(TIMEOUT, REASON)).toEqual([{ channel: 'r1', from: 2, to: 3 }]);
        const events = await allEvents();
        expect(numbersOf(events)).toEqual([1, 2, 3, 4, 5]);
        expectIncreasing(positionsOf(events));
        for (const n of [2, 3])
          expect(events[n - 1]).toMatchObject({
            channel: 'r1',
            messageNumber: n,
            messageType: 'MessageSkipped',
            messageTime: skippedAt,
            payload: { reason: REASON },
            recordedAt: skippedAt,
          });
        expect(events[3]).toMatchObject({ messageType: 'RocketSpeedIncreased', payload: { by: 4 } });
        expect(await store.getRocket('r1')).toEqual({
          ...fold([launched('r1', 1), increased('r1', 4, 4), increased('r1', 5, 5)]),
          lastMessageNumber: 5,
          buffer: { waitingFor: 6, count: 0, oldestSince: null },
        });
        expect(await store.listGaps(100)).toEqual([]);
        expect(await store.stats()).toEqual({ rockets: 1, events: 5, buffered: 0 });
        // Nothing is left to skip.
        expect(await store.skipGaps(TIMEOUT, REASON)).toEqual([]);
        expect(await allEvents()).toEqual(events);
      });

      it('skips from #1 in a channel that has no rocket yet', async () => {
        await submit(increased('ghost', 3, 3));
        h.clock.advance(TIMEOUT + 1);
        expect(await store.skipGaps(TIMEOUT, REASON)).toEqual([{ channel: 'ghost', from: 1, to: 2 }]);
        expect((await store.readEvents({ channel: 'ghost', limit: ALL })).map((e) => e.messageType)).toEqual([
          'MessageSkipped',
          'MessageSkipped',
          'RocketSpeedIncreased',
        ]);
        expect(await store.getRocket('ghost')).toMatchObject({
          type: null,
          mission: null,
          launchedAt: null,
          speed: 3,
          status: 'flying',
          lastMessageNumber: 3,
          updatedAt: at(3),
        });
        // The skipped numbers are events like any other, counted as such.
        expect(await store.stats()).toEqual({ rockets: 1, events: 3, buffered: 0 });
      });

      it('skips only the gaps stale messages wait behind, and the next ones once their messages are stale', async () => {
        await oneByOne(launched('r1', 1), increased('r1', 3, 3));
        h.clock.advance(20_000);
        await submit(increased('r1', 6, 6));
        h.clock.advance(15_000);
        // #3 waited 35 s, #6 only 15 s: skip #2, apply #3, and wait on for #4 and #5.
        expect(await store.skipGaps(TIMEOUT, REASON)).toEqual([{ channel: 'r1', from: 2, to: 2 }]);
        expect(await store.getRocket('r1')).toMatchObject({
          lastMessageNumber: 3,
          buffer: { waitingFor: 4, count: 1 },
        });
        h.clock.advance(15_001);
        expect(await store.skipGaps(TIMEOUT, REASON)).toEqual([{ channel: 'r1', from: 4, to: 5 }]);
        expect(numbersOf(await allEvents())).toEqual([1, 2, 3, 4, 5, 6]);
      });

      it('skips every gap of a channel in one sweep while the oldest message left is still stale', async () => {
        await oneByOne(launched('r1', 1), increased('r1', 3, 3), increased('r1', 6, 6), launched('r2', 1));
        await submit(increased('r2', 3, 3));
        h.clock.advance(TIMEOUT + 1);
        await submit(increased('r2', 5, 5));
        const skipped = await store.skipGaps(TIMEOUT, REASON);
        expect([...skipped].sort((x, y) => compareCodePoints(x.channel, y.channel) || x.from - y.from)).toEqual([
          { channel: 'r1', from: 2, to: 2 },
          { channel: 'r1', from: 4, to: 5 },
          { channel: 'r2', from: 2, to: 2 },
        ]);
        expect(await store.getRocket('r1')).toMatchObject({ lastMessageNumber: 6, buffer: { count: 0 } });
        // r2's #5 is recent: its gap at #4 waits on.
        expect(await store.listGaps(100)).toEqual([
          { channel: 'r2', waitingFor: 4, count: 1, oldestSince: h.clock.now().toISOString() },
        ]);
      });

      it('answers a late message for a skipped number with a conflict that says so, and keeps the skip', async () => {
        await oneByOne(launched('r1', 1), increased('r1', 3, 3));
        h.clock.advance(TIMEOUT + 1);
        await store.skipGaps(TIMEOUT, REASON);
        const events = await allEvents();
        const late = await store.commit([increased('r1', 2, 2)]);
        expect(late).toEqual({
          outcomes: [{ status: 'conflict', channel: 'r1', messageNumber: 2, skipped: true }],
          events: [],
          rockets: [],
        });
        expect(await allEvents()).toEqual(events);
        expect(await rocket('r1')).toMatchObject({ speed: 503, lastMessageNumber: 3 });
        // A conflict with a message that was received is not a skip.
        const [other] = (await store.commit([increased('r1', 3, 4)])).outcomes;
        expect(other).toStrictEqual({ status: 'conflict', channel: 'r1', messageNumber: 3 });
      });

      it('rebuilds the same rockets from a log holding skips', async () => {
        await oneByOne(launched('r1', 1), increased('r1', 3, 3), exploded('r2', 2, 'late'), increased('r3', 4, 1));
        h.clock.advance(TIMEOUT + 1);
        await store.skipGaps(TIMEOUT, REASON);
        await submit(increased('r1', 4, 4));
        const live = await store.listRockets({ sort: 'channel', order: 'asc' });
        expect(live.map((r) => r.channel)).toEqual(['r1', 'r2', 'r3']);
        expect(await store.rebuildProjection()).toBe((await store.stats()).events);
        expect(await store.listRockets({ sort: 'channel', order: 'asc' })).toEqual(live);
        expect(await store.getRocket('r2')).toMatchObject({ status: 'exploded', explodedReason: 'late' });
      });

      it('hands skip events and the rockets they changed to append listeners, like any commit', async () => {
        await oneByOne(launched('r1', 1), increased('r1', 3, 3));
        const rec = record(store);
        h.clock.advance(TIMEOUT + 1);
        await store.skipGaps(TIMEOUT, REASON);
        await rec.until(await store.headPosition());
        expect(rec.events.map((e) => [e.messageNumber, e.messageType])).toEqual([
          [2, 'MessageSkipped'],
          [3, 'RocketSpeedIncreased'],
        ]);
        expect(rec.events).toEqual(
          await store.readEvents({ afterPosition: positionsOf(await allEvents())[0], limit: ALL }),
        );
        expect(rec.calls.flatMap((c) => c.rockets)).toEqual([await rocket('r1')]);
        rec.off();
      });

      it('skips the stale gaps of any number of channels in one sweep, and only the stale ones', async () => {
        const stale = Array.from({ length: 250 }, (_, i) => `stale-${String(i).padStart(3, '0')}`);
        await submit(...stale.map((c) => increased(c, 2, 2)));
        h.clock.advance(TIMEOUT);
        await submit(increased('fresh', 2, 2));
        h.clock.advance(1);
        const skipped = await store.skipGaps(TIMEOUT, REASON);
        expect(skipped.map((g) => `${g.channel}:${g.from}-${g.to}`).sort()).toEqual(stale.map((c) => `${c}:1-1`));
        expect(await store.stats()).toEqual({ rockets: 250, events: 500, buffered: 1 });
        expect((await store.listGaps(1_000)).map((g) => g.channel)).toEqual(['fresh']);
      });

      it('frees the buffer it drains: a channel at its cap accepts new messages after a skip', async () => {
        // The default cap: #3 to #1002 may wait for #2, #1003 may not.
        await submit(launched('r1', 1));
        const ahead = Array.from({ length: 1_000 }, (_, i) => increased('r1', i + 3, 1));
        expect(new Set(await submit(...ahead))).toEqual(new Set(['buffered']));
        expect(await submit(increased('r1', 1_003, 1))).toEqual(['refused']);
        h.clock.advance(TIMEOUT + 1);
        expect(await store.skipGaps(TIMEOUT, REASON)).toEqual([{ channel: 'r1', from: 2, to: 2 }]);
        expect(await store.stats()).toMatchObject({ buffered: 0, events: 1_002 });
        expect(await submit(increased('r1', 1_003, 1))).toEqual(['applied']);
      });

      describe('with a cap far above what one transaction records', () => {
        const GAP = SKIP_NUMBERS_PER_TRANSACTION * 2 + 5;
        beforeAll(() => {
          options = { bufferLimits: { perChannel: GAP + 1, total: GAP + 1 } };
        });
        afterAll(() => {
          options = {};
        });

        it('skips a gap wider than a transaction in several commits, and reports it as one range', async () => {
          await submit(launched('r1', 1), launched('r2', 1));
          expect(await submit(increased('r1', GAP + 2, 7), increased('r2', 3, 3))).toEqual(['buffered', 'buffered']);
          const rec = record(store);
          h.clock.advance(TIMEOUT + 1);
          const skipped = await store.skipGaps(TIMEOUT, REASON);
          expect([...skipped].sort((x, y) => compareCodePoints(x.channel, y.channel))).toEqual([
            { channel: 'r1', from: 2, to: GAP + 1 },
            { channel: 'r2', from: 2, to: 2 },
          ]);
          await rec.until(await store.headPosition());
          // Three commits at least, none recording more skips than a transaction may.
          const skips = rec.calls.map((c) => c.events.filter((e) => e.messageType === 'MessageSkipped').length);
          expect({ commits: skips.length >= 3, most: Math.max(...skips) <= SKIP_NUMBERS_PER_TRANSACTION }).toEqual({
            commits: true,
            most: true,
          });
          expect(rec.events.filter((e) => e.channel === 'r1').map((e) => e.messageNumber)).toEqual(
            Array.from({ length: GAP + 1 }, (_, i) => i + 2),
          );
          expect(await store.getRocket('r1')).toMatchObject({ speed: 507, lastMessageNumber: GAP + 2 });
          expect(await store.stats()).toEqual({ rockets: 2, events: GAP + 5, buffered: 0 });
          rec.off();
        });
      });
    });

    describe('against a simple model', () => {
      it.each([1, 2, 3])(
        'matches the model for a randomized multi-rocket history with concurrent commits (seed %i)',
        async (seed) => {
          const random = mulberry32(seed);
          const channels = ['alpha', 'beta', 'γ', '😀', 'Z9', 'a9', 'stuck'];
          const deliveries: RocketMessage[] = [];
          for (const c of channels) {
            const length = 3 + Math.floor(random() * 10);
            // One channel never gets one of its messages: everything after the gap stays buffered.
            const missing = c === 'stuck' ? 1 + Math.floor(random() * length) : 0;
            for (let n = 1; n <= length; n++) {
              if (n === missing) continue;
              const kind = Math.floor(random() * 6);
              const m =
                kind <= 1
                  ? launched(c, n, { launchSpeed: Math.floor(random() * 100), mission: `m${n}`, type: `t${n}` })
                  : kind === 2
                    ? increased(c, n, Math.floor(random() * 50))
                    : kind === 3
                      ? decreased(c, n, Math.floor(random() * 80))
                      : kind === 4
                        ? missionChanged(c, n, `m${n}`)
                        : exploded(c, n, `r${n}`);
              deliveries.push(m);
              if (random() < 0.3) deliveries.push(m);
              if (random() < 0.15) deliveries.push(variant(m));
            }
          }
          shuffle(deliveries, random);

          // The model: the first body received for each number stands; a channel applies the longest
          // gap-free run from #1.
          const received = new Map<string, Map<number, RocketMessage>>();
          const appliedUpTo = new Map<string, number>();
          const expectOutcome = (m: RocketMessage): SubmitStatus => {
            let got = received.get(m.channel);
            if (!got) received.set(m.channel, (got = new Map<number, RocketMessage>()));
            const first = got.get(m.messageNumber);
            if (first) return sameBody(first, m) ? 'duplicate' : 'conflict';
            got.set(m.messageNumber, m);
            const last = appliedUpTo.get(m.channel) ?? 0;
            if (m.messageNumber !== last + 1) return 'buffered';
            let n = m.messageNumber;
            while (got.has(n + 1)) n++;
            appliedUpTo.set(m.channel, n);
            return 'applied';
          };

          const rec = record(store);
          let i = 0;
          while (i < deliveries.length) {
            // A round: a few commits started in one tick. As the lane pool guarantees, a channel goes to
            // one commit only, so the model's order per channel is the store's.
            const round = deliveries.slice(i, i + 1 + Math.floor(random() * 12));
            i += round.length;
            const lanes = 1 + Math.floor(random() * 3);
            const laneOf = (c: string): number => channels.indexOf(c) % lanes;
            const batches = Array.from({ length: lanes }, (_, l) => round.filter((m) => laneOf(m.channel) === l));
            const results = await Promise.all(batches.map((b) => store.commit(b)));
            const expected = batches.map((b) => b.map(expectOutcome));
            expect([seed, i, results.map(statuses)]).toEqual([seed, i, expected]);
          }

          for (const c of channels) {
            const last = appliedUpTo.get(c) ?? 0;
            const got = received.get(c) ?? new Map<number, RocketMessage>();
            const applied = Array.from({ length: last }, (_, k) => got.get(k + 1) as RocketMessage);
            const view = await store.getRocket(c);
            if (last === 0) {
              expect(view).toBeUndefined();
            } else {
              expect(view).toEqual({
                ...fold(applied),
                buffer: expect.objectContaining({ waitingFor: last + 1, count: got.size - last }) as unknown,
              });
            }
            const events = await store.readEvents({ channel: c, limit: ALL });
            expect(events.map((e) => [e.messageNumber, e.messageType, e.messageTime, e.payload])).toEqual(
              applied.map((m) => [m.messageNumber, m.messageType, m.messageTime, m.payload]),
            );
          }

          const all = await allEvents();
          expectIncreasing(positionsOf(all));
          const stats = await store.stats();
          expect(stats).toEqual({
            rockets: [...appliedUpTo.values()].filter((n) => n > 0).length,
            events: all.length,
            buffered: [...received.entries()].reduce((s, [c, got]) => s + got.size - (appliedUpTo.get(c) ?? 0), 0),
          });
          await rec.until(await store.headPosition());
          expect(rec.events).toEqual(all);
          rec.off();

          const live = await store.listRockets({ sort: 'channel', order: 'asc' });
          await store.rebuildProjection();
          expect(await store.listRockets({ sort: 'channel', order: 'asc' })).toEqual(live);
        },
      );
    });
  });
}
