/**
 * Rows as pg returns them, and their conversion to the domain's rockets, messages and events (the
 * preload's one row to the state a transaction plans from). Apart so that the store and the feed read a
 * row the same way.
 */
import type { MessageType, Payload, RocketMessage } from '../../domain/message';
import type { Rocket, RocketStatus } from '../../domain/rocket';
import type { BufferedAt } from '../plan';
import type { RocketView, StoredEvent } from '../types';

/** Rows as pg returns them (bigint as text) or as json_agg builds them (bigint as number). */
export interface RocketRow {
  channel: string;
  type: string | null;
  mission: string | null;
  speed: number | string;
  status: string;
  exploded_reason: string | null;
  launched_at: string | null;
  updated_at: string;
  last_message_number: number | string;
}

export interface RocketViewRow extends RocketRow {
  buffered: string;
  oldest_since: Date | null;
}

interface MessageRow {
  channel: string;
  message_number: number | string;
  message_type: string;
  message_time: string;
  payload: unknown;
}

interface PendingRow extends MessageRow {
  /** As json_build_object writes a timestamptz: ISO 8601 with an offset. */
  received_at: string;
}

/** The committed state of a transaction's locked channels, as its preload read it. */
export interface Loaded {
  readonly rockets: ReadonlyMap<string, Rocket>;
  readonly pending: ReadonlyMap<string, ReadonlyMap<number, RocketMessage>>;
  /** Arrival times of each channel's buffered messages, for the gap policy. */
  readonly arrivals: ReadonlyMap<string, readonly BufferedAt[]>;
  /** Applied messages that have the (channel, number) of one of the transaction's messages, by keyOf. */
  readonly twins: ReadonlyMap<string, RocketMessage>;
}

/** The one row of PRELOAD_SQL. */
export interface PreloadRow {
  readonly rockets: RocketRow[];
  readonly pending: PendingRow[];
  readonly twins: MessageRow[];
}

export function toLoaded(row: PreloadRow | undefined): Loaded {
  if (!row) throw new Error('the preload query returned no row');
  const rockets = new Map(row.rockets.map((r) => [r.channel, toRocket(r)]));
  const pending = new Map<string, Map<number, RocketMessage>>();
  const arrivals = new Map<string, BufferedAt[]>();
  for (const p of row.pending) {
    const m = toRocketMessage(p);
    let map = pending.get(m.channel);
    if (!map) pending.set(m.channel, (map = new Map<number, RocketMessage>()));
    map.set(m.messageNumber, m);
    let list = arrivals.get(m.channel);
    if (!list) arrivals.set(m.channel, (list = []));
    list.push({ messageNumber: m.messageNumber, receivedAt: Date.parse(p.received_at) });
  }
  const twins = new Map(row.twins.map((t) => [keyOf(t.channel, Number(t.message_number)), toRocketMessage(t)]));
  return { rockets, pending, arrivals, twins };
}

export interface EventRow extends MessageRow {
  position: number | string;
  recorded_at: Date | string;
}

export interface FeedRow extends EventRow {
  txid: string;
  r_channel: string | null;
  type: string | null;
  mission: string | null;
  speed: number | null;
  status: string | null;
  exploded_reason: string | null;
  launched_at: string | null;
  updated_at: string | null;
  last_message_number: string | null;
}

export const toIso = (v: Date | string): string => (v instanceof Date ? v : new Date(v)).toISOString();

export function toRocket(row: RocketRow): Rocket {
  return {
    channel: row.channel,
    type: row.type,
    mission: row.mission,
    // json_agg writes a non-finite float8 as a string; Number() reads both forms.
    speed: Number(row.speed),
    status: row.status as RocketStatus,
    explodedReason: row.exploded_reason,
    launchedAt: row.launched_at,
    updatedAt: row.updated_at,
    lastMessageNumber: Number(row.last_message_number),
  };
}

export function toView(row: RocketViewRow): RocketView {
  const r = toRocket(row);
  return {
    ...r,
    buffer: {
      waitingFor: r.lastMessageNumber + 1,
      count: Number(row.buffered),
      oldestSince: row.oldest_since === null ? null : toIso(row.oldest_since),
    },
  };
}

const toRocketMessage = (row: MessageRow): RocketMessage =>
  ({
    channel: row.channel,
    messageNumber: Number(row.message_number),
    messageTime: row.message_time,
    messageType: row.message_type as MessageType,
    payload: row.payload as Payload,
  }) as RocketMessage;

export const toEvent = (row: EventRow): StoredEvent => ({
  position: Number(row.position),
  channel: row.channel,
  messageNumber: Number(row.message_number),
  messageType: row.message_type as MessageType,
  messageTime: row.message_time,
  payload: row.payload as Payload,
  recordedAt: toIso(row.recorded_at),
});

export const keyOf = (channel: string, n: number): string => `${n}:${channel}`;
