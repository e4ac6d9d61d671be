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

/**
 * Judges the server's state once idle (`health`, every rocket, and with `log` its whole event log)
 * against `runs`, every load run that server took.
 */
export function judge(
  health: Health,
  rocketList: readonly RocketJson[],
  runs: readonly IngestReport[],
  log?: LogScan,
): Verdict {
  const rockets = new Map(rocketList.map((r) => [r.channel, r]));
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
  const failures: string[] = [];
  for (const r of runs) {
    acks += (r.counts.applied ?? 0) + (r.counts.buffered ?? 0) + (r.counts.duplicate ?? 0);
    if ((r.counts.duplicate ?? 0) > 0) problem(`${r.counts.duplicate} unique messages acknowledged as duplicates`);
    for (const [k, n] of Object.entries(r.counts))
      if (k.startsWith('http') || k.startsWith('error:')) failures.push(`${count(n)} × ${k}`);
    for (let i = 0; i < r.channels; i++) {
      const sent = sentUpTo(r.sent, r.channels, i);
      if (sent === 0) continue;
      const channel = channelName(r.prefix, i);
      const rocket = rockets.get(channel);
      const last = rocket?.lastMessageNumber ?? 0;
      const acked = r.acked[channel] ?? 0;
      if (last > sent) problem(`${channel}: #${last} applied, only ${sent} sent`);
      const held = rocket !== undefined && rocket.buffer.count > 0 && rocket.buffer.waitingFor < acked;
      if (acked > last && !held) problem(`${channel}: #${acked} acknowledged, lost (last applied #${last})`);
      if (rocket) {
        const want = model.at(last);
        if (
          rocket.type !== want.type ||
          rocket.mission !== want.mission ||
          rocket.speed !== want.speed ||
          rocket.status !== want.status ||
          rocket.explodedReason !== want.explodedReason
        )
          problem(`${channel}: state ${JSON.stringify(rocket)} differs from the model ${JSON.stringify(want)}`);
      }
      if (log && (log.perChannel.get(channel) ?? 0) !== last)
        problem(`${channel}: ${log.perChannel.get(channel) ?? 0} events logged, lastMessageNumber ${last}`);
      events += last;
      buffered += rocket?.buffer.count ?? 0;
    }
  }
  if (events !== health.events) problem(`the rockets account for ${events} events, /health says ${health.events}`);
  if (buffered !== health.buffered) problem(`the rockets buffer ${buffered}, /health says ${health.buffered}`);
  const refused = failures.length > 0 ? ` Refused (not acknowledged, may be retried): ${failures.join(', ')}.` : '';
  if (!problems.none) {
    const more = problems.more > 0 ? ` (+${problems.more} more)` : '';
    return { ok: false, text: `**FAILED**: ${problems.first.join('; ')}${more}.${refused}` };
  }
  const how = log ? 'the log holds each channel 1..n once, in order' : 'every rocket at its last number';
  return {
    ok: true,
    text: `ok: ${count(acks)} acknowledged, all applied; ${count(health.events)} events, ${how}; every rocket equals the model.${refused}`,
  };
}
