#!/usr/bin/env node
/**
 * rockets-launch: a load generator that speaks the challenge's test program's language (its flags, one
 * POST per message on a new TCP connection, every non-2xx retried every 500 ms), and adds what the test
 * program lacks: several rockets, duplicates, reordering, a seed, and a check of the final state against
 * its own model of the rules.
 *
 * The model below is a small fold written apart from src/domain on purpose: verifying the server with
 * its own code would prove nothing.
 */
import { createHash, randomInt } from 'node:crypto';
import { request as httpRequest, type ClientRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';

/** Like the test program: a failed delivery is tried again after this long (see `deliver` for which). */
export const RETRY_INTERVAL_MS = 500;
/** A request with no answer after this long counts as a network error, and is retried. */
const REQUEST_TIMEOUT_MS = 30_000;
/** GET /rockets for --verify is tried this many times (every 500 ms) before verification fails. */
const VERIFY_ATTEMPTS = 20;
/** A duplicate is a redelivery of one of the latest this-many distinct messages. */
const RECENT_MESSAGES = 1000;
/** --verify prints at most this many differences. */
const MAX_DIFFERENCES_SHOWN = 50;

export const USAGE = `Usage: rockets-launch <url> [flags]

Sends rocket telemetry to <url> (such as http://localhost:8088/messages) the way the challenge's test
program does: one POST per message on a new TCP connection, and every network error, 5xx, 408 or 429
retried every 500 ms until it is acknowledged. Any other answer (400, 401, 404, 405, 409, ...) can never
succeed by retrying: the run stops, prints its summary and exits 1, as it does when one message has been
refused with 429 for --give-up-after.

Flags of the test program:
  --concurrency-level <n>  messages in flight at once (default 3)
  --max-messages <n>       messages to send in all, duplicates included (default 100000)
  --message-delay <d>      pause of each sender between two of its messages, a Go duration such as
                           500ms, 1s, 1m30s or 0 (default 0)
  --seed <n>               generate from this seed: the same seed and --rockets send the same
                           messages on the same channels (default: random, printed at the start)
Its own:
  --rockets <n>            rockets, each on a channel UUID derived from the seed (default 20)
  --duplicates <ratio>     share of the messages that are redeliveries of a recent one, from 0 to
                           below 1 (default 0.05)
  --shuffle <window>       reorder the stream within a sliding window of this many messages; 0 keeps
                           the generation order, so only concurrency reorders (default 0)
  --give-up-after <d>      stop the run (exit 1) once one message has been refused with 429 for this
                           long: its channel's missing message is likely one the generator itself still
                           holds back, with --shuffle wider than the server's MAX_BUFFERED_PER_CHANNEL
                           (default 1m)
  --verify                 at the end, compare every rocket of this run (GET /rockets next to <url>)
                           with the generator's own model; list the differences and exit 1 if any
  -h, --help               print this help

Flags take --name=value or --name value (-name works too).
Exit status: 0 done (and verified), 1 verification failed, 2 invalid flags, 130 interrupted (Ctrl-C).
`;

// ---------------------------------------------------------------------------------------------------
// Flags

export interface PlanOptions {
  readonly seed: number;
  readonly rockets: number;
  /** Deliveries in all, duplicates included. */
  readonly maxMessages: number;
  /** Share of the deliveries that are redeliveries, in [0, 1). */
  readonly duplicates: number;
  /** Sliding reorder window; 0 or 1 keeps the generation order. */
  readonly shuffle: number;
}

export interface LaunchOptions extends PlanOptions {
  readonly url: string;
  readonly concurrencyLevel: number;
  /** Milliseconds each sender waits between two of its messages. */
  readonly messageDelayMs: number;
  /** Milliseconds one message may be refused with 429 before the run stops. */
  readonly giveUpAfterMs: number;
  readonly verify: boolean;
}

export type ParsedArgs =
  | { readonly kind: 'run'; readonly options: LaunchOptions }
  | { readonly kind: 'help' }
  | { readonly kind: 'invalid'; readonly message: string };

const UNIT_MS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3, // U+00B5, as Go accepts
  μs: 1e-3, // U+03BC
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * Milliseconds in a Go duration (`time.ParseDuration`): `0`, or a signed sequence of decimal numbers each
 * with a unit (ns, us, µs, ms, s, m, h), such as `500ms`, `1.5s` or `1m30s`. Undefined when the text is
 * not one; a unitless number other than 0 is not one either, as in Go.
 */
export function parseDuration(text: string): number | undefined {
  let rest = text;
  let sign = 1;
  if (rest.startsWith('-') || rest.startsWith('+')) {
    if (rest.startsWith('-')) sign = -1;
    rest = rest.slice(1);
  }
  if (rest === '0') return 0;
  if (rest === '') return undefined;
  const part = /(\d*(?:\.\d*)?)([a-zµμ]+)/y;
  let total = 0;
  while (part.lastIndex < rest.length) {
    const m = part.exec(rest);
    if (!m) return undefined;
    const amount = m[1] ?? '';
    const unit = UNIT_MS[m[2] ?? ''];
    if (unit === undefined || !/\d/.test(amount)) return undefined;
    total += Number(amount) * unit;
  }
  return sign * total;
}

class InvalidFlag extends Error {}

function count(name: string, text: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n)) throw new InvalidFlag(`--${name} must be a whole number, got "${text}"`);
  if (n < min || n > max)
    throw new InvalidFlag(
      `--${name} must be ${max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `from ${min} to ${max}`}, got ${n}`,
    );
  return n;
}

function ratio(name: string, text: string): number {
  const n = /^(\d+(\.\d*)?|\.\d+)$/.test(text) ? Number(text) : NaN;
  if (!(n >= 0 && n < 1))
    throw new InvalidFlag(`--${name} must be a ratio from 0 to below 1 (such as 0.05), got "${text}"`);
  return n;
}

function duration(name: string, text: string): number {
  const ms = parseDuration(text);
  if (ms === undefined)
    throw new InvalidFlag(`--${name} must be a Go duration such as 500ms, 1s, 1m30s or 0, got "${text}"`);
  if (ms < 0) throw new InvalidFlag(`--${name} must not be negative, got "${text}"`);
  return ms;
}

/** A duration that must be more than 0: 0 would stop a run at its first 429, which is no limit anyone means. */
function positiveDuration(name: string, text: string): number {
  const ms = duration(name, text);
  if (ms === 0) throw new InvalidFlag(`--${name} must be more than 0, got "${text}"`);
  return ms;
}

function target(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new InvalidFlag(`the target must be a URL such as http://localhost:8088/messages, got "${text}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new InvalidFlag(`the target must be an http:// or https:// URL, got "${text}"`);
  return url.href;
}

const VALUE_FLAGS = [
  'concurrency-level',
  'max-messages',
  'message-delay',
  'seed',
  'rockets',
  'duplicates',
  'shuffle',
  'give-up-after',
] as const;
type ValueFlag = (typeof VALUE_FLAGS)[number];
const isValueFlag = (name: string): name is ValueFlag => (VALUE_FLAGS as readonly string[]).includes(name);

/**
 * Reads the command line (without `node` and the script). Never throws: an invalid command line is an
 * `invalid` result whose message names the flag and what it must be. `randomSeed` gives the seed when
 * `--seed` is absent.
 */
export function parseArgs(argv: readonly string[], randomSeed: () => number = () => randomInt(0, 2 ** 32)): ParsedArgs {
  const rest = [...argv];
  const endOfFlags = rest.indexOf('--');
  if (rest.slice(0, endOfFlags < 0 ? undefined : endOfFlags).some((a) => a === '-h' || a === '--help'))
    return { kind: 'help' };
  const values = new Map<ValueFlag, string>();
  const positionals: string[] = [];
  let verify = false;
  try {
    for (let arg = rest.shift(); arg !== undefined; arg = rest.shift()) {
      if (arg === '--') {
        positionals.push(...rest.splice(0));
        break;
      }
      const flag = /^--?([^=]+)(?:=(.*))?$/s.exec(arg);
      if (!flag || arg === '-') {
        positionals.push(arg);
        continue;
      }
      const name = flag[1] ?? '';
      const inline = flag[2];
      if (name === 'verify') {
        if (inline === undefined || inline === 'true') verify = true;
        else if (inline === 'false') verify = false;
        else throw new InvalidFlag(`--verify takes no value (or =true, =false), got "${inline}"`);
      } else if (isValueFlag(name)) {
        const value = inline ?? rest.shift();
        if (value === undefined) throw new InvalidFlag(`--${name} needs a value`);
        values.set(name, value);
      } else {
        throw new InvalidFlag(`unknown flag ${arg.replace(/=.*$/s, '')}`);
      }
    }
    if (positionals.length !== 1)
      throw new InvalidFlag(
        `expected one target URL such as http://localhost:8088/messages, got ${positionals.length === 0 ? 'none' : positionals.map((p) => `"${p}"`).join(', ')}`,
      );
    const value = (name: ValueFlag, fallback: string): string => values.get(name) ?? fallback;
    const seedText = values.get('seed');
    return {
      kind: 'run',
      options: {
        url: target(positionals[0] ?? ''),
        concurrencyLevel: count('concurrency-level', value('concurrency-level', '3'), 1, 10_000),
        maxMessages: count('max-messages', value('max-messages', '100000'), 1),
        messageDelayMs: duration('message-delay', value('message-delay', '0')),
        seed: seedText === undefined ? randomSeed() : count('seed', seedText, 0),
        rockets: count('rockets', value('rockets', '20'), 1, 1_000_000),
        duplicates: ratio('duplicates', value('duplicates', '0.05')),
        shuffle: count('shuffle', value('shuffle', '0'), 0, 1_000_000),
        giveUpAfterMs: positiveDuration('give-up-after', value('give-up-after', '1m')),
        verify,
      },
    };
  } catch (e) {
    if (e instanceof InvalidFlag) return { kind: 'invalid', message: e.message };
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------------
// Generation

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

// ---------------------------------------------------------------------------------------------------
// Model

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

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

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

// ---------------------------------------------------------------------------------------------------
// Sending

export interface Stats {
  /** Deliveries posted at least once. */
  sent: number;
  /** Deliveries that got a 2xx. */
  acknowledged: number;
  /** Extra attempts after a non-2xx or a network error. */
  retried: number;
  /** Deliveries that were redeliveries by design (--duplicates). */
  duplicatesSent: number;
  /** The server's `status` in its 2xx answers. */
  applied: number;
  buffered: number;
  duplicate: number;
}

export const emptyStats = (): Stats => ({
  sent: 0,
  acknowledged: 0,
  retried: 0,
  duplicatesSent: 0,
  applied: 0,
  buffered: 0,
  duplicate: 0,
});

export type Verified = 'yes' | 'no' | 'skipped';

/** The final line's figures: `sent 2000, acknowledged 2000 (applied …), retried 0, …, verified yes`. */
export function summary(s: Stats, elapsedMs: number, verified: Verified): string {
  const seconds = elapsedMs / 1000;
  const rate = seconds > 0 ? Math.round(s.acknowledged / seconds) : 0;
  return (
    `sent ${s.sent}, acknowledged ${s.acknowledged} (applied ${s.applied}, buffered ${s.buffered}, ` +
    `duplicate ${s.duplicate}), retried ${s.retried}, duplicates sent ${s.duplicatesSent}, ${rate} msg/s, ` +
    `elapsed ${seconds.toFixed(1)} s, verified ${verified}`
  );
}

interface Reply {
  readonly status: number;
  readonly text: string;
}

/** One request on its own TCP connection (no agent, no keep-alive), as the test program sends them. */
function exchange(url: URL, method: 'GET' | 'POST', body?: string): Promise<Reply> {
  const send: (url: URL, options: RequestOptions, callback: (res: IncomingMessage) => void) => ClientRequest =
    url.protocol === 'https:' ? httpsRequest : httpRequest;
  const headers: Record<string, string | number> =
    body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  return new Promise((resolve, reject) => {
    const req = send(url, { method, agent: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', reject);
    });
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS / 1000} s`)));
    req.on('error', reject);
    req.end(body);
  });
}

const describeError = (e: unknown): string =>
  e instanceof Error ? ((e as NodeJS.ErrnoException).code ?? e.message) : String(e);

function ackStatus(text: string): unknown {
  try {
    const body: unknown = JSON.parse(text);
    return isRecord(body) ? body.status : undefined;
  } catch {
    return undefined;
  }
}

/** An answer that retrying cannot change, or a refusal that outlasted --give-up-after: the run stops. */
class StopRun extends Error {}

/** Whether an answer may change by asking again: the server was down, busy or slow. */
const retryable = (status: number): boolean => status >= 500 || status === 408 || status === 429;

/**
 * Posts until a 2xx, every 500 ms, while the answers are ones a retry can change (`retryable`, network
 * errors); says once per kind of failure what is being retried. Throws StopRun on any other answer, on a
 * 429 that lasts `giveUpAfterMs`, and when `stopped()` says another sender stopped the run.
 */
async function deliver(
  url: URL,
  d: Delivery,
  stats: Stats,
  warn: (kind: string, text: string) => void,
  stopped: () => boolean,
  giveUpAfterMs: number,
): Promise<void> {
  stats.sent++;
  if (d.duplicate) stats.duplicatesSent++;
  const what = `${d.telemetry.channel} #${d.telemetry.messageNumber}`;
  let refusedSince: number | undefined;
  for (;;) {
    try {
      const reply = await exchange(url, 'POST', d.body);
      if (reply.status >= 200 && reply.status < 300) {
        stats.acknowledged++;
        const status = ackStatus(reply.text);
        if (status === 'applied' || status === 'buffered' || status === 'duplicate') stats[status]++;
        return;
      }
      const text = `${reply.status} for ${what}: ${reply.text.slice(0, 300)}`;
      if (!retryable(reply.status)) throw new StopRun(`${text} (retrying cannot change this answer)`);
      if (reply.status === 429) {
        refusedSince ??= performance.now();
        if (performance.now() - refusedSince >= giveUpAfterMs)
          throw new StopRun(
            `${text} (refused for ${giveUpAfterMs / 1000} s, --give-up-after: is --shuffle wider than the server's MAX_BUFFERED_PER_CHANNEL?)`,
          );
      }
      warn(`status ${reply.status}`, text);
    } catch (e) {
      if (e instanceof StopRun) throw e;
      const problem = describeError(e);
      warn(problem, `${problem} posting to ${url.href}`);
    }
    if (stopped()) throw new StopRun('stopped by another sender');
    stats.retried++;
    await sleep(RETRY_INTERVAL_MS);
  }
}

async function readRockets(url: URL): Promise<unknown> {
  let problem = '';
  for (let attempt = 1; attempt <= VERIFY_ATTEMPTS; attempt++) {
    try {
      const reply = await exchange(url, 'GET');
      if (reply.status >= 200 && reply.status < 300) return JSON.parse(reply.text) as unknown;
      problem = `${reply.status} ${reply.text.slice(0, 300)}`;
    } catch (e) {
      problem = describeError(e);
    }
    if (attempt < VERIFY_ATTEMPTS) await sleep(RETRY_INTERVAL_MS);
  }
  throw new Error(`GET ${url.href} failed ${VERIFY_ATTEMPTS} times, last with ${problem}`);
}

/** A bar rewritten in place on a terminal; plain lines every 5 s or 10 % otherwise. */
class Progress {
  private timer: NodeJS.Timeout | undefined;
  private lastLineAt: number;
  private lastDecile = 0;
  private stopped = false;

  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly total: number,
    private readonly stats: Stats,
    private readonly started: number,
  ) {
    this.lastLineAt = started;
  }

  start(): void {
    this.timer = setInterval(
      () => {
        this.render();
      },
      this.out.isTTY ? 100 : 500,
    );
    this.timer.unref();
  }

  /** A line of its own, above the bar. */
  note(line: string): void {
    if (this.out.isTTY) this.out.write('\r\x1b[K');
    this.out.write(`${line}\n`);
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    this.render();
    if (this.out.isTTY) this.out.write('\n');
  }

  private render(): void {
    const now = performance.now();
    const { acknowledged, retried } = this.stats;
    const seconds = (now - this.started) / 1000;
    const rate = seconds > 0 ? acknowledged / seconds : 0;
    const percent = Math.floor((acknowledged * 100) / this.total);
    if (this.out.isTTY) {
      const width = 30;
      const filled = Math.floor((width * acknowledged) / this.total);
      const left =
        rate > 0 && acknowledged < this.total ? `, ${Math.ceil((this.total - acknowledged) / rate)} s left` : '';
      const line =
        `[${'█'.repeat(filled)}${'░'.repeat(width - filled)}] ${percent}% ${acknowledged}/${this.total}, ` +
        `${Math.round(rate)} msg/s, retried ${retried}${left}`;
      this.out.write(`\r${this.out.columns > 1 ? line.slice(0, this.out.columns - 1) : line}\x1b[K`);
      return;
    }
    const decile = Math.floor(percent / 10);
    if (now - this.lastLineAt < 5000 && decile <= this.lastDecile) return;
    this.lastLineAt = now;
    this.lastDecile = decile;
    this.out.write(
      `progress: ${percent}% (${acknowledged}/${this.total} acknowledged), ${Math.round(rate)} msg/s, ` +
        `retried ${retried}, ${seconds.toFixed(1)} s\n`,
    );
  }
}

/**
 * Runs the command line and resolves with the exit status. Ctrl-C prints the summary so far and exits
 * the process with 130 at once.
 */
export async function main(argv: readonly string[]): Promise<number> {
  const parsed = parseArgs(argv);
  if (parsed.kind === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if (parsed.kind === 'invalid') {
    process.stderr.write(`rockets-launch: ${parsed.message}\nRun rockets-launch --help for the flags.\n`);
    return 2;
  }
  const o = parsed.options;
  const url = new URL(o.url);
  const stats = emptyStats();
  const model = new Map<string, ModelRocket>();
  const deliveries = plan(o, (t) => {
    fold(model, t);
  });
  const started = performance.now();
  const progress = new Progress(process.stderr, o.maxMessages, stats, started);
  process.once('SIGINT', () => {
    progress.stop();
    process.stdout.write(`interrupted: ${summary(stats, performance.now() - started, 'skipped')}\n`);
    process.exit(130);
  });
  const warned = new Set<string>();
  const warn = (kind: string, text: string): void => {
    if (warned.has(kind)) return;
    warned.add(kind);
    progress.note(`warning: ${text}; retrying every ${RETRY_INTERVAL_MS} ms, as the test program does`);
  };

  process.stderr.write(
    `rockets-launch: ${o.maxMessages} messages for ${o.rockets} rockets to ${url.href}; concurrency ${o.concurrencyLevel}, ` +
      `delay ${o.messageDelayMs} ms, duplicates ${o.duplicates}, shuffle ${o.shuffle}, seed ${o.seed}\n`,
  );
  progress.start();
  /** Why the run stopped before its end, once a sender met an answer it cannot get past. */
  const run: { stop?: string } = {};
  const stopped = (): boolean => run.stop !== undefined;
  const sender = async (): Promise<void> => {
    for (let first = true; !stopped(); first = false) {
      if (!first && o.messageDelayMs > 0) await sleep(o.messageDelayMs);
      const next = deliveries.next();
      if (next.done === true || stopped()) return;
      try {
        await deliver(url, next.value, stats, warn, stopped, o.giveUpAfterMs);
      } catch (e) {
        if (!(e instanceof StopRun)) throw e;
        run.stop ??= e.message;
      }
    }
  };
  await Promise.all(Array.from({ length: o.concurrencyLevel }, sender));
  const elapsed = performance.now() - started;
  progress.stop();
  if (run.stop !== undefined) {
    process.stdout.write(`stopped: ${run.stop}\ndone: ${summary(stats, elapsed, 'skipped')}\n`);
    return 1;
  }

  let verified: Verified = 'skipped';
  if (o.verify) {
    const rocketsUrl = new URL('rockets', url);
    let found: string[];
    try {
      found = differences(model, await readRockets(rocketsUrl));
    } catch (e) {
      found = [e instanceof Error ? e.message : String(e)];
    }
    verified = found.length === 0 ? 'yes' : 'no';
    if (found.length > 0) {
      process.stdout.write(
        `verify: ${found.length} difference(s) between the generator's model of ${model.size} rockets and GET ${rocketsUrl.href}:\n`,
      );
      for (const line of found.slice(0, MAX_DIFFERENCES_SHOWN)) process.stdout.write(`  ${line}\n`);
      if (found.length > MAX_DIFFERENCES_SHOWN)
        process.stdout.write(`  … and ${found.length - MAX_DIFFERENCES_SHOWN} more\n`);
    }
  }
  process.stdout.write(`done: ${summary(stats, elapsed, verified)}\n`);
  return verified === 'no' ? 1 : 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (status) => {
      process.exitCode = status;
    },
    (e: unknown) => {
      process.stderr.write(`rockets-launch: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}
