/**
 * The bench's telemetry: message `n` of any channel is a pure function of `n`, computed identically here
 * and in `bench/wrk.lua`, so the expected state of every rocket is known without recording what was sent.
 *
 * The k-th message a load generator sends (k from 1) goes to channel `(k - 1) % channels` with number
 * `floor((k - 1) / channels) + 1`: round-robin, so each channel's messages are sent in number order.
 */

import type { Telemetry } from '../src/launch/generation';
import { evolveModel, type ModelRocket } from '../src/launch/model';

/** 2022-02-02T19:39:05Z, the seed's example time. */
const BASE_EPOCH_S = 1_643_830_745;

export type MessageType =
  'RocketLaunched' | 'RocketSpeedIncreased' | 'RocketSpeedDecreased' | 'RocketMissionChanged' | 'RocketExploded';

type Payload = Record<string, string | number>;

export interface Envelope {
  readonly metadata: {
    readonly channel: string;
    readonly messageNumber: number;
    readonly messageTime: string;
    readonly messageType: MessageType;
  };
  readonly message: Payload;
}

/** GraphQL's `MessageEnvelopeInput` (and the variables of `submitMessage`). */
export interface GraphQLEnvelope {
  readonly metadata: {
    readonly channel: string;
    readonly messageNumber: number;
    readonly messageTime: string;
    readonly messageType: string;
  };
  readonly message: Record<string, Payload>;
}

const ENUM: Record<MessageType, string> = {
  RocketLaunched: 'ROCKET_LAUNCHED',
  RocketSpeedIncreased: 'ROCKET_SPEED_INCREASED',
  RocketSpeedDecreased: 'ROCKET_SPEED_DECREASED',
  RocketMissionChanged: 'ROCKET_MISSION_CHANGED',
  RocketExploded: 'ROCKET_EXPLODED',
};

const FIELD: Record<MessageType, string> = {
  RocketLaunched: 'rocketLaunched',
  RocketSpeedIncreased: 'rocketSpeedIncreased',
  RocketSpeedDecreased: 'rocketSpeedDecreased',
  RocketMissionChanged: 'rocketMissionChanged',
  RocketExploded: 'rocketExploded',
};

/** The type and payload of message `n` (bench/wrk.lua `payload`). */
export function payloadOf(n: number): [MessageType, Payload] {
  if (n === 1) return ['RocketLaunched', { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' }];
  switch (n % 4) {
    case 0:
      return ['RocketMissionChanged', { newMission: `MISSION-${n % 13}` }];
    case 1:
      return ['RocketSpeedIncreased', { by: 3 }];
    case 2:
      return ['RocketSpeedIncreased', { by: (n % 97) + 1 }];
    default:
      return ['RocketSpeedDecreased', { by: n % 89 }];
  }
}

/** RFC 3339 with a +01:00 offset and fractional seconds, like the seed's example (bench/wrk.lua `time`). */
export const timeOf = (n: number): string =>
  `${new Date((BASE_EPOCH_S + n + 3600) * 1000).toISOString().slice(0, 19)}.86337+01:00`;

export const channelName = (prefix: string, index: number): string => `${prefix}-${index}`;

/** The seed's REST envelope of message `n` of `channel`. */
export function envelope(channel: string, n: number): Envelope {
  const [messageType, message] = payloadOf(n);
  return { metadata: { channel, messageNumber: n, messageTime: timeOf(n), messageType }, message };
}

/** The same message as GraphQL input. */
export function graphqlEnvelope(channel: string, n: number): GraphQLEnvelope {
  const [type, payload] = payloadOf(n);
  return {
    metadata: { channel, messageNumber: n, messageTime: timeOf(n), messageType: ENUM[type] },
    message: { [FIELD[type]]: payload },
  };
}

/** Channel index and message number of the k-th message sent (k from 1). */
export function kth(k: number, channels: number): { index: number; n: number } {
  return { index: (k - 1) % channels, n: Math.floor((k - 1) / channels) + 1 };
}

/** The highest number sent to channel `index` once `k` messages were generated. */
export const sentUpTo = (k: number, channels: number, index: number): number =>
  k > index ? Math.floor((k - 1 - index) / channels) + 1 : 0;

export const SUBMIT_MESSAGE = `mutation Submit($metadata: MessageMetadataInput!, $message: MessagePayloadInput!) {
  submitMessage(metadata: $metadata, message: $message) { status channel messageNumber }
}`;

export const SUBMIT_MESSAGES = `mutation SubmitMany($messages: [MessageEnvelopeInput!]!) {
  submitMessages(messages: $messages) {
    ... on SubmitMessagePayload { status channel messageNumber }
    ... on SubmitMessageError { code message }
  }
}`;

/**
 * The state after messages 1..last (`at(last)`, last from 1), folded by the load generator's model of the
 * README's rules (src/launch/model.ts), which is written apart from src/domain so that neither checks the
 * server against its own code. Memoised: every channel follows the same history.
 */
export class Model {
  private readonly states: ModelRocket[] = [];

  at(last: number): ModelRocket {
    while (this.states.length < last) {
      const n = this.states.length + 1;
      const [messageType, message] = payloadOf(n);
      const t = { channel: 'model', messageNumber: n, messageTime: timeOf(n), messageType, message } as Telemetry;
      this.states.push(evolveModel(this.states[n - 2], t));
    }
    const state = this.states[last - 1];
    if (state === undefined) throw new Error(`no model of a rocket at message ${last}`);
    return state;
  }
}

/**
 * What a load generator reports for the oracle (bench/oracle.ts): how many messages it generated
 * (`sent`), per channel the highest number acknowledged (`acked`) and the numbers below it never
 * acknowledged (`unacked`: refused, or unanswered when the run stopped; channels with none left out),
 * and the count of each outcome (`applied`, `buffered`, `duplicate`, `http503`, `error:CONFLICT`, …).
 */
export interface IngestReport {
  readonly prefix: string;
  readonly channels: number;
  readonly sent: number;
  readonly acked: Readonly<Record<string, number>>;
  readonly unacked: Readonly<Record<string, readonly number[]>>;
  readonly counts: Readonly<Record<string, number>>;
}
