/**
 * SqliteStore and its options: what the rest of the service imports. Its schema and statements
 * (schema.ts), rows (rows.ts), database file and lock (file.ts) and WAL sync (wal.ts) are beside it, and
 * so is the online backup (backup.ts), which copies a store's file without opening the store.
 */
import { dirname } from 'node:path';
import type Database from 'better-sqlite3';
import { SqliteDatabase, rowsOf } from './database';
import type { RocketMessage } from '../../domain/message';
import { evolve, evolveAt, withUtcTimes, type Rocket } from '../../domain/rocket';
import {
  gapsToSkip,
  joinSkips,
  SKIP_CHANNELS_PER_TRANSACTION,
  splitSkips,
  planBatch,
  skipMessages,
  type BatchPlan,
  type PlanSource,
} from '../plan';
import {
  DEFAULT_BUFFER_LIMITS,
  notify,
  toStoredEvent,
  type AppendListener,
  type BufferLimits,
  type CommitResult,
  type EventQuery,
  type EventStore,
  type Gap,
  type RocketListQuery,
  type RocketSortField,
  type RocketView,
  type SkippedGap,
  type StoredEvent,
  type StoreStats,
} from '../types';
import { lockWriter, makeDirectories, namingFile, realDatabaseFile } from './file';
import {
  bufferInfo,
  payloadJson,
  ROCKET_FIELDS,
  rowToMessage,
  toEvent,
  toRocket,
  toRow,
  tupleToMessage,
  type MessageRow,
  type RocketRow,
} from './rows';
import { migrate, prepare, ROCKET_COLUMNS, SORT_COLUMN } from './schema';
import { WalSync } from './wal';
import { STORAGE_FULL, storeFaultOf } from '../faults';

export interface SqliteStoreOptions {
  /** Server clock for `recordedAt` and buffer `receivedAt`; tests inject their own. */
  readonly now?: () => Date;
  /**
   * FULL (default): a resolved commit survives power loss (its WAL frames were synced). NORMAL: it
   * survives a crash of the process but the last commits may be lost on power loss.
   */
  readonly synchronous?: 'FULL' | 'NORMAL';
  /** Bounds of the reorder buffer; DEFAULT_BUFFER_LIMITS when not given. */
  readonly bufferLimits?: BufferLimits | undefined;
  /** Channels whose committed state stays in memory between commits; CHANNEL_CACHE_SIZE when not given. */
  readonly channelCacheSize?: number | undefined;
  /** How the rockets table is written behind the log; PROJECTION when not given (tests shrink it). */
  readonly projection?: ProjectionTuning | undefined;
}

/** See PROJECTION. */
export interface ProjectionTuning {
  /** A changed rocket's row is written once it has been changed this long. */
  readonly afterMs: number;
  /** Rows one background transaction writes at most. */
  readonly chunk: number;
  /** Rockets that may wait at most; beyond it the oldest are written at once. */
  readonly maxDirty: number;
}

/**
 * Channels kept in memory by default: every rocket of a fleet of this size is sequenced without a read.
 * An entry is a Rocket and a count, a few hundred bytes.
 */
export const CHANNEL_CACHE_SIZE = 50_000;

const SYNCHRONOUS_MODES: readonly string[] = ['FULL', 'NORMAL'];

/**
 * The rockets table is written behind the log (see SqliteStore): once the rocket changed longest ago
 * has been changed for `afterMs` (later changes meanwhile cost nothing more), the `chunk` changed
 * longest ago in one transaction, a few milliseconds of the event loop (larger chunks measured no
 * cheaper per row, and lengthened p99 latency); sooner while more than `maxDirty` rockets wait, which
 * bounds the memory they hold and what a read of the table writes first. One write of hundreds of rows
 * costs a fraction of as many one-row writes, each dirtying its own pages of the table and its indexes
 * to copy into the WAL, sync and checkpoint. Five seconds rather than one: a fleet whose rockets each
 * report about once a second then costs one row write per five messages instead of one per message
 * (about 7% less CPU a message over REST, measured), for at most five seconds of log to replay after a
 * crash (0.1–0.15 s more start-up after a crash at full ingest, measured); no answer waits for the table.
 */
export const PROJECTION: ProjectionTuning = { afterMs: 5000, chunk: 500, maxDirty: 10_000 };

/** A rocket whose row the table has not written since it changed (see SqliteStore.dirty). */
interface Dirty {
  /** The row as the table holds it; undefined: none. */
  readonly before: Rocket | undefined;
  /** No event of the rocket below this position is missing from `before`. */
  readonly since: number;
  /** `Date.now()` when it changed. */
  readonly at: number;
}

/** What sequencing needs of a channel's committed state, as the tables hold it. */
interface ChannelEntry {
  rocket: Rocket | undefined;
  /** How many of the channel's messages `pending` holds: none (the usual case) needs no read. */
  pending: number;
}

/**
 * How a page finds its rows: unfiltered; filtered by walking the sort key's index in order and skipping
 * the rows of the other status ('walk'); or filtered by gathering the status's rows from its index and
 * sorting them ('gather').
 */
type StatusPlan = 'none' | 'walk' | 'gather';

/** What reading a matching row and sorting it costs against skipping an index entry (measured). */
const WALK_COST_RATIO = 4;

interface Call {
  readonly messages: readonly RocketMessage[];
  readonly resolve: (r: CommitResult) => void;
  readonly reject: (e: unknown) => void;
}

/**
 * Events one INSERT writes at most. A statement per row pays its step, reset and bindings' crossing into
 * SQLite once per event; one statement of many rows pays them once for all.
 */
const INSERT_ROWS = 64;

/** The buffer of a channel that buffers nothing, shared by all: the planner copies a buffer to change it. */
const NO_PENDING: ReadonlyMap<number, RocketMessage> = new Map();

/** Runs synchronous work as a promise, so a thrown error (a closed database) becomes a rejection. */
const attempt = <T>(work: () => T): Promise<T> =>
  new Promise((resolve) => {
    resolve(work());
  });

/**
 * The event store in one SQLite file (better-sqlite3, WAL).
 *
 * Only one store may write a given file: sequencing reads the committed state and then writes, and
 * nothing but this store's single connection serialises those steps. A second one (in this process or
 * another) is refused at open (see lockWriter). Other processes may read the file.
 *
 * Commits are grouped: the `commit` calls queued while the previous group's WAL sync runs (or within
 * one tick when none runs) are recorded by one transaction, in call order, each call seeing the effects
 * of the calls before it; with `synchronous` FULL they resolve once a sync of the WAL that started after
 * that transaction returns (see WalSync), so one disk wait covers a whole group and the event loop never
 * blocks on the disk. Each call still gets its own CommitResult: its outcomes, the events it appended
 * and the rockets it changed (as of the end of that call). Listeners hear once per group, once it is
 * durable: all its events in position order, with the final state of every rocket the group changed. If
 * the transaction fails, every call of the group rejects and nothing of any of them is recorded; if the
 * WAL sync fails, they reject too and so does every later commit (see WalSync).
 *
 * The log and the buffer are written by each group's transaction; the rockets table (the projection) is
 * written behind them, in batches of rockets changed a while ago (PROJECTION), with a position
 * below which it reflects every event. Until then the changed rockets live in the channel cache, which
 * sequencing and `getRocket` read first; every read of the table writes them all first, so answers never
 * lag. The log is the truth: opening a file, or recovering from a failed transaction, replays the events
 * after that position into the table (skipping those a row already reflects: its last message number
 * tells), so a crash loses nothing of the projection. Another process reading the file sees the table
 * up to about five seconds behind the log.
 */
export class SqliteStore implements EventStore {
  readonly kind = 'sqlite';
  /** The database file, with its symbolic links resolved (`:memory:` for none). */
  readonly location: string;
  private readonly db: Database.Database;
  /** Held while open, on a file: see lockWriter. */
  private readonly writer: Database.Database | undefined;
  private readonly now: () => Date;
  private readonly limits: BufferLimits;
  /**
   * Messages in `pending`, kept here so that a commit need not count them: this connection is the file's
   * only writer. Read from the table at open; restored when a transaction that changed it rolls back.
   */
  private buffered = 0;
  /**
   * The committed state of the channels used last: every dirty one, and of the others at most enough to
   * hold `cacheSize` in all, least recently written first. Sequencing reads it rather than the tables:
   * this connection is their only writer, and a channel that is not dirty has its row as committed. A
   * channel not in it is read from the tables and kept. Emptied when a transaction fails (the table is
   * then brought up to the log again) and by a rebuild.
   */
  private readonly channels = new Map<string, ChannelEntry>();
  private readonly cacheSize: number;
  private readonly tuning: ProjectionTuning;
  /**
   * Rockets the open transaction changed, each with its state before it (undefined: it had no row); at
   * its end they join `dirty`.
   */
  private readonly touched = new Map<string, Rocket | undefined>();
  /**
   * Rockets changed since the table last wrote them, oldest change first, each with its row as the table
   * holds it, a position at or below that of the first event its row lacks, and when it changed.
   */
  private readonly dirty = new Map<string, Dirty>();
  /** Writes the rockets that are due (see `projectDue`). */
  private projectTimer: NodeJS.Timeout | undefined;
  /** `projectTimer` waits for the oldest dirty rocket to be due: more than `maxDirty` cut it short. */
  private projectWaitsForDue = false;
  /** The position of the last event committed. */
  private head = 0;
  /** The table may lag the log by more than the dirty rockets: `project` replays the log first. */
  private stale = true;
  /**
   * Rockets per status, only to choose how a filtered page finds its rows (a wrong count makes a page
   * slower, never different). Counted when a page first needs it, then kept up by each write; forgotten
   * with the cache.
   */
  private statusCounts: Map<string, number> | undefined;
  /** `UPDATE rockets` statements by the set of columns they set (a bit per ROCKET_FIELDS entry). */
  private readonly updates = new Map<number, Database.Statement<unknown[], never>>();
  /** `INSERT INTO events` statements by the number of rows they write (1 to INSERT_ROWS), prepared when first used. */
  private readonly inserts: Array<Database.Statement<unknown[], never>> = [];
  private readonly listeners = new Set<AppendListener>();
  private queue: Call[] = [];
  /** Settles once the scheduled flush has run; undefined when none is scheduled. */
  private scheduled: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  /** Syncs the WAL before a commit resolves (synchronous FULL, on a file). */
  private readonly wal: WalSync | undefined;
  /** Transactions committed (groups, skips, rebuilds): with `walSyncs`, how many one sync covered. */
  transactions = 0;
  /** How many of `transactions` are known to be on disk: reads wait until all are (see `attempt`). */
  private synced = 0;
  /** Reads waiting for a sync, each called with nothing to run, or with the error of a failed sync. */
  private waitingReads: Array<(error?: Error) => void> = [];

  private readonly sql: ReturnType<typeof prepare>;
  private readonly listings = new Map<string, Database.Statement<Record<string, unknown>, RocketRow>>();
  private readonly source: PlanSource;
  private readonly flushTransaction: (calls: readonly Call[], at: string) => CommitResult[];
  private readonly skipTransaction: (
    channels: readonly string[],
    cutoff: number,
    at: string,
    reason: string,
  ) => { gaps: SkippedGap[]; cut: boolean; result: CommitResult };
  private readonly rebuildTransaction: () => number;
  /** Writes the oldest `count` dirty rockets (or fewer) and forgets they were dirty. */
  private readonly projectTransaction: (count: number) => void;
  private readonly recoverTransaction: () => void;
  /** What `projectTransaction` and `recoverTransaction` write, inside a transaction already open. */
  private readonly projectRows: (count: number) => void;
  private readonly recoverRows: () => void;

  /**
   * Opens (creating the file, its parent directory and the schema when missing) the database at `file`.
   * Throws if the file cannot be opened or was written by a newer schema version.
   */
  constructor(
    readonly file: string,
    options: SqliteStoreOptions = {},
  ) {
    const synchronous = options.synchronous ?? 'FULL';
    // Checked at run time too: it is spliced into a PRAGMA, and JavaScript callers exist.
    if (!SYNCHRONOUS_MODES.includes(synchronous)) throw new Error('synchronous must be FULL or NORMAL');
    this.now = options.now ?? (() => new Date());
    this.limits = options.bufferLimits ?? DEFAULT_BUFFER_LIMITS;
    this.cacheSize = options.channelCacheSize ?? CHANNEL_CACHE_SIZE;
    this.tuning = options.projection ?? PROJECTION;
    const onDisk = file !== ':memory:';
    if (onDisk) {
      try {
        makeDirectories(dirname(file));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        const why =
          code === 'EEXIST' || code === 'ENOTDIR' ? 'a part of its path is a file, not a directory' : String(e);
        throw new Error(`cannot make the directory of the SQLite store at ${file}: ${why}`, { cause: e });
      }
    }
    const path = onDisk ? realDatabaseFile(file) : file;
    this.location = path;
    this.writer = onDisk ? lockWriter(path) : undefined;
    try {
      this.db = new SqliteDatabase(path, { timeout: 5000 });
    } catch (e) {
      this.writer?.close();
      throw namingFile(e, path);
    }
    try {
      this.db.pragma('journal_mode = WAL');
      // Commits never wait for the disk here: FULL is kept by syncing the WAL off the event loop (WalSync).
      this.db.pragma(`synchronous = ${onDisk ? 'NORMAL' : synchronous}`);
      migrate(this.db);
      // SQLite opens a file it may read but not write read-only without a word, and every commit would
      // then fail: refuse it here, by a write that changes nothing, with the file named.
      this.db.prepare('UPDATE projection SET position = position WHERE id = 1').run();
      this.sql = prepare(this.db);
      this.buffered = this.sql.pendingCount.get()?.count ?? 0;
      // The migration wrote, so the WAL exists. What it wrote is synced like any commit, before the first one.
      if (onDisk && synchronous === 'FULL') this.wal = new WalSync(`${path}-wal`);
    } catch (e) {
      this.shut();
      throw namingFile(e, path);
    }

    const sql = this.sql;
    this.source = {
      channel: (channel) => {
        let entry = this.channels.get(channel);
        let rows: MessageRow[] | undefined;
        if (entry === undefined) {
          const row = sql.rocket.get(channel);
          rows = sql.pendingOf.all(channel);
          entry = { rocket: row && toRocket(row), pending: rows.length };
          this.channels.set(channel, entry);
        } else if (entry.pending > 0) {
          rows = sql.pendingOf.all(channel);
        }
        if (rows === undefined || rows.length === 0) return { rocket: entry.rocket, pending: NO_PENDING };
        const pending = new Map<number, RocketMessage>();
        for (const m of rows) pending.set(m.message_number, rowToMessage(m));
        return { rocket: entry.rocket, pending };
      },
      appliedMessage: (channel, n) => {
        const row = sql.eventAt.get(channel, n);
        return row && rowToMessage(row);
      },
    };

    const flush = this.db.transaction((calls: readonly Call[], at: string) => {
      const since = this.head + 1;
      const results = calls.map((call) => this.record(call.messages, at));
      this.markDirty(since);
      return results;
    });
    this.flushTransaction = (calls, at) => flush.immediate(calls, at);

    const skip = this.db.transaction((channels: readonly string[], cutoff: number, at: string, reason: string) => {
      const since = this.head + 1;
      const found = channels.flatMap((channel) =>
        gapsToSkip(
          channel,
          (this.source.channel(channel).rocket?.lastMessageNumber ?? 0) + 1,
          sql.arrivalsOf
            .all(channel)
            .map((b) => ({ messageNumber: b.message_number, receivedAt: Date.parse(b.received_at) })),
          cutoff,
        ),
      );
      const [gaps, left] = splitSkips(found);
      const plan = planBatch(skipMessages(gaps, at, reason), this.source, this.budget());
      const result = this.write(plan, at);
      this.markDirty(since);
      return { gaps, cut: left.length > 0, result };
    });
    this.skipTransaction = (channels, cutoff, at, reason) => skip.immediate(channels, cutoff, at, reason);

    const rebuild = this.db.transaction(() => {
      const rockets = new Map<string, Rocket>();
      let replayed = 0;
      // Streamed in position order: memory grows with the number of rockets, never with the log. Folded
      // with the raw message times, converted once per rocket at the end (see evolveAt).
      for (const row of rowsOf(sql.replay)) {
        const m = tupleToMessage(row);
        rockets.set(m.channel, evolveAt(rockets.get(m.channel), m, m.messageTime));
        replayed++;
      }
      sql.deleteRockets.run();
      for (const r of rockets.values()) sql.insertRocket.run(toRow(withUtcTimes(r)));
      sql.setProjected.run(sql.head.get()?.head ?? 0);
      return replayed;
    });
    this.rebuildTransaction = () => {
      try {
        return rebuild.immediate();
      } finally {
        this.forget();
      }
    };

    // The oldest `count` dirty rockets; then the position below which the table reflects every event.
    const project = this.db.transaction((count: number) => {
      let written = 0;
      let next: Dirty | undefined;
      for (const [channel, d] of this.dirty) {
        if (written++ === count) {
          next = d;
          break;
        }
        this.saveRocket(d.before, (this.channels.get(channel) as ChannelEntry).rocket as Rocket);
      }
      // The oldest rocket left is the one whose missing events start lowest.
      sql.setProjected.run(next === undefined ? this.head : next.since - 1);
    });
    this.projectRows = project;
    this.projectTransaction = (count) => {
      project.immediate(count);
      let left = count;
      for (const channel of this.dirty.keys()) {
        if (left-- === 0) break;
        this.dirty.delete(channel);
      }
    };

    // The events after the projection's position, folded into the rows they change as the live path
    // did; an event a row already reflects (a rocket written after it) is skipped.
    const recover = this.db.transaction(() => {
      const from = sql.projected.get()?.position ?? 0;
      const head = sql.head.get()?.head ?? 0;
      if (head <= from) return;
      const before = new Map<string, Rocket | undefined>();
      const after = new Map<string, Rocket>();
      for (const row of rowsOf(sql.replayAfter, from)) {
        const m = tupleToMessage(row);
        if (!after.has(m.channel) && !before.has(m.channel)) {
          const stored = sql.rocket.get(m.channel);
          before.set(m.channel, stored && toRocket(stored));
        }
        const state = after.get(m.channel) ?? before.get(m.channel);
        if (state !== undefined && m.messageNumber <= state.lastMessageNumber) continue;
        after.set(m.channel, evolve(state, m));
      }
      for (const [channel, r] of after) this.saveRocket(before.get(channel), r);
      sql.setProjected.run(head);
    });
    this.recoverRows = recover;
    this.recoverTransaction = () => recover.immediate();
    try {
      this.project();
    } catch (e) {
      this.wal?.close();
      this.shut();
      throw e;
    }
  }

  commit(messages: readonly RocketMessage[]): Promise<CommitResult> {
    if (this.closing) return Promise.reject(new Error('the SQLite store is closed'));
    const failure = this.wal?.failure;
    if (failure) return Promise.reject(failure);
    return new Promise((resolve, reject) => {
      this.queue.push({ messages, resolve, reject });
      // While a WAL sync runs, calls gather for the next group; the sync's end schedules it.
      if (this.wal?.busy !== true) this.schedule();
    });
  }

  /**
   * `attempt` for the reads, run only on what is on disk (with synchronous FULL on a file; otherwise at
   * once). A transaction is visible once it commits, but is on disk only once the WAL sync after it ends: a
   * read that came in between could show events a power cut would then take back, which no sender was told
   * of, and whose positions would go to other events. So while a transaction waits for its sync, reads wait
   * too, and run as soon as a sync leaves every transaction on disk, inside its callback, before the next
   * group is written (no group is written while a sync runs; a gap skip may be, and is then waited for
   * too). Every read waits alike, of the log, the rockets and the buffer, so that they agree with each
   * other and with what subscribers heard.
   *
   * Refused once a WAL sync failed: what the file holds since the last sync that succeeded is not known to
   * be on disk, and its callers were refused, so it is neither read nor written any more (reads and
   * `stats`, and so the health check, fail) until a restart lets SQLite recover the file.
   */
  private attempt<T>(work: () => T): Promise<T> {
    const failure = this.wal?.failure;
    if (failure) return Promise.reject(failure);
    if (this.wal === undefined || this.synced === this.transactions) return attempt(work);
    return new Promise((resolve, reject) => {
      this.waitingReads.push((error) => {
        if (error) reject(error);
        else attempt(work).then(resolve, reject);
      });
    });
  }

  /** WAL syncs completed (none unless synchronous FULL on a file). */
  get walSyncs(): number {
    return this.wal?.syncs ?? 0;
  }

  /** Runs the next group commit in the check phase of this loop turn, once. */
  private schedule(): void {
    this.scheduled ??= new Promise((done) =>
      setImmediate(() => {
        this.scheduled = undefined;
        this.flush();
        done();
      }),
    );
  }

  /** Resolves once everything written so far is durable (at once, unless synchronous FULL). */
  private durable(): Promise<void> {
    if (this.wal === undefined) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.afterSync((error) => {
        if (error) reject(error);
        else resolve();
      });
    });
  }

  /**
   * `WalSync.afterSync`; then the reads that waited for it run, if every transaction is on disk, and the
   * calls gathered during the sync become the next group.
   */
  private afterSync(done: (error?: Error) => void): void {
    const through = this.transactions;
    (this.wal as WalSync).afterSync((error) => {
      if (error === undefined && through > this.synced) this.synced = through;
      done(error);
      if (this.waitingReads.length > 0 && (error !== undefined || this.synced === this.transactions))
        for (const read of this.waitingReads.splice(0)) read(error);
      if (this.queue.length > 0) this.schedule();
    });
  }

  onAppend(listener: AppendListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** From the channel cache when it holds the channel (dirty or not), so a read need not write the table. */
  getRocket(channel: string): Promise<RocketView | undefined> {
    return this.attempt(() => {
      let r: Rocket | undefined;
      const entry = this.stale ? undefined : this.channels.get(channel);
      if (entry !== undefined) {
        r = entry.rocket;
      } else {
        const row = this.readProjected(() => this.sql.rocket.get(channel));
        r = row && toRocket(row);
      }
      if (r === undefined) return undefined;
      return { ...r, buffer: bufferInfo(r, this.sql.bufferOf.get(channel)) };
    });
  }

  listRockets(q: RocketListQuery): Promise<RocketView[]> {
    return this.attempt(() => {
      if (q.limit !== undefined && q.limit <= 0) return [];
      return this.readProjected(() => this.listed(q));
    });
  }

  /** A page of rockets, read from the table (brought up to the log: see readProjected). */
  private listed(q: RocketListQuery): RocketView[] {
    let after = q.after;
    if (q.sort === 'status' && q.status !== undefined && after !== undefined) {
      // Every row has the key q.status: the cursor is before all of them, among them, or past them all.
      const c = after.key === q.status ? 0 : String(after.key) < q.status === (q.order === 'asc') ? -1 : 1;
      if (c > 0) return [];
      if (c < 0) after = undefined;
    }
    const params: Record<string, unknown> = { limit: q.limit ?? -1 };
    if (q.status !== undefined) params.status = q.status;
    if (after) {
      params.key = after.key;
      params.channel = after.channel;
    }
    const rockets = this.listing(q.sort, q.order, this.statusPlan(q), after !== undefined)
      .all(params)
      .map(toRocket);
    if (rockets.length === 0) return [];
    const buffers = new Map(
      this.sql.buffersOf.all(JSON.stringify(rockets.map((r) => r.channel))).map((b) => [b.channel, b]),
    );
    return rockets.map((r) => ({ ...r, buffer: bufferInfo(r, buffers.get(r.channel)) }));
  }

  readEvents(q: EventQuery): Promise<StoredEvent[]> {
    return this.attempt(() => {
      if (q.limit <= 0) return [];
      const params = {
        channel: q.channel,
        afterPosition: q.afterPosition ?? 0,
        afterNumber: q.afterMessageNumber ?? 0,
        limit: q.limit,
      };
      const statement =
        q.channel === undefined
          ? this.sql.events
          : q.afterMessageNumber === undefined
            ? this.sql.eventsOfChannel
            : this.sql.eventsOfChannelAfterNumber;
      return statement.all(params).map(toEvent);
    });
  }

  headPosition(): Promise<number> {
    return this.attempt(() => this.sql.head.get()?.head ?? 0);
  }

  listGaps(limit: number): Promise<Gap[]> {
    return this.attempt(() =>
      this.readProjected(() =>
        limit <= 0
          ? []
          : this.sql.gaps
              .all(limit)
              .map((g) => ({ channel: g.channel, waitingFor: g.waiting_for, count: g.count, oldestSince: g.oldest })),
      ),
    );
  }

  /**
   * In transactions of a bounded number of channels, each run synchronously between group commits, with
   * the event loop free in between; listeners hear each transaction as one commit. Once the store is
   * closing it stops after the transaction in hand and resolves to what it skipped.
   */
  async skipGaps(olderThanMs: number, reason: string): Promise<SkippedGap[]> {
    const now = this.now();
    const cutoff = now.getTime() - olderThanMs;
    const cutoffIso = new Date(cutoff).toISOString();
    const skipped: SkippedGap[] = [];
    for (let round = 0; ; round++) {
      if (round > 0) await new Promise((resolve) => setImmediate(resolve));
      if (this.closing) {
        if (round === 0) throw new Error('the SQLite store is closed');
        break;
      }
      const failure = this.wal?.failure;
      if (failure) throw failure;
      const channels = this.sql.staleChannels.all(cutoffIso, SKIP_CHANNELS_PER_TRANSACTION).map((r) => r.channel);
      if (channels.length === 0) break;
      const before = this.buffered;
      let done: { gaps: SkippedGap[]; cut: boolean; result: CommitResult };
      try {
        if (this.stale) this.project();
        done = this.skipTransaction(channels, cutoff, now.toISOString(), reason);
      } catch (e) {
        this.buffered = before;
        this.forget();
        throw e;
      }
      this.transactions++;
      this.trimCache();
      await this.durable();
      if (done.result.events.length > 0) notify(this.listeners, done.result.events, done.result.rockets);
      skipped.push(...done.gaps);
      // Each channel it found is now free of stale gaps, unless the transaction was cut short; none skipped
      // means nothing more to find.
      if (done.gaps.length === 0 || (channels.length < SKIP_CHANNELS_PER_TRANSACTION && !done.cut)) break;
    }
    return joinSkips(skipped);
  }

  stats(): Promise<StoreStats> {
    return this.attempt(() => this.readProjected(() => this.sql.stats.get() ?? { rockets: 0, events: 0, buffered: 0 }));
  }

  /** Replays the whole log in one transaction; commits wait for it, readers see the old or the new rows. */
  async rebuildProjection(): Promise<number> {
    const replayed = await this.attempt(() => this.rebuildTransaction());
    this.transactions++;
    await this.durable();
    return replayed;
  }

  /**
   * Stops taking commits, lets the commits already queued finish (and their WAL syncs), then closes the
   * database, which checkpoints what is left.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      while (this.scheduled || this.queue.length > 0 || this.wal?.busy === true) {
        if (this.scheduled) await this.scheduled;
        else if (this.wal?.busy === true) await this.wal.drained();
        else this.schedule();
      }
      try {
        this.project();
      } finally {
        this.wal?.close();
        this.shut();
      }
    })();
    return this.closing;
  }

  /** Closes the database, then lets go of the writer's lock. */
  private shut(): void {
    try {
      this.db.close();
    } finally {
      this.writer?.close();
    }
  }

  /** One group commit: everything queued since the last one, in one transaction. */
  private flush(): void {
    const calls = this.queue;
    this.queue = [];
    if (calls.length === 0) return;
    const before = this.buffered;
    let results: CommitResult[];
    try {
      if (this.stale) this.project();
      results = this.flushTransaction(calls, this.now().toISOString());
    } catch (e) {
      this.buffered = before;
      this.forget();
      for (const call of calls) call.reject(e);
      return;
    }
    this.transactions++;
    this.trimCache();
    if (this.wal === undefined) {
      this.settle(calls, results);
      return;
    }
    this.afterSync((error) => {
      if (error) for (const call of calls) call.reject(error);
      else this.settle(calls, results);
    });
  }

  /** A durable group: listeners hear of it, then its callers. */
  private settle(calls: readonly Call[], results: readonly CommitResult[]): void {
    const events = results.flatMap((r) => r.events);
    if (events.length > 0) {
      const rockets = new Map<string, Rocket>();
      for (const r of results) for (const rocket of r.rockets) rockets.set(rocket.channel, rocket);
      notify(this.listeners, events, [...rockets.values()]);
    }
    calls.forEach((call, i) => {
      call.resolve(results[i] as CommitResult);
    });
  }

  /** Plans and writes one call inside the group's transaction; reads see the earlier calls' writes. */
  private record(messages: readonly RocketMessage[], at: string): CommitResult {
    return this.write(planBatch(messages, this.source, this.budget()), at);
  }

  private budget(): { limits: BufferLimits; buffered: number } {
    return { limits: this.limits, buffered: this.buffered };
  }

  /** Writes a plan inside the caller's transaction. */
  private write(plan: BatchPlan, at: string): CommitResult {
    const sql = this.sql;
    const events = this.append(plan.applied, at);
    for (const r of plan.rockets) {
      const entry = this.entry(r.channel);
      if (!this.touched.has(r.channel)) this.touched.set(r.channel, entry.rocket);
      entry.rocket = r;
    }
    for (const m of plan.released) {
      if (sql.deletePending.run(m.channel, m.messageNumber).changes !== 1)
        throw new Error(`buffered message ${m.messageNumber} of "${m.channel}" vanished during the commit`);
      this.entry(m.channel).pending--;
    }
    for (const m of plan.buffered) {
      sql.insertPending.run(m.channel, m.messageNumber, m.messageType, m.messageTime, payloadJson(m), at);
      this.entry(m.channel).pending++;
    }
    this.buffered += plan.buffered.length - plan.released.length;
    return { outcomes: plan.outcomes, events, rockets: plan.rockets };
  }

  /**
   * Appends the events in order, up to INSERT_ROWS a statement. One statement's rows get consecutive
   * positions: with AUTOINCREMENT each new row's rowid is one more than the largest the table ever had,
   * and this connection is the file's only writer.
   */
  private append(messages: readonly RocketMessage[], at: string): StoredEvent[] {
    const events = new Array<StoredEvent>(messages.length);
    for (let from = 0; from < messages.length; from += INSERT_ROWS) {
      const count = Math.min(INSERT_ROWS, messages.length - from);
      const values = new Array<unknown>(count * 6);
      for (let i = 0, v = 0; i < count; i++) {
        const m = messages[from + i] as RocketMessage;
        values[v++] = m.channel;
        values[v++] = m.messageNumber;
        values[v++] = m.messageType;
        values[v++] = m.messageTime;
        values[v++] = payloadJson(m);
        values[v++] = at;
      }
      const last = Number(this.insertStatement(count).run(values).lastInsertRowid);
      for (let i = 0; i < count; i++)
        events[from + i] = toStoredEvent(messages[from + i] as RocketMessage, last - count + 1 + i, at);
      this.head = last;
    }
    return events;
  }

  /**
   * OR ROLLBACK: a broken constraint ends the whole transaction, as any failure of a group does (see
   * `flush`). So an append must run in a top-level transaction (never a nested one, a savepoint) whose
   * every error ends it: a caller that caught the error and went on would be writing outside any. A
   * plain INSERT of several rows may abort alone, so SQLite first copies every page it is about to change
   * into a statement journal, a temporary file once past 64 KiB: measured under `perf`, those copies
   * took about a tenth of the CPU of a `submitMessages` message.
   */
  private insertStatement(rows: number): Database.Statement<unknown[], never> {
    let statement = this.inserts[rows];
    if (statement === undefined) {
      statement = this.db.prepare<unknown[], never>(
        `INSERT OR ROLLBACK INTO events (channel, message_number, message_type, message_time, payload, recorded_at)
         VALUES ${Array.from({ length: rows }, () => '(?, ?, ?, ?, ?, ?)').join(', ')}`,
      );
      this.inserts[rows] = statement;
    }
    return statement;
  }

  /** The cached state of a channel the planner just read (so it is cached) inside the open transaction. */
  private entry(channel: string): ChannelEntry {
    const entry = this.channels.get(channel);
    if (entry === undefined) throw new Error(`channel "${channel}" was written without being read`);
    return entry;
  }

  /**
   * At the end of a transaction that appended events from position `since` on: the rockets it changed
   * join the dirty ones, unless already there (keeping the row the table holds, and the older position).
   */
  private markDirty(since: number): void {
    const at = Date.now();
    for (const [channel, before] of this.touched) {
      if (!this.dirty.has(channel)) this.dirty.set(channel, { before, since, at });
      // Most recently written last: the cache forgets the channels idle longest.
      const entry = this.entry(channel);
      this.channels.delete(channel);
      this.channels.set(channel, entry);
    }
    this.touched.clear();
    this.scheduleProjection();
  }

  /**
   * Arms the timer for the next rockets due, unless none wait or it is armed; armed to wait for them,
   * it is armed again to fire at once when more than `maxDirty` wait.
   */
  private scheduleProjection(): void {
    const { afterMs, maxDirty } = this.tuning;
    const over = this.dirty.size > maxDirty;
    if (this.closing || (this.projectTimer !== undefined && !(over && this.projectWaitsForDue))) return;
    const oldest = this.dirty.values().next().value;
    if (oldest === undefined) return;
    clearTimeout(this.projectTimer);
    const wait = over ? 0 : Math.max(0, oldest.at + afterMs - Date.now());
    this.projectWaitsForDue = wait > 0;
    this.projectTimer = setTimeout(() => {
      this.projectTimer = undefined;
      this.projectDue();
    }, wait);
    this.projectTimer.unref();
  }

  /**
   * Once the oldest dirty rocket is due (changed `afterMs` ago, or more than `maxDirty` wait): the
   * oldest `chunk` of them, due or nearly, in one transaction. Writing only those due would write a
   * group commit's few rockets at a time, and a transaction's cost is mostly the pages it writes.
   */
  private projectDue(): void {
    const { afterMs, chunk } = this.tuning;
    try {
      if (this.stale) this.project();
      else if (this.dirty.size > 0) this.projectTransaction(Math.min(chunk, this.dirty.size));
    } catch {
      // Left dirty, tried again a while later (a read fails with the cause meanwhile).
      if (!this.closing) {
        this.projectWaitsForDue = false;
        this.projectTimer = setTimeout(() => {
          this.projectTimer = undefined;
          this.projectDue();
        }, afterMs);
        this.projectTimer.unref();
      }
      return;
    }
    this.trimCache();
    this.scheduleProjection();
  }

  /**
   * Runs `read` on the rockets table brought up to the log (see project). When the disk is too full for
   * that write (SQLITE_FULL), the table is brought up inside a transaction that `read` runs in and that is
   * then rolled back: SQLite holds such a transaction's pages in its page cache, so it needs no disk unless
   * they outgrow the cache, and the rows stay dirty, to be written once space is freed. So the rockets can
   * still be read while the disk is full; only writes are refused.
   */
  private readProjected<T>(read: () => T): T {
    try {
      this.project();
    } catch (e) {
      if (storeFaultOf(e) !== STORAGE_FULL) throw e;
      this.db.exec('BEGIN');
      try {
        if (this.stale) this.recoverRows();
        this.projectRows(this.dirty.size);
        return read();
      } finally {
        this.db.exec('ROLLBACK');
        // saveRocket kept them up with rows the rollback took back.
        this.statusCounts = undefined;
      }
    }
    return read();
  }

  /**
   * Brings the rockets table up to the log: after a failed transaction (see `forget`), the events after
   * its recorded position; then every dirty rocket, in one transaction. Every read of the table calls it
   * first (through readProjected). Throws if the database does, keeping what it had not written.
   */
  private project(): void {
    if (this.stale) {
      this.recoverTransaction();
      this.head = this.sql.head.get()?.head ?? 0;
      this.stale = false;
    }
    if (this.dirty.size === 0) return;
    this.projectTransaction(this.dirty.size);
    clearTimeout(this.projectTimer);
    this.projectTimer = undefined;
    this.trimCache();
  }

  /**
   * Writes a rocket's row as `after`: an insert for a new rocket, else an update of only the columns
   * that differ from `before`, the row as the table holds it, so that only the indexes of those columns
   * change (every message moves updated_at; a speed change, speed too).
   */
  private saveRocket(before: Rocket | undefined, after: Rocket): void {
    if (before === undefined) this.sql.insertRocket.run(toRow(after));
    else this.updateRocket(before, after);
    const counts = this.statusCounts;
    if (counts !== undefined && before?.status !== after.status) {
      if (before !== undefined) counts.set(before.status, (counts.get(before.status) ?? 0) - 1);
      counts.set(after.status, (counts.get(after.status) ?? 0) + 1);
    }
  }

  private updateRocket(before: Rocket, after: Rocket): void {
    let changed = 0;
    const values: unknown[] = [];
    for (let i = 0; i < ROCKET_FIELDS.length; i++) {
      const field = (ROCKET_FIELDS[i] as (typeof ROCKET_FIELDS)[number])[1];
      if (after[field] !== before[field]) {
        changed |= 1 << i;
        values.push(after[field]);
      }
    }
    if (changed === 0) return;
    let statement = this.updates.get(changed);
    if (statement === undefined) {
      const set = ROCKET_FIELDS.filter((_, i) => (changed & (1 << i)) !== 0).map(([column]) => `${column} = ?`);
      statement = this.db.prepare<unknown[], never>(`UPDATE rockets SET ${set.join(', ')} WHERE channel = ?`);
      this.updates.set(changed, statement);
    }
    if (statement.run(...values, after.channel).changes !== 1)
      throw new Error(`the row of rocket "${after.channel}" vanished during the commit`);
  }

  /**
   * Forgets every cached channel state, after a failed transaction, whose changes it may hold, or a
   * rebuild. The dirty rockets go with it: the next `project` replays the log into the table instead.
   */
  private forget(): void {
    this.channels.clear();
    this.touched.clear();
    this.dirty.clear();
    clearTimeout(this.projectTimer);
    this.projectTimer = undefined;
    this.statusCounts = undefined;
    this.stale = true;
  }

  /** Between transactions: keeps the `cacheSize` channels written most recently, and every dirty one. */
  private trimCache(): void {
    let excess = this.channels.size - this.cacheSize;
    for (const channel of this.channels.keys()) {
      if (excess <= 0) break;
      if (this.dirty.has(channel)) continue;
      this.channels.delete(channel);
      excess--;
    }
  }

  /**
   * How a page filtered by status finds its rows (see StatusPlan). Walking the sort key's index reads
   * about limit × rockets / matching index entries (status is in them: no row is read to skip one);
   * gathering reads every matching row, several times dearer than an entry, and sorts them. So it walks
   * unless the status is rare: below about 5% of 10,000 rockets, 1.5% of 100,000, for a page of 100.
   */
  private statusPlan(q: RocketListQuery): StatusPlan {
    if (q.status === undefined) return 'none';
    // (status, channel) is already in channel order, and in status order for one status.
    if (q.sort === 'channel' || q.sort === 'status' || q.limit === undefined) return 'gather';
    this.statusCounts ??= new Map(this.sql.statusCounts.all().map((r) => [r.status, r.count]));
    let total = 0;
    for (const n of this.statusCounts.values()) total += n;
    const matching = this.statusCounts.get(q.status) ?? 0;
    return WALK_COST_RATIO * matching * matching > q.limit * total ? 'walk' : 'gather';
  }

  private listing(
    sort: RocketSortField,
    order: 'asc' | 'desc',
    plan: StatusPlan,
    paged: boolean,
  ): Database.Statement<Record<string, unknown>, RocketRow> {
    const cacheKey = `${sort} ${order} ${plan} ${paged}`;
    let statement = this.listings.get(cacheKey);
    if (!statement) {
      const key = SORT_COLUMN[sort];
      const filtered = plan !== 'none';
      const [dir, beyond] = order === 'desc' ? ['DESC', '<'] : ['ASC', '>'];
      const where: string[] = [];
      // `+status` is no index term: SQLite then walks the index that gives the order.
      if (plan === 'walk') where.push('+status = @status');
      if (plan === 'gather') where.push('status = @status');
      // Strictly after (key, channel) in the chosen direction; a row value, so the index seeks to it.
      // Sorted and filtered by status, every key is the same and the cursor reduces to its channel.
      if (paged)
        where.push(
          filtered && sort === 'status' ? `channel ${beyond} @channel` : `(${key}, channel) ${beyond} (@key, @channel)`,
        );
      const orderBy = sort === 'channel' ? `channel ${dir}` : `${key} ${dir}, channel ${dir}`;
      statement = this.db.prepare<Record<string, unknown>, RocketRow>(
        `SELECT ${ROCKET_COLUMNS} FROM rockets ${plan === 'gather' ? 'INDEXED BY rockets_by_status' : ''}
         ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
         ORDER BY ${orderBy} LIMIT @limit`,
      );
      this.listings.set(cacheKey, statement);
    }
    return statement;
  }
}
