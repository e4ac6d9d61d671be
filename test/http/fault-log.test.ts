import { Writable } from 'node:stream';
import { pino } from 'pino';
import { FAULT_LOG_EVERY_MS, logStoreFault } from '../../src/http/io';
import { STORAGE_FULL, STORE_DAMAGED } from '../../src/store/faults';

/** A pino logger whose lines land in `lines`, parsed. */
function capturing() {
  const lines: Array<{ msg: string; unlogged: number; requestId: string }> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]);
      done();
    },
  });
  return { log: pino({}, sink), lines };
}

describe('logStoreFault', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('logs each kind of fault once a while, saying how many it did not log since the last line', () => {
    const { log, lines } = capturing();
    const full = Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
    logStoreFault(log, STORAGE_FULL, full, 'r1');
    logStoreFault(log, STORAGE_FULL, full, 'r2');
    logStoreFault(log, STORE_DAMAGED, full, 'r3');
    jest.advanceTimersByTime(FAULT_LOG_EVERY_MS - 1);
    logStoreFault(log, STORAGE_FULL, full, 'r4');
    jest.advanceTimersByTime(1);
    logStoreFault(log, STORAGE_FULL, full, 'r5');
    // Another logger (another app) keeps its own.
    const other = capturing();
    logStoreFault(other.log, STORAGE_FULL, full, 'r6');
    jest.runOnlyPendingTimers();
    expect(lines.map((l) => [l.msg, l.requestId, l.unlogged])).toEqual([
      ['store fault', 'r1', 0],
      ['store fault', 'r3', 0],
      ['store fault', 'r5', 2],
    ]);
    expect(other.lines.map((l) => l.requestId)).toEqual(['r6']);
  });
});
