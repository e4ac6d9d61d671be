/**
 * The rows the SQLite store reads and writes, and their conversions to and from the domain's messages,
 * events and rockets: apart from the store, so that the schema's statements can name the rows too.
 */
import { EVENT_TYPES, PAYLOAD_FIELDS, type EventType, type RocketMessage } from '../../domain/message';
import type { Rocket, RocketStatus } from '../../domain/rocket';
import type { BufferInfo, StoredEvent } from '../types';

export interface EventRow {
  readonly position: number;
  readonly channel: string;
  readonly message_number: number;
  readonly message_type: EventType;
  readonly message_time: string;
  readonly payload: string;
  readonly recorded_at: string;
}

export type MessageRow = Pick<EventRow, 'channel' | 'message_number' | 'message_type' | 'message_time' | 'payload'>;
/** A MessageRow's columns in order, as a replay reads them: arrays are cheaper to build than objects. */
export type MessageTuple = [
  channel: string,
  messageNumber: number,
  messageType: string,
  messageTime: string,
  payload: string,
];

export interface RocketRow {
  readonly channel: string;
  readonly type: string | null;
  readonly mission: string | null;
  readonly speed: number;
  readonly status: RocketStatus;
  readonly exploded_reason: string | null;
  readonly launched_at: string | null;
  readonly updated_at: string;
  readonly last_message_number: number;
}

export interface BufferRow {
  readonly count: number;
  readonly oldest: string | null;
}

export interface GapRow {
  readonly channel: string;
  readonly waiting_for: number;
  readonly count: number;
  readonly oldest: string;
}

/** The columns of a rocket row an update may set, each with its field. */
export const ROCKET_FIELDS = [
  ['type', 'type'],
  ['mission', 'mission'],
  ['speed', 'speed'],
  ['status', 'status'],
  ['exploded_reason', 'explodedReason'],
  ['launched_at', 'launchedAt'],
  ['updated_at', 'updatedAt'],
  ['last_message_number', 'lastMessageNumber'],
] as const satisfies ReadonlyArray<readonly [keyof RocketRow, keyof Rocket]>;

/** Each event type's payload fields, in their canonical order. */
const PAYLOAD_KEYS = Object.fromEntries(EVENT_TYPES.map((t) => [t, Object.keys(PAYLOAD_FIELDS[t])])) as {
  readonly [K in EventType]: string[];
};

/** Each type's `{"field":` then `,"field":` …, to write a payload with. */
const PAYLOAD_PREFIXES = Object.fromEntries(
  EVENT_TYPES.map((t) => [t, PAYLOAD_KEYS[t].map((k, i) => `${i === 0 ? '{' : ','}${JSON.stringify(k)}:`)]),
) as { readonly [K in EventType]: string[] };

/**
 * The payload as stored: the contract's fields only, in their canonical order. What
 * `JSON.stringify(payload, keys)` writes, in about half its time: a key list sends JSON.stringify down its
 * slow path. A field with no value (validation lets none through) falls back to that call, which omits it.
 */
export function payloadJson(m: RocketMessage): string {
  const keys = PAYLOAD_KEYS[m.messageType];
  const prefixes = PAYLOAD_PREFIXES[m.messageType];
  const payload = m.payload as Readonly<Record<string, unknown>>;
  let json = '';
  for (let i = 0; i < keys.length; i++) {
    const value = JSON.stringify(payload[keys[i] as string]) as string | undefined;
    if (value === undefined) return JSON.stringify(payload, keys);
    json += (prefixes[i] as string) + value;
  }
  return keys.length === 0 ? '{}' : `${json}}`;
}

export const rowToMessage = (row: MessageRow): RocketMessage =>
  ({
    channel: row.channel,
    messageNumber: row.message_number,
    messageTime: row.message_time,
    messageType: row.message_type,
    payload: JSON.parse(row.payload) as unknown,
  }) as RocketMessage;

export const tupleToMessage = (row: MessageTuple): RocketMessage =>
  ({
    channel: row[0],
    messageNumber: row[1],
    messageTime: row[3],
    messageType: row[2],
    payload: JSON.parse(row[4]) as unknown,
  }) as RocketMessage;

export const toEvent = (row: EventRow): StoredEvent => ({
  position: row.position,
  channel: row.channel,
  messageNumber: row.message_number,
  messageType: row.message_type,
  messageTime: row.message_time,
  payload: JSON.parse(row.payload) as StoredEvent['payload'],
  recordedAt: row.recorded_at,
});

export const toRocket = (row: RocketRow): Rocket => ({
  channel: row.channel,
  type: row.type,
  mission: row.mission,
  speed: row.speed,
  status: row.status,
  explodedReason: row.exploded_reason,
  launchedAt: row.launched_at,
  updatedAt: row.updated_at,
  lastMessageNumber: row.last_message_number,
});

export const toRow = (r: Rocket): RocketRow => ({
  channel: r.channel,
  type: r.type,
  mission: r.mission,
  speed: r.speed,
  status: r.status,
  exploded_reason: r.explodedReason,
  launched_at: r.launchedAt,
  updated_at: r.updatedAt,
  last_message_number: r.lastMessageNumber,
});

export const bufferInfo = (r: Rocket, b: BufferRow | undefined): BufferInfo => ({
  waitingFor: r.lastMessageNumber + 1,
  count: b?.count ?? 0,
  oldestSince: b?.oldest ?? null,
});
