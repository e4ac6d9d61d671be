/**
 * How rockets-launch talks to the server: one request per TCP connection, a delivery retried until it
 * is acknowledged (or the run stopped when no retry can help), GET /rockets for --verify, and the
 * counts of a run with its summary line.
 */
import { request as httpRequest, type ClientRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Delivery } from './generation';
import { isRecord } from './model';

/** Like the test program: a failed delivery is tried again after this long (see `deliver` for which). */
export const RETRY_INTERVAL_MS = 500;
/** A request with no answer after this long counts as a network error, and is retried. */
const REQUEST_TIMEOUT_MS = 30_000;
/** GET /rockets for --verify is tried this many times (every 500 ms) before verification fails. */
const VERIFY_ATTEMPTS = 20;

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

/**
 * One request on its own TCP connection (no agent, no keep-alive), as the test program sends them; with
 * `Authorization: Bearer <token>` when there is a token.
 */
function exchange(url: URL, token: string | undefined, method: 'GET' | 'POST', body?: string): Promise<Reply> {
  const send: (url: URL, options: RequestOptions, callback: (res: IncomingMessage) => void) => ClientRequest =
    url.protocol === 'https:' ? httpsRequest : httpRequest;
  const headers: Record<string, string | number> =
    body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
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
export class StopRun extends Error {}

/**
 * Whether an answer refuses a message at a cap of the server's reorder buffer: a 429 (its rocket's cap), or a
 * 503 `BUFFER_FULL` (the total). The message may wait for one the generator itself still holds back.
 */
function atBufferCap(status: number, text: string): boolean {
  if (status === 429) return true;
  if (status !== 503) return false;
  try {
    const body: unknown = JSON.parse(text);
    return isRecord(body) && isRecord(body.error) && body.error.code === 'BUFFER_FULL';
  } catch {
    return false;
  }
}

/** Whether an answer may change by asking again: the server was down, busy or slow. */
const retryable = (status: number): boolean => status >= 500 || status === 408 || status === 429;

/**
 * Posts until a 2xx, every 500 ms, while the answers are ones a retry can change (`retryable`, network
 * errors); says once per kind of failure what is being retried. Throws StopRun on any other answer, on a
 * refusal at a buffer cap (`atBufferCap`) that lasts `giveUpAfterMs`, and when `stopped()` says another
 * sender stopped the run. `token`, if any, goes with every attempt as a bearer token.
 */
export async function deliver(
  url: URL,
  token: string | undefined,
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
      const reply = await exchange(url, token, 'POST', d.body);
      if (reply.status >= 200 && reply.status < 300) {
        stats.acknowledged++;
        const status = ackStatus(reply.text);
        if (status === 'applied' || status === 'buffered' || status === 'duplicate') stats[status]++;
        return;
      }
      const text = `${reply.status} for ${what}: ${reply.text.slice(0, 300)}`;
      if (!retryable(reply.status)) {
        // A server with INGEST_TOKEN set: the sender needs the token, which --token gives.
        const hint =
          reply.status === 401 ? (token === undefined ? '; give the token with --token' : '; check --token') : '';
        throw new StopRun(`${text} (retrying cannot change this answer${hint})`);
      }
      if (atBufferCap(reply.status, reply.text)) {
        refusedSince ??= performance.now();
        if (performance.now() - refusedSince >= giveUpAfterMs)
          throw new StopRun(
            `${text} (refused for ${giveUpAfterMs / 1000} s, --give-up-after: is --shuffle wider than the server's MAX_BUFFERED_PER_CHANNEL or MAX_BUFFERED_TOTAL?)`,
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

/** GET /rockets for --verify, with the run's bearer token if it has one (a server may come to want it). */
export async function readRockets(url: URL, token: string | undefined): Promise<unknown> {
  let problem = '';
  for (let attempt = 1; attempt <= VERIFY_ATTEMPTS; attempt++) {
    try {
      const reply = await exchange(url, token, 'GET');
      if (reply.status >= 200 && reply.status < 300) return JSON.parse(reply.text) as unknown;
      problem = `${reply.status} ${reply.text.slice(0, 300)}`;
    } catch (e) {
      problem = describeError(e);
    }
    if (attempt < VERIFY_ATTEMPTS) await sleep(RETRY_INTERVAL_MS);
  }
  throw new Error(`GET ${url.href} failed ${VERIFY_ATTEMPTS} times, last with ${problem}`);
}
