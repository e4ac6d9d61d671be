import { ConfigError, loadConfig } from '../../src/config';
import { Hub } from '../../src/engine/hub';
import { LanePool } from '../../src/engine/lanes';
import { gapSweepInterval, RocketService } from '../../src/engine/service';
import { MemoryStore } from '../../src/store/memory';
import type { SkippedGap } from '../../src/store/types';
import { createTestClock } from '../store/contract';
import { envelope } from '../support/telemetry';

/** A MemoryStore that counts its sweeps and can be told to fail them. */
class SweptStore extends MemoryStore {
  sweeps = 0;
  failing = false;

  override skipGaps(olderThanMs: number, reason: string): Promise<SkippedGap[]> {
    this.sweeps++;
    if (this.failing) return Promise.reject(new Error('disk full'));
    return super.skipGaps(olderThanMs, reason);
  }
}

function service(gapTimeoutMs: number | undefined) {
  const clock = createTestClock();
  const store = new SweptStore(clock.now);
  const lanes = new LanePool(store, 2);
  const hub = new Hub(store, 100);
  const svc = new RocketService(store, lanes, hub, undefined, { gapTimeoutMs });
  const close = async (): Promise<void> => {
    await lanes.close();
    hub.close();
    await store.close();
  };
  return { clock, store, svc, close };
}

/** A promise and the function that resolves it. */
function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve: (v: T) => void = () => undefined;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe('the periodic gap sweep', () => {
  afterEach(() => {
    jest.useRealTimers();
  });

  it('skips a gap once its oldest message waited longer than GAP_TIMEOUT, and reports what it skipped', async () => {
    const s = service(40);
    await s.svc.submit(envelope('a', 3, 'RocketSpeedIncreased', { by: 1 }));
    s.clock.advance(41);
    const reported = deferred<readonly SkippedGap[]>();
    const stop = s.svc.startGapSweep({ skipped: reported.resolve });
    expect(await reported.promise).toEqual([{ channel: 'a', from: 1, to: 2 }]);
    await stop();
    expect(await s.svc.gaps()).toEqual([]);
    expect((await s.svc.rocket('a')).lastMessageNumber).toBe(3);
    await s.close();
  });

  it('reports a failed sweep and carries on sweeping', async () => {
    const s = service(40);
    s.store.failing = true;
    const errors: unknown[] = [];
    const twice = deferred<undefined>();
    const stop = s.svc.startGapSweep({
      failed: (e) => {
        errors.push(e);
        if (errors.length === 2) twice.resolve(undefined);
      },
    });
    await twice.promise;
    await stop();
    expect(String(errors[0])).toMatch(/disk full/);
    await s.close();
  });

  it('runs no sweep without a GAP_TIMEOUT, and none after it is stopped', async () => {
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask'] });
    const off = service(undefined);
    const stopOff = off.svc.startGapSweep();
    await jest.advanceTimersByTimeAsync(24 * 3_600_000);
    expect(off.store.sweeps).toBe(0);
    await stopOff();

    const on = service(30_000);
    const stop = on.svc.startGapSweep();
    await jest.advanceTimersByTimeAsync(gapSweepInterval(30_000) * 3);
    expect(on.store.sweeps).toBe(3);
    await stop();
    await jest.advanceTimersByTimeAsync(gapSweepInterval(30_000) * 10);
    expect(on.store.sweeps).toBe(3);
    await Promise.all([off.close(), on.close()]);
  });

  it('sweeps at a quarter of the timeout, at least every minute and at most every 10 ms', () => {
    expect(gapSweepInterval(200)).toBe(50);
    expect(gapSweepInterval(30_000)).toBe(7_500);
    expect(gapSweepInterval(3_600_000)).toBe(60_000);
    expect(gapSweepInterval(1)).toBe(10);
  });
});

describe('the buffer settings in the configuration', () => {
  it.each([
    [undefined, undefined],
    ['', undefined],
    ['0', undefined],
    ['0s', undefined],
    ['0ms', undefined],
    ['never', undefined],
    ['NEVER', undefined],
    ['500ms', 500],
    ['30s', 30_000],
    [' 30S ', 30_000],
    ['5m', 300_000],
    ['2h', 7_200_000],
  ])('reads GAP_TIMEOUT=%p as %p ms', (raw, ms) => {
    expect(loadConfig({ GAP_TIMEOUT: raw }).gapTimeoutMs).toBe(ms);
  });

  it.each(['30', '-1s', '1.5s', '30 s', 'soon', '400d', '9000h'])('refuses GAP_TIMEOUT=%p, naming it', (raw) => {
    expect(() => loadConfig({ GAP_TIMEOUT: raw })).toThrow(ConfigError);
    expect(() => loadConfig({ GAP_TIMEOUT: raw })).toThrow(/GAP_TIMEOUT must be a duration such as 500ms, 30s/);
  });

  it('caps the buffer at 1,000 per channel and 100,000 in all unless told otherwise', () => {
    expect(loadConfig({}).bufferLimits).toEqual({ perChannel: 1_000, total: 100_000 });
    expect(loadConfig({ MAX_BUFFERED_PER_CHANNEL: '50', MAX_BUFFERED_TOTAL: '5000' }).bufferLimits).toEqual({
      perChannel: 50,
      total: 5_000,
    });
    expect(() => loadConfig({ MAX_BUFFERED_PER_CHANNEL: '0' })).toThrow(/MAX_BUFFERED_PER_CHANNEL/);
    expect(() => loadConfig({ MAX_BUFFERED_TOTAL: 'lots' })).toThrow(/MAX_BUFFERED_TOTAL/);
  });
});
