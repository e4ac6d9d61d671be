import { setMaxListeners } from 'node:events';
import { DomainError } from '../domain/errors';
import type { Rocket } from '../domain/rocket';
import type { EventStore, StoredEvent } from '../store/types';
import { noTelemetry, type Telemetry } from './telemetry';

/** A subscriber did not keep up: its bounded buffer filled, so its feed ended instead of growing. */
export class FellBehindError extends DomainError {
  constructor(readonly capacity: number) {
    super('FELL_BEHIND', `the subscriber fell more than ${capacity} items behind and was dropped; resubscribe`);
  }
}
export const isFellBehindError = (e: unknown): e is FellBehindError => e instanceof FellBehindError;

/**
 * One subscriber's feed: an async iterator over a bounded buffer. `keyOf` makes it conflating: a new
 * item with the same key replaces the one still waiting (used for rocket states, where only the
 * latest matters). When `capacity` items of earlier commits wait as another arrives, the feed ends
 * with FellBehindError. Only earlier commits count: a subscriber that has read everything takes a
 * whole commit however many events or rockets it holds (a batch over many rockets), so one waits at
 * most `capacity` items plus one commit's.
 */
export class Feed<T> implements AsyncIterableIterator<T> {
  private readonly items = new Map<unknown, T>();
  private seq = 0;
  /** The commit whose items `push` was last handed, and how many of them wait. */
  private commit = 0;
  private fresh = 0;
  private waiter: ((r: IteratorResult<T>) => void) | undefined;
  private failWaiter: ((e: unknown) => void) | undefined;
  private failure: Error | undefined;
  private done = false;

  constructor(
    private readonly capacity: number,
    private readonly onClose: () => void,
    private readonly keyOf?: (item: T) => unknown,
  ) {}

  /** Called by the hub with each item of commit number `commit`; never blocks the publisher. */
  push(item: T, commit: number): void {
    if (this.done) return;
    if (commit !== this.commit) {
      this.commit = commit;
      this.fresh = 0;
    }
    if (this.waiter) {
      const w = this.waiter;
      this.clearWaiters();
      w({ value: item, done: false });
      return;
    }
    const key = this.keyOf ? this.keyOf(item) : this.seq++;
    // A commit holds one state per rocket: one it replaces came with an earlier commit.
    if (this.keyOf) this.items.delete(key);
    if (this.items.size - this.fresh >= this.capacity) {
      this.failure = new FellBehindError(this.capacity);
      this.items.clear();
      this.finish();
      return;
    }
    this.items.set(key, item);
    this.fresh++;
  }

  /** Items waiting to be read. */
  get pending(): number {
    return this.items.size;
  }

  next(): Promise<IteratorResult<T>> {
    const first = this.items.entries().next();
    if (!first.done) {
      this.items.delete(first.value[0]);
      return Promise.resolve({ value: first.value[1], done: false });
    }
    if (this.failure !== undefined) {
      const f = this.failure;
      this.failure = undefined;
      return Promise.reject(f);
    }
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.failWaiter = reject;
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.items.clear();
    this.failure = undefined;
    this.finish();
    return Promise.resolve({ value: undefined, done: true });
  }

  throw(e?: unknown): Promise<IteratorResult<T>> {
    void this.return();
    return Promise.reject(e instanceof Error ? e : new Error(String(e)));
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Ends the feed: a pending next() settles, and the hub forgets the subscriber. */
  finish(): void {
    if (this.done) return;
    this.done = true;
    this.onClose();
    const resolve = this.waiter;
    const reject = this.failWaiter;
    this.clearWaiters();
    if (this.failure !== undefined && reject) {
      const f = this.failure;
      this.failure = undefined;
      reject(f);
    } else {
      resolve?.({ value: undefined, done: true });
    }
  }

  private clearWaiters(): void {
    this.waiter = undefined;
    this.failWaiter = undefined;
  }
}

class Topic<T extends { readonly channel: string }> {
  private readonly all = new Set<Feed<T>>();
  private readonly byChannel = new Map<string, Set<Feed<T>>>();

  constructor(private readonly keyOf?: (item: T) => unknown) {}

  subscribe(channel: string | undefined, capacity: number): Feed<T> {
    const feed: Feed<T> = new Feed<T>(capacity, () => this.remove(channel, feed), this.keyOf);
    if (channel === undefined) {
      this.all.add(feed);
    } else {
      let set = this.byChannel.get(channel);
      if (!set) this.byChannel.set(channel, (set = new Set()));
      set.add(feed);
    }
    return feed;
  }

  /** Hands over the item of commit number `commit`; answers how many subscribers it was handed to. */
  publish(item: T, commit: number): number {
    for (const f of this.all) f.push(item, commit);
    const set = this.byChannel.get(item.channel);
    if (set) for (const f of set) f.push(item, commit);
    return this.all.size + (set?.size ?? 0);
  }

  /** Whether no one subscribes: the hub then makes no item for this topic. */
  get empty(): boolean {
    return this.all.size === 0 && this.byChannel.size === 0;
  }

  get size(): number {
    let n = this.all.size;
    for (const s of this.byChannel.values()) n += s.size;
    return n;
  }

  closeAll(): void {
    for (const f of [...this.all]) f.finish();
    for (const s of [...this.byChannel.values()]) for (const f of [...s]) f.finish();
  }

  private remove(channel: string | undefined, feed: Feed<T>): void {
    if (channel === undefined) {
      this.all.delete(feed);
      return;
    }
    const set = this.byChannel.get(channel);
    set?.delete(feed);
    if (set?.size === 0) this.byChannel.delete(channel);
  }
}

/**
 * A rocket's new state, as subscribers receive it, with the position of its last event in the commit that
 * left it so: a subscriber that resumes after that position gets every later change. Undefined for the
 * states a resumed subscription sends first, but for the last of them (see `Resync`).
 */
export interface RocketUpdate {
  readonly channel: string;
  readonly rocket: Rocket;
  readonly position: number | undefined;
}

/**
 * The updates of a commit's rockets, each with the position of its own last event in the commit, in the
 * order of those positions: a client that resumes after any of them gets the rockets that follow it in the
 * commit, as they hold later events.
 */
function updatesOf(events: readonly StoredEvent[], rockets: readonly Rocket[]): RocketUpdate[] {
  const last = new Map<string, number>();
  for (const e of events) last.set(e.channel, e.position);
  const updates = rockets.map((rocket) => ({ channel: rocket.channel, rocket, position: last.get(rocket.channel) }));
  return updates.length === 1 ? updates : updates.sort((a, b) => (a.position ?? 0) - (b.position ?? 0));
}

/**
 * Fans out what the store appends to live subscribers, each with its own bounded buffer, so one slow
 * subscriber never stalls the others or the writers. The store's append feed is the only source: in
 * PostgreSQL mode that includes other instances' commits.
 */
export class Hub {
  private readonly eventTopic = new Topic<StoredEvent>();
  private readonly rocketTopic = new Topic<RocketUpdate>((u) => u.channel);
  private readonly unlisten: () => void;
  /** Commits handed over so far: a feed counts what waits against its capacity once per commit. */
  private commits = 0;
  /** Aborted when the hub closes, so long-lived waits end too. */
  readonly closing = new AbortController();

  constructor(
    store: EventStore,
    /** Items one subscriber may have waiting before it is dropped. */
    readonly capacity: number,
    telemetry: Telemetry = noTelemetry,
  ) {
    setMaxListeners(0, this.closing.signal);
    this.unlisten = store.onAppend((events, rockets) => {
      const commit = ++this.commits;
      let handed = 0;
      for (const e of events) handed += this.eventTopic.publish(e, commit);
      if (rockets.length > 0 && !this.rocketTopic.empty)
        for (const u of updatesOf(events, rockets)) handed += this.rocketTopic.publish(u, commit);
      if (handed > 0) telemetry.delivered(handed);
    });
  }

  /** Live events, in position order, of one channel or of all. */
  events(channel?: string): Feed<StoredEvent> {
    return this.eventTopic.subscribe(channel, this.capacity);
  }

  /** Live rocket states; a slow reader gets only the latest state of each rocket. */
  rockets(channel?: string): Feed<RocketUpdate> {
    return this.rocketTopic.subscribe(channel, this.capacity);
  }

  /** Open subscriptions, for health and for tests that check listeners are released. */
  get subscribers(): number {
    return this.eventTopic.size + this.rocketTopic.size;
  }

  close(): void {
    this.unlisten();
    this.closing.abort();
    this.eventTopic.closeAll();
    this.rocketTopic.closeAll();
  }
}
