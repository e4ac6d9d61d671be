import { OperationTypeNode, type GraphQLResolveInfo } from 'graphql';
import { ValidationError } from '../src/domain/errors';
import { MAX_PAGE } from '../src/engine/service';
import type { StoredEvent } from '../src/store/types';

/**
 * Events one query or mutation may read in all, over every `events` field it selects: one page's worth.
 * The cost limit cannot bound them, as a `first` left out or given as a variable counts once: without
 * this, `rockets { nodes { events { … } } }` would read up to 10,000 events of every rocket (the whole
 * log), fifteen aliases of it in one request, and hold the event loop for seconds.
 */
export const EVENTS_PER_OPERATION = MAX_PAGE;

/** The count of one operation: events read or reserved, the reads under way, and the fields waiting. */
interface Budget {
  /** Events read by fields that are done, plus the reservations of the reads under way. */
  used: number;
  inFlight: number;
  /** Fields that found too little left while other reads were under way, first come first. */
  readonly waiting: Array<{ readonly want: number; readonly start: (r: Reservation) => void }>;
}

/** What a field may read: `limit` events, `left` of which fit (`limit` is `left + 1` when it is short). */
interface Reservation {
  readonly limit: number;
  readonly left: number;
}

/** The budget of each operation, by its context; of each execution of a subscription, by `executionOf`. */
const budgets = new WeakMap<object, Budget>();
/** A key for each execution of a subscription: one per event or rocket it resolves, within its context. */
const executions = new WeakMap<object, WeakMap<object, object>>();

/**
 * What a field's reads are counted against: its operation (its context) for a query, and for a subscription
 * the execution of the one event or rocket that came (its root value, within its context), so that each has
 * the budget of a query, however long the subscription lives.
 */
function executionOf(context: object, info: GraphQLResolveInfo): object {
  const root: unknown = info.rootValue;
  if (info.operation.operation !== OperationTypeNode.SUBSCRIPTION || typeof root !== 'object' || root === null)
    return context;
  let byRoot = executions.get(context);
  if (byRoot === undefined) executions.set(context, (byRoot = new WeakMap()));
  let key = byRoot.get(root);
  if (key === undefined) byRoot.set(root, (key = {}));
  return key;
}

/**
 * Reserves up to `want` events, or returns undefined while that would be guessing: less is left than
 * `want` and reads under way may yet give back what they reserved and did not read. With no read under
 * way, what is left is exact, and a short field reserves one more than that, to learn whether it is over.
 * A limit of 0 says the operation is over already: the field is refused without a read.
 */
function reserve(budget: Budget, want: number): Reservation | undefined {
  const left = EVENTS_PER_OPERATION - budget.used;
  if (left < want && budget.inFlight > 0) return undefined;
  const limit = left >= want ? want : Math.max(left + 1, 0);
  budget.used += limit;
  if (limit > 0) budget.inFlight += 1;
  return { limit, left };
}

/** Starts the waiting fields, first come first, while the one at the head can start. */
function startWaiting(budget: Budget): void {
  for (let head = budget.waiting[0]; head !== undefined; head = budget.waiting[0]) {
    const reservation = reserve(budget, head.want);
    if (reservation === undefined) return;
    budget.waiting.shift();
    head.start(reservation);
  }
}

const overBudget = (): ValidationError =>
  new ValidationError([
    {
      field: 'events',
      problem: `one operation reads at most ${EVENTS_PER_OPERATION} events over all its events fields: page them with first and after`,
    },
  ]);

/**
 * Reads a field's events within what is left of the operation's EVENTS_PER_OPERATION, and refuses the
 * field (BAD_USER_INPUT) if what the operation reads would go beyond it. Each read reserves its `first`
 * before it starts, so the events read stay bounded while sibling fields (an alias each, or the rockets
 * of a listing) read together: fields that fit in what is left start at once, and a field that does not
 * waits for the reads under way to end and give back what they did not read. So whether a field is
 * refused depends on what the operation reads, not on which sibling started first, and the operation
 * reads at most one event beyond the budget: the one that shows it is over. Each execution of a
 * subscription (the one event or rocket that came) has a budget of its own: one subscription could
 * otherwise read 10,000 events over and over, once for every update.
 */
export async function withinBudget(
  context: object,
  info: GraphQLResolveInfo,
  first: number | undefined,
  read: (limit: number) => Promise<StoredEvent[]>,
): Promise<StoredEvent[]> {
  // A `first` out of range is passed as given, for the service to refuse it by name.
  if (first !== undefined && !(Number.isSafeInteger(first) && first >= 1 && first <= MAX_PAGE)) return read(first);
  const key = executionOf(context, info);
  const budget = budgets.get(key) ?? { used: 0, inFlight: 0, waiting: [] };
  budgets.set(key, budget);
  const want = first ?? MAX_PAGE;
  const { limit, left } =
    reserve(budget, want) ?? (await new Promise<Reservation>((start) => budget.waiting.push({ want, start })));
  if (limit === 0) throw overBudget();
  let events: StoredEvent[] = [];
  try {
    events = await read(limit);
  } finally {
    // Gives back what was reserved and not read (all of it if the read failed), then lets waiting fields on.
    budget.used -= limit - events.length;
    budget.inFlight -= 1;
    startWaiting(budget);
  }
  if (events.length > left) throw overBudget();
  return events;
}
