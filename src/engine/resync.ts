import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Rocket } from '../domain/rocket';
import { sortKey, type EventStore } from '../store/types';
import type { Feed, RocketUpdate } from './hub';
import { readRetrying } from './retry';

/** A resync yields to the event loop every this many rockets it read from the store. */
const TURN = 100;

/** How a resync finds the rockets that changed after a position, and how far it reads to find them. */
export interface ResyncBounds {
  /** The largest page of a store read. */
  readonly page: number;
  /**
   * At most this many events are read to find which rockets changed. A client further behind gets every
   * rocket instead (of its channel, or all): listing them costs less than reading the log.
   */
  readonly scan: number;
  /** How long a read the store failed is tried again before the resync ends with its error (see readRetrying). */
  readonly retryMs: number;
}

/** The reads a resync makes of the store. */
type Reads = Pick<EventStore, 'readEvents' | 'getRocket' | 'listRockets'>;

/**
 * `rocketUpdated` resumed after a log position: first the state of each rocket that changed after it (of
 * one channel, or every rocket), as the store holds it now, then the live updates. The live feed is opened
 * before the head of the log is read, so no change falls between the two; a live update of a commit at or
 * before that head is one the states sent already hold, and one that is not newer than the state sent of its
 * rocket is dropped, so a client never steps back to an older state.
 *
 * The states sent first carry no position but the last one, which carries the head: a client cut off while
 * they are sent resumes from where it was, and gets them all again. A read of them the store fails is
 * tried again for `bounds.retryMs`, as a catch-up's is (readRetrying), before the resync ends with its
 * error.
 */
export class Resync implements AsyncIterableIterator<RocketUpdate> {
  /**
   * The message number of each rocket's state sent from the store, until a newer live one passes, or any live
   * one past `settled`.
   */
  private readonly sent = new Map<string, number>();
  /** The head of the log once every state was read. */
  private settled = Infinity;
  private readonly states: AsyncGenerator<Rocket>;
  /** A state read but not sent: whether it is the last one decides its position. */
  private held: Rocket | undefined;
  private reading = true;
  private read = 0;
  private closed = false;

  constructor(
    private readonly live: Feed<RocketUpdate>,
    private readonly store: EventStore,
    channel: string | undefined,
    after: number,
    private readonly head: number,
    bounds: ResyncBounds,
  ) {
    // Each tried again while the store fails, as a catch-up's are; once closed, the states end.
    const retrying = <T>(read: () => Promise<T>, none: T): Promise<T> =>
      readRetrying(read, bounds.retryMs, () => this.closed).then((r) => r ?? none);
    const reads: Reads = {
      readEvents: (q) => retrying(() => store.readEvents(q), []),
      getRocket: (c) => retrying(() => store.getRocket(c), undefined),
      listRockets: (q) => retrying(() => store.listRockets(q), []),
    };
    this.states = changedSince(reads, channel, after, head, bounds);
  }

  async next(): Promise<IteratorResult<RocketUpdate>> {
    while (this.reading) {
      if (++this.read % TURN === 0) await nextTurn();
      const r = this.closed ? undefined : await this.states.next();
      if (this.closed || r === undefined) return { value: undefined, done: true };
      const held = this.held;
      if (r.done === true) {
        this.reading = false;
        this.held = undefined;
        // Every commit a state sent may hold is at or before the head now: live updates past it are newer.
        this.settled = await this.store.headPosition().catch(() => Infinity);
        if (this.isClosed()) return { value: undefined, done: true };
        if (held !== undefined) return this.emit(held, this.head);
        break;
      }
      this.held = r.value;
      if (held !== undefined) return this.emit(held, undefined);
    }
    for (;;) {
      const r = await this.live.next();
      if (r.done === true) return r;
      const update = r.value;
      const position = update.position ?? 0;
      if (position <= this.head) continue;
      if (this.sent.size > 0) {
        if (position > this.settled) this.sent.clear();
        else {
          const sent = this.sent.get(update.channel);
          if (sent !== undefined && update.rocket.lastMessageNumber <= sent) continue;
          this.sent.delete(update.channel);
        }
      }
      return r;
    }
  }

  return(): Promise<IteratorResult<RocketUpdate>> {
    this.closed = true;
    this.held = undefined;
    this.sent.clear();
    void this.states.return(undefined);
    void this.live.return();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** Whether `return()` has been called: read anew after an await, where `this.closed` reads narrowed. */
  private isClosed(): boolean {
    return this.closed;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private emit(rocket: Rocket, position: number | undefined): IteratorResult<RocketUpdate> {
    this.sent.set(rocket.channel, rocket.lastMessageNumber);
    return { value: { channel: rocket.channel, rocket, position }, done: false };
  }
}

/**
 * The rockets (of `channel`, or all) with an event after position `after`, up to `head`, as the store holds
 * them now: in the order of their first such event, or by channel when more than a tenth of a page of them
 * changed; every rocket of `channel` (or all, by channel) when more than `bounds.scan` events would be read
 * to find them.
 */
async function* changedSince(
  store: Reads,
  channel: string | undefined,
  after: number,
  head: number,
  bounds: ResyncBounds,
): AsyncGenerator<Rocket> {
  if (after >= head) return;
  if (channel !== undefined) {
    const [next] = await store.readEvents({ channel, afterPosition: after, limit: 1 });
    const rocket = next !== undefined && next.position <= head ? await store.getRocket(channel) : undefined;
    if (rocket !== undefined) yield rocket;
    return;
  }
  if (head - after > bounds.scan) {
    yield* everyRocket(store, bounds.page);
    return;
  }
  const changed = new Set<string>();
  for (let from = after; from < head;) {
    const page = await store.readEvents({ afterPosition: from, limit: Math.min(bounds.page, head - from) });
    for (const e of page) if (e.position <= head) changed.add(e.channel);
    const last = page.at(-1);
    if (last === undefined) break;
    from = last.position;
  }
  if (changed.size > bounds.page / 10) {
    // Read one by one, so many rockets cost more than every rocket read a page at a time (a query each, in
    // PostgreSQL): those are read, and the ones that changed sent.
    for await (const rocket of everyRocket(store, bounds.page)) if (changed.has(rocket.channel)) yield rocket;
    return;
  }
  for (const c of changed) {
    const rocket = await store.getRocket(c);
    if (rocket !== undefined) yield rocket;
  }
}

/** Every rocket, by channel, a page at a time. */
async function* everyRocket(store: Reads, page: number): AsyncGenerator<Rocket> {
  for (let after: { key: string; channel: string } | undefined; ;) {
    const rockets = await store.listRockets({ sort: 'channel', order: 'asc', after, limit: page });
    yield* rockets;
    const last = rockets.at(-1);
    if (last === undefined || rockets.length < page) return;
    after = { key: String(sortKey(last, 'channel')), channel: last.channel };
  }
}
