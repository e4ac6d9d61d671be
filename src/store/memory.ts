import type { RocketMessage } from '../domain/message';
import type { Rocket } from '../domain/rocket';
import { evolve } from '../domain/rocket';
import { gapsToSkip, joinSkips, planBatch, skipMessages, splitSkips, type BatchPlan, type PlanSource } from './plan';
import {
  DEFAULT_BUFFER_LIMITS,
  notify,
  sortKey,
  type AppendListener,
  type BufferLimits,
  type CommitResult,
  type EventQuery,
  type EventStore,
  type Gap,
  type RocketListQuery,
  type RocketView,
  type SkippedGap,
  type SortKey,
  type StoredEvent,
  type StoreStats,
  toMessage,
  toStoredEvent,
} from './types';

interface Buffered {
  readonly message: RocketMessage;
  readonly receivedAt: string;
}

const compareKeys = (a: SortKey, b: SortKey): number => (a < b ? -1 : a > b ? 1 : 0);

/** Code-point order, as SQL's binary collation: JS `<` on strings compares UTF-16 units, which differs. */
export function compareText(a: string, b: string): number {
  if (a === b) return 0;
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const ca = ia.next();
    const cb = ib.next();
    if (ca.done === true) return cb.done === true ? 0 : -1;
    if (cb.done === true) return 1;
    const d = (ca.value.codePointAt(0) ?? 0) - (cb.value.codePointAt(0) ?? 0);
    if (d !== 0) return d;
  }
}

const compareSortKeys = (a: SortKey, b: SortKey): number =>
  typeof a === 'string' && typeof b === 'string' ? compareText(a, b) : compareKeys(a, b);

/** Everything in RAM: for tests and demos. Lost when the process ends. */
export class MemoryStore implements EventStore {
  readonly kind = 'memory';
  readonly location = 'memory';
  private readonly events: StoredEvent[] = [];
  private readonly byChannel = new Map<string, StoredEvent[]>();
  private readonly rockets = new Map<string, Rocket>();
  private readonly pending = new Map<string, Map<number, Buffered>>();
  private readonly listeners = new Set<AppendListener>();
  /** Messages buffered across channels: the sum of the `pending` maps' sizes. */
  private buffered = 0;
  private readonly source: PlanSource = {
    channel: (channel) => ({
      rocket: this.rockets.get(channel),
      pending: new Map([...(this.pending.get(channel) ?? new Map<number, Buffered>())].map(([n, b]) => [n, b.message])),
    }),
    appliedMessage: (channel, n) => {
      const e = this.byChannel.get(channel)?.[n - 1];
      return e && toMessage(e);
    },
  };

  constructor(
    private readonly now: () => Date = () => new Date(),
    private readonly limits: BufferLimits = DEFAULT_BUFFER_LIMITS,
  ) {}

  commit(messages: readonly RocketMessage[]): Promise<CommitResult> {
    return Promise.resolve(
      this.record(planBatch(messages, this.source, { limits: this.limits, buffered: this.buffered })),
    );
  }

  listGaps(limit: number): Promise<Gap[]> {
    const gaps: Gap[] = [];
    for (const [channel, map] of this.pending) {
      let oldestSince = '';
      for (const b of map.values()) if (oldestSince === '' || b.receivedAt < oldestSince) oldestSince = b.receivedAt;
      const waitingFor = (this.rockets.get(channel)?.lastMessageNumber ?? 0) + 1;
      gaps.push({ channel, waitingFor, count: map.size, oldestSince });
    }
    gaps.sort((a, b) => compareText(a.oldestSince, b.oldestSince) || compareText(a.channel, b.channel));
    return Promise.resolve(gaps.slice(0, Math.max(0, limit)));
  }

  skipGaps(olderThanMs: number, reason: string): Promise<SkippedGap[]> {
    const now = this.now();
    const cutoff = now.getTime() - olderThanMs;
    const skipped: SkippedGap[] = [];
    for (const [channel, map] of [...this.pending]) {
      const waitingFor = (this.rockets.get(channel)?.lastMessageNumber ?? 0) + 1;
      const buffered = [...map.values()].map((b) => ({
        messageNumber: b.message.messageNumber,
        receivedAt: Date.parse(b.receivedAt),
      }));
      // In commits of a bounded size, as the other stores record them.
      let gaps = gapsToSkip(channel, waitingFor, buffered, cutoff);
      while (gaps.length > 0) {
        const [taken, left] = splitSkips(gaps);
        const skips = skipMessages(taken, now.toISOString(), reason);
        this.record(planBatch(skips, this.source, { limits: this.limits, buffered: this.buffered }));
        skipped.push(...taken);
        gaps = left;
      }
    }
    return Promise.resolve(joinSkips(skipped));
  }

  /** Writes a plan as one commit, and tells the listeners. */
  private record(plan: BatchPlan): CommitResult {
    const at = this.now().toISOString();
    const appended = plan.applied.map((m, i) => toStoredEvent(m, this.events.length + i + 1, at));
    for (const e of appended) {
      this.events.push(e);
      let list = this.byChannel.get(e.channel);
      if (!list) this.byChannel.set(e.channel, (list = []));
      list.push(e);
    }
    for (const rocket of plan.rockets) this.rockets.set(rocket.channel, rocket);
    for (const m of plan.released) this.pending.get(m.channel)?.delete(m.messageNumber);
    for (const m of plan.buffered) {
      let map = this.pending.get(m.channel);
      if (!map) this.pending.set(m.channel, (map = new Map<number, Buffered>()));
      map.set(m.messageNumber, { message: m, receivedAt: at });
    }
    this.buffered += plan.buffered.length - plan.released.length;
    for (const m of plan.released) if (this.pending.get(m.channel)?.size === 0) this.pending.delete(m.channel);
    const result = { outcomes: plan.outcomes, events: appended, rockets: plan.rockets };
    if (appended.length > 0) notify(this.listeners, result.events, result.rockets);
    return result;
  }

  onAppend(listener: AppendListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  getRocket(channel: string): Promise<RocketView | undefined> {
    const r = this.rockets.get(channel);
    return Promise.resolve(r && this.view(r));
  }

  listRockets(q: RocketListQuery): Promise<RocketView[]> {
    const dir = q.order === 'desc' ? -1 : 1;
    const cmp = (a: SortKey, ac: string, b: SortKey, bc: string): number =>
      dir * (compareSortKeys(a, b) || compareText(ac, bc));
    let list = [...this.rockets.values()];
    if (q.status) list = list.filter((r) => r.status === q.status);
    const after = q.after;
    if (after) list = list.filter((r) => cmp(sortKey(r, q.sort), r.channel, after.key, after.channel) > 0);
    list.sort((a, b) => cmp(sortKey(a, q.sort), a.channel, sortKey(b, q.sort), b.channel));
    if (q.limit !== undefined) list = list.slice(0, q.limit);
    return Promise.resolve(list.map((r) => this.view(r)));
  }

  readEvents(q: EventQuery): Promise<StoredEvent[]> {
    const source = q.channel === undefined ? this.events : (this.byChannel.get(q.channel) ?? []);
    const out: StoredEvent[] = [];
    for (const e of source) {
      if (out.length >= q.limit) break;
      if (q.afterPosition !== undefined && e.position <= q.afterPosition) continue;
      if (q.afterMessageNumber !== undefined && e.messageNumber <= q.afterMessageNumber) continue;
      out.push(e);
    }
    return Promise.resolve(out);
  }

  headPosition(): Promise<number> {
    return Promise.resolve(this.events.length);
  }

  stats(): Promise<StoreStats> {
    return Promise.resolve({ rockets: this.rockets.size, events: this.events.length, buffered: this.buffered });
  }

  rebuildProjection(): Promise<number> {
    this.rockets.clear();
    for (const e of this.events) this.rockets.set(e.channel, evolve(this.rockets.get(e.channel), toMessage(e)));
    return Promise.resolve(this.events.length);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  private view(r: Rocket): RocketView {
    const map = this.pending.get(r.channel);
    let oldestSince: string | null = null;
    for (const b of map?.values() ?? [])
      if (oldestSince === null || b.receivedAt < oldestSince) oldestSince = b.receivedAt;
    return { ...r, buffer: { waitingFor: r.lastMessageNumber + 1, count: map?.size ?? 0, oldestSince } };
  }
}
