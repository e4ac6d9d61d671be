import {
  createSourceEventStream,
  execute as executeGraphQL,
  getOperationAST,
  locatedError,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
} from 'graphql';
import { isAsyncIterable, mapAsyncIterator, type Plugin, type PromiseOrValue } from 'graphql-yoga';

/** How many recent events each group remembers the result of: subscribers a few events apart still share. */
export const SHARED_RECENT = 8;

type Execute = (args: ExecutionArgs) => PromiseOrValue<ExecutionResult>;

/**
 * The live subscriptions that asked the same question (document, operation name, variables and write
 * access), and the results of the last few events executed for them. Each subscription keeps its own source
 * stream and bounded buffer; only the execution of an event they all receive is shared.
 */
class Group {
  subscribers = 0;
  /** The last `SHARED_RECENT` events, the stamp of the store each was executed against, and their results. */
  private readonly payloads: unknown[] = [];
  private readonly stamps: number[] = [];
  private readonly results: Array<PromiseOrValue<ExecutionResult>> = [];
  private next = 0;

  constructor(readonly key: string) {}

  resultOf(
    payload: unknown,
    stamp: number,
    execute: () => PromiseOrValue<ExecutionResult>,
  ): PromiseOrValue<ExecutionResult> {
    if (this.subscribers < 2) return execute();
    let i = this.payloads.indexOf(payload);
    if (i >= 0 && this.stamps[i] === stamp) return this.results[i] as PromiseOrValue<ExecutionResult>;
    // Executed again for a subscriber that got to it after the store changed: it reads the store as it is.
    if (i < 0) {
      i = this.next;
      this.next = (this.next + 1) % SHARED_RECENT;
    }
    const result = execute();
    this.payloads[i] = payload;
    this.stamps[i] = stamp;
    this.results[i] = result;
    return result;
  }
}

/**
 * Executes each live event once for all the subscriptions of the same operation and variables, instead of
 * once per subscriber: ten dashboards on every rocket cost one execution of each event, not ten. The store
 * publishes one object per event (or rocket state) to every subscriber's feed, so an event is recognised by
 * identity. A group remembers only its last few events: memory grows with the subscriptions, not with the
 * fleet, and a subscriber that lags further behind executes its events itself, as before.
 *
 * Results may be shared because nothing in them depends on the subscriber beyond what the key holds, and
 * the store they read: a result is shared only while `version()` (`RocketService.readVersion`) stays the
 * same, so a subscriber that lags behind a commit executes the event itself and reads, say, a `buffer`
 * as it is when the update is sent. Where there is no version (reads that other instances change), a result
 * is shared within the turn of the event loop it was made in: the subscribers that take an event as it is
 * published. The envelop hooks after this one (error masking, domain error codes) build new results, never
 * change these.
 */
export class SharedSubscriptions {
  private readonly groups = new Map<string, Group>();
  private readonly documentIds = new WeakMap<DocumentNode, number>();
  private documents = 0;
  /** Turns of the event loop counted so far, while results are stamped with them (`stamp`). */
  private turns = 0;
  private turning = false;

  constructor(
    private readonly execute: Execute = executeGraphQL,
    private readonly version: () => number | undefined = () => undefined,
  ) {}

  /** What a result is stamped with: the store's version, or, without one, the turn of the event loop. */
  private stamp(): number {
    const version = this.version();
    if (version !== undefined) return version;
    if (!this.turning) {
      this.turning = true;
      setImmediate(() => {
        this.turns++;
        this.turning = false;
      });
    }
    return -1 - this.turns;
  }

  /** Open groups (questions with a live subscription), for tests. */
  get size(): number {
    return this.groups.size;
  }

  /**
   * Subscribes as graphql-js does (the source stream from the field's `subscribe`, then each event executed
   * with it as the root value), sharing each event's execution within the subscription's group. A question
   * that yields no stream (its variables do not coerce, or `subscribe` failed) is handed to `fallback`, the
   * stock subscribe, so that its errors read exactly as they always have: those failures happen before any
   * stream exists, so asking again repeats them.
   */
  async subscribe(
    args: ExecutionArgs,
    fallback: (args: ExecutionArgs) => PromiseOrValue<AsyncIterableIterator<ExecutionResult> | ExecutionResult>,
  ): Promise<AsyncIterableIterator<ExecutionResult> | ExecutionResult> {
    // Keyed before any stream exists: a key that cannot be made (variables nested too deep for a Node
    // whose JSON.stringify recurses, 24 and before) must not leave a stream behind that nothing would ever
    // return. Such a question is not shared.
    let key: string;
    try {
      key = this.keyOf(args);
    } catch {
      return fallback(args);
    }
    const source = await createSourceEventStream(args);
    if (!isAsyncIterable(source)) return fallback(args);
    const operation = getOperationAST(args.document, args.operationName);
    const group = this.join(key);
    let joined = true;
    const leave = (): void => {
      if (!joined) return;
      joined = false;
      this.leave(group);
    };
    return mapAsyncIterator(
      source,
      (payload) => group.resultOf(payload, this.stamp(), () => this.execute({ ...args, rootValue: payload })),
      (error: unknown) => {
        leave();
        throw locatedError(error, operation ? [operation] : undefined);
      },
      leave,
    );
  }

  /** The envelop plugin that routes every subscription through `subscribe`. */
  plugin(): Plugin {
    return {
      onSubscribe: ({ subscribeFn, setSubscribeFn }) => {
        const stock = subscribeFn as (
          args: ExecutionArgs,
        ) => PromiseOrValue<AsyncIterableIterator<ExecutionResult> | ExecutionResult>;
        setSubscribeFn((args: ExecutionArgs) => this.subscribe(args, stock));
      },
    };
  }

  private keyOf(args: ExecutionArgs): string {
    let id = this.documentIds.get(args.document);
    if (id === undefined) this.documentIds.set(args.document, (id = ++this.documents));
    const canWrite = (args.contextValue as { canWrite?: unknown } | undefined)?.canWrite === true;
    return `${id}\n${args.operationName ?? ''}\n${canWrite}\n${JSON.stringify(args.variableValues ?? null)}`;
  }

  private join(key: string): Group {
    let group = this.groups.get(key);
    if (group === undefined) this.groups.set(key, (group = new Group(key)));
    group.subscribers++;
    return group;
  }

  private leave(group: Group): void {
    if (--group.subscribers === 0 && this.groups.get(group.key) === group) this.groups.delete(group.key);
  }
}
