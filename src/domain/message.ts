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

/** Each type's payload fields as entries, made once rather than per message validated. */
const PAYLOAD_ENTRIES = new Map<string, ReadonlyArray<[string, Field]>>(
  EVENT_TYPES.map((type) => [type, Object.entries<Field>(PAYLOAD_FIELDS[type])]),
);

export type Validation = { ok: true; message: SentMessage } | { ok: false; issues: Issue[] };

/**
 * Text every store keeps exactly. A lone surrogate (JSON allows `"\ud800"`) has no UTF-8 form, so SQLite
 * and PostgreSQL would store some other text; PostgreSQL refuses U+0000 in text outright, so such a
 * message could never commit and its sender would retry forever.
 */
// eslint-disable-next-line no-control-regex -- NUL is exactly what this must find.
const UNSTORABLE = /[\p{Cs}\u0000]/u;
export const NOT_UNICODE = 'must be valid Unicode text without NUL characters or lone surrogates';

/** Text every store keeps exactly (see UNSTORABLE): what a channel, or any text field, must be. */
export const isStorableText = (text: string): boolean => !UNSTORABLE.test(text);

/**
 * Whether text holds more than `max` characters (code points), as a reader counts them: a JavaScript
 * string's length counts UTF-16 code units, two for an emoji or any other character outside the Basic
 * Multilingual Plane. Counted only when the length alone cannot tell.
 */
function longerThan(text: string, max: number): boolean {
  if (text.length <= max) return false;
  if (text.length > 2 * max) return true;
  let characters = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    // The first half of a surrogate pair: the pair is one character.
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
    if (++characters > max) return true;
  }
  return false;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const own = (o: Record<string, unknown>, key: string): unknown =>
  Object.prototype.hasOwnProperty.call(o, key) ? o[key] : undefined;

/** A value's kind as refusals name it: `null`, `an array`, else `a` and its `typeof` (`a string`, `a number`). */
export const describe = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'an array' : `a ${typeof v}`);

/** A type a sender may send; MessageSkipped is not one. */
export const isMessageType = (v: unknown): v is MessageType =>
  typeof v === 'string' && (MESSAGE_TYPES as readonly string[]).includes(v);

const ZERO = 0x30;
const SIX = 0x36;
const DASH = 0x2d;
const COLON = 0x3a;
const DOT = 0x2e;
const PLUS = 0x2b;
const UPPER_T = 0x54;
const LOWER_T = 0x74;
const SPACE = 0x20;
const UPPER_Z = 0x5a;
const LOWER_Z = 0x7a;
const MS_PER_DAY = 86_400_000;

/** An ASCII digit: what `\d` matches without the `u` flag. NaN (past the end of a text) is none. */
const isDigit = (code: number): boolean => code >= ZERO && code <= ZERO + 9;

/** The value of the ASCII digits `text[from..to)` (all within the text), or -1 if any is not a digit. */
function digits(text: string, from: number, to: number): number {
  let n = 0;
  for (let i = from; i < to; i++) {
    const code = text.charCodeAt(i);
    if (!isDigit(code)) return -1;
    n = n * 10 + code - ZERO;
  }
  return n;
}

const isLeapYear = (y: number): boolean => y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);

/** Days in `month` (1..12) of `year` in the proleptic Gregorian calendar, as `Date` counts them. */
const daysInMonth = (year: number, month: number): number =>
  month === 2 ? (isLeapYear(year) ? 29 : 28) : month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;

/**
 * Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`): exact for every
 * year, so years 0..99 stay themselves (unlike `Date.UTC`, which reads them as 1900..1999).
 */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = Math.floor((153 * (month > 2 ? month - 3 : month + 9) + 2) / 5) + day - 1;
  const dayOfEra = yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  return era * 146_097 + dayOfEra - 719_468;
}

/**
 * Epoch milliseconds of an RFC 3339 timestamp, or undefined when the text is not one: exactly
 * `YYYY-MM-DD(T|t| )HH:MM:SS[.f{1,9}](Z|z|±HH:MM)` with ASCII digits, a real calendar date, hours to 23,
 * minutes to 59, seconds to 60 and offsets to ±23:59. A leap second (:60) reads as :59 (its fraction
 * kept); digits beyond the milliseconds are truncated. Scans the characters once, with no regular
 * expression and no Date: it runs for every message validated and every event replayed.
 */
export function parseRfc3339(text: string): number | undefined {
  const length = text.length;
  // 'YYYY-MM-DDTHH:MM:SSZ' is the shortest; 9 fraction digits and an offset the longest.
  if (length < 20 || length > 35) return undefined;
  const separator = text.charCodeAt(10);
  if (
    text.charCodeAt(4) !== DASH ||
    text.charCodeAt(7) !== DASH ||
    (separator !== UPPER_T && separator !== LOWER_T && separator !== SPACE) ||
    text.charCodeAt(13) !== COLON ||
    text.charCodeAt(16) !== COLON
  )
    return undefined;
  const year = digits(text, 0, 4);
  const month = digits(text, 5, 7);
  const day = digits(text, 8, 10);
  const hour = digits(text, 11, 13);
  const minute = digits(text, 14, 16);
  const second = digits(text, 17, 19);
  if (year < 0 || month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
  if (hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 60) return undefined;

  let i = 19;
  let millis = 0;
  if (text.charCodeAt(i) === DOT) {
    const from = ++i;
    while (i < length && i - from < 10 && isDigit(text.charCodeAt(i))) i++;
    const count = i - from;
    if (count < 1 || count > 9) return undefined;
    // The first three digits, as milliseconds: truncated, never rounded.
    millis = count >= 3 ? digits(text, from, from + 3) : digits(text, from, i) * (count === 1 ? 100 : 10);
  }

  let offsetMinutes = 0;
  const zone = text.charCodeAt(i);
  if (zone === UPPER_Z || zone === LOWER_Z) {
    if (i + 1 !== length) return undefined;
  } else if (zone === PLUS || zone === DASH) {
    if (i + 6 !== length || text.charCodeAt(i + 3) !== COLON) return undefined;
    const oh = digits(text, i + 1, i + 3);
    const om = digits(text, i + 4, i + 6);
    if (oh < 0 || oh > 23 || om < 0 || om > 59) return undefined;
    offsetMinutes = (zone === DASH ? -1 : 1) * (oh * 60 + om);
  } else {
    return undefined;
  }

  return (
    daysFromCivil(year, month, day) * MS_PER_DAY +
    ((hour * 60 + minute) * 60 + Math.min(second, 59)) * 1000 +
    millis -
    offsetMinutes * 60_000
  );
}

/** The first and last instants of years 0000..9999, which `toISOString` writes with four year digits. */
const MIN_FOUR_DIGIT_YEAR = -62_167_219_200_000;
const MAX_FOUR_DIGIT_YEAR = 253_402_300_799_999;

/** The character codes of `d` written as two decimal digits (0..99). */
const tens = (d: number): number => ZERO + ((d / 10) | 0);
const ones = (d: number): number => ZERO + (d % 10);

/**
 * `new Date(ms).toISOString()` for years 0000..9999 (H. Hinnant's `civil_from_days`), several times
 * faster than building a Date; other instants (and NaN, which throws) go to `toISOString` itself. The
 * time of day is worked out in 32-bit integers (a double's `%` is a call into C), and the string is made
 * at once from its character codes, where joining its parts allocated some fourteen strings.
 */
function isoString(ms: number): string {
  if (!(ms >= MIN_FOUR_DIGIT_YEAR && ms <= MAX_FOUR_DIGIT_YEAR) || !Number.isInteger(ms))
    return new Date(ms).toISOString();
  const days = Math.floor(ms / MS_PER_DAY);
  let rest = (ms - days * MS_PER_DAY) | 0;
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const dayOfEra = z - era * 146_097;
  const yearOfEra = Math.floor(
    (dayOfEra - Math.floor(dayOfEra / 1460) + Math.floor(dayOfEra / 36_524) - Math.floor(dayOfEra / 146_096)) / 365,
  );
  const dayOfYear = dayOfEra - (365 * yearOfEra + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100));
  const mp = Math.floor((5 * dayOfYear + 2) / 153);
  const day = dayOfYear - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  const year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0);
  const millis = rest % 1000;
  rest = (rest / 1000) | 0;
  const second = rest % 60;
  rest = (rest / 60) | 0;
  const minute = rest % 60;
  const hour = (rest / 60) | 0;
  const century = (year / 100) | 0;
  const centi = (millis / 10) | 0;
  // YYYY-MM-DDTHH:MM:SS.mmmZ
  // prettier-ignore
  return String.fromCharCode(
    tens(century), ones(century), tens(year % 100), ones(year % 100), DASH, tens(month), ones(month), DASH,
    tens(day), ones(day), UPPER_T, tens(hour), ones(hour), COLON, tens(minute), ones(minute), COLON,
    tens(second), ones(second), DOT, tens(centi), ones(centi), ones(millis), UPPER_Z,
  );
}

/**
 * Whether a text that parsed as a message time is already what `isoString` would write for it: UTC
 * with `T`, `Z` and three fraction digits, and not a leap second (read as :59).
 */
const isCanonical = (text: string): boolean =>
  text.length === 24 &&
  text.charCodeAt(10) === UPPER_T &&
  text.charCodeAt(19) === DOT &&
  text.charCodeAt(23) === UPPER_Z &&
  text.charCodeAt(17) !== SIX;

/** The instant of a message time, as ISO 8601 in UTC with milliseconds (what `Date#toISOString` writes). */
export function toUtcIso(messageTime: string): string {
  const ms = parseRfc3339(messageTime);
  return ms !== undefined && isCanonical(messageTime) ? messageTime : isoString(ms ?? NaN);
}

/** What a sender wrote to make a non-finite number: JSON cannot spell NaN or Infinity themselves. */
const huge = (value: number): string =>
  Number.isNaN(value)
    ? 'NaN'
    : value > 0
      ? 'a number too large to represent'
      : 'a negative number too large to represent';

/** The largest amount (a speed, or a change of speed) a message may carry. */
const MAX_AMOUNT = Number.MAX_SAFE_INTEGER;

function checkField(field: Field, value: unknown, path: string, issues: Issue[]): void {
  if (value === undefined) {
    issues.push({ field: path, problem: 'is required' });
  } else if (field.kind === 'text') {
    if (typeof value !== 'string') issues.push({ field: path, problem: `must be a string, got ${describe(value)}` });
    else if (longerThan(value, MAX_TEXT_LENGTH))
      issues.push({ field: path, problem: `must be at most ${MAX_TEXT_LENGTH} characters` });
    else if (UNSTORABLE.test(value)) issues.push({ field: path, problem: NOT_UNICODE });
  } else if (typeof value !== 'number') {
    issues.push({ field: path, problem: `must be a number, got ${describe(value)}` });
  } else if (!Number.isFinite(value)) {
    // JSON has no Infinity, but JSON.parse reads 1e400 as one: say what was sent, a huge number.
    const problem = `must be a finite number no larger than ${MAX_AMOUNT}, got ${huge(value)}`;
    issues.push({ field: path, problem });
  } else if (value < 0) {
    issues.push({ field: path, problem: 'must not be negative' });
  } else if (value > MAX_AMOUNT) {
    // Keeps every speed finite: sums of such amounts can never reach Infinity (which JSON cannot carry).
    issues.push({ field: path, problem: `must be at most ${MAX_AMOUNT}` });
  }
}

/**
 * The known type an envelope names, whatever else is wrong with it, or `undefined`: refusals are counted
 * by type where there is one.
 */
export function namedMessageType(input: unknown): MessageType | undefined {
  const metadata = isRecord(input) ? own(input, 'metadata') : undefined;
  const type = isRecord(metadata) ? own(metadata, 'messageType') : undefined;
  return isMessageType(type) ? type : undefined;
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
  else if (channel.trim() === '')
    issues.push({
      field: 'metadata.channel',
      problem: channel === '' ? 'must not be empty' : 'must not be only whitespace',
    });
  else if (longerThan(channel, MAX_CHANNEL_LENGTH))
    issues.push({ field: 'metadata.channel', problem: `must be at most ${MAX_CHANNEL_LENGTH} characters` });
  else if (UNSTORABLE.test(channel)) issues.push({ field: 'metadata.channel', problem: NOT_UNICODE });
  else if (channel === '.' || channel === '..')
    // A URL path reads them as "this" and "the parent" segment: GET /rockets/{channel} could never name them.
    issues.push({ field: 'metadata.channel', problem: 'must not be "." or ".."' });

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
  const instant = typeof messageTime === 'string' ? parseRfc3339(messageTime) : undefined;
  if (messageTime === undefined) issues.push({ field: 'metadata.messageTime', problem: 'is required' });
  else if (instant === undefined)
    issues.push({
      field: 'metadata.messageTime',
      problem:
        'must be an RFC 3339 timestamp such as 2022-02-02T19:39:05.86337+01:00 (fractional seconds to at most 9 digits)',
    });
  else if (instant < MIN_FOUR_DIGIT_YEAR || instant > MAX_FOUR_DIGIT_YEAR)
    // The rocket's times are kept and served in UTC, where such an instant has no four-digit year.
    issues.push({ field: 'metadata.messageTime', problem: 'must fall within the years 0000 to 9999 once in UTC' });

  const messageType = own(metadata, 'messageType');
  if (messageType === undefined) issues.push({ field: 'metadata.messageType', problem: 'is required' });
  else if (!isMessageType(messageType))
    issues.push({ field: 'metadata.messageType', problem: `must be one of ${MESSAGE_TYPES.join(', ')}` });

  const payload: Record<string, unknown> = {};
  if (isMessageType(messageType) && isRecord(body)) {
    for (const [name, field] of PAYLOAD_ENTRIES.get(messageType) ?? []) {
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

/**
 * The instant of an RFC 3339 text to the nanosecond, as a key equal for texts of the same instant
 * however written (offset, `T`, `t` or space, `Z` or `z`, trailing zeros of the fraction), or undefined
 * when the text is not one. Finer than `parseRfc3339`, which truncates to the millisecond: the log
 * keeps the text, so every digit a sender may write counts. A leap second (:60, which `parseRfc3339`
 * reads as :59) stays a second of its own.
 */
export function instantKey(text: string): string | undefined {
  const ms = parseRfc3339(text);
  if (ms === undefined) return undefined;
  // The fraction's digits after the millisecond ones, padded to six (parseRfc3339 allows nine in all).
  let end = text.charCodeAt(19) === DOT ? 20 : 19;
  while (isDigit(text.charCodeAt(end))) end++;
  const beyondMillis = end > 23 ? text.slice(23, end).padEnd(6, '0') : '000000';
  return `${ms}.${beyondMillis}${text.charCodeAt(17) === SIX ? ' leap' : ''}`;
}

/** Whether two message times are one instant (see instantKey); a non-time is only itself. */
export function sameInstant(a: string, b: string): boolean {
  if (a === b) return true;
  const key = instantKey(a);
  return key !== undefined && key === instantKey(b);
}

/**
 * True when two messages for the same (channel, number) carry the same content: a harmless redelivery.
 * The times are compared as instants, to the nanosecond, so the same instant written another way (an
 * offset, `.000`, lower case) is a duplicate too. Whichever came first is what the log keeps.
 */
export function sameContent(a: RocketMessage, b: RocketMessage): boolean {
  if (a.messageType !== b.messageType || !sameInstant(a.messageTime, b.messageTime)) return false;
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
