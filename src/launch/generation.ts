/**
 * What rockets-launch sends: seeded random streams, each rocket's channel, the endless telemetry of the
 * rockets, and the run's plan of deliveries, with its duplicates and its sliding-window shuffle.
 */
import { createHash } from 'node:crypto';
import type { PlanOptions } from './flags';

/** A duplicate is a redelivery of one of the latest this-many distinct messages. */
const RECENT_MESSAGES = 1000;

export type Random = () => number;

const digest = (text: string): Buffer => createHash('sha256').update(`rockets-launch/${text}`).digest();

/** sfc32, seeded from a hash of the seed and a stream name: one independent stream per purpose. */
export function random(seed: number, stream: string): Random {
  const h = digest(`${seed}/${stream}`);
  let a = h.readUInt32LE(0);
  let b = h.readUInt32LE(4);
  let c = h.readUInt32LE(8);
  let d = h.readUInt32LE(12);
  return () => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
}

/**
 * The channel of rocket `index`: a version 4 UUID derived from the seed and the number of rockets, so
 * runs with other seeds never meet it, and a run with the same seed and --rockets (whose messages are
 * the same) sends to it again.
 */
export function channelId(seed: number, rockets: number, index: number): string {
  const b = digest(`${seed}/${rockets}/channel/${index}`).subarray(0, 16);
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x40;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const hex = b.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export type Change =
  | {
      readonly messageType: 'RocketLaunched';
      readonly message: { readonly type: string; readonly launchSpeed: number; readonly mission: string };
    }
  | { readonly messageType: 'RocketSpeedIncreased'; readonly message: { readonly by: number } }
  | { readonly messageType: 'RocketSpeedDecreased'; readonly message: { readonly by: number } }
  | { readonly messageType: 'RocketMissionChanged'; readonly message: { readonly newMission: string } }
  | { readonly messageType: 'RocketExploded'; readonly message: { readonly reason: string } };

/** One generated message: its metadata and its change. */
export type Telemetry = {
  readonly channel: string;
  readonly messageNumber: number;
  readonly messageTime: string;
} & Change;

/** The seed's envelope, as the test program posts it. */
export const toWire = (t: Telemetry): string =>
  JSON.stringify({
    metadata: {
      channel: t.channel,
      messageNumber: t.messageNumber,
      messageTime: t.messageTime,
      messageType: t.messageType,
    },
    message: t.message,
  });

const TYPES = ['Falcon-9', 'Falcon-Heavy', 'Ariane-6', 'Soyuz-2', 'Electron', 'Long-March-5'];
const MISSIONS = ['ARTEMIS', 'APOLLO', 'GEMINI', 'SHUTTLE_MIR', 'LUNA', 'CHANG_E', 'HAYABUSA'];
const REASONS = ['PRESSURE_VESSEL_FAILURE', 'ENGINE_FLAMEOUT', 'GUIDANCE_FAILURE', 'STRUCTURAL_FAILURE'];
const T0 = Date.UTC(2022, 1, 2, 18, 39, 5, 863);

const pick = <T>(r: Random, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;

/** A message time in the test program's style, at +01:00. */
const timeText = (epochMs: number): string => new Date(epochMs + 3_600_000).toISOString().replace('Z', '+01:00');

function launch(r: Random): Change {
  return {
    messageType: 'RocketLaunched',
    message: { type: pick(r, TYPES), launchSpeed: 100 * (5 + Math.floor(r() * 46)), mission: pick(r, MISSIONS) },
  };
}

/** After the launch: mostly speed changes (some taking the speed below zero), sometimes a second launch, rarely an explosion. */
function change(r: Random): Change {
  const roll = r();
  if (roll < 0.375) return { messageType: 'RocketSpeedIncreased', message: { by: Math.floor(r() * 3000) } };
  if (roll < 0.75) return { messageType: 'RocketSpeedDecreased', message: { by: Math.floor(r() * 3000) } };
  if (roll < 0.95) return { messageType: 'RocketMissionChanged', message: { newMission: pick(r, MISSIONS) } };
  if (roll < 0.9995) return launch(r);
  return { messageType: 'RocketExploded', message: { reason: pick(r, REASONS) } };
}

/**
 * The endless distinct messages of `rockets` rockets, in generation order: each rocket's numbers run
 * 1, 2, 3… and its first message is RocketLaunched; times grow with every message.
 */
export function* telemetry(seed: number, rockets: number): Generator<Telemetry, never> {
  const r = random(seed, 'messages');
  const channels = Array.from({ length: rockets }, (_, i) => channelId(seed, rockets, i));
  const next = channels.map(() => 1);
  let time = T0;
  for (;;) {
    const i = Math.floor(r() * rockets);
    const messageNumber = next[i] ?? 1;
    next[i] = messageNumber + 1;
    time += 1 + Math.floor(r() * 1000);
    const channel = channels[i] ?? '';
    yield { channel, messageNumber, messageTime: timeText(time), ...(messageNumber === 1 ? launch(r) : change(r)) };
  }
}

export interface Delivery {
  readonly telemetry: Telemetry;
  /** The JSON body; a duplicate carries the very same text as the original. */
  readonly body: string;
  readonly duplicate: boolean;
}

/**
 * `total` deliveries: about `ratio` of them redeliveries of one of the latest distinct messages (never
 * before the first), the rest fresh messages pulled from `source`.
 */
export function* withDuplicates(
  source: Iterator<Telemetry>,
  total: number,
  ratio: number,
  r: Random,
): Generator<Delivery, void> {
  const recent: Delivery[] = [];
  let fresh = 0;
  for (let i = 0; i < total; i++) {
    if (recent.length > 0 && r() < ratio) {
      const original = pick(r, recent);
      yield { ...original, duplicate: true };
      continue;
    }
    const next = source.next();
    if (next.done === true) return;
    const d: Delivery = { telemetry: next.value, body: toWire(next.value), duplicate: false };
    recent[fresh++ % RECENT_MESSAGES] = d;
    yield d;
  }
}

interface Keyed<T> {
  readonly key: number;
  readonly item: T;
}

function heapPush<T>(heap: Keyed<T>[], entry: Keyed<T>): void {
  let i = heap.push(entry) - 1;
  while (i > 0) {
    const parentIndex = (i - 1) >> 1;
    const parent = heap[parentIndex];
    if (!parent || parent.key <= entry.key) break;
    heap[i] = parent;
    i = parentIndex;
  }
  heap[i] = entry;
}

function heapPop<T>(heap: Keyed<T>[]): Keyed<T> | undefined {
  const top = heap[0];
  const last = heap.pop();
  if (last === undefined || heap.length === 0) return top;
  let i = 0;
  for (;;) {
    const left = heap[2 * i + 1];
    const right = heap[2 * i + 2];
    if (!left) break;
    const [child, childIndex] = right && right.key < left.key ? [right, 2 * i + 2] : [left, 2 * i + 1];
    if (child.key >= last.key) break;
    heap[i] = child;
    i = childIndex;
  }
  heap[i] = last;
  return top;
}

/**
 * Reorders `source` within a sliding window: item k goes out in the order of the key k + u·window (u
 * uniform in [0, 1)), so two items swap only if fewer than `window` positions apart. Holds about
 * `window` items at a time; a window of 0 or 1 changes nothing.
 */
export function* shuffleWithin<T>(source: Iterable<T>, window: number, r: Random): Generator<T, void> {
  if (window <= 1) {
    yield* source;
    return;
  }
  const heap: Keyed<T>[] = [];
  let index = 0;
  for (const item of source) {
    // Every item still to come has a key of at least `index`: anything keyed below is in its place.
    for (let top = heap[0]; top && top.key < index; top = heap[0]) {
      heapPop(heap);
      yield top.item;
    }
    heapPush(heap, { key: index + r() * window, item });
    index++;
  }
  for (let top = heapPop(heap); top; top = heapPop(heap)) yield top.item;
}

/**
 * The whole run's deliveries, lazily: fresh messages, duplicates, then the shuffle, each from its own
 * random stream of the seed, so the messages themselves depend only on --seed and --rockets.
 * `onFresh` sees every distinct message once, in generation order (number order per rocket), when it is
 * first pulled.
 */
export function* plan(o: PlanOptions, onFresh: (t: Telemetry) => void = () => undefined): Generator<Delivery, void> {
  const fresh = (function* () {
    for (const t of telemetry(o.seed, o.rockets)) {
      onFresh(t);
      yield t;
    }
  })();
  yield* shuffleWithin(
    withDuplicates(fresh, o.maxMessages, o.duplicates, random(o.seed, 'duplicates')),
    o.shuffle,
    random(o.seed, 'shuffle'),
  );
}
