import { mapAsyncIterator } from 'graphql-yoga';
import type { EventType, PayloadByType } from '../src/domain/message';
import { inCallersTerms } from '../src/domain/errors';
import type { StoredEvent } from '../src/store/types';
import { withinBudget } from './budget';
import { builder, optional } from './builder';
import { DateTime, SafeInt } from './scalars';

const SENDER_TYPES = {
  ROCKET_LAUNCHED: { value: 'RocketLaunched' },
  ROCKET_SPEED_INCREASED: { value: 'RocketSpeedIncreased' },
  ROCKET_SPEED_DECREASED: { value: 'RocketSpeedDecreased' },
  ROCKET_MISSION_CHANGED: { value: 'RocketMissionChanged' },
  ROCKET_EXPLODED: { value: 'RocketExploded' },
} as const;

export const MessageTypeEnum = builder.enumType('MessageType', {
  description: "The kind of a message a sender sends: `metadata.messageType` of the seed's envelope.",
  values: SENDER_TYPES,
});

const EventTypeEnum = builder.enumType('EventType', {
  description: 'The kind of an event in the log: a message type, or MESSAGE_SKIPPED, which only the server records.',
  values: {
    ...SENDER_TYPES,
    MESSAGE_SKIPPED: {
      value: 'MessageSkipped',
      description:
        'The gap policy (GAP_TIMEOUT) gave up waiting for this number; its messageTime is the server time of the skip.',
    },
  } as const,
});

/** A payload with its kind: two kinds share a shape (`{by}`), so the union resolves by the tag. */
type TaggedPayload = { [K in EventType]: { readonly kind: K; readonly payload: PayloadByType[K] } }[EventType];
type Tagged<K extends EventType> = Extract<TaggedPayload, { kind: K }>;

const RocketLaunched = builder.objectRef<Tagged<'RocketLaunched'>>('RocketLaunched').implement({
  description: 'The rocket launched. A second launch of the same rocket is recorded but changes nothing.',
  fields: (t) => ({
    type: t.string({ resolve: (p) => p.payload.type }),
    launchSpeed: t.float({ resolve: (p) => p.payload.launchSpeed }),
    mission: t.string({ resolve: (p) => p.payload.mission }),
  }),
});

const RocketSpeedIncreased = builder.objectRef<Tagged<'RocketSpeedIncreased'>>('RocketSpeedIncreased').implement({
  fields: (t) => ({ by: t.float({ resolve: (p) => p.payload.by }) }),
});

const RocketSpeedDecreased = builder.objectRef<Tagged<'RocketSpeedDecreased'>>('RocketSpeedDecreased').implement({
  description: 'A decrease below zero stops the rocket at speed 0.',
  fields: (t) => ({ by: t.float({ resolve: (p) => p.payload.by }) }),
});

const RocketMissionChanged = builder.objectRef<Tagged<'RocketMissionChanged'>>('RocketMissionChanged').implement({
  fields: (t) => ({ newMission: t.string({ resolve: (p) => p.payload.newMission }) }),
});

const RocketExploded = builder.objectRef<Tagged<'RocketExploded'>>('RocketExploded').implement({
  description: 'The rocket exploded: later messages are recorded but change nothing, and the first reason stands.',
  fields: (t) => ({ reason: t.string({ resolve: (p) => p.payload.reason }) }),
});

const MessageSkipped = builder.objectRef<Tagged<'MessageSkipped'>>('MessageSkipped').implement({
  description: 'Recorded by the server in place of a message that never came within GAP_TIMEOUT.',
  fields: (t) => ({ reason: t.string({ resolve: (p) => p.payload.reason }) }),
});

export const MessagePayload = builder.unionType('MessagePayload', {
  description: 'The body of an event; the member type is named after the event type.',
  types: [
    RocketLaunched,
    RocketSpeedIncreased,
    RocketSpeedDecreased,
    RocketMissionChanged,
    RocketExploded,
    MessageSkipped,
  ],
  resolveType: (p) => p.kind,
});

export const RocketEvent = builder.objectRef<StoredEvent>('RocketEvent').implement({
  description: 'An applied message (or a skipped number), as the event log holds it.',
  fields: (t) => ({
    position: t.expose('position', {
      type: SafeInt,
      description: 'Global position in the log: grows in commit order, with no gaps.',
    }),
    channel: t.exposeString('channel'),
    messageNumber: t.expose('messageNumber', { type: SafeInt }),
    messageType: t.expose('messageType', { type: EventTypeEnum }),
    messageTime: t.exposeString('messageTime', {
      description:
        "The sender's RFC 3339 timestamp, exactly as received (its offset and precision are kept, so this is text); for MESSAGE_SKIPPED, the server time of the skip.",
    }),
    recordedAt: t.expose('recordedAt', { type: DateTime, description: 'When the server committed it.' }),
    payload: t.field({
      type: MessagePayload,
      resolve: (e) => ({ kind: e.messageType, payload: e.payload }) as TaggedPayload,
    }),
  }),
});

builder.queryField('events', (t) =>
  t.field({
    type: [RocketEvent],
    description: 'Applied events in position order, of one rocket or of all (for one rocket, that is number order).',
    args: {
      channel: t.arg.string({ description: 'Only this rocket; every rocket when left out.' }),
      after: t.arg({
        type: SafeInt,
        description: 'Only events with a position above this (not with `afterMessageNumber`).',
      }),
      afterMessageNumber: t.arg({
        type: SafeInt,
        description:
          'Only events of `channel` with a message number above this (refused without `channel`, and with `after`).',
      }),
      first: t.arg.int({ description: 'At most this many (1 to 10000); 10000 when left out.' }),
    },
    resolve: (_root, args, context, info) =>
      withinBudget(context, info, optional(args.first), (limit) =>
        inCallersTerms(
          context.service.events({
            channel: optional(args.channel),
            afterPosition: optional(args.after),
            afterMessageNumber: optional(args.afterMessageNumber),
            limit,
          }),
          { limit: 'first' },
        ),
      ),
  }),
);

builder.subscriptionField('eventAppended', (t) =>
  t.field({
    type: RocketEvent,
    description: [
      'Catch-up, then live: every event after the given position (or message number of `channel`), first from',
      'the store and then as it is appended, with no gap and no duplicate at the switch. A subscriber that',
      'falls behind the live buffer is moved back to reading the store, so it never misses an event. To',
      'resume after a disconnect, subscribe again with `after` set to the last position received. As an event',
      'stream (server-sent events), each event carries its position as its `id`, and a client that reconnects',
      'with `Last-Event-ID` (as EventSource does) goes on after it.',
    ].join('\n'),
    args: {
      channel: t.arg.string({ description: 'Only this rocket; every rocket when left out.' }),
      after: t.arg({
        type: SafeInt,
        description:
          'Start after this position; 0 (the start of the log) when left out (not with `afterMessageNumber`).',
      }),
      afterMessageNumber: t.arg({
        type: SafeInt,
        description: 'Start after this message number of `channel` (refused without `channel`, and with `after`).',
      }),
    },
    subscribe: async (_root, args, { service, resume }) => {
      const asked = {
        channel: optional(args.channel),
        afterPosition: optional(args.after),
        afterMessageNumber: optional(args.afterMessageNumber),
      };
      // A reconnecting event stream goes on after the last position it received, whatever it first asked.
      const events =
        resume?.after === undefined ? service.eventsSince(asked) : await service.eventsResumed(asked, resume.after);
      if (resume === undefined) return events;
      return mapAsyncIterator(events, (e) => {
        resume.seen(e.position);
        return e;
      });
    },
    resolve: (e) => e,
  }),
);
