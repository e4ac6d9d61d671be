/**
 * The append feed: hands this instance's listeners the commits of every instance sharing the schema. Apart
 * from the store, which only tells it what happened (its own commits, notifications, a reconnect) and lends
 * it a read of one page of the log.
 */
import type { Rocket } from '../../domain/rocket';
import { notify, type AppendListener, type StoredEvent } from '../types';
import { toEvent, toRocket, type FeedRow, type RocketRow } from './rows';

/** Events read per round trip by the feed and by rebuildProjection. */
export const PAGE = 500;

/** One commit's events as this instance appended them, waiting to be handed to the listeners. */
interface OwnCommit {
  readonly first: number;
  readonly last: number;
  readonly events: readonly StoredEvent[];
  readonly rockets: readonly Rocket[];
}

interface Pending extends OwnCommit {
  /** Registration order: a read that started after it must have seen it. */
  readonly ticket: number;
  /** Lets the committer go on; idempotent. */
  readonly settle: () => void;
}

interface Group {
  readonly events: StoredEvent[];
  readonly rockets: Map<string, Rocket>;
  readonly txid: string;
}

/**
 * The append feed of one instance: hands the listeners every event committed by any instance, once, in
 * position order, one call per transaction (a group commit is one). The events table is the truth;
 * NOTIFY and this instance's own commits only say "there is more". One pump runs at a time and
 * coalesces wake-ups. An own commit that directly follows the last delivered position is delivered
 * without a read; anything else is read from the table (`position > last`, in pages), which is gap-free
 * because positions become visible in order (see PostgresStore).
 */
export class AppendFeed {
  readonly listeners = new Set<AppendListener>();
  private readonly own = new Map<number, Pending>();
  private tickets = 0;
  /** Highest position a notification announced. */
  private announced = 0;
  /** Read once even without an announcement (at open, after a reconnect, after a failed read). */
  private force = false;
  private dirty = false;
  private running = false;
  private closed = false;
  private retry: NodeJS.Timeout | undefined;
  private retryDelay: number;
  /** Own transactions between sending COMMIT and handing their events over (see `committing`). */
  private inCommit = 0;

  constructor(
    private last: number,
    private readonly read: (after: number, limit: number) => Promise<FeedRow[]>,
    private readonly delays: { readonly min: number; readonly max: number },
    /** Told of the events of every commit it did not get from this instance (another's, or one it read). */
    private readonly foreign: (events: readonly StoredEvent[]) => void,
  ) {
    this.retryDelay = delays.min;
  }

  /**
   * Records this instance's commit; resolves once the listeners have had it, or at once while the feed
   * cannot read (its events follow when it can again), or when the feed closes.
   */
  appended(c: OwnCommit): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.own.set(c.first, { ...c, ticket: ++this.tickets, settle: resolve });
      if (this.retry !== undefined) resolve();
      this.kick();
    });
  }

  /**
   * This instance is about to send a COMMIT; `committed` follows once its events were handed over with
   * `appended` (or it failed). Until then a notification alone does not make the feed read: it most
   * likely announces that very commit (the listener connection can be told before the committing one),
   * which `appended` then delivers without a read. Notifications of other instances wait that long.
   */
  committing(): void {
    this.inCommit++;
  }

  committed(): void {
    this.inCommit--;
    this.kick();
  }

  /** A notification: some instance committed up to `position`. */
  announce(position: number): void {
    if (!Number.isSafeInteger(position) || position <= this.announced) return;
    this.announced = position;
    if (position > this.last) this.kick();
  }

  /** Reads from the last delivered position whatever happened meanwhile. */
  catchUp(): void {
    this.force = true;
    this.kick();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    for (const c of this.own.values()) c.settle();
    this.own.clear();
  }

  private get isClosed(): boolean {
    return this.closed;
  }

  private kick(): void {
    this.dirty = true;
    if (!this.running && this.retry === undefined) void this.pump();
  }

  private async pump(): Promise<void> {
    this.running = true;
    try {
      while (this.dirty && !this.closed) {
        this.dirty = false;
        this.deliverOwn();
        if (!this.force && this.own.size === 0 && (this.announced <= this.last || this.inCommit > 0)) continue;
        this.force = false;
        const target = this.announced;
        const ticket = this.tickets;
        let rows: FeedRow[];
        let full: boolean;
        try {
          rows = await this.read(this.last, PAGE);
          full = rows.length === PAGE;
          // A full page that holds one commit only may end inside it: read on to that commit's end, so that
          // its listeners have it in one call (a commit is bounded: the batch and buffer caps).
          while (full && rows[0]?.txid === rows[rows.length - 1]?.txid) {
            const more = await this.read(Number(rows[rows.length - 1]?.position), PAGE);
            rows = rows.concat(more);
            full = more.length === PAGE;
          }
        } catch {
          this.failed();
          return;
        }
        // close() may have run during the read (a getter, so the check is not narrowed away).
        if (this.isClosed) return;
        this.retryDelay = this.delays.min;
        const groups = this.group(rows);
        // A full page may end inside a commit: leave its last group for the next read, unless it is all.
        if (full && groups.length > 1) groups.pop();
        for (const g of groups) this.deliverGroup(g);
        if (full) {
          this.dirty = true;
          continue;
        }
        // Everything committed before the read started was in it: a notification is sent only once its
        // commit is visible, and an own commit is registered only after COMMIT returned. What it did not
        // reach is gone (a hole, or a log emptied under us): forget it rather than spin on it.
        if (this.announced === target) this.announced = Math.min(target, this.last);
        for (const [first, c] of this.own)
          if (c.ticket <= ticket) {
            this.own.delete(first);
            c.settle();
          }
        if (this.own.size > 0) this.dirty = true;
      }
    } finally {
      this.running = false;
    }
  }

  private failed(): void {
    // Committers do not wait on a feed that cannot read; their events are delivered after the retry.
    this.force = true;
    for (const c of this.own.values()) c.settle();
    if (this.closed) return;
    const delay = this.retryDelay;
    this.retryDelay = Math.min(this.delays.max, this.retryDelay * 2);
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.kick();
    }, delay);
    this.retry.unref();
  }

  private deliverOwn(): void {
    for (const [first, c] of this.own)
      if (c.last <= this.last) {
        this.own.delete(first);
        c.settle();
      }
    for (let c = this.own.get(this.last + 1); c !== undefined; c = this.own.get(this.last + 1)) {
      this.own.delete(c.first);
      this.deliver(c.events, c.rockets, c.last);
      c.settle();
    }
  }

  private group(rows: readonly FeedRow[]): Group[] {
    const groups: Group[] = [];
    let g: Group | undefined;
    for (const row of rows) {
      if (g?.txid !== row.txid) groups.push((g = { events: [], rockets: new Map(), txid: row.txid }));
      g.events.push(toEvent(row));
      if (row.r_channel !== null && !g.rockets.has(row.r_channel))
        g.rockets.set(row.r_channel, toRocket({ ...row, channel: row.r_channel } as RocketRow));
    }
    return groups;
  }

  private deliverGroup(g: Group): void {
    const first = g.events[0];
    const lastEvent = g.events[g.events.length - 1];
    if (first === undefined || lastEvent === undefined || lastEvent.position <= this.last) return;
    const mine = this.own.get(first.position);
    if (mine !== undefined && mine.last === lastEvent.position) {
      // Our own commit knows the exact state each rocket reached in it.
      this.own.delete(mine.first);
      this.deliver(mine.events, mine.rockets, mine.last);
      mine.settle();
    } else {
      // Another instance's commit: rocket rows as of the read, at least as new as these events. A row a
      // later commit already changed is not the state this one left, so it waits for that commit's group.
      const events = first.position > this.last ? g.events : g.events.filter((e) => e.position > this.last);
      this.foreign(events);
      this.deliver(events, leftBy(events, g.rockets), lastEvent.position);
    }
    this.deliverOwn();
  }

  private deliver(events: readonly StoredEvent[], rockets: readonly Rocket[], last: number): void {
    this.last = last;
    if (events.length > 0) notify(this.listeners, events, rockets);
  }
}

/** The rockets whose row is the state these events left them in: at the number of their last event here. */
function leftBy(events: readonly StoredEvent[], rows: ReadonlyMap<string, Rocket>): Rocket[] {
  const last = new Map<string, number>();
  for (const e of events) last.set(e.channel, Math.max(last.get(e.channel) ?? 0, e.messageNumber));
  return [...rows.values()].filter((r) => r.lastMessageNumber === last.get(r.channel));
}
