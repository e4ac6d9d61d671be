import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Rocket } from '../../src/domain/rocket';
import { Hub } from '../../src/engine/hub';
import { LanePool } from '../../src/engine/lanes';
import { RocketService } from '../../src/engine/service';
import { MemoryStore } from '../../src/store/memory';
import { SqliteStore } from '../../src/store/sqlite/store';
import type { EventStore, RocketView } from '../../src/store/types';
import { fleet, rng } from '../support/model';

const withoutBuffer = ({ buffer: _buffer, ...state }: RocketView): Rocket => state;

/** A clock that moves 7 ms at every reading, so every commit has its own recordedAt. */
const ticking = (): (() => Date) => {
  let t = Date.UTC(2026, 10, 26, 12, 0, 0);
  return () => new Date((t += 7));
};

describe.each([
  ['memory', (now: () => Date): EventStore => new MemoryStore(now)],
  ['sqlite', (now: () => Date, dir: string): EventStore => new SqliteStore(join(dir, 'tt.db'), { now })],
])('time travel on the %s store', (_name, open) => {
  let dir: string;
  let store: EventStore;
  let service: RocketService;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rockets-tt-'));
    store = open(ticking(), dir);
    service = new RocketService(store, new LanePool(store, 3), new Hub(store, 100));
  });
  afterEach(async () => {
    service.hub.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('gives, after every event of a random history, the state the live service had then', async () => {
    const histories = fleet(6, 25, 77, 'tt');
    // Rockets interleave at random, each in its own order: every message is applied when it arrives.
    const r = rng(78);
    const cursors = histories.map(() => 0);
    const recorded: Array<{ channel: string; n: number; time: string; state: Rocket }> = [];
    for (let left = histories.flat().length; left > 0; left--) {
      let i = Math.floor(r() * histories.length);
      while ((cursors[i] as number) >= (histories[i] as unknown[]).length) i = (i + 1) % histories.length;
      const m = (histories[i] as Parameters<RocketService['submit']>[0][])[cursors[i] as number];
      cursors[i] = (cursors[i] as number) + 1;
      expect(await service.submit(m)).toMatchObject({ status: 'applied' });
      const live = await service.rocket((m as { metadata: { channel: string } }).metadata.channel);
      const [event] = await service.events({ channel: live.channel, afterMessageNumber: live.lastMessageNumber - 1 });
      recorded.push({
        channel: live.channel,
        n: live.lastMessageNumber,
        time: event?.recordedAt ?? '',
        state: withoutBuffer(live),
      });
    }
    for (const { channel, n, time, state } of recorded) {
      expect(await service.rocketAsOf(channel, { messageNumber: n })).toEqual(state);
      expect(await service.rocketAsOf(channel, { time })).toEqual(state);
    }
  });

  it('refuses a point before the first event with NOT_FOUND, and a malformed one with BAD_USER_INPUT', async () => {
    const [h] = fleet(1, 3, 5, 'tt');
    for (const m of h ?? []) await service.submit(m);
    const channel = h?.[0]?.metadata.channel ?? '';
    await expect(service.rocketAsOf(channel, { time: '2000-01-01T00:00:00Z' })).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
    await expect(service.rocketAsOf('nope', { messageNumber: 1 })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    for (const bad of [{}, { messageNumber: 1, time: '2026-01-01T00:00:00Z' }, { messageNumber: 0 }, { time: 'soon' }])
      await expect(service.rocketAsOf(channel, bad)).rejects.toMatchObject({ code: 'BAD_USER_INPUT' });
  });

  it('refuses a message not applied yet with NOT_FOUND: no state right after it exists', async () => {
    const [h] = fleet(1, 3, 6, 'ahead');
    for (const m of h ?? []) await service.submit(m);
    const channel = h?.[0]?.metadata.channel ?? '';
    expect((await service.rocketAsOf(channel, { messageNumber: 3 })).lastMessageNumber).toBe(3);
    await expect(service.rocketAsOf(channel, { messageNumber: 4 })).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: `message 4 of rocket "${channel}" (applied up to 3) not found`,
    });
  });
});
