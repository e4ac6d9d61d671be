/**
 * The generator's own model of the rules, folded from the messages it generates, and the differences
 * between it and the server's GET /rockets for --verify.
 *
 * The model below is a small fold written apart from src/domain on purpose: verifying the server with
 * its own code would prove nothing.
 */
import type { Telemetry } from './generation';

export interface ModelRocket {
  readonly channel: string;
  readonly type: string | null;
  readonly mission: string | null;
  readonly speed: number;
  readonly status: 'flying' | 'exploded';
  readonly explodedReason: string | null;
  readonly launchedAt: string | null;
  readonly updatedAt: string;
  readonly lastMessageNumber: number;
}

const utc = (messageTime: string): string => new Date(Date.parse(messageTime)).toISOString();

/**
 * The README's rules, applied to one message that must be the rocket's next number: a decrease below
 * zero stops at 0; after RocketExploded nothing but the number and time moves (the first reason stands);
 * a second RocketLaunched changes nothing.
 */
export function evolveModel(state: ModelRocket | undefined, t: Telemetry): ModelRocket {
  const expectedNumber = (state?.lastMessageNumber ?? 0) + 1;
  if (t.messageNumber !== expectedNumber)
    throw new Error(`model: ${t.channel} expected message ${expectedNumber}, got ${t.messageNumber}`);
  const at = utc(t.messageTime);
  const s: ModelRocket = {
    ...(state ?? {
      channel: t.channel,
      type: null,
      mission: null,
      speed: 0,
      status: 'flying',
      explodedReason: null,
      launchedAt: null,
    }),
    updatedAt: at,
    lastMessageNumber: t.messageNumber,
  };
  if (s.status === 'exploded') return s;
  switch (t.messageType) {
    case 'RocketLaunched':
      return s.launchedAt !== null
        ? s
        : { ...s, type: t.message.type, mission: t.message.mission, speed: t.message.launchSpeed, launchedAt: at };
    case 'RocketSpeedIncreased':
      // Held at 2^53 − 1, as the service holds it (README, "Rules of the rocket state").
      return { ...s, speed: Math.min(Number.MAX_SAFE_INTEGER, s.speed + t.message.by) };
    case 'RocketSpeedDecreased':
      return { ...s, speed: Math.max(0, s.speed - t.message.by) };
    case 'RocketMissionChanged':
      return { ...s, mission: t.message.newMission };
    case 'RocketExploded':
      return { ...s, status: 'exploded', explodedReason: t.message.reason };
    default: {
      const unreachable: never = t;
      throw new Error(`model: unknown message type in ${JSON.stringify(unreachable)}`);
    }
  }
}

/** Folds one message into the fleet's model. */
export function fold(model: Map<string, ModelRocket>, t: Telemetry): void {
  model.set(t.channel, evolveModel(model.get(t.channel), t));
}

const COMPARED = [
  'type',
  'mission',
  'speed',
  'status',
  'explodedReason',
  'launchedAt',
  'updatedAt',
  'lastMessageNumber',
] as const satisfies readonly (keyof ModelRocket)[];

export const isRecord = (x: unknown): x is Record<string, unknown> =>
  typeof x === 'object' && x !== null && !Array.isArray(x);

/**
 * Every way the body of GET /rockets differs from the model, one line each (`<channel>: <field>:
 * expected …, got …`); empty when every rocket of the model is there with the same state and nothing
 * left in its buffer. Rockets the model does not know (other runs') are ignored.
 */
export function differences(model: ReadonlyMap<string, ModelRocket>, live: unknown): string[] {
  if (!Array.isArray(live)) return [`GET /rockets: expected a JSON array, got ${live === null ? 'null' : typeof live}`];
  const byChannel = new Map<unknown, Record<string, unknown>>();
  for (const x of live as unknown[]) if (isRecord(x)) byChannel.set(x.channel, x);
  const out: string[] = [];
  for (const want of model.values()) {
    const got = byChannel.get(want.channel);
    if (!got) {
      out.push(`${want.channel}: missing from GET /rockets`);
      continue;
    }
    for (const field of COMPARED)
      if (got[field] !== want[field])
        out.push(
          `${want.channel}: ${field}: expected ${JSON.stringify(want[field])}, got ${JSON.stringify(got[field])}`,
        );
    const buffered = isRecord(got.buffer) ? got.buffer.count : undefined;
    if (buffered !== 0) out.push(`${want.channel}: buffer.count: expected 0, got ${JSON.stringify(buffered)}`);
  }
  return out;
}
