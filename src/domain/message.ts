import type { Issue } from './errors';

/**
 * The message contract existing clients speak: the seed's envelope
 * `{metadata: {channel, messageNumber, messageTime, messageType}, message: {...}}`.
 */
export const MESSAGE_TYPES = [
  'RocketLaunched',
  'RocketSpeedIncreased',
  'RocketSpeedDecreased',
  'RocketMissionChanged',
  'RocketExploded',
] as const;
/** A type a sender may send. */
export type MessageType = (typeof MESSAGE_TYPES)[number];

/**
 * Recorded by the server alone, never accepted from a sender: the gap policy gave up waiting for this
 * number. Its `messageTime` is the server time of the skip, kept in the log so a replay is deterministic.
 */
export const MESSAGE_SKIPPED = 'MessageSkipped';

/** Every type the event log holds: the senders' types and the server's own. */
export const EVENT_TYPES = [...MESSAGE_TYPES, MESSAGE_SKIPPED] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export interface PayloadByType {
  RocketLaunched: { readonly type: string; readonly launchSpeed: number; readonly mission: string };
  RocketSpeedIncreased: { readonly by: number };
  RocketSpeedDecreased: { readonly by: number };
  RocketMissionChanged: { readonly newMission: string };
  RocketExploded: { readonly reason: string };
  /** Why the number was skipped, naming the gap timeout. */
  MessageSkipped: { readonly reason: string };
}

type MessageOf<K extends EventType> = {
  readonly channel: string;
  readonly messageNumber: number;
  readonly messageTime: string;
  readonly messageType: K;
  readonly payload: PayloadByType[K];
};

/**
 * A message of the log: one per (channel, messageNumber). `messageTime` keeps the sender's RFC 3339 text
 * (the server's, for a skip).
 */
export type RocketMessage = { [K in EventType]: MessageOf<K> }[EventType];

/** A message a sender sent: what validation accepts. Never a MessageSkipped. */
export type SentMessage = { [K in MessageType]: MessageOf<K> }[MessageType];

export type SkipMessage = MessageOf<typeof MESSAGE_SKIPPED>;

export type Payload = RocketMessage['payload'];

/** Longest accepted channel, and longest accepted text field of a payload. */
export const MAX_CHANNEL_LENGTH = 200;
export const MAX_TEXT_LENGTH = 1000;

type Field = { kind: 'text' } | { kind: 'amount' };
const TEXT: Field = { kind: 'text' };
const AMOUNT: Field = { kind: 'amount' };

/** Fields of each payload, in the canonical order used for storage and comparison. */
export const PAYLOAD_FIELDS: { readonly [K in EventType]: Readonly<Record<keyof PayloadByType[K], Field>> } = {
  RocketLaunched: { type: TEXT, launchSpeed: AMOUNT, mission: TEXT },
  RocketSpeedIncreased: { by: AMOUNT },
  RocketSpeedDecreased: { by: AMOUNT },
  RocketMissionChanged: { newMission: TEXT },
  RocketExploded: { reason: TEXT },
  MessageSkipped: { reason: TEXT },
};

export type Validation = { ok: true; message: SentMessage } | { ok: false; issues: Issue[] };

/**
 * Text every store keeps exactly. A lone surrogate (JSON allows `"\ud800"`) has no UTF-8 form, so SQLite
 * and PostgreSQL would store some other text; PostgreSQL refuses U+0000 in text outright, so such a
 * message could never commit and its sender would retry forever.
 */
// eslint-disable-next-line no-control-regex -- NUL is exactly what this must find.
const UNSTORABLE = /[\p{Cs}\u0000]/u;
const NOT_UNICODE = 'must be valid Unicode text without NUL characters or lone surrogates';

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const own = (o: Record<string, unknown>, key: string): unknown =>
  Object.prototype.hasOwnProperty.call(o, key) ? o[key] : undefined;

const describe = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'an array' : `a ${typeof v}`);

/** A type a sender may send; MessageSkipped is not one. */
export const isMessageType = (v: unknown): v is MessageType =>
  typeof v === 'string' && (MESSAGE_TYPES as readonly string[]).includes(v);

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|([+-])(\d{2}):(\d{2}))$/;

/** `Date.UTC`, except that years 0..99 stay themselves: `Date.UTC` reads them as 1900..1999. */
function utc(year: number, monthIndex: number, day: number, hour = 0, minute = 0, second = 0): number {
  const d = new Date(0);
  d.setUTCFullYear(year, monthIndex, day);
  d.setUTCHours(hour, minute, second);
  return d.getTime();
}

/** Epoch milliseconds of an RFC 3339 timestamp, or undefined when the text is not one. */
export function parseRfc3339(text: string): number | undefined {
  const m = RFC3339.exec(text);
  if (!m) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const daysInMonth = new Date(utc(year, month, 0)).getUTCDate();
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth) return undefined;
  if (hour > 23 || minute > 59 || second > 60) return undefined;
  let offsetMinutes = 0;
  if (m[9] !== undefined) {
    const oh = Number(m[10]);
    const om = Number(m[11]);
    if (oh > 23 || om > 59) return undefined;
    offsetMinutes = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const fraction = m[7] ? Number(`0${m[7]}`) : 0;
  const instant = utc(year, month - 1, day, hour, minute, Math.min(second, 59));
  return instant + Math.floor(fraction * 1000) - offsetMinutes * 60_000;
}

/** The instant of a message time, as ISO 8601 in UTC with milliseconds. */
export const toUtcIso = (messageTime: string): string => new Date(parseRfc3339(messageTime) ?? NaN).toISOString();

function checkField(field: Field, value: unknown, path: string, issues: Issue[]): void {
  if (value === undefined) {
    issues.push({ field: path, problem: 'is required' });
  } else if (field.kind === 'text') {
    if (typeof value !== 'string') issues.push({ field: path, problem: `must be a string, got ${describe(value)}` });
    else if (value.length > MAX_TEXT_LENGTH)
      issues.push({ field: path, problem: `must be at most ${MAX_TEXT_LENGTH} characters` });
    else if (UNSTORABLE.test(value)) issues.push({ field: path, problem: NOT_UNICODE });
  } else if (typeof value !== 'number' || !Number.isFinite(value)) {
    issues.push({ field: path, problem: `must be a number, got ${describe(value)}` });
  } else if (value < 0) {
    issues.push({ field: path, problem: 'must not be negative' });
  } else if (value > Number.MAX_SAFE_INTEGER) {
    // Keeps every speed finite: sums of such amounts can never reach Infinity (which JSON cannot carry).
    issues.push({ field: path, problem: `must be at most ${Number.MAX_SAFE_INTEGER}` });
  }
}

/**
 * Validates anything decoded from JSON (or built from GraphQL input) against the message contract.
 * Never throws: every input is either exactly one valid message or a list of issues naming each field
 * and its problem. Unknown extra fields are ignored and never copied into the result.
 */
export function validateEnvelope(input: unknown): Validation {
  const issues: Issue[] = [];
  if (!isRecord(input)) {
    return { ok: false, issues: [{ field: '', problem: `the body must be a JSON object, got ${describe(input)}` }] };
  }
  const metadata = own(input, 'metadata');
  const body = own(input, 'message');
  if (!isRecord(metadata)) {
    issues.push({
      field: 'metadata',
      problem: metadata === undefined ? 'is required' : `must be an object, got ${describe(metadata)}`,
    });
  }
  if (!isRecord(body)) {
    issues.push({
      field: 'message',
      problem: body === undefined ? 'is required' : `must be an object, got ${describe(body)}`,
    });
  }
  if (!isRecord(metadata)) return { ok: false, issues };

  const channel = own(metadata, 'channel');
  if (channel === undefined) issues.push({ field: 'metadata.channel', problem: 'is required' });
  else if (typeof channel !== 'string')
    issues.push({ field: 'metadata.channel', problem: `must be a string, got ${describe(channel)}` });
  else if (channel.trim() === '') issues.push({ field: 'metadata.channel', problem: 'must not be empty' });
  else if (channel.length > MAX_CHANNEL_LENGTH)
    issues.push({ field: 'metadata.channel', problem: `must be at most ${MAX_CHANNEL_LENGTH} characters` });
  else if (UNSTORABLE.test(channel)) issues.push({ field: 'metadata.channel', problem: NOT_UNICODE });

  const messageNumber = own(metadata, 'messageNumber');
  if (messageNumber === undefined) issues.push({ field: 'metadata.messageNumber', problem: 'is required' });
  else if (typeof messageNumber !== 'number' || !Number.isSafeInteger(messageNumber) || messageNumber < 1)
    issues.push({
      field: 'metadata.messageNumber',
      problem: `must be a positive integer no larger than ${Number.MAX_SAFE_INTEGER}, got ${
        typeof messageNumber === 'number' ? String(messageNumber) : describe(messageNumber)
      }`,
    });

  const messageTime = own(metadata, 'messageTime');
  if (messageTime === undefined) issues.push({ field: 'metadata.messageTime', problem: 'is required' });
  else if (typeof messageTime !== 'string' || parseRfc3339(messageTime) === undefined)
    issues.push({
      field: 'metadata.messageTime',
      problem: 'must be an RFC 3339 timestamp such as 2022-02-02T19:39:05.86337+01:00',
    });

  const messageType = own(metadata, 'messageType');
  if (messageType === undefined) issues.push({ field: 'metadata.messageType', problem: 'is required' });
  else if (!isMessageType(messageType))
    issues.push({ field: 'metadata.messageType', problem: `must be one of ${MESSAGE_TYPES.join(', ')}` });

  const payload: Record<string, unknown> = {};
  if (isMessageType(messageType) && isRecord(body)) {
    for (const [name, field] of Object.entries<Field>(PAYLOAD_FIELDS[messageType])) {
      const value = own(body, name);
      checkField(field, value, `message.${name}`, issues);
      payload[name] = value;
    }
  }
  if (issues.length > 0) return { ok: false, issues };
  return {
    ok: true,
    message: {
      channel: channel as string,
      messageNumber: messageNumber as number,
      messageTime: messageTime as string,
      messageType: messageType as MessageType,
      payload,
    } as SentMessage,
  };
}

/** True when two messages for the same (channel, number) carry the same content: a harmless redelivery. */
export function sameContent(a: RocketMessage, b: RocketMessage): boolean {
  if (a.messageType !== b.messageType || a.messageTime !== b.messageTime) return false;
  const pa = a.payload as unknown as Record<string, unknown>;
  const pb = b.payload as unknown as Record<string, unknown>;
  return Object.keys(PAYLOAD_FIELDS[a.messageType]).every((k) => pa[k] === pb[k]);
}

/** The message back in the seed's wire format. */
export function toEnvelope(m: RocketMessage): { metadata: Record<string, unknown>; message: Payload } {
  return {
    metadata: {
      channel: m.channel,
      messageNumber: m.messageNumber,
      messageTime: m.messageTime,
      messageType: m.messageType,
    },
    message: m.payload,
  };
}
