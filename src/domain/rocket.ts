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

/** The highest speed a rocket reaches: the largest integer a double holds with every unit below it. */
export const MAX_SPEED = Number.MAX_SAFE_INTEGER;

/**
 * Applies one message, in number order, to a rocket's state. The rules:
 * - a decrease below zero stops the rocket at speed 0;
 * - an increase past MAX_SPEED (2^53 − 1) holds the rocket at MAX_SPEED: past it a double can no longer
 *   count every unit, so a later increase by 1 could vanish. A message is never refused for it, as a
 *   refused message would leave its number a gap in the channel for good;
 * - after RocketExploded, later messages are recorded but change nothing (the first reason stands);
 * - a second RocketLaunched is recorded but changes nothing: a rocket launches once;
 * - messages before the launch apply to a rocket at speed 0 with no type or mission; the launch then
 *   sets type, mission, speed and launch time from its payload, replacing what they made;
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
  // A new object, written field by field in the interface's order and then changed as the message says:
  // every state then has one shape, which makes a replay's fold about twice as fast as spreading the
  // previous state (`{ ...state, speed }`) did. `state` itself is never changed.
  const next: { -readonly [K in keyof Rocket]: Rocket[K] } =
    state === undefined
      ? {
          channel: m.channel,
          type: null,
          mission: null,
          speed: 0,
          status: 'flying',
          explodedReason: null,
          launchedAt: null,
          updatedAt: at,
          lastMessageNumber: m.messageNumber,
        }
      : {
          channel: state.channel,
          type: state.type,
          mission: state.mission,
          speed: state.speed,
          status: state.status,
          explodedReason: state.explodedReason,
          launchedAt: state.launchedAt,
          updatedAt: at,
          lastMessageNumber: m.messageNumber,
        };
  if (next.status === 'exploded') return next;
  switch (m.messageType) {
    case 'RocketLaunched':
      if (next.launchedAt === null) {
        next.type = m.payload.type;
        next.mission = m.payload.mission;
        // Validation caps every amount at MAX_SPEED; an unchecked launch speed is held too.
        next.speed = Math.min(MAX_SPEED, m.payload.launchSpeed);
        next.launchedAt = at;
      }
      return next;
    case 'RocketSpeedIncreased':
      next.speed = Math.min(MAX_SPEED, next.speed + m.payload.by);
      return next;
    case 'RocketSpeedDecreased':
      next.speed = Math.max(0, next.speed - m.payload.by);
      return next;
    case 'RocketMissionChanged':
      next.mission = m.payload.newMission;
      return next;
    case 'RocketExploded':
      next.status = 'exploded';
      next.explodedReason = m.payload.reason;
      return next;
    case 'MessageSkipped':
      return next;
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
