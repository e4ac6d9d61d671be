/**
 * The bench's oracle: from what the load generators report and what the server holds once idle, whether
 * every acknowledged message was applied once and in order, and every rocket is as the model says.
 * bench/run.ts fetches (`GET /health`, `/rockets`, `/events`) and writes the verdict in the table
 * "Correctness under load"; this module only judges, so test/bench/oracle.test.ts gives it any server.
 */
import { channelName, Model, sentUpTo, type IngestReport } from './telemetry';

export interface Health {
  readonly lanes: { readonly depths: readonly number[] };
  readonly rockets: number;
  readonly events: number;
  readonly buffered: number;
  readonly subscribers: number;
}
export interface RocketJson {
  readonly channel: string;
  readonly type: string | null;
  readonly mission: string | null;
  readonly speed: number;
  readonly status: string;
  readonly explodedReason: string | null;
  readonly launchedAt: string | null;
  readonly updatedAt: string;
  readonly lastMessageNumber: number;
  readonly buffer: { readonly waitingFor: number; readonly count: number };
}
export interface EventJson {
  readonly position: number;
  readonly channel: string;
  readonly messageNumber: number;
}

/** What the oracle found: `ok` false when any problem was found; `text` for the table. */
export interface Verdict {
  readonly ok: boolean;
  readonly text: string;
}

const count = (n: number): string => n.toLocaleString('en-US');

/** The first few problems found, and how many more. */
class Problems {
  readonly first: string[] = [];
  more = 0;

  add(p: string): void {
    if (this.first.length < 5) this.first.push(p);
    else this.more++;
  }

  get none(): boolean {
    return this.first.length === 0;
  }
}

/**
 * The event log, read page by page from `GET /events`: positions rise, and each channel's numbers run
 * 1, 2, … with none twice and none missing.
 */
export class LogScan {
  readonly perChannel = new Map<string, number>();
  readonly problems = new Problems();
  total = 0;
  private after = 0;

  /** The position to read on from (`?after=`). */
  get position(): number {
    return this.after;
  }

  add(page: readonly EventJson[]): void {
    for (const e of page) {
      if (e.position <= this.after) this.problems.add(`position ${e.position} after ${this.after}`);
      this.after = e.position;
      const prev = this.perChannel.get(e.channel) ?? 0;
      if (e.messageNumber !== prev + 1) this.problems.add(`${e.channel}: #${e.messageNumber} logged after #${prev}`);
      this.perChannel.set(e.channel, e.messageNumber);
      this.total++;
    }
  }
}

const model = new Model();

/** An open gap of the reorder buffer (`GET /gaps`): one for each channel with messages buffered. */
export interface GapJson {
  readonly channel: string;
  readonly waitingFor: number;
  readonly count: number;
}

/** What the server holds once idle: `GET /health`, `/rockets`, `/gaps`, and perhaps its whole log. */
export interface Snapshot {
  readonly health: Health;
  readonly rockets: readonly RocketJson[];
  readonly gaps: readonly GapJson[];
  readonly log?: LogScan;
}

/**
 * Judges what the server holds once idle against `runs`, every load run that server took.
 *
 * A load generator reports, per channel, the highest number acknowledged and the numbers below it that
 * were not (refused, or unanswered when the run stopped). Each acknowledged message must be held: applied
 * (up to the rocket's `lastMessageNumber`) or buffered. So when the highest acknowledged is past `last`,
 * the number the rocket waits for, `last + 1`, must be one never acknowledged, and the buffer must hold
 * at least as many messages as were acknowledged after it (GET /rockets gives the buffer's count, not its
 * numbers).
 */
export function judge(server: Snapshot, runs: readonly IngestReport[]): Verdict {
  const { health, log } = server;
  const rockets = new Map(server.rockets.map((r) => [r.channel, r]));
  const gaps = new Map(server.gaps.map((g) => [g.channel, g]));
  const problems = new Problems();
  const problem = (p: string): void => problems.add(p);
  if (log) {
    for (const p of log.problems.first) problem(p);
    problems.more += log.problems.more;
    if (log.total !== health.events) problem(`GET /events lists ${log.total} events, /health says ${health.events}`);
  }
  let acks = 0;
  let events = 0;
  let buffered = 0;
  /** Channels whose last acknowledged message waits in the buffer, and how many acknowledged wait there. */
  let waitingChannels = 0;
  let waitingAcked = 0;
  const failures: string[] = [];
  for (const r of runs) {
    acks += (r.counts.applied ?? 0) + (r.counts.buffered ?? 0) + (r.counts.duplicate ?? 0);
    if ((r.counts.duplicate ?? 0) > 0) problem(`${r.counts.duplicate} unique messages acknowledged as duplicates`);
    if ((r.counts.unparsed2xx ?? 0) > 0)
      problem(`${r.counts.unparsed2xx} messages acknowledged (2xx) with a body that does not say which`);
    for (const [k, n] of Object.entries(r.counts))
      if (k.startsWith('http') || k.startsWith('error:')) failures.push(`${count(n)} × ${k}`);
    for (let i = 0; i < r.channels; i++) {
      const sent = sentUpTo(r.sent, r.channels, i);
      if (sent === 0) continue;
      const channel = channelName(r.prefix, i);
      const rocket = rockets.get(channel);
      // A channel none of whose messages is applied has no rocket: its buffer is only in GET /gaps.
      const buffer = rocket?.buffer ?? gaps.get(channel) ?? { waitingFor: 1, count: 0 };
      const last = rocket?.lastMessageNumber ?? 0;
      const acked = r.acked[channel] ?? 0;
      if (last > sent) problem(`${channel}: #${last} applied, only ${sent} sent`);
      if (acked > last) {
        const unacked = new Set(r.unacked[channel] ?? []);
        const next = last + 1;
        let after = 0;
        for (let n = next + 1; n <= acked; n++) if (!unacked.has(n)) after++;
        const lost = (unacked.has(next) ? 0 : 1) + Math.max(0, after - buffer.count);
        if (lost > 0)
          problem(
            `${channel}: #1..#${last} applied and ${buffer.count} buffered, but #${next} was ` +
              `${unacked.has(next) ? 'never acknowledged' : 'acknowledged'} and ${after} after it up to ` +
              `#${acked}: ${lost} acknowledged not held`,
          );
        waitingChannels++;
        waitingAcked += after;
      }
      if (rocket) {
        const want = model.at(last);
        if (
          rocket.type !== want.type ||
          rocket.mission !== want.mission ||
          rocket.speed !== want.speed ||
          rocket.status !== want.status ||
          rocket.explodedReason !== want.explodedReason ||
          rocket.launchedAt !== want.launchedAt ||
          rocket.updatedAt !== want.updatedAt
        )
          problem(`${channel}: state ${JSON.stringify(rocket)} differs from the model ${JSON.stringify(want)}`);
      }
      if (log && (log.perChannel.get(channel) ?? 0) !== last)
        problem(`${channel}: ${log.perChannel.get(channel) ?? 0} events logged, lastMessageNumber ${last}`);
      events += last;
      buffered += buffer.count;
    }
  }
  if (events !== health.events) problem(`the rockets account for ${events} events, /health says ${health.events}`);
  if (buffered !== health.buffered) problem(`the rockets buffer ${buffered}, /health says ${health.buffered}`);
  if (acks > health.events + health.buffered)
    problem(
      `${count(acks)} acknowledged, but the server holds ${count(health.events)} events and ${count(health.buffered)} buffered`,
    );
  const refused = failures.length > 0 ? ` Refused (not acknowledged, may be retried): ${failures.join(', ')}.` : '';
  if (!problems.none) {
    const more = problems.more > 0 ? ` (+${problems.more} more)` : '';
    return { ok: false, text: `**FAILED**: ${problems.first.join('; ')}${more}.${refused}` };
  }
  const applied =
    waitingChannels === 0
      ? 'all applied'
      : `all applied or buffered: ${count(waitingAcked)} wait in the buffers of ${count(waitingChannels)} ` +
        'rockets, behind numbers never acknowledged';
  const how = log ? 'the log holds each channel 1..n once, in order' : 'every rocket at its last number';
  return {
    ok: true,
    text: `ok: ${count(acks)} acknowledged, ${applied}; ${count(health.events)} events, ${how}; every rocket equals the model.${refused}`,
  };
}
