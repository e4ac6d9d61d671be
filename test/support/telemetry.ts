import { validateEnvelope, type MessageType, type PayloadByType, type RocketMessage } from '../../src/domain/message';

/** The seed's wire format, as a sender would post it. */
export interface Envelope {
  metadata: { channel: string; messageNumber: number; messageTime: string; messageType: string };
  message: Record<string, unknown>;
}

const T0 = Date.UTC(2022, 1, 2, 18, 39, 5);

/** A valid message time per message number, distinct for the numbers a history uses (below a million). */
export const timeOf = (messageNumber: number): string =>
  new Date(T0 + (messageNumber % 1_000_000) * 1000).toISOString();

/** 2022-01-01T00:00:00Z written in other ways RFC 3339 allows: the same instant. */
export const SAME_INSTANT = [
  '2022-01-01T00:00:00Z',
  '2022-01-01T00:00:00.000Z',
  '2022-01-01T00:00:00.000000000Z',
  '2022-01-01T01:00:00+01:00',
  '2021-12-31T19:30:00-04:30',
  '2022-01-01t00:00:00z',
  '2022-01-01 00:00:00+00:00',
  '2022-01-01 00:00:00.0+00:00',
  '2022-01-01T00:00:00-00:00',
];

/** Runs the real validation, so every message a test builds is one the service could have accepted. */
export function parse(envelope: unknown): RocketMessage {
  const v = validateEnvelope(envelope);
  if (!v.ok) throw new Error(`test fixture is invalid: ${JSON.stringify(v.issues)}`);
  return v.message;
}

export function envelope<K extends MessageType>(
  channel: string,
  messageNumber: number,
  messageType: K,
  payload: PayloadByType[K],
  messageTime = timeOf(messageNumber),
): Envelope {
  return { metadata: { channel, messageNumber, messageTime, messageType }, message: { ...payload } };
}

export const message = <K extends MessageType>(
  channel: string,
  messageNumber: number,
  messageType: K,
  payload: PayloadByType[K],
  messageTime?: string,
): RocketMessage => parse(envelope(channel, messageNumber, messageType, payload, messageTime));

/** Builders for the messages of one channel: `const r = rocket('r1'); r.launched(1); r.increased(2, 100)`. */
export const rocket = (channel: string) => ({
  channel,
  launched: (n: number, p: Partial<PayloadByType['RocketLaunched']> = {}, time?: string) =>
    message(channel, n, 'RocketLaunched', { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS', ...p }, time),
  increased: (n: number, by: number, time?: string) => message(channel, n, 'RocketSpeedIncreased', { by }, time),
  decreased: (n: number, by: number, time?: string) => message(channel, n, 'RocketSpeedDecreased', { by }, time),
  missionChanged: (n: number, newMission: string, time?: string) =>
    message(channel, n, 'RocketMissionChanged', { newMission }, time),
  exploded: (n: number, reason: string, time?: string) => message(channel, n, 'RocketExploded', { reason }, time),
});
