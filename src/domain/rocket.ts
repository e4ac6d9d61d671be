import { toUtcIso, type RocketMessage } from './message';

export const ROCKET_STATUSES = ['flying', 'exploded'] as const;
export type RocketStatus = (typeof ROCKET_STATUSES)[number];

/**
 * The state of one rocket: a pure function of its applied messages, so a replay of the event log
 * rebuilds it exactly. Times are the senders' message times (UTC ISO), never the server's clock.
 */
export interface Rocket {
  readonly channel: string;
  /** Null until a RocketLaunched has been applied. */
  readonly type: string | null;
  readonly mission: string | null;
  readonly speed: number;
  readonly status: RocketStatus;
  readonly explodedReason: string | null;
  readonly launchedAt: string | null;
  /** Message time of the latest applied message, whether or not it changed a field. */
  readonly updatedAt: string;
  readonly lastMessageNumber: number;
}

/**
 * Applies one message, in number order, to a rocket's state. The rules:
 * - a decrease below zero stops the rocket at speed 0;
 * - after RocketExploded, later messages are recorded but change nothing (the first reason stands);
 * - a second RocketLaunched is recorded but changes nothing: a rocket launches once;
 * - MessageSkipped (the gap policy gave up on that number) changes nothing but the number and time.
 */
export function evolve(state: Rocket | undefined, m: RocketMessage): Rocket {
  return evolveAt(state, m, toUtcIso(m.messageTime));
}

/**
 * `evolve` with the message's time already worked out: `at` is stored as is, as `updatedAt` and (on the
 * launch) `launchedAt`, and nothing else depends on it. So a replay may fold with each message's own
 * text (`evolveAt(s, m, m.messageTime)`) and convert only the final state with `withUtcTimes`: the same
 * rocket as `evolve` gives, for one conversion per rocket instead of one per event.
 */
export function evolveAt(state: Rocket | undefined, m: RocketMessage, at: string): Rocket {
  const base: Rocket = state ?? {
    channel: m.channel,
    type: null,
    mission: null,
    speed: 0,
    status: 'flying',
    explodedReason: null,
    launchedAt: null,
    updatedAt: at,
    lastMessageNumber: 0,
  };
  const lastMessageNumber = m.messageNumber;
  if (base.status === 'exploded') return { ...base, updatedAt: at, lastMessageNumber };
  switch (m.messageType) {
    case 'RocketLaunched':
      if (base.launchedAt !== null) return { ...base, updatedAt: at, lastMessageNumber };
      return {
        ...base,
        type: m.payload.type,
        mission: m.payload.mission,
        speed: m.payload.launchSpeed,
        launchedAt: at,
        updatedAt: at,
        lastMessageNumber,
      };
    case 'RocketSpeedIncreased':
      return { ...base, speed: base.speed + m.payload.by, updatedAt: at, lastMessageNumber };
    case 'RocketSpeedDecreased':
      return { ...base, speed: Math.max(0, base.speed - m.payload.by), updatedAt: at, lastMessageNumber };
    case 'RocketMissionChanged':
      return { ...base, mission: m.payload.newMission, updatedAt: at, lastMessageNumber };
    case 'RocketExploded':
      return { ...base, status: 'exploded', explodedReason: m.payload.reason, updatedAt: at, lastMessageNumber };
    case 'MessageSkipped':
      return { ...base, updatedAt: at, lastMessageNumber };
    default: {
      const unreachable: never = m;
      throw new Error(`unknown message type ${(unreachable as RocketMessage).messageType}`);
    }
  }
}

/** A state folded by `evolveAt` with raw message times, with those times as `evolve` stores them. */
export const withUtcTimes = (r: Rocket): Rocket => ({
  ...r,
  launchedAt: r.launchedAt === null ? null : toUtcIso(r.launchedAt),
  updatedAt: toUtcIso(r.updatedAt),
});
