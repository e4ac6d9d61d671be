/**
 * rockets-launch's command line: the usage text, the options it reads into, and the parser that
 * checks every flag (with Go's duration syntax, as the test program takes it).
 */
import { randomInt } from 'node:crypto';

export const USAGE = `Usage: rockets-launch <url> [flags]

Sends rocket telemetry to <url> (such as http://localhost:8088/messages) the way the challenge's test
program does: one POST per message on a new TCP connection, and every network error, 5xx, 408 or 429
retried every 500 ms until it is acknowledged. Any other answer (400, 401, 404, 405, 409, ...) can never
succeed by retrying: the run stops, prints its summary and exits 1, as it does when one message has been
refused at a buffer cap (429, or 503 BUFFER_FULL) for --give-up-after.

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
  --give-up-after <d>      stop the run (exit 1) once one message has been refused at a buffer cap (429,
                           or 503 BUFFER_FULL) for this long: the message it waits for is likely one the
                           generator itself still holds back, with --shuffle wider than the server's
                           MAX_BUFFERED_PER_CHANNEL or MAX_BUFFERED_TOTAL (default 1m)
  --verify                 at the end, compare every rocket of this run (GET /rockets next to <url>)
                           with the generator's own model; list the differences and exit 1 if any
  --token <t>              send Authorization: Bearer <t> with every request, as a server with
                           INGEST_TOKEN wants (default: the INGEST_TOKEN environment variable, if set;
                           an empty value sends none); never printed
  -h, --help               print this help

Flags take --name=value or --name value (-name works too).
Exit status: 0 done (and verified), 1 verification failed or the run stopped at an answer it cannot get
past, 2 invalid flags, 130 interrupted (Ctrl-C) or 143 terminated (SIGTERM), with the summary so far.
`;

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
  /** Sent as `Authorization: Bearer <token>` with every request; undefined sends none. */
  readonly token: string | undefined;
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
  if (!/^\d+$/.test(text)) throw new InvalidFlag(`--${name} must be a whole number, got "${text}"`);
  // Beyond 2^53 - 1 the number read may not be the one written: it rounds, so it is past `max` too.
  const n = Number(text);
  if (n >= min && n <= max) return n;
  if (max !== Number.MAX_SAFE_INTEGER) throw new InvalidFlag(`--${name} must be from ${min} to ${max}, got ${text}`);
  if (n < min) throw new InvalidFlag(`--${name} must be at least ${min}, got ${text}`);
  throw new InvalidFlag(`--${name} must be at most ${max} (2^53 - 1), got ${text}`);
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
  // Node's timers hold no more: a longer delay would fire at once.
  if (ms > MAX_TIMER_MS)
    throw new InvalidFlag(`--${name} must be at most ${MAX_TIMER_MS} ms (24.8 days), got "${text}"`);
  return ms;
}

/** The longest delay a Node timer takes (2^31 - 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A duration that must be more than 0: 0 would stop a run at its first 429, which is no limit anyone means. */
function positiveDuration(name: string, text: string): number {
  const ms = duration(name, text);
  if (ms === 0) throw new InvalidFlag(`--${name} must be more than 0, got "${text}"`);
  return ms;
}

/**
 * A bearer token as a server can be given one: visible ASCII, no spaces (anything else either cannot go
 * in a header or never matches). Empty: none. The message names where it came from, never the token.
 */
function token(source: string, text: string): string | undefined {
  if (text === '') return undefined;
  if (!/^[\x21-\x7e]+$/.test(text))
    throw new InvalidFlag(`${source} must be visible ASCII characters with no spaces, as a bearer token is`);
  return text;
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
  'token',
] as const;
type ValueFlag = (typeof VALUE_FLAGS)[number];
const isValueFlag = (name: string): name is ValueFlag => (VALUE_FLAGS as readonly string[]).includes(name);

/**
 * Reads the command line (without `node` and the script). Never throws: an invalid command line is an
 * `invalid` result whose message names the flag and what it must be. `randomSeed` gives the seed when
 * `--seed` is absent; `env` gives INGEST_TOKEN when `--token` is.
 */
export function parseArgs(
  argv: readonly string[],
  randomSeed: () => number = () => randomInt(0, 2 ** 32),
  env: Readonly<Record<string, string | undefined>> = process.env,
): ParsedArgs {
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
    const tokenText = values.get('token');
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
        token:
          tokenText === undefined
            ? token('INGEST_TOKEN (the default of --token)', env.INGEST_TOKEN ?? '')
            : token('--token', tokenText),
      },
    };
  } catch (e) {
    if (e instanceof InvalidFlag) return { kind: 'invalid', message: e.message };
    throw e;
  }
}
