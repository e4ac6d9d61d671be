import { mapAsyncIterator } from 'graphql-yoga';
import { inCallersTerms } from '../src/domain/errors';
import type { Rocket as RocketState } from '../src/domain/rocket';
import type { RocketPage } from '../src/engine/service';
import type { BufferInfo, Gap } from '../src/store/types';
import { withinBudget } from './budget';
import { builder, optional } from './builder';
import { RocketEvent } from './event';
import { DateTime, SafeInt } from './scalars';

/** A rocket from the store carries its buffer; one from the live feed does not, and it is looked up on demand. */
type RocketModel = RocketState & { readonly buffer?: BufferInfo };

export const RocketStatusEnum = builder.enumType('RocketStatus', {
  values: { FLYING: { value: 'flying' }, EXPLODED: { value: 'exploded' } } as const,
});

const RocketSortField = builder.enumType('RocketSortField', {
  description: 'Text sorts by code point, and a missing value as the empty string; `channel` breaks ties.',
  values: {
    CHANNEL: { value: 'channel' },
    TYPE: { value: 'type' },
    MISSION: { value: 'mission' },
    SPEED: { value: 'speed' },
    STATUS: { value: 'status' },
    LAUNCHED_AT: { value: 'launchedAt' },
    UPDATED_AT: { value: 'updatedAt' },
  } as const,
});

const SortOrder = builder.enumType('SortOrder', {
  values: { ASC: { value: 'asc' }, DESC: { value: 'desc' } } as const,
});

const ReorderBuffer = builder.objectRef<BufferInfo>('ReorderBuffer').implement({
  description: 'Messages of one rocket received ahead of their turn, waiting for the gap before them to fill.',
  fields: (t) => ({
    waitingFor: t.expose('waitingFor', {
      type: SafeInt,
      description: 'The message number the rocket waits for: lastMessageNumber + 1.',
    }),
    count: t.exposeInt('count', { description: 'Messages buffered.' }),
    oldestSince: t.expose('oldestSince', {
      type: DateTime,
      nullable: true,
      description: 'When the oldest buffered message was received; null when nothing is buffered.',
    }),
  }),
});

export const Rocket = builder.objectRef<RocketModel>('Rocket').implement({
  description: "A rocket's state: a pure function of its applied messages, with times taken from the messages.",
  fields: (t) => ({
    channel: t.exposeString('channel', { description: 'The rocket: its channel id.' }),
    type: t.exposeString('type', { nullable: true, description: 'Null until a RocketLaunched is applied.' }),
    mission: t.exposeString('mission', { nullable: true }),
    speed: t.exposeFloat('speed', {
      description: 'Never negative; an increase past 9007199254740991 (2^53 - 1) holds it there.',
    }),
    status: t.expose('status', { type: RocketStatusEnum }),
    explodedReason: t.exposeString('explodedReason', { nullable: true }),
    launchedAt: t.expose('launchedAt', { type: DateTime, nullable: true }),
    updatedAt: t.expose('updatedAt', {
      type: DateTime,
      description: 'Message time of the latest applied message, whether or not it changed a field.',
    }),
    lastMessageNumber: t.expose('lastMessageNumber', { type: SafeInt }),
    buffer: t.field({
      type: ReorderBuffer,
      description: 'What the reorder buffer holds for this rocket now.',
      // Synchronous when the rocket came with its buffer (every rocket from the store): no promise per rocket.
      resolve: (r, _args, { service }) => r.buffer ?? service.rocket(r.channel).then((v) => v.buffer),
    }),
    events: t.field({
      type: [RocketEvent],
      description: [
        'Applied events of this rocket, in message number order, up to its `lastMessageNumber`: the events of',
        'the state shown (with `asOf`, none after that point).',
      ].join('\n'),
      args: {
        after: t.arg({ type: SafeInt, description: 'Only events with a message number above this.' }),
        first: t.arg.int({ description: 'At most this many (1 to 10000); 10000 when left out.' }),
      },
      resolve: (r, args, context, info) =>
        withinBudget(context, info, optional(args.first), (limit) =>
          inCallersTerms(
            context.service.events({ channel: r.channel, afterMessageNumber: optional(args.after), limit }),
            { afterMessageNumber: 'after', limit: 'first' },
          ).then((events) => upTo(events, r.lastMessageNumber)),
        ),
    }),
  }),
});

/**
 * A page of a rocket's events cut at the state it goes with: a past state (`asOf`), or a present one that
 * was read before a later event was applied.
 */
function upTo<E extends { readonly messageNumber: number }>(events: E[], lastMessageNumber: number): E[] {
  const last = events[events.length - 1];
  return last === undefined || last.messageNumber <= lastMessageNumber
    ? events
    : events.filter((e) => e.messageNumber <= lastMessageNumber);
}

/** An edge: a rocket of a page, whose cursor the page makes only when a client asks for it. */
interface Edge {
  readonly page: RocketPage;
  readonly node: RocketPage['rockets'][number];
}

const RocketEdge = builder.objectRef<Edge>('RocketEdge').implement({
  fields: (t) => ({
    cursor: t.string({ resolve: (e) => e.page.cursorOf(e.node) }),
    node: t.field({ type: Rocket, resolve: (e) => e.node }),
  }),
});

/** The first or last cursor of a page, or null for an empty page. */
const cursorAt = (p: RocketPage, i: number): string | null => {
  const r = p.rockets[i];
  return r ? p.cursorOf(r) : null;
};

const PageInfo = builder.objectRef<RocketPage>('PageInfo').implement({
  description: 'Relay page info. Pagination is forward only (`first`/`after`), so `hasPreviousPage` is always false.',
  fields: (t) => ({
    hasNextPage: t.boolean({ resolve: (p) => p.nextCursor !== null }),
    hasPreviousPage: t.boolean({ resolve: () => false }),
    startCursor: t.string({ nullable: true, resolve: (p) => cursorAt(p, 0) }),
    endCursor: t.string({ nullable: true, resolve: (p) => cursorAt(p, p.rockets.length - 1) }),
  }),
});

const RocketConnection = builder.objectRef<RocketPage>('RocketConnection').implement({
  fields: (t) => ({
    edges: t.field({ type: [RocketEdge], resolve: (p) => p.rockets.map((node) => ({ page: p, node })) }),
    nodes: t.field({ type: [Rocket], resolve: (p) => p.rockets }),
    pageInfo: t.field({ type: PageInfo, resolve: (p) => p }),
  }),
});

const RocketAsOfInput = builder.inputType('RocketAsOfInput', {
  description: "A point in a rocket's history: exactly one of the two.",
  isOneOf: true,
  fields: (t) => ({
    messageNumber: t.field({
      type: SafeInt,
      description: 'Right after this message was applied; NOT_FOUND while it is not.',
    }),
    time: t.field({
      type: DateTime,
      description: 'As the service held it at this server time (events recorded up to then).',
    }),
  }),
});

builder.queryField('rocket', (t) =>
  t.field({
    type: Rocket,
    nullable: true,
    description: [
      'One rocket; null with a NOT_FOUND error when no message of it has been applied.',
      'With `asOf`, its state as it was at that point, folded from the event log (time travel); `buffer` is',
      'always the present one.',
    ].join('\n'),
    args: {
      channel: t.arg.string({ required: true }),
      asOf: t.arg({ type: RocketAsOfInput }),
    },
    resolve: (_root, { channel, asOf }, { service }) =>
      asOf
        ? service.rocketAsOf(channel, {
            messageNumber: optional(asOf.messageNumber),
            time: asOf.time?.toISOString(),
          })
        : service.rocket(channel),
  }),
);

builder.queryField('rockets', (t) =>
  t.field({
    type: RocketConnection,
    description: 'Rockets in the chosen order, a page at a time: pass `pageInfo.endCursor` as `after` for the next.',
    args: {
      sort: t.arg({ type: RocketSortField, defaultValue: 'channel' }),
      order: t.arg({ type: SortOrder, defaultValue: 'asc' }),
      status: t.arg({ type: RocketStatusEnum, description: 'Only rockets with this status.' }),
      first: t.arg.int({ description: 'At most this many (1 to 10000); every rocket when left out.' }),
      after: t.arg.string({ description: 'A cursor from an earlier page of the same sort.' }),
    },
    resolve: (_root, args, { service }) =>
      inCallersTerms(
        service.rockets({
          sort: optional(args.sort),
          order: optional(args.order),
          status: optional(args.status),
          limit: optional(args.first),
          after: optional(args.after),
        }),
        { limit: 'first' },
      ),
  }),
);

builder.subscriptionField('rocketUpdated', (t) =>
  t.field({
    type: Rocket,
    description: [
      'The new state of a rocket after each commit that changed it; every rocket when `channel` is left out.',
      'A slow subscriber gets only the latest state of each rocket; if even that overflows its bounded buffer,',
      'the subscription ends with a FELL_BEHIND error (the socket and other subscriptions stay open): resubscribe',
      'and read `rocket` or `rockets` to resynchronise. A message that is only buffered changes no state and',
      'sends no update: `buffer` is read as each update is sent, and read `rocket` for it in between. As an',
      'event stream (server-sent events), each update carries as its `id` the position of its last event in',
      'the commit that made it, and a client that reconnects with `Last-Event-ID` (as EventSource does) first',
      'gets the state of each rocket that changed after it, then the live updates.',
    ].join('\n'),
    args: { channel: t.arg.string({ description: 'Only this rocket.' }) },
    subscribe: async (_root, args, { service, resume }) => {
      const channel = optional(args.channel);
      // A reconnecting event stream gets what changed after the last position it received, then goes on.
      const updates =
        resume?.after === undefined
          ? service.rocketUpdates(channel)
          : await service.rocketUpdatesResumed(channel, resume.after);
      if (resume === undefined) return updates;
      return mapAsyncIterator(updates, (u) => {
        if (u.position !== undefined) resume.seen(u.position);
        return u;
      });
    },
    resolve: (u) => u.rocket,
  }),
);

const GapRef = builder.objectRef<Gap>('Gap').implement({
  description:
    'An open gap of the reorder buffer: a channel whose messages wait for a missing one. Includes channels none of whose messages is applied yet (no rocket).',
  fields: (t) => ({
    channel: t.exposeString('channel'),
    waitingFor: t.expose('waitingFor', {
      type: SafeInt,
      description: 'The missing message number the channel waits for.',
    }),
    count: t.exposeInt('count', { description: 'Messages buffered behind the gap.' }),
    oldestSince: t.expose('oldestSince', {
      type: DateTime,
      description: 'When the oldest of them was received (server time); GAP_TIMEOUT counts from here.',
    }),
    rocket: t.field({
      type: Rocket,
      nullable: true,
      description: 'The rocket; null while none of its messages is applied.',
      resolve: async (g, _args, { service }) => (await service.findRocket(g.channel)) ?? null,
    }),
  }),
});

builder.queryField('gaps', (t) =>
  t.field({
    type: [GapRef],
    description: 'Open gaps of the reorder buffer, oldest first (as REST `GET /gaps`).',
    args: { first: t.arg.int({ description: 'At most this many (1 to 10000); 10000 when left out.' }) },
    resolve: (_root, args, { service }) =>
      inCallersTerms(service.gaps({ limit: optional(args.first) }), { limit: 'first' }),
  }),
);
