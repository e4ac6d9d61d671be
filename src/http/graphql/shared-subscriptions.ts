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
  /** The last `SHARED_RECENT` events and their results, oldest overwritten first. */
  private readonly payloads: unknown[] = [];
  private readonly results: Array<PromiseOrValue<ExecutionResult>> = [];
  private next = 0;

  constructor(readonly key: string) {}

  resultOf(payload: unknown, execute: () => PromiseOrValue<ExecutionResult>): PromiseOrValue<ExecutionResult> {
    if (this.subscribers < 2) return execute();
    const i = this.payloads.indexOf(payload);
    if (i >= 0) return this.results[i] as PromiseOrValue<ExecutionResult>;
    const result = execute();
    this.payloads[this.next] = payload;
    this.results[this.next] = result;
    this.next = (this.next + 1) % SHARED_RECENT;
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
 * Results may be shared because nothing in them depends on the subscriber beyond what the key holds; the
 * envelop hooks after this one (error masking, domain error codes) build new results, never change these.
 */
export class SharedSubscriptions {
  private readonly groups = new Map<string, Group>();
  private readonly documentIds = new WeakMap<DocumentNode, number>();
  private documents = 0;

  constructor(private readonly execute: Execute = executeGraphQL) {}

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
      (payload) => group.resultOf(payload, () => this.execute({ ...args, rootValue: payload })),
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
