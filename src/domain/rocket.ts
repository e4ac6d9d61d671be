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
  const at = toUtcIso(m.messageTime);
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
  const next = { ...base, updatedAt: at, lastMessageNumber: m.messageNumber };
  if (base.status === 'exploded') return next;
  switch (m.messageType) {
    case 'RocketLaunched':
      if (base.launchedAt !== null) return next;
      return {
        ...next,
        type: m.payload.type,
        mission: m.payload.mission,
        speed: m.payload.launchSpeed,
        launchedAt: at,
      };
    case 'RocketSpeedIncreased':
      return { ...next, speed: base.speed + m.payload.by };
    case 'RocketSpeedDecreased':
      return { ...next, speed: Math.max(0, base.speed - m.payload.by) };
    case 'RocketMissionChanged':
      return { ...next, mission: m.payload.newMission };
    case 'RocketExploded':
      return { ...next, status: 'exploded', explodedReason: m.payload.reason };
    case 'MessageSkipped':
      return next;
    default: {
      const unreachable: never = m;
      throw new Error(`unknown message type ${(unreachable as RocketMessage).messageType}`);
    }
  }
}
