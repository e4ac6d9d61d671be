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

/** Events read so far by the operation whose context this is. */
const spent = new WeakMap<object, number>();

/**
 * Reads a field's events within what is left of the operation's EVENTS_PER_OPERATION, reserved before the
 * read: at most one more than is left, and refuses the field (BAD_USER_INPUT) if that many came. A
 * subscription is not counted: each of its executions resolves the one event or rocket that came.
 */
export async function withinBudget(
  context: object,
  info: GraphQLResolveInfo,
  first: number | undefined,
  read: (limit: number) => Promise<StoredEvent[]>,
): Promise<StoredEvent[]> {
  if (info.operation.operation === OperationTypeNode.SUBSCRIPTION) return read(first ?? MAX_PAGE);
  const left = EVENTS_PER_OPERATION - (spent.get(context) ?? 0);
  // A `first` out of range is passed as given, for the service to refuse it by name.
  const inRange = first === undefined || (Number.isSafeInteger(first) && first >= 1 && first <= MAX_PAGE);
  const limit = inRange ? Math.min(first ?? MAX_PAGE, left + 1) : first;
  // Reserved before the read: sibling fields start together, and each must see what the others may read.
  const reserved = inRange ? limit : 0;
  spent.set(context, EVENTS_PER_OPERATION - left + reserved);
  const events = await read(limit);
  spent.set(context, (spent.get(context) ?? 0) - reserved + events.length);
  if (events.length > left)
    throw new ValidationError([
      {
        field: 'events',
        problem: `one operation reads at most ${EVENTS_PER_OPERATION} events over all its events fields: page them with first and after`,
      },
    ]);
  return events;
}
