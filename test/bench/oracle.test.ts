/**
 * The bench's oracle (bench/oracle.ts), which writes the verdicts of "Correctness under load", against
 * the state of servers right and wrong: what each load generator reported, and what the server holds.
 */
import { judge, LogScan, type GapJson, type RocketJson, type Snapshot } from '../../bench/oracle';
import { Model, timeOf, type IngestReport } from '../../bench/telemetry';

const model = new Model();

/** A rocket of channel `channel` as the model has it after `last`, with `count` buffered behind it. */
function rocket(channel: string, last: number, count = 0, changes: Partial<RocketJson> = {}): RocketJson {
  const want = model.at(last);
  return { ...want, channel, buffer: { waitingFor: last + 1, count }, ...changes };
}

/** A server holding `rockets` (and `gaps` of channels with no rocket), its health and log consistent. */
function server(rockets: RocketJson[], gaps: GapJson[] = []): Snapshot {
  const log = new LogScan();
  let position = 0;
  for (const r of rockets)
    log.add(
      Array.from({ length: r.lastMessageNumber }, (_, i) => ({
        position: ++position,
        channel: r.channel,
        messageNumber: i + 1,
      })),
    );
  const buffered = [...rockets.map((r) => r.buffer), ...gaps].reduce((n, b) => n + b.count, 0);
  return {
    health: { lanes: { depths: [0] }, rockets: rockets.length, events: position, buffered, subscribers: 0 },
    rockets,
    gaps: [...rockets.filter((r) => r.buffer.count > 0).map((r) => ({ channel: r.channel, ...r.buffer })), ...gaps],
    log,
  };
}

/** One run on the single channel `m-0`: `sent` messages, the numbers in `acked` acknowledged. */
function run(sent: number, acked: number[], counts: Record<string, number> = {}): IngestReport {
  const max = Math.max(0, ...acked);
  const unacked = Array.from({ length: max }, (_, i) => i + 1).filter((n) => !acked.includes(n));
  return {
    prefix: 'm',
    channels: 1,
    sent,
    acked: max > 0 ? { 'm-0': max } : {},
    unacked: unacked.length > 0 ? { 'm-0': unacked } : {},
    counts: { applied: acked.length, ...counts },
  };
}

test('every acknowledged message applied: ok, all applied', () => {
  const v = judge(server([rocket('m-0', 5)]), [run(5, [1, 2, 3, 4, 5])]);
  expect(v.ok).toBe(true);
  expect(v.text).toMatch(/^ok: 5 acknowledged, all applied;/);
});

test('acknowledged 1..5, two applied and one buffered: two acknowledged not held', () => {
  // The highest acknowledged (#5) is buffered behind a gap, as an earlier check excused, but #3 and #4
  // were acknowledged too and the server holds neither.
  const v = judge(server([rocket('m-0', 2, 1)]), [run(5, [1, 2, 3, 4, 5])]);
  expect(v.ok).toBe(false);
  expect(v.text).toMatch(
    /m-0: #1\.\.#2 applied and 1 buffered, but #3 was acknowledged and 2 after it up to #5: 2 acknowledged not held/,
  );
  expect(v.text).not.toMatch(/all applied/);
});

test('acknowledged messages buffered behind a number never acknowledged: ok, and said to wait', () => {
  // #3 was refused (503: not acknowledged, the sender may retry), so #4 and #5 wait for it.
  const v = judge(server([rocket('m-0', 2, 2)]), [run(5, [1, 2, 4, 5], { http503: 1 })]);
  expect(v.ok).toBe(true);
  expect(v.text).not.toMatch(/all applied;/);
  expect(v.text).toMatch(/2 wait in the buffers of 1 rockets, behind numbers never acknowledged/);
  expect(v.text).toMatch(/Refused .*1 × http503/);
});

test('the rocket waits for an acknowledged number: lost, however many others it buffers', () => {
  // #3 acknowledged, #4 not; the buffer holds two messages (#4 and #5, say), waiting for #3.
  const v = judge(server([rocket('m-0', 2, 2)]), [run(5, [1, 2, 3, 5], { http503: 1 })]);
  expect(v.ok).toBe(false);
  expect(v.text).toMatch(/#3 was acknowledged and 1 after it up to #5: 1 acknowledged not held/);
});

test('a channel none of whose messages is applied has its buffer in GET /gaps', () => {
  // #1 refused, #2 buffered: no rocket yet, and the gap says what waits.
  const v = judge(server([], [{ channel: 'm-0', waitingFor: 1, count: 1 }]), [
    run(2, [2], { applied: 0, buffered: 1, http503: 1 }),
  ]);
  expect(v.ok).toBe(true);
  expect(v.text).toMatch(/1 wait in the buffers of 1 rockets/);
});

test('more acknowledgements than the server holds events and buffered messages: failed', () => {
  // Each number held, but the outcomes count 4 acknowledgements for 2 events (two acknowledged twice).
  const v = judge(server([rocket('m-0', 2)]), [run(2, [1, 2], { applied: 4 })]);
  expect(v.ok).toBe(false);
  expect(v.text).toMatch(/4 acknowledged, but the server holds 2 events and 0 buffered/);
});

test('the rocket’s times are those of its launch and of its last message, in UTC', () => {
  // Message 3 is at 20:39:08.86337+01:00 (bench/telemetry.ts `timeOf`): the rocket says 19:39:08.863Z.
  expect(timeOf(3)).toBe('2022-02-02T20:39:08.86337+01:00');
  expect(model.at(3)).toMatchObject({ launchedAt: '2022-02-02T19:39:06.863Z', updatedAt: '2022-02-02T19:39:08.863Z' });
  expect(judge(server([rocket('m-0', 3)]), [run(3, [1, 2, 3])]).ok).toBe(true);
  for (const wrong of [{ updatedAt: '2022-02-02T19:39:07.863Z' }, { launchedAt: '2022-02-02T19:39:08.863Z' }]) {
    const v = judge(server([rocket('m-0', 3, 0, wrong)]), [run(3, [1, 2, 3])]);
    expect(v.ok).toBe(false);
    expect(v.text).toMatch(/m-0: state .* differs from the model/);
  }
});

test('a 2xx of POST /messages whose body says nothing is an acknowledgement, not a refusal: failed', () => {
  const v = judge(server([rocket('m-0', 2)]), [run(3, [1, 2], { unparsed2xx: 1 })]);
  expect(v.ok).toBe(false);
  expect(v.text).toMatch(/1 messages acknowledged \(2xx\) with a body that does not say which/);
});
