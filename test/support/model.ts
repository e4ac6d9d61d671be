/**
 * An independent model of the rules, written apart from src/domain so end-to-end tests do not check the
 * server against its own code: histories of many rockets, delivery orders with duplicates, and the
 * state each rocket must end in.
 */
export interface Envelope {
  metadata: { channel: string; messageNumber: number; messageTime: string; messageType: string };
  message: Record<string, string | number>;
}

export interface ModelRocket {
  channel: string;
  type: string | null;
  mission: string | null;
  speed: number;
  status: 'flying' | 'exploded';
  explodedReason: string | null;
  lastMessageNumber: number;
}

/** mulberry32: small, seedable, good enough to shuffle. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;

/** One rocket's history: a launch, then random changes, sometimes an explosion and messages after it. */
export function history(channel: string, length: number, r: () => number): Envelope[] {
  const out: Envelope[] = [];
  const base = Date.UTC(2022, 1, 2, 18, 39, 5);
  for (let n = 1; n <= length; n++) {
    const messageTime = new Date(base + n * 1000).toISOString().replace('Z', '+00:00');
    let messageType: string;
    let message: Record<string, string | number>;
    if (n === 1) {
      messageType = 'RocketLaunched';
      message = { type: pick(r, ['Falcon-9', 'Falcon-Heavy', 'Ariane-6']), launchSpeed: 500, mission: 'ARTEMIS' };
    } else {
      const roll = r();
      if (roll < 0.4) [messageType, message] = ['RocketSpeedIncreased', { by: Math.floor(r() * 3000) }];
      else if (roll < 0.75) [messageType, message] = ['RocketSpeedDecreased', { by: Math.floor(r() * 3000) }];
      else if (roll < 0.9)
        [messageType, message] = ['RocketMissionChanged', { newMission: pick(r, ['SHUTTLE_MIR', 'GEMINI', 'APOLLO']) }];
      else if (roll < 0.95)
        [messageType, message] = ['RocketLaunched', { type: 'Soyuz', launchSpeed: 9, mission: 'SECOND' }];
      else [messageType, message] = ['RocketExploded', { reason: pick(r, ['PRESSURE_VESSEL_FAILURE', 'FUEL']) }];
    }
    out.push({ metadata: { channel, messageNumber: n, messageTime, messageType }, message });
  }
  return out;
}

/** The state a rocket must reach once its whole history is applied in order. */
export function expected(messages: readonly Envelope[]): ModelRocket {
  const first = messages[0];
  if (!first) throw new Error('empty history');
  const s: ModelRocket = {
    channel: first.metadata.channel,
    type: null,
    mission: null,
    speed: 0,
    status: 'flying',
    explodedReason: null,
    lastMessageNumber: 0,
  };
  let launched = false;
  for (const m of [...messages].sort((a, b) => a.metadata.messageNumber - b.metadata.messageNumber)) {
    s.lastMessageNumber = m.metadata.messageNumber;
    if (s.status === 'exploded') continue;
    const p = m.message;
    switch (m.metadata.messageType) {
      case 'RocketLaunched':
        if (!launched) {
          launched = true;
          s.type = String(p.type);
          s.mission = String(p.mission);
          s.speed = Number(p.launchSpeed);
        }
        break;
      case 'RocketSpeedIncreased':
        s.speed = Math.min(Number.MAX_SAFE_INTEGER, s.speed + Number(p.by));
        break;
      case 'RocketSpeedDecreased':
        s.speed = Math.max(0, s.speed - Number(p.by));
        break;
      case 'RocketMissionChanged':
        s.mission = String(p.newMission);
        break;
      case 'RocketExploded':
        s.status = 'exploded';
        s.explodedReason = String(p.reason);
        break;
    }
  }
  return s;
}

/** A fleet of `rockets` histories of `length` messages each. */
export function fleet(rockets: number, length: number, seed: number, prefix = 'rocket'): Envelope[][] {
  const r = rng(seed);
  return Array.from({ length: rockets }, (_, i) => history(`${prefix}-${seed}-${i}`, length, r));
}

/** Every message once, plus about `duplicateRatio` redeliveries, all shuffled together. */
export function delivery(histories: readonly Envelope[][], duplicateRatio: number, seed: number): Envelope[] {
  const r = rng(seed);
  const all = histories.flat();
  const out = [...all];
  for (const m of all) if (r() < duplicateRatio) out.push(m);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [out[i], out[j]] = [out[j] as Envelope, out[i] as Envelope];
  }
  return out;
}

/** The model's fields of a rocket as the server answers it (REST JSON). */
export const modelOf = (r: ModelRocket): ModelRocket => ({
  channel: r.channel,
  type: r.type,
  mission: r.mission,
  speed: r.speed,
  status: r.status,
  explodedReason: r.explodedReason,
  lastMessageNumber: r.lastMessageNumber,
});
