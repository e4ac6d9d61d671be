import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateEnvelope, type RocketMessage } from '../../src/domain/message';
import { FellBehindError, Hub, type RocketUpdate } from '../../src/engine/hub';
import { LanePool } from '../../src/engine/lanes';
import { RocketService } from '../../src/engine/service';
import { MemoryStore } from '../../src/store/memory';
import { SqliteDatabase } from '../../src/store/sqlite/database';
import { SqliteStore } from '../../src/store/sqlite/store';
import type { StoredEvent } from '../../src/store/types';
import { take } from '../support/iterate';

const envelope = (channel: string, n: number) => ({
  metadata: {
    channel,
    messageNumber: n,
    messageTime: '2022-02-02T19:39:05Z',
    messageType: n === 1 ? 'RocketLaunched' : 'RocketSpeedIncreased',
  },
  message: n === 1 ? { type: 'Falcon-9', launchSpeed: 1, mission: 'M' } : { by: 1 },
});
const msg = (channel: string, n: number): RocketMessage => {
  const v = validateEnvelope(envelope(channel, n));
  if (!v.ok) throw new Error('bad fixture');
  return v.message;
};

describe('Hub', () => {
  let store: MemoryStore;
  let hub: Hub;
  beforeEach(() => {
    store = new MemoryStore();
    hub = new Hub(store, 5);
  });
  afterEach(() => hub.close());

  it('delivers appended events of the subscribed channel, in position order', async () => {
    const feed = hub.events('a');
    await store.commit([msg('a', 1), msg('b', 1), msg('a', 2)]);
    expect((await take(feed, 2)).map((e) => `${e.channel}#${e.messageNumber}`)).toEqual(['a#1', 'a#2']);
    await feed.return();
  });

  it('drops a subscriber whose buffer fills with FellBehindError and forgets it', async () => {
    const slow = hub.events();
    const fast = hub.events();
    const fastGot = take(fast, 6);
    for (let n = 1; n <= 6; n++) await store.commit([msg('a', n)]);
    expect(await fastGot).toHaveLength(6);
    await expect(slow.next()).rejects.toBeInstanceOf(FellBehindError);
    expect(hub.subscribers).toBe(1);
    await fast.return();
    expect(hub.subscribers).toBe(0);
  });

  it('keeps a subscriber that has read everything, however many items one commit brings', async () => {
    const events = hub.events();
    const rockets = hub.rockets();
    const [eventsGot, rocketsGot] = await Promise.all([
      take(events, 20),
      take(rockets, 20),
      store.commit(Array.from({ length: 20 }, (_, i) => msg(`r${i}`, 1))),
    ]);
    expect(eventsGot).toHaveLength(20);
    expect(rocketsGot).toHaveLength(20);
    expect(hub.subscribers).toBe(2);
    await events.return();
    await rockets.return();
  });

  it('drops a subscriber that has not read a commit when the next one comes, once what waits passes its buffer', async () => {
    const feed = hub.rockets();
    await store.commit(Array.from({ length: 20 }, (_, i) => msg(`r${i}`, 1)));
    expect(hub.subscribers).toBe(1);
    await store.commit([msg('late', 1)]);
    await expect(feed.next()).rejects.toBeInstanceOf(FellBehindError);
    expect(hub.subscribers).toBe(0);
  });

  it('keeps only the latest state of each rocket for a slow rocket subscriber', async () => {
    const feed = hub.rockets();
    for (let n = 1; n <= 20; n++) await store.commit([msg('a', n)]);
    await store.commit([msg('b', 1)]);
    const got = await take(feed, 2);
    expect(got.map((u) => [u.channel, u.rocket.lastMessageNumber, u.position])).toEqual([
      ['a', 20, 20],
      ['b', 1, 21],
    ]);
    await feed.return();
  });

  it('moves a rocket a slow subscriber has not read behind those that changed after it: positions only grow', async () => {
    // a@1, b@2, a@3: a client that read a@3 first, and was cut off, would resume after 3 and never see b@2.
    const feed = hub.rockets();
    for (const m of [msg('a', 1), msg('b', 1), msg('a', 2)]) await store.commit([m]);
    const got = await take(feed, 2);
    expect(got.map((u) => [u.channel, u.position])).toEqual([
      ['b', 2],
      ['a', 3],
    ]);
    await feed.return();
  });

  it('gives each rocket of a commit the position of its own last event, in their order', async () => {
    const feed = hub.rockets();
    await store.commit([msg('a', 1), msg('b', 1), msg('a', 2)]);
    const got = await take(feed, 2);
    expect(got.map((u) => [u.channel, u.rocket.lastMessageNumber, u.position])).toEqual([
      ['b', 1, 2],
      ['a', 2, 3],
    ]);
    await feed.return();
  });

  it('releases a subscriber at once when it unsubscribes while waiting', async () => {
    const feed = hub.events('a');
    const waiting = feed.next();
    expect(hub.subscribers).toBe(1);
    await feed.return();
    await expect(waiting).resolves.toEqual({ value: undefined, done: true });
    expect(hub.subscribers).toBe(0);
  });

  it('ends every feed when it closes', async () => {
    const feed = hub.rockets('a');
    const waiting = feed.next();
    hub.close();
    await expect(waiting).resolves.toMatchObject({ done: true });
    expect(hub.subscribers).toBe(0);
  });
});

describe('RocketService.eventsSince (catch-up, then live)', () => {
  it('replays history and switches to live with no gap and no duplicate while writes go on', async () => {
    const store = new MemoryStore();
    const hub = new Hub(store, 1000);
    const service = new RocketService(store, new LanePool(store, 3), hub);
    for (let n = 1; n <= 50; n++) await service.submit(envelope('a', n));
    const feed = service.eventsSince({ channel: 'a', afterMessageNumber: 10 });
    const writes = (async () => {
      for (let n = 51; n <= 120; n++) await service.submit(envelope('a', n));
    })();
    const got = await take(feed, 110);
    await writes;
    expect(got.map((e) => e.messageNumber)).toEqual(Array.from({ length: 110 }, (_, i) => i + 11));
    await feed.return();
    expect(hub.subscribers).toBe(0);
    hub.close();
  });

  it('hands on live the event after the last it replayed, and not that one again', async () => {
    // #1 lands after the subscription begins and before its first read: it is both read by the catch-up and
    // queued live. The live queue must give #2 next, not #1 a second time.
    const store = new MemoryStore();
    const hub = new Hub(store, 100);
    const service = new RocketService(store, new LanePool(store, 1), hub);
    const feed = service.eventsSince({});
    await service.submit(envelope('a', 1));
    expect((await feed.next()).value).toMatchObject({ position: 1 });
    await service.submit(envelope('a', 2));
    expect((await feed.next()).value).toMatchObject({ position: 2 });
    await feed.return();
    hub.close();
  });

  it('resumes after a position, checking the arguments first asked with, and refuses one past the head', async () => {
    const store = new MemoryStore();
    const hub = new Hub(store, 1000);
    const service = new RocketService(store, new LanePool(store, 1), hub);
    for (let n = 1; n <= 5; n++) await service.submit(envelope('a', n));
    for (let n = 1; n <= 3; n++) await service.submit(envelope('b', n));
    // First asked from message 1 of b; resumed after position 6 (b's 1st): b's 2nd and 3rd, then live.
    const feed = await service.eventsResumed({ channel: 'b', afterMessageNumber: 1 }, 6);
    const next = take(feed, 3);
    await service.submit(envelope('b', 4));
    expect((await next).map((e) => [e.position, e.messageNumber])).toEqual([
      [7, 2],
      [8, 3],
      [9, 4],
    ]);
    await feed.return();
    await expect(service.eventsResumed({}, 10)).rejects.toMatchObject({
      code: 'BAD_USER_INPUT',
      message: expect.stringContaining('Last-Event-ID: 10 is past the end of the log (position 9)') as string,
    });
    await expect(service.eventsResumed({ afterMessageNumber: 1 }, 1)).rejects.toMatchObject({
      code: 'BAD_USER_INPUT',
      message: expect.stringContaining('afterMessageNumber: needs channel') as string,
    });
    expect(hub.subscribers).toBe(0);
    hub.close();
  });

  it('starts after the number asked for even when the channel has not reached it yet', async () => {
    const store = new MemoryStore();
    const hub = new Hub(store, 1000);
    const service = new RocketService(store, new LanePool(store, 1), hub);
    await service.submit(envelope('a', 1));
    const feed = service.eventsSince({ channel: 'a', afterMessageNumber: 3 });
    const first = feed.next();
    for (let n = 2; n <= 5; n++) await service.submit(envelope('a', n));
    const got = [(await first).value as StoredEvent, ...(await take(feed, 1))];
    expect(got.map((e) => e.messageNumber)).toEqual([4, 5]);
    await feed.return();
    hub.close();
  });

  it('tries a catch-up read the store failed again, and goes on with no gap', async () => {
    const store = new MemoryStore();
    const hub = new Hub(store, 1000);
    const service = new RocketService(store, new LanePool(store, 1), hub);
    for (let n = 1; n <= 20; n++) await service.submit(envelope('a', n));
    const read = jest.spyOn(store, 'readEvents');
    read
      .mockRejectedValueOnce(new Error('Connection terminated unexpectedly'))
      .mockRejectedValueOnce(new Error('terminating connection due to administrator command'));
    try {
      const feed = service.eventsSince({ channel: 'a', afterMessageNumber: 5 });
      const got = await take(feed, 15);
      expect(got.map((e) => e.messageNumber)).toEqual(Array.from({ length: 15 }, (_, i) => i + 6));
      expect(read).toHaveBeenCalledTimes(3);
      await feed.return();
    } finally {
      read.mockRestore();
      hub.close();
    }
  });

  it('gives the event loop a turn every hundred events while it replays the store', async () => {
    const store = new MemoryStore();
    const hub = new Hub(store, 1000);
    const service = new RocketService(store, new LanePool(store, 1), hub);
    for (let n = 1; n <= 1200; n++) await service.submit(envelope('a', n));
    const feed = service.eventsSince({});
    // Anything else waiting on the event loop: a request, a `complete` from the subscriber, a stop.
    const turn = { taken: false };
    setImmediate(() => (turn.taken = true));
    let beforeTurn = 0;
    for (let i = 1; i <= 1200; i++) {
      const r = await feed.next();
      expect((r.value as StoredEvent).messageNumber).toBe(i);
      if (!turn.taken) beforeTurn++;
    }
    expect(beforeTurn).toBe(99);
    // Closed while it waits for its turn: nothing more comes.
    const replay = service.eventsSince({});
    await take(replay, 99);
    const pending = replay.next();
    await replay.return();
    expect(await pending).toEqual({ value: undefined, done: true });
    await feed.return();
    hub.close();
  });

  it('never loses events for a slow reader even when its live buffer overflows', async () => {
    const store = new MemoryStore();
    const hub = new Hub(store, 3);
    const service = new RocketService(store, new LanePool(store, 1), hub);
    await service.submit(envelope('a', 1));
    const feed = service.eventsSince({});
    const got: StoredEvent[] = await take(feed, 1);
    for (let n = 2; n <= 40; n++) await service.submit(envelope('a', n));
    got.push(...(await take(feed, 39)));
    expect(got.map((e) => e.position)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    await feed.return();
    hub.close();
  });
});

describe('RocketService.rocketUpdatesResumed (what changed, then live)', () => {
  /** A service over a memory store holding `history` submitted in order, closed after each test. */
  async function serviceWith(history: ReadonlyArray<[string, number]>, options = {}) {
    const store = new MemoryStore();
    const hub = new Hub(store, 1000);
    const lanes = new LanePool(store, 1);
    const service = new RocketService(store, lanes, hub, undefined, undefined, options);
    for (const [channel, n] of history) await service.submit(envelope(channel, n));
    closers.push(async () => {
      await lanes.close();
      hub.close();
      await store.close();
    });
    return { service, hub };
  }
  const closers: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const close of closers.splice(0)) await close();
  });
  const seen = (updates: readonly RocketUpdate[]) =>
    updates.map((u) => [u.channel, u.rocket.lastMessageNumber, u.position]);

  it('sends the state of each rocket that changed after the position, the last with the head, then goes live', async () => {
    // Positions: a1 1, b1 2, c1 3, a2 4, b2 5, a3 6.
    const { service, hub } = await serviceWith([
      ['a', 1],
      ['b', 1],
      ['c', 1],
      ['a', 2],
      ['b', 2],
      ['a', 3],
    ]);
    // After position 3: a and b changed since, c did not. Each comes once, as it is now.
    const feed = await service.rocketUpdatesResumed(undefined, 3);
    const resynced = await take(feed, 2);
    expect(seen(resynced)).toEqual([
      ['a', 3, undefined],
      ['b', 2, 6],
    ]);
    const live = take(feed, 1);
    await service.submit(envelope('c', 2));
    expect(seen(await live)).toEqual([['c', 2, 7]]);
    await feed.return();
    expect(hub.subscribers).toBe(0);
  });

  it('resumes in the middle of a commit: the rockets after the position are sent again', async () => {
    const { service } = await serviceWith([]);
    const updates = service.rocketUpdates();
    await service.submitMany([envelope('a', 1), envelope('b', 1)]);
    expect(seen(await take(updates, 2))).toEqual([
      ['a', 1, 1],
      ['b', 1, 2],
    ]);
    await updates.return();
    // Cut off after a's update: b's comes again.
    const resumed = await service.rocketUpdatesResumed(undefined, 1);
    expect(seen(await take(resumed, 1))).toEqual([['b', 1, 2]]);
    await resumed.return();
  });

  it('sends nothing before the live updates to a client that has every change', async () => {
    const { service } = await serviceWith([
      ['a', 1],
      ['b', 1],
    ]);
    const feed = await service.rocketUpdatesResumed(undefined, 2);
    const next = take(feed, 1);
    await service.submit(envelope('b', 2));
    expect(seen(await next)).toEqual([['b', 2, 3]]);
    await feed.return();
  });

  it('resumes one rocket: its state if it changed after the position, then its live updates', async () => {
    const { service } = await serviceWith([
      ['a', 1],
      ['b', 1],
      ['a', 2],
    ]);
    const changed = await service.rocketUpdatesResumed('a', 1);
    expect(seen(await take(changed, 1))).toEqual([['a', 2, 3]]);
    await changed.return();
    // b has not changed after position 2: its live update comes first.
    const unchanged = await service.rocketUpdatesResumed('b', 2);
    const next = take(unchanged, 1);
    await service.submit(envelope('a', 3));
    await service.submit(envelope('b', 2));
    expect(seen(await next)).toEqual([['b', 2, 5]]);
    await unchanged.return();
  });

  it('sends every rocket, by channel, to a client further behind than the events it reads to find the changes', async () => {
    const history: Array<[string, number]> = [];
    for (let n = 1; n <= 3; n++) for (const channel of ['d', 'b', 'c', 'a']) history.push([channel, n]);
    const { service } = await serviceWith(history, { resyncScan: 4 });
    // After position 7 (c's 2nd): five events to read, past the bound of 4: every rocket.
    const far = await service.rocketUpdatesResumed(undefined, 7);
    expect(seen(await take(far, 4))).toEqual([
      ['a', 3, undefined],
      ['b', 3, undefined],
      ['c', 3, undefined],
      ['d', 3, 12],
    ]);
    await far.return();
    // After position 8 (a's 2nd): four events, within it: the rockets they changed, in that order.
    const near = await service.rocketUpdatesResumed(undefined, 8);
    expect(seen(await take(near, 4))).toEqual([
      ['d', 3, undefined],
      ['b', 3, undefined],
      ['c', 3, undefined],
      ['a', 3, 12],
    ]);
    await near.return();
  });

  it('reads every rocket a page at a time, and sends those that changed, when more than a thousand did', async () => {
    // 1,100 rockets, named so that their order by channel is not the order they launched in.
    const names = Array.from({ length: 1100 }, (_, i) => `r${String((i * 7) % 1100).padStart(4, '0')}`);
    const { service } = await serviceWith([['first', 1]]);
    await service.submitMany(names.map((c) => envelope(c, 1)));
    const feed = await service.rocketUpdatesResumed(undefined, 1);
    const got = await take(feed, 1100);
    expect(got.map((u) => u.channel)).toEqual([...names].sort());
    expect(got.map((u) => u.position)).toEqual([...Array.from({ length: 1099 }, () => undefined), 1101]);
    await feed.return();
  });

  it('never sends a state older than one it sent: a commit after the head is read comes once', async () => {
    const { service } = await serviceWith([
      ['a', 1],
      ['b', 1],
    ]);
    const feed = await service.rocketUpdatesResumed(undefined, 0);
    // Committed after the head (2) was read but before the states are: they hold it already.
    await service.submit(envelope('a', 2));
    const next = take(feed, 3);
    await service.submit(envelope('b', 2));
    expect(seen(await next)).toEqual([
      ['a', 2, undefined],
      ['b', 1, 2],
      ['b', 2, 4],
    ]);
    await feed.return();
  });

  it('refuses a position past the head, and a channel no message could have, holding no subscriber', async () => {
    const { service, hub } = await serviceWith([['a', 1]]);
    await expect(service.rocketUpdatesResumed(undefined, 2)).rejects.toMatchObject({
      code: 'BAD_USER_INPUT',
      message: expect.stringContaining('Last-Event-ID: 2 is past the end of the log (position 1)') as string,
    });
    await expect(service.rocketUpdatesResumed('a\u0000', 0)).rejects.toMatchObject({ code: 'BAD_USER_INPUT' });
    expect(hub.subscribers).toBe(0);
  });

  it('stops reading the store when it is returned while it resends', async () => {
    const history: Array<[string, number]> = [];
    for (let i = 0; i < 300; i++) history.push([`r${String(i).padStart(3, '0')}`, 1]);
    const { service, hub } = await serviceWith(history);
    const feed = await service.rocketUpdatesResumed(undefined, 0);
    await take(feed, 150);
    const pending = feed.next();
    await feed.return();
    expect(await pending).toEqual({ value: undefined, done: true });
    expect(await feed.next()).toEqual({ value: undefined, done: true });
    expect(hub.subscribers).toBe(0);
  });
});

describe('a resumed rocketUpdated while the store fails', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rockets-resync-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** A service over a SQLite file holding a1, b1, a2 (positions 1 to 3), and a second connection to it. */
  async function failingStore(name: string, catchUpRetryMs: number) {
    const file = join(dir, `${name}.db`);
    const store = new SqliteStore(file);
    const hub = new Hub(store, 1000);
    const lanes = new LanePool(store, 1);
    const service = new RocketService(store, lanes, hub, undefined, undefined, { catchUpRetryMs });
    for (const [channel, n] of [
      ['a', 1],
      ['b', 1],
      ['a', 2],
    ] as const)
      await service.submit(envelope(channel, n));
    const side = new SqliteDatabase(file);
    const close = async (): Promise<void> => {
      side.close();
      await lanes.close();
      hub.close();
      await store.close();
    };
    return { store, service, side, close };
  }

  it('tries its reads again, as a catch-up does, and sends the states once the store answers', async () => {
    const { store, service, side, close } = await failingStore('recovers', 30_000);
    try {
      const feed = await service.rocketUpdatesResumed(undefined, 1);
      // A real failure of the store, as an operator could cause it: its event log gone from under it, and
      // back once the first read has failed on it.
      side.exec('ALTER TABLE events RENAME TO events_away');
      const failures: unknown[] = [];
      const read = store.readEvents.bind(store);
      jest.spyOn(store, 'readEvents').mockImplementation(async (q) => {
        try {
          return await read(q);
        } catch (e) {
          if (failures.push(e) === 1) side.exec('ALTER TABLE events_away RENAME TO events');
          throw e;
        }
      });
      const got = await take(feed, 2);
      expect(got.map((u) => [u.channel, u.rocket.lastMessageNumber, u.position])).toEqual([
        ['b', 1, undefined],
        ['a', 2, 3],
      ]);
      expect(failures).toEqual([expect.objectContaining({ message: 'no such table: events' })]);
      await feed.return();
    } finally {
      await close();
    }
  });

  it('ends with the store’s error once its reads failed for the limit', async () => {
    const { service, side, close } = await failingStore('stays-down', 300);
    try {
      const feed = await service.rocketUpdatesResumed(undefined, 1);
      side.exec('ALTER TABLE events RENAME TO events_away');
      const started = performance.now();
      await expect(feed.next()).rejects.toThrow('no such table: events');
      // A lower bound only, on a clock started before the resync's: no speed of the machine can fail it.
      expect(performance.now() - started).toBeGreaterThanOrEqual(300);
      await feed.return();
    } finally {
      await close();
    }
  });
});
