import {
  ValidationError,
  isBufferFullError,
  isConflictError,
  isDomainError,
  isOverloadedError,
  isValidationError,
  type DomainError,
  type Issue,
  UnauthenticatedError,
} from '../src/domain/errors';
import { validateEnvelope, type MessageType } from '../src/domain/message';
import type { RocketService, SubmitResult } from '../src/engine/service';
import { builder } from './builder';
import { MessageTypeEnum } from './event';
import { Rocket } from './rocket';
import { SafeInt } from './scalars';

const WRITE_NEEDS_TOKEN = 'mutations need Authorization: Bearer <INGEST_TOKEN> (over graphql-ws: in connection_init)';

/** Largest batch `submitMessages` takes in one call. */
export const MAX_BATCH = 1000;

/** The field of MessagePayloadInput that carries each message type's payload. */
const PAYLOAD_FIELD = {
  RocketLaunched: 'rocketLaunched',
  RocketSpeedIncreased: 'rocketSpeedIncreased',
  RocketSpeedDecreased: 'rocketSpeedDecreased',
  RocketMissionChanged: 'rocketMissionChanged',
  RocketExploded: 'rocketExploded',
} as const satisfies Record<MessageType, string>;
type PayloadField = (typeof PAYLOAD_FIELD)[MessageType];

const ENUM_NAME: Record<MessageType, string> = {
  RocketLaunched: 'ROCKET_LAUNCHED',
  RocketSpeedIncreased: 'ROCKET_SPEED_INCREASED',
  RocketSpeedDecreased: 'ROCKET_SPEED_DECREASED',
  RocketMissionChanged: 'ROCKET_MISSION_CHANGED',
  RocketExploded: 'ROCKET_EXPLODED',
};

const MessageMetadataInput = builder.inputType('MessageMetadataInput', {
  description: "The seed's envelope metadata.",
  fields: (t) => ({
    channel: t.string({ required: true, description: 'The rocket: its channel id (1 to 200 characters).' }),
    messageNumber: t.field({
      type: SafeInt,
      required: true,
      description: 'Position of the message in its channel, from 1; messages may arrive in any order.',
    }),
    messageTime: t.string({
      required: true,
      description: 'RFC 3339 timestamp such as 2022-02-02T19:39:05.86337+01:00, stored exactly as sent.',
    }),
    messageType: t.field({
      type: MessageTypeEnum,
      required: true,
      description: 'Must match the one field given in `message`.',
    }),
  }),
});

const RocketLaunchedInput = builder.inputType('RocketLaunchedInput', {
  fields: (t) => ({
    type: t.string({ required: true }),
    launchSpeed: t.float({ required: true, description: 'Not negative; at most 9007199254740991 (2^53 − 1).' }),
    mission: t.string({ required: true }),
  }),
});
const RocketSpeedIncreasedInput = builder.inputType('RocketSpeedIncreasedInput', {
  fields: (t) => ({
    by: t.float({ required: true, description: 'Not negative; at most 9007199254740991 (2^53 − 1).' }),
  }),
});
const RocketSpeedDecreasedInput = builder.inputType('RocketSpeedDecreasedInput', {
  fields: (t) => ({
    by: t.float({ required: true, description: 'Not negative; at most 9007199254740991 (2^53 − 1).' }),
  }),
});
const RocketMissionChangedInput = builder.inputType('RocketMissionChangedInput', {
  fields: (t) => ({ newMission: t.string({ required: true }) }),
});
const RocketExplodedInput = builder.inputType('RocketExplodedInput', {
  fields: (t) => ({ reason: t.string({ required: true }) }),
});

const MessagePayloadInput = builder.inputType('MessagePayloadInput', {
  description: 'The message body: exactly one field, the one named after `metadata.messageType`.',
  isOneOf: true,
  fields: (t) => ({
    [PAYLOAD_FIELD.RocketLaunched]: t.field({ type: RocketLaunchedInput }),
    [PAYLOAD_FIELD.RocketSpeedIncreased]: t.field({ type: RocketSpeedIncreasedInput }),
    [PAYLOAD_FIELD.RocketSpeedDecreased]: t.field({ type: RocketSpeedDecreasedInput }),
    [PAYLOAD_FIELD.RocketMissionChanged]: t.field({ type: RocketMissionChangedInput }),
    [PAYLOAD_FIELD.RocketExploded]: t.field({ type: RocketExplodedInput }),
  }),
});

const MessageEnvelopeInput = builder.inputType('MessageEnvelopeInput', {
  description: "The seed's envelope: `{metadata, message}`.",
  fields: (t) => ({
    metadata: t.field({ type: MessageMetadataInput, required: true }),
    message: t.field({ type: MessagePayloadInput, required: true }),
  }),
});

type EnvelopeInput = typeof MessageEnvelopeInput.$inferInput;

/** Domain issues name payload fields `message.<name>`; here they sit one level deeper, under the oneOf field. */
const locate = (issues: readonly Issue[], field: PayloadField): Issue[] =>
  issues.map((i) => (i.field.startsWith('message.') ? { ...i, field: `message.${field}${i.field.slice(7)}` } : i));

/**
 * The seed's wire envelope for a GraphQL input, so the service validates and sequences it exactly as it does a
 * REST body. Throws ValidationError when `metadata.messageType` and the payload field given disagree.
 */
function toEnvelope(input: EnvelopeInput): { envelope: unknown; field: PayloadField } {
  const { messageType } = input.metadata;
  const expected = PAYLOAD_FIELD[messageType];
  const given = Object.keys(input.message) as PayloadField[];
  const body: unknown = (input.message as Partial<Record<PayloadField, unknown>>)[expected];
  if (given.length !== 1 || body === undefined || body === null) {
    // The metadata's own problems too, as REST names every problem of a body at once.
    const metadata = validateEnvelope({ metadata: input.metadata, message: {} });
    throw new ValidationError([
      ...(metadata.ok ? [] : metadata.issues.filter((i) => i.field.startsWith('metadata'))),
      {
        field: 'message',
        problem: `must hold the ${expected} payload, since metadata.messageType is ${ENUM_NAME[messageType]}; got ${given.join(', ')}`,
      },
    ]);
  }
  // Not copied: validation reads own fields only and builds the message anew.
  return { envelope: { metadata: input.metadata, message: body }, field: expected };
}

/** A domain error of an envelope, with issues named by their GraphQL input path. */
const located = (e: DomainError, field: PayloadField): DomainError =>
  isValidationError(e) ? new ValidationError(locate(e.issues, field)) : e;

/** One envelope through the service, with issues named by their GraphQL input path. */
async function submitOne(service: RocketService, input: EnvelopeInput): Promise<SubmitResult> {
  const { envelope, field } = toEnvelope(input);
  try {
    return await service.submit(envelope);
  } catch (e) {
    throw isDomainError(e) ? located(e, field) : e;
  }
}

/** A batch through the service in one pass, each refused envelope told as its error. */
async function submitBatch(
  service: RocketService,
  inputs: readonly EnvelopeInput[],
): Promise<Array<SubmitResult | Refused>> {
  const results = new Array<SubmitResult | Refused>(inputs.length);
  const envelopes: unknown[] = [];
  const fields: PayloadField[] = [];
  const at: number[] = [];
  inputs.forEach((input, i) => {
    try {
      const { envelope, field } = toEnvelope(input);
      envelopes.push(envelope);
      fields.push(field);
      at.push(i);
    } catch (e) {
      if (!isDomainError(e)) throw e;
      results[i] = { refused: e };
    }
  });
  (await service.submitMany(envelopes)).forEach((r, k) => {
    results[at[k] as number] = isDomainError(r) ? { refused: located(r, fields[k] as PayloadField) } : r;
  });
  return results;
}

const SubmitStatusEnum = builder.enumType('SubmitStatus', {
  values: {
    APPLIED: { value: 'applied', description: 'Applied, with every buffered message it unblocked.' },
    BUFFERED: { value: 'buffered', description: 'Ahead of its turn: kept until the gap before it fills.' },
    DUPLICATE: { value: 'duplicate', description: 'Already received with the same content; nothing changed.' },
  } as const,
});

const SubmitMessagePayload = builder.objectRef<SubmitResult>('SubmitMessagePayload').implement({
  description: 'The message is durably recorded: the same acknowledgement as REST `202`.',
  fields: (t) => ({
    status: t.expose('status', { type: SubmitStatusEnum }),
    channel: t.exposeString('channel'),
    messageNumber: t.expose('messageNumber', { type: SafeInt }),
    rocket: t.field({
      type: Rocket,
      nullable: true,
      description:
        "The rocket's state as of now; null while none of its messages is applied (say #2 buffered before #1).",
      resolve: async (r, _args, { service }) => (await service.findRocket(r.channel)) ?? null,
    }),
  }),
});

const InputIssue = builder.objectRef<Issue>('InputIssue').implement({
  fields: (t) => ({
    field: t.exposeString('field', { description: 'Dotted path in the envelope, such as metadata.messageNumber.' }),
    problem: t.exposeString('problem'),
  }),
});

/** A refused envelope of a batch. Wrapped: graphql-js takes an Error returned by a resolver as a field error. */
interface Refused {
  readonly refused: DomainError;
}

const SubmitMessageError = builder.objectRef<Refused>('SubmitMessageError').implement({
  description: 'One envelope of a batch that was refused; nothing of it was stored.',
  fields: (t) => ({
    code: t.string({
      description: 'As `extensions.code` of a GraphQL error: BAD_USER_INPUT, CONFLICT, ...',
      resolve: (r) => r.refused.code,
    }),
    message: t.string({ resolve: (r) => r.refused.message }),
    issues: t.field({
      type: [InputIssue],
      description: 'For BAD_USER_INPUT, each field that was wrong; empty otherwise.',
      resolve: (r) => (isValidationError(r.refused) ? r.refused.issues : []),
    }),
    // The details `submitMessage` gives in `extensions`, as fields.
    channel: t.string({
      nullable: true,
      description: 'For CONFLICT, CHANNEL_BUFFER_FULL and BUFFER_FULL: the channel of the envelope.',
      resolve: (r) => (isConflictError(r.refused) || isBufferFullError(r.refused) ? r.refused.channel : null),
    }),
    messageNumber: t.field({
      type: SafeInt,
      nullable: true,
      description: 'For CONFLICT, CHANNEL_BUFFER_FULL and BUFFER_FULL: the number of the envelope.',
      resolve: (r) => (isConflictError(r.refused) || isBufferFullError(r.refused) ? r.refused.messageNumber : null),
    }),
    skipped: t.boolean({
      description: 'For CONFLICT: true when the number was skipped by the gap policy (GAP_TIMEOUT).',
      resolve: (r) => isConflictError(r.refused) && r.refused.skipped,
    }),
    retryAfterSeconds: t.int({
      nullable: true,
      description: 'For CHANNEL_BUFFER_FULL and BUFFER_FULL: when to try again.',
      resolve: (r) => (isOverloadedError(r.refused) ? r.refused.retryAfterSeconds : null),
    }),
    waitingFor: t.field({
      type: SafeInt,
      nullable: true,
      description: 'For CHANNEL_BUFFER_FULL and BUFFER_FULL: the number the channel waits for.',
      resolve: (r) => (isBufferFullError(r.refused) ? r.refused.waitingFor : null),
    }),
    cap: t.string({
      nullable: true,
      description: 'For CHANNEL_BUFFER_FULL and BUFFER_FULL: the setting reached (MAX_BUFFERED_PER_CHANNEL, ...).',
      resolve: (r) => (isBufferFullError(r.refused) ? r.refused.setting : null),
    }),
    limit: t.int({
      nullable: true,
      description: 'For CHANNEL_BUFFER_FULL and BUFFER_FULL: the value of that setting.',
      resolve: (r) => (isBufferFullError(r.refused) ? r.refused.limit : null),
    }),
  }),
});

const SubmitMessageResult = builder.unionType('SubmitMessageResult', {
  types: [SubmitMessagePayload, SubmitMessageError],
  resolveType: (r) => ('refused' in r ? 'SubmitMessageError' : 'SubmitMessagePayload'),
});

builder.mutationField('submitMessage', (t) =>
  t.field({
    type: SubmitMessagePayload,
    description: [
      "Records one message of the seed's envelope. Answers once it is durably applied or buffered (or known to",
      'be a duplicate). Errors: BAD_USER_INPUT with `extensions.issues` naming each wrong field (nothing stored),',
      'CONFLICT when the number was already received with a different body (the first one stands). A',
      'messageTime is compared as an instant: the same instant written differently is a duplicate.',
    ].join('\n'),
    args: {
      metadata: t.arg({ type: MessageMetadataInput, required: true }),
      message: t.arg({ type: MessagePayloadInput, required: true }),
    },
    resolve: (_root, args, { service, canWrite }) => {
      if (!canWrite) throw new UnauthenticatedError(WRITE_NEEDS_TOKEN);
      return submitOne(service, args);
    },
  }),
);

builder.mutationField('submitMessages', (t) =>
  t.field({
    type: [SubmitMessageResult],
    description: `Records a batch for high-rate producers: one result per envelope, in order. A refused envelope does not stop the others. At most ${MAX_BATCH} per call.`,
    args: { messages: t.arg({ type: [MessageEnvelopeInput], required: true }) },
    resolve: async (_root, args, { service, canWrite }) => {
      if (!canWrite) throw new UnauthenticatedError(WRITE_NEEDS_TOKEN);
      if (args.messages.length > MAX_BATCH)
        throw new ValidationError([{ field: 'messages', problem: `must hold at most ${MAX_BATCH} envelopes` }]);
      return submitBatch(service, args.messages);
    },
  }),
);
