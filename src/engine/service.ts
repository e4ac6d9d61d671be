import {
  BufferFullError,
  ConflictError,
  NotFoundError,
  ValidationError,
  isDomainError,
  type DomainError,
  type Issue,
} from '../domain/errors';
import {
  NOT_UNICODE,
  isStorableText,
  namedMessageType,
  parseRfc3339,
  validateEnvelope,
  type SentMessage,
} from '../domain/message';
import { evolve, ROCKET_STATUSES, type Rocket, type RocketStatus } from '../domain/rocket';
import {
  ROCKET_SORT_FIELDS,
  sortKey,
  type EventStore,
  type Gap,
  type RocketSortField,
  type RocketView,
  type SkippedGap,
  type SortKey,
  type StoredEvent,
  type SubmitOutcome,
  toMessage,
} from '../store/types';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { isFellBehindError, type Feed, type Hub, type RocketUpdate } from './hub';
import { Resync } from './resync';
import { readRetrying } from './retry';
import type { LanePool } from './lanes';
import { noTelemetry, type Telemetry } from './telemetry';

/** Largest page of rockets or events one call returns. */
export const MAX_PAGE = 10_000;
const CATCH_UP_PAGE = 500;
/** A catch-up yields to the event loop every this many events it read from the store (see CatchUp.next). */
const CATCH_UP_TURN = 100;
/**
 * A catch-up read the store failed (a dropped connection, a database restarting), and a read of a resumed
 * `rocketUpdated`'s states, is tried again, after 100 ms and then twice as long each time up to 2 s, for
 * this long by default (`ServiceOptions.catchUpRetryMs`), the last wait cut short so that the last try
 * comes as it runs out (see readRetrying); then the subscription ends with the error, and its client
 * resumes with `after` (or `Last-Event-ID`) once the store is back.
 */
const CATCH_UP_RETRY_MS = 30_000;
/**
 * A resumed `rocketUpdates` reads at most this many events to find the rockets that changed; a client further
 * behind gets every rocket instead (`ResyncBounds.scan`).
 */
const RESYNC_SCAN = 100_000;

/** Arguments as transports receive them; the service checks every one. */
export interface RocketListArgs {
  readonly sort?: string | undefined;
  readonly order?: string | undefined;
  readonly status?: string | undefined;
  /** At most this many; every rocket when undefined. */
  readonly limit?: number | undefined;
  /** A cursor from an earlier page, for the same sort. */
  readonly after?: string | undefined;
}

export interface RocketPage {
  readonly rockets: readonly RocketView[];
  /** Cursor to pass as `after` for the next page; null on the last page. */
  readonly nextCursor: string | null;
  /** The cursor of one rocket of this page, made on demand: REST needs only `nextCursor`. */
  cursorOf(rocket: RocketView): string;
}

/** A point in a rocket's history: after a message number, or at a server time (RFC 3339). */
export interface AsOf {
  readonly messageNumber?: number | undefined;
  readonly time?: string | undefined;
}

const found = (state: Rocket | undefined, channel: string): Rocket => {
  if (!state) throw new NotFoundError(`rocket "${channel}" at that point`);
  return state;
};

export interface EventListArgs {
  readonly channel?: string | undefined;
  readonly afterPosition?: number | undefined;
  readonly afterMessageNumber?: number | undefined;
  readonly limit?: number | undefined;
}

export interface Health {
  readonly status: 'ok';
  readonly store: string;
  readonly lanes: { readonly count: number; readonly depths: number[] };
  readonly rockets: number;
  readonly events: number;
  readonly buffered: number;
  readonly subscribers: number;
}

export type SubmitResult = Extract<SubmitOutcome, { readonly status: 'applied' | 'buffered' | 'duplicate' }>;

/** The gap policy. */
export interface GapPolicy {
  /** GAP_TIMEOUT: skip a gap whose oldest buffered message waited longer than this; undefined waits forever. */
  readonly gapTimeoutMs?: number | undefined;
}

/** What the periodic gap sweep tells its owner. Hooks that throw are ignored. */
export interface GapSweepReport {
  /** A sweep skipped these ranges. */
  readonly skipped?: (gaps: readonly SkippedGap[]) => void;
  /** A sweep failed (the store did); the next one runs as planned. */
  readonly failed?: (error: unknown) => void;
}

export interface ServiceOptions {
  /**
   * Keep answers to reads (listing pages here, serialised answers in the transports) until the store may have
   * changed: until a commit by this process's lanes (which see every commit of this process, buffer-only ones
   * included, before its senders are answered) or an append on the store's feed (the gap sweep, other
   * instances). On by default, except with PostgreSQL: there another instance's commit that only buffers
   * appends no event and would leave this instance's answers stale, and NOTIFY arrives after the commit.
   */
  readonly cacheReads?: boolean;
  /** How long a catch-up read the store failed is tried again (see CATCH_UP_RETRY_MS, the default). */
  readonly catchUpRetryMs?: number | undefined;
  /** How many events a resumed `rocketUpdates` reads to find what changed (see RESYNC_SCAN, the default). */
  readonly resyncScan?: number | undefined;
}

/** Retry-After of a refusal at the per-channel cap: the missing message usually follows within moments. */
const CHANNEL_FULL_RETRY_SECONDS = 1;
/** Retry-After of a refusal at the total cap: the server as a whole is behind. */
const BUFFER_FULL_RETRY_SECONDS = 5;

/** What a sender is told of an outcome: an acknowledgement, or the domain error that refuses it. */
function answer(outcome: SubmitOutcome): SubmitResult | DomainError {
  if (outcome.status === 'conflict')
    return new ConflictError(outcome.channel, outcome.messageNumber, outcome.skipped === true);
  if (outcome.status === 'refused')
    return new BufferFullError(
      outcome.cap,
      outcome.limit,
      outcome.channel,
      outcome.messageNumber,
      outcome.waitingFor,
      outcome.cap === 'perChannel' ? CHANNEL_FULL_RETRY_SECONDS : BUFFER_FULL_RETRY_SECONDS,
    );
  return outcome;
}

/** `30s`, `500ms`: how GAP_TIMEOUT is written, for the reason a skip records. */
function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const)
    if (ms % size === 0) return `${ms / size}${unit}`;
  return `${ms}ms`;
}

/** How often the sweep runs: a quarter of the timeout, so a gap is skipped at most 25% late (≤ 1 min). */
export const gapSweepInterval = (timeoutMs: number): number =>
  Math.min(60_000, Math.max(10, Math.floor(timeoutMs / 4)));

const checkCount = (field: string, v: number | undefined, min: number, max: number, issues: Issue[]): void => {
  if (v !== undefined && (!Number.isSafeInteger(v) || v < min || v > max))
    issues.push({ field, problem: `must be an integer from ${min} to ${max}` });
};

/**
 * Message numbers count within one channel: a number without one would mean nothing. And a read starts
 * after one point: given a position too, one of the two would be silently dropped.
 */
const checkAfterMessageNumber = (args: EventListArgs, issues: Issue[]): void => {
  checkCount('afterMessageNumber', args.afterMessageNumber, 0, Number.MAX_SAFE_INTEGER, issues);
  if (args.afterMessageNumber !== undefined && args.channel === undefined)
    issues.push({ field: 'afterMessageNumber', problem: 'needs channel: message numbers count within one rocket' });
  if (args.afterMessageNumber !== undefined && args.afterPosition !== undefined)
    issues.push({
      field: 'afterMessageNumber',
      problem: 'cannot be combined with after: give a position (after) or a message number, not both',
    });
};

/** Refuses the arguments of `eventsSince` that name no valid start: a bad channel, position or number. */
function checkEventsSince(args: EventListArgs): void {
  const issues: Issue[] = [];
  checkChannel(args.channel, issues);
  checkCount('after', args.afterPosition, 0, Number.MAX_SAFE_INTEGER, issues);
  checkAfterMessageNumber(args, issues);
  if (issues.length > 0) throw new ValidationError(issues);
}

/** A channel no message can have (text no store keeps exactly) is refused, never looked up. */
const checkChannel = (channel: string | undefined, issues: Issue[]): void => {
  if (channel !== undefined && !isStorableText(channel)) issues.push({ field: 'channel', problem: NOT_UNICODE });
};

/** The ValidationError for a channel no message can have, or undefined. */
function channelError(channel: string | undefined): ValidationError | undefined {
  const issues: Issue[] = [];
  checkChannel(channel, issues);
  return issues.length > 0 ? new ValidationError(issues) : undefined;
}

export function encodeCursor(sort: RocketSortField, key: SortKey, channel: string): string {
  return Buffer.from(JSON.stringify([sort, key, channel])).toString('base64url');
}

/** A page of rockets in the order `sort`; cursors are made when first asked for, then kept with the page. */
class Page implements RocketPage {
  readonly nextCursor: string | null;
  private cursors: Map<RocketView, string> | undefined;

  constructor(
    readonly rockets: readonly RocketView[],
    private readonly sort: RocketSortField,
    more: boolean,
  ) {
    const last = rockets[rockets.length - 1];
    this.nextCursor = more && last ? this.cursorOf(last) : null;
  }

  cursorOf(rocket: RocketView): string {
    let cursor = this.cursors?.get(rocket);
    if (cursor === undefined) {
      cursor = encodeCursor(this.sort, sortKey(rocket, this.sort), rocket.channel);
      (this.cursors ??= new Map()).set(rocket, cursor);
    }
    return cursor;
  }
}

/**
 * Answers of reads since the store last changed, by a normalised key: the same object for the same question
 * until anything visible may have changed, so the transports can keep their serialised JSON with it.
 * `version()` grows whenever the store may have changed (see `RocketService.readVersion`); the first lookup
 * that sees it grown drops everything. Concurrent lookups of one key share one store read; a failed read is
 * not kept. Bounded by the weight held (at least 1 an entry), least recently used first out.
 */
class ReadCache<T> {
  private seen = -1;
  private readonly entries = new Map<string, { readonly value: Promise<T>; weight: number }>();
  private weight = 0;

  constructor(
    private readonly version: () => number,
    private readonly maxWeight: number,
    private readonly weigh: (value: T) => number,
  ) {}

  get(key: string, read: () => Promise<T>): Promise<T> {
    const now = this.version();
    if (now !== this.seen) {
      this.entries.clear();
      this.weight = 0;
      this.seen = now;
    }
    const hit = this.entries.get(key);
    if (hit) {
      // Most recently used last.
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit.value;
    }
    const entry = { value: read(), weight: 0 };
    this.entries.set(key, entry);
    entry.value.then(
      (value) => {
        if (this.entries.get(key) !== entry) return;
        entry.weight = Math.max(1, this.weigh(value));
        this.weight += entry.weight;
        for (const [k, e] of this.entries) {
          if (this.weight <= this.maxWeight) break;
          this.entries.delete(k);
          this.weight -= e.weight;
        }
      },
      () => {
        if (this.entries.get(key) === entry) this.entries.delete(key);
      },
    );
    return entry.value;
  }
}

/** Rows the listing cache holds at most: one full listing of MAX_PAGE, or a hundred pages of 100. */
const CACHED_ROWS = MAX_PAGE;
/** Single rockets (or their absence) the rocket cache holds at most. */
const CACHED_ROCKETS = 10_000;

function decodeCursor(cursor: string, sort: RocketSortField): { key: SortKey; channel: string } | undefined {
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(v) && v.length === 3 && v[0] === sort && typeof v[2] === 'string' && isStorableText(v[2])) {
      const key: unknown = v[1];
      // The key's type must be the sort field's, or stores would compare text with numbers.
      if (typeof key === (sort === 'speed' ? 'number' : 'string') && (typeof key !== 'string' || isStorableText(key)))
        return { key: key as SortKey, channel: v[2] };
    }
  } catch {
    // Falls through to undefined: a cursor the caller made up is a bad input, not a server error.
  }
  return undefined;
}

/**
 * The one application service behind REST and GraphQL: validation, sequencing, reads and live feeds
 * all go through here, so both transports give the same answers.
 */
export class RocketService {
  /** Commits seen on the store's append feed: other writers' (the gap sweep, other instances), and ours. */
  private appended = 0;
  private readonly caching: boolean;
  private readonly catchUpRetryMs: number;
  private readonly resyncScan: number;
  private readonly pages: ReadCache<RocketPage> | undefined;
  private readonly single: ReadCache<RocketView | undefined> | undefined;

  constructor(
    readonly store: EventStore,
    readonly lanes: LanePool,
    readonly hub: Hub,
    private readonly telemetry: Telemetry = noTelemetry,
    private readonly gapPolicy: GapPolicy = {},
    options: ServiceOptions = {},
  ) {
    this.caching = options.cacheReads ?? store.kind !== 'postgres';
    this.catchUpRetryMs = options.catchUpRetryMs ?? CATCH_UP_RETRY_MS;
    this.resyncScan = options.resyncScan ?? RESYNC_SCAN;
    if (this.caching) {
      store.onAppend(() => {
        this.appended++;
      });
      const version = (): number => this.lanes.version + this.appended;
      this.pages = new ReadCache(version, CACHED_ROWS, (page) => page.rockets.length);
      this.single = new ReadCache(version, CACHED_ROCKETS, () => 1);
    }
  }

  /**
   * A number that grows whenever what the reads answer may have changed, for caches of answers (listings
   * here, serialised answers in the transports); undefined when answers must not be cached (see
   * `ServiceOptions.cacheReads`). An answer computed after reading `readVersion()` may be served for as long as
   * it returns the same number.
   */
  readVersion(): number | undefined {
    return this.caching ? this.lanes.version + this.appended : undefined;
  }

  /**
   * Validates and durably records one envelope. Resolves once it is applied or buffered (or known to
   * be a duplicate). Throws ValidationError (nothing stored), ConflictError (the first message stands,
   * or the number was skipped by the gap policy), BufferFullError (a buffer cap: nothing stored, retry
   * later), or a store failure (nothing acknowledged: the sender should retry).
   */
  async submit(envelope: unknown): Promise<SubmitResult> {
    const message = this.validate(envelope);
    if (message instanceof ValidationError) throw message;
    const result = answer(await this.lanes.submit(message));
    if (isDomainError(result)) throw result;
    return result;
  }

  /**
   * `submit` for a batch, in one pass through the lanes: one result per envelope, in order, each what
   * `submit` would have resolved to or the domain error it would have thrown. An invalid or refused
   * envelope does not stop the others. Rejects only if the store failed.
   */
  async submitMany(envelopes: readonly unknown[]): Promise<Array<SubmitResult | DomainError>> {
    const results = new Array<SubmitResult | DomainError>(envelopes.length);
    const valid: SentMessage[] = [];
    const at: number[] = [];
    envelopes.forEach((envelope, i) => {
      const message = this.validate(envelope);
      if (message instanceof ValidationError) {
        results[i] = message;
      } else {
        valid.push(message);
        at.push(i);
      }
    });
    (await this.lanes.submitAll(valid)).forEach((outcome, k) => (results[at[k] as number] = answer(outcome)));
    return results;
  }

  /**
   * Counts a message body the transport could not read as JSON (bytes that are not UTF-8, text that is not
   * JSON) as a message refused by its content, as `submit` counts one that holds no envelope; returns the
   * transport's refusal, to be answered.
   */
  refuseUnreadable<E>(refusal: E): E {
    this.telemetry.rejected(undefined);
    return refusal;
  }

  private validate(envelope: unknown): SentMessage | ValidationError {
    const v = validateEnvelope(envelope);
    if (!v.ok) {
      this.telemetry.rejected(namedMessageType(envelope));
      return new ValidationError(v.issues);
    }
    this.telemetry.received(v.message.messageType);
    return v.message;
  }

  /** The rocket, or NotFoundError while none of its messages is applied. */
  async rocket(channel: string): Promise<RocketView> {
    const r = await this.findRocket(channel);
    if (!r) throw new NotFoundError(`rocket "${channel}"`);
    return r;
  }

  /**
   * Time travel: the rocket's state as it was after message `messageNumber`, or as the service held it
   * at server time `time` (events recorded up to then), folded from the event log with the same
   * `evolve`. Exactly one of the two. NotFoundError when nothing of the rocket was applied by then, and
   * for a message not applied yet: there is no state right after it to give.
   */
  async rocketAsOf(channel: string, asOf: AsOf): Promise<Rocket> {
    const issues: Issue[] = [];
    checkChannel(channel, issues);
    const { messageNumber, time } = asOf;
    if ((messageNumber === undefined) === (time === undefined))
      issues.push({ field: 'asOf', problem: 'give exactly one of messageNumber and time' });
    checkCount('asOf.messageNumber', messageNumber, 1, Number.MAX_SAFE_INTEGER, issues);
    const until = time === undefined ? undefined : parseRfc3339(time);
    if (time !== undefined && until === undefined)
      issues.push({
        field: 'asOf.time',
        problem: 'must be an RFC 3339 timestamp such as 2026-11-26T20:30:00Z (fractional seconds to at most 9 digits)',
      });
    if (issues.length > 0) throw new ValidationError(issues);

    const reached = (e: StoredEvent): boolean =>
      messageNumber !== undefined ? e.messageNumber > messageNumber : Date.parse(e.recordedAt) > (until ?? 0);
    let state: Rocket | undefined;
    let after = 0;
    for (;;) {
      const page = await this.store.readEvents({ channel, afterPosition: after, limit: MAX_PAGE });
      for (const e of page) {
        if (reached(e)) return found(state, channel);
        state = evolve(state, toMessage(e));
        after = e.position;
      }
      if (page.length < MAX_PAGE) {
        if (messageNumber !== undefined && state !== undefined && state.lastMessageNumber < messageNumber)
          throw new NotFoundError(
            `message ${messageNumber} of rocket "${channel}" (applied up to ${state.lastMessageNumber})`,
          );
        return found(state, channel);
      }
    }
  }

  /** The rocket, or undefined while none of its messages is applied (say #2 buffered before #1). */
  findRocket(channel: string): Promise<RocketView | undefined> {
    const refused = channelError(channel);
    if (refused) return Promise.reject(refused);
    const read = (): Promise<RocketView | undefined> => this.store.getRocket(channel);
    return this.single ? this.single.get(channel, read) : read();
  }

  /** A page of rockets; rejects with ValidationError for arguments it refuses. */
  rockets(args: RocketListArgs = {}): Promise<RocketPage> {
    const issues: Issue[] = [];
    const sort = (args.sort ?? 'channel') as RocketSortField;
    if (!ROCKET_SORT_FIELDS.includes(sort))
      issues.push({ field: 'sort', problem: `must be one of ${ROCKET_SORT_FIELDS.join(', ')}` });
    const order = args.order ?? 'asc';
    if (order !== 'asc' && order !== 'desc') issues.push({ field: 'order', problem: 'must be asc or desc' });
    const status = args.status as RocketStatus | undefined;
    if (status !== undefined && !ROCKET_STATUSES.includes(status))
      issues.push({ field: 'status', problem: `must be one of ${ROCKET_STATUSES.join(', ')}` });
    checkCount('limit', args.limit, 1, MAX_PAGE, issues);
    const after = args.after === undefined ? undefined : decodeCursor(args.after, sort);
    if (args.after !== undefined && !after)
      issues.push({ field: 'after', problem: 'is not a cursor of this listing and sort' });
    if (issues.length > 0) return Promise.reject(new ValidationError(issues));

    const limit = args.limit;
    const read = async (): Promise<RocketPage> => {
      const list = await this.store.listRockets({
        sort,
        order: order as 'asc' | 'desc',
        status,
        after,
        limit: limit === undefined ? undefined : limit + 1,
      });
      const more = limit !== undefined && list.length > limit;
      return new Page(more ? list.slice(0, limit) : list, sort, more);
    };
    if (!this.pages) return read();
    // The cursor stands for its decoded place: two spellings of one place are one question.
    const place = after === undefined ? '' : JSON.stringify([after.key, after.channel]);
    return this.pages.get(`${sort} ${order} ${status ?? ''} ${limit ?? ''} ${place}`, read);
  }

  /** Applied events in position order (for one channel, that is number order). */
  events(args: EventListArgs = {}): Promise<StoredEvent[]> {
    const issues: Issue[] = [];
    checkChannel(args.channel, issues);
    checkCount('after', args.afterPosition, 0, Number.MAX_SAFE_INTEGER, issues);
    checkAfterMessageNumber(args, issues);
    checkCount('limit', args.limit, 1, MAX_PAGE, issues);
    if (issues.length > 0) return Promise.reject(new ValidationError(issues));
    return this.store.readEvents({
      channel: args.channel,
      afterPosition: args.afterPosition,
      afterMessageNumber: args.afterMessageNumber,
      limit: args.limit ?? MAX_PAGE,
    });
  }

  /**
   * `eventsSince` for a reader that resumes after the last position it received (an event stream's
   * `Last-Event-ID`): the arguments it first asked with are checked as then, and it goes on after
   * `resumeAfter` instead. A position past the head of the log was never sent from this log (a store
   * restored from an older backup, or a memory store restarted): it is refused, where going on after it
   * would skip the events that hold those positions now.
   */
  async eventsResumed(args: EventListArgs, resumeAfter: number): Promise<CatchUp> {
    checkEventsSince(args);
    await this.resumableHead(resumeAfter);
    return new CatchUp(this.store, this.hub, args.channel, resumeAfter, undefined, this.catchUpRetryMs);
  }

  /**
   * The head of the log, for a stream resumed after position `after` (a client's `Last-Event-ID`): refused
   * when `after` is past it, as no event of this log was sent with it.
   */
  private async resumableHead(after: number): Promise<number> {
    const head = await this.store.headPosition();
    if (after > head)
      throw new ValidationError([
        {
          field: 'Last-Event-ID',
          problem: `${after} is past the end of the log (position ${head}): it was not sent from this log; read it anew without it`,
        },
      ]);
    return head;
  }

  /**
   * Catch-up, then live: every event after the given position (or message number of `channel`), from
   * the store first and then as it is appended, with no gap and no duplicate at the switch. A reader
   * that falls behind the live buffer is moved back to reading the store, so it never misses an event
   * and its memory stays bounded.
   */
  eventsSince(args: EventListArgs = {}): CatchUp {
    checkEventsSince(args);
    return new CatchUp(
      this.store,
      this.hub,
      args.channel,
      args.afterPosition ?? 0,
      args.afterMessageNumber,
      this.catchUpRetryMs,
    );
  }

  /** Live rocket states after each commit that changed them; a slow reader gets the latest of each. */
  rocketUpdates(channel?: string): Feed<RocketUpdate> {
    const refused = channelError(channel);
    if (refused) throw refused;
    return this.hub.rockets(channel);
  }

  /**
   * `rocketUpdates` resumed after log position `after` (a client's `Last-Event-ID`): first the state of each
   * rocket that changed since, then live, never an older state after a newer one (see `Resync`). Refuses a
   * position past the end of the log.
   */
  async rocketUpdatesResumed(channel: string | undefined, after: number): Promise<Resync> {
    const refused = channelError(channel);
    if (refused) throw refused;
    // Opened before the head is read, so that no commit falls between the states read and the live feed.
    const live = this.hub.rockets(channel);
    try {
      const head = await this.resumableHead(after);
      return new Resync(live, this.store, channel, after, head, {
        page: MAX_PAGE,
        scan: this.resyncScan,
        retryMs: this.catchUpRetryMs,
      });
    } catch (e) {
      void live.return();
      throw e;
    }
  }

  /**
   * Open gaps of the reorder buffer, oldest first: every channel holding buffered messages, including
   * channels none of whose messages is applied yet (they have no rocket). At most `limit` (1 to 10,000;
   * 10,000 by default).
   */
  gaps(args: { readonly limit?: number | undefined } = {}): Promise<Gap[]> {
    const issues: Issue[] = [];
    checkCount('limit', args.limit, 1, MAX_PAGE, issues);
    if (issues.length > 0) return Promise.reject(new ValidationError(issues));
    return this.store.listGaps(args.limit ?? MAX_PAGE);
  }

  /**
   * Applies the gap policy once: skips every gap whose oldest buffered message waited longer than
   * GAP_TIMEOUT (by the store's clock), recording a MessageSkipped event per missing number and applying
   * what that unblocks. Does nothing when no timeout is set. Resolves to the ranges skipped.
   */
  skipStaleGaps(): Promise<SkippedGap[]> {
    const timeout = this.gapPolicy.gapTimeoutMs;
    if (timeout === undefined) return Promise.resolve([]);
    return this.store.skipGaps(timeout, `not received within GAP_TIMEOUT (${formatDuration(timeout)})`);
  }

  /**
   * Runs `skipStaleGaps` every `gapSweepInterval(GAP_TIMEOUT)`, one sweep at a time, on a timer that
   * does not keep the process alive. Without a timeout it does nothing. Returns the function that stops
   * it, which resolves once a sweep in progress has finished.
   */
  startGapSweep(report: GapSweepReport = {}): () => Promise<void> {
    const timeout = this.gapPolicy.gapTimeoutMs;
    if (timeout === undefined) return () => Promise.resolve();
    const tell = (hook: () => void): void => {
      try {
        hook();
      } catch {
        // A report hook's failure must not stop the sweeps.
      }
    };
    let timer: NodeJS.Timeout | undefined;
    let running: Promise<void> | undefined;
    let stopped = false;
    const schedule = (): void => {
      timer = setTimeout(() => {
        running = this.skipStaleGaps()
          .then(
            (gaps) => {
              if (gaps.length > 0) tell(() => report.skipped?.(gaps));
            },
            (e: unknown) => {
              tell(() => report.failed?.(e));
            },
          )
          .finally(() => {
            running = undefined;
            if (!stopped) schedule();
          });
      }, gapSweepInterval(timeout));
      timer.unref();
    };
    schedule();
    return async () => {
      stopped = true;
      clearTimeout(timer);
      await running;
    };
  }

  async health(): Promise<Health> {
    const s = await this.store.stats();
    return {
      status: 'ok',
      store: this.store.kind,
      lanes: { count: this.lanes.count, depths: this.lanes.depths() },
      rockets: s.rockets,
      events: s.events,
      buffered: s.buffered,
      subscribers: this.hub.subscribers,
    };
  }
}

/** The catch-up-then-live reader (KurrentDB's pattern): listen first, read history, then switch. */
export class CatchUp implements AsyncIterableIterator<StoredEvent> {
  private live: Feed<StoredEvent>;
  private backlog: StoredEvent[] = [];
  private catchingUp = true;
  /** Events taken from catch-up pages so far. */
  private fromStore = 0;
  private closed = false;

  constructor(
    private readonly store: EventStore,
    private readonly hub: Hub,
    private readonly channel: string | undefined,
    private lastPosition: number,
    /** Until the first event: skip the channel's events numbered up to this one (the service gives it only with a channel). */
    private afterMessageNumber: number | undefined,
    /** How long a read the store failed is tried again before `next()` rejects with its error. */
    private readonly retryMs = CATCH_UP_RETRY_MS,
  ) {
    this.live = hub.events(channel);
  }

  async next(): Promise<IteratorResult<StoredEvent>> {
    for (;;) {
      if (this.closed) return { value: undefined, done: true };
      const queued = this.backlog.shift();
      if (queued) {
        // Read from the store, events come as fast as the subscriber takes them, all in one turn of the
        // event loop (SQLite reads at once, and a socket that keeps up takes every frame at once): every
        // CATCH_UP_TURN of them, the event loop gets a turn, so that a long catch-up does not hold every
        // other client, the subscriber's own `complete` or a stop until it ends.
        if (++this.fromStore % CATCH_UP_TURN === 0) {
          await nextTurn();
          if (this.isClosed()) continue;
        }
        return this.emit(queued);
      }
      if (this.catchingUp) {
        const page = await this.readPage();
        if (page === undefined) continue;
        if (page.length < CATCH_UP_PAGE) this.catchingUp = false;
        this.backlog = page;
        continue;
      }
      try {
        const r = await this.live.next();
        if (r.done === true) return await this.return();
        // Catch-up may have found nothing past the number asked for: the channel had not reached it.
        const e = r.value;
        if (e.position > this.lastPosition && e.messageNumber > (this.afterMessageNumber ?? 0)) return this.emit(e);
      } catch (e) {
        if (!isFellBehindError(e)) throw e;
        this.live = this.hub.events(this.channel);
        this.catchingUp = true;
      }
    }
  }

  return(): Promise<IteratorResult<StoredEvent>> {
    this.closed = true;
    this.backlog = [];
    void this.live.return();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Whether `return()` has been called: read anew after an await, where `this.closed` reads narrowed. */
  private isClosed(): boolean {
    return this.closed;
  }

  /**
   * The next page from the store, tried again while the store fails for up to `retryMs` (see
   * CATCH_UP_RETRY_MS); undefined once closed.
   */
  private readPage(): Promise<StoredEvent[] | undefined> {
    return readRetrying(
      () =>
        this.store.readEvents({
          channel: this.channel,
          afterPosition: this.lastPosition,
          afterMessageNumber: this.afterMessageNumber,
          limit: CATCH_UP_PAGE,
        }),
      this.retryMs,
      () => this.closed,
    );
  }

  private emit(e: StoredEvent): IteratorResult<StoredEvent> {
    this.lastPosition = e.position;
    this.afterMessageNumber = undefined;
    return { value: e, done: false };
  }
}
