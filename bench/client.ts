/**
 * The bench's Node load generator, run by bench/run.ts as its own process (on the other core):
 * `node dist/bench/client.js <mode> <json config>`. Prints its result as one line `RESULT {json}`.
 *
 * - `ws-submit`: `clients` graphql-ws sockets, each sending `submitMessage` one at a time for `durationMs`.
 * - `subs`: `singles` subscribers each on one rocket plus `alls` on every rocket (`eventAppended`, one
 *   socket each, or one event stream each with `transport: 'sse'`), then ingest over REST at `rate`
 *   messages/s (closed loop with 32 in flight when 0).
 * - `seed`: `total` messages through the service, in `submitMessages` batches or as REST posts.
 * - `http`: autocannon with the same unique messages as bench/wrk.lua, where wrk is not installed.
 *
 * The graphql-ws client is the protocol written out (connection_init, subscribe, next, complete) on `ws`:
 * the same few lines against our server, mercurius and the bare B3, so the client costs the same for all.
 */
import { Agent, request } from 'node:http';
import WebSocket from 'ws';
import autocannon from 'autocannon';
import {
  channelName,
  envelope,
  graphqlEnvelope,
  kth,
  SUBMIT_MESSAGE,
  SUBMIT_MESSAGES,
  type IngestReport,
} from './telemetry';

/** What a load run reports, from wrk (bench/wrk.lua) or from here. */
export interface LoadResult extends IngestReport {
  /** Requests answered (any status). */
  readonly requests: number;
  readonly durationUs: number;
  readonly errors: Readonly<Record<string, number>>;
  readonly latencyUs: { readonly p50: number; readonly p99: number; readonly mean: number; readonly max: number };
}

export interface SubsResult {
  readonly sent: number;
  readonly acked: number;
  readonly failed: number;
  readonly expectedDeliveries: number;
  readonly deliveries: number;
  readonly missing: number;
  readonly outOfOrder: number;
  readonly ingestMs: number;
  /** From the first send to the last delivery. */
  readonly windowMs: number;
  readonly deliveriesPerSec: number;
  /** Receive time minus the event's `recordedAt` (the server's commit clock, same machine). */
  readonly publishToDeliverMs: Percentiles;
  /** Receive time minus the time the message was posted. */
  readonly sendToDeliverMs: Percentiles;
}

export interface Percentiles {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

export interface SeedResult {
  readonly sent: number;
  readonly ms: number;
  readonly counts: Readonly<Record<string, number>>;
  readonly acked: Readonly<Record<string, number>>;
  readonly unacked: Readonly<Record<string, readonly number[]>>;
}

const agent = new Agent({ keepAlive: true, maxSockets: 64 });

function post(url: string, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

function getJson(url: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    request(url, { agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      });
    })
      .on('error', reject)
      .end();
  });
}

export function percentiles(values: number[]): Percentiles {
  if (values.length === 0) return { p50: NaN, p99: NaN, max: NaN };
  const sorted = Float64Array.from(values).sort();
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return { p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] ?? NaN };
}

interface Frame {
  readonly id?: string;
  readonly type: string;
  readonly payload?: unknown;
}

/** A graphql-transport-ws connection, acknowledged. `onFrame` sees every frame but ping, answered here. */
function openSocket(url: string, onFrame: (f: Frame) => void): Promise<WebSocket> {
  const ws = new WebSocket(url, 'graphql-transport-ws', { perMessageDeflate: false });
  return new Promise((resolve, reject) => {
    ws.once('error', reject);
    ws.once('open', () => ws.send('{"type":"connection_init","payload":{}}'));
    ws.on('message', (data: Buffer) => {
      const f = JSON.parse(data.toString('utf8')) as Frame;
      if (f.type === 'ping') ws.send('{"type":"pong"}');
      else if (f.type === 'connection_ack') {
        ws.off('error', reject);
        resolve(ws);
      } else onFrame(f);
    });
  });
}

/**
 * One GraphQL-over-SSE subscription (distinct connections mode) on its own connection: hands the result of
 * each `next` event to `onResult`. Resolves once the server answers with the stream.
 */
function openStream(
  httpUrl: string,
  query: string,
  variables: Record<string, unknown>,
  onResult: (result: unknown) => void,
): Promise<{ close(): void }> {
  const url = `${httpUrl}/graphql?query=${encodeURIComponent(query)}&variables=${encodeURIComponent(JSON.stringify(variables))}`;
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { accept: 'text/event-stream' }, agent: false });
    req.once('error', reject);
    req.once('response', (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`event stream refused: ${res.statusCode ?? 0}`));
        res.resume();
        return;
      }
      req.off('error', reject);
      req.on('error', () => undefined); // closed by `close()`
      res.setEncoding('utf8');
      let buffered = '';
      res.on('data', (chunk: string) => {
        buffered += chunk;
        let end: number;
        while ((end = buffered.indexOf('\n\n')) >= 0) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          if (!block.includes('event: next')) continue;
          const data = block.split('\n').find((l) => l.startsWith('data: '));
          if (data !== undefined) onResult(JSON.parse(data.slice(6)));
        }
      });
      resolve({ close: () => req.destroy() });
    });
    req.end();
  });
}

interface Ack {
  readonly status?: string;
  readonly channel?: string;
  readonly messageNumber?: number;
  readonly code?: string;
}

/**
 * Counts outcomes, and per channel the highest number acknowledged and the numbers below it that were
 * not (`unacked()`), as bench/wrk.lua does.
 */
class Tally {
  readonly counts: Record<string, number> = {};
  readonly acked: Record<string, number> = {};
  private readonly seen = new Map<string, Set<number>>();
  ok = 0;

  count(name: string): void {
    this.counts[name] = (this.counts[name] ?? 0) + 1;
  }

  ack(a: Ack | null | undefined, errorCode?: string): void {
    if (a?.status === undefined || a.channel === undefined || a.messageNumber === undefined) {
      this.count(`error:${a?.code ?? errorCode ?? 'unparsed'}`);
      return;
    }
    this.ok++;
    this.count(a.status.toLowerCase());
    if ((this.acked[a.channel] ?? 0) < a.messageNumber) this.acked[a.channel] = a.messageNumber;
    let seen = this.seen.get(a.channel);
    if (seen === undefined) this.seen.set(a.channel, (seen = new Set()));
    seen.add(a.messageNumber);
  }

  /**
   * A 2xx of `POST /messages`: an acknowledgement whatever its body, so one that does not say what it
   * acknowledged is counted as `unparsed2xx` (the oracle fails on it), never as a refusal.
   */
  restAck(text: string): void {
    let a: Ack | undefined;
    try {
      a = JSON.parse(text) as Ack;
    } catch {
      a = undefined;
    }
    if (a?.status === undefined || a.channel === undefined || a.messageNumber === undefined) this.count('unparsed2xx');
    else this.ack(a);
  }

  unacked(): Record<string, number[]> {
    const holes: Record<string, number[]> = {};
    for (const [channel, max] of Object.entries(this.acked)) {
      const seen = this.seen.get(channel);
      const missing: number[] = [];
      for (let n = 1; n < max; n++) if (!seen?.has(n)) missing.push(n);
      if (missing.length > 0) holes[channel] = missing;
    }
    return holes;
  }
}

interface GraphQLAnswer<T> {
  readonly data?: T | null;
  readonly errors?: ReadonlyArray<{ readonly extensions?: { readonly code?: string } }>;
}

const errorCode = (a: GraphQLAnswer<unknown>): string | undefined => a.errors?.[0]?.extensions?.code;

interface WsSubmitConfig {
  readonly wsUrl: string;
  readonly clients: number;
  readonly durationMs: number;
  readonly prefix: string;
  readonly channels: number;
}

async function wsSubmit(cfg: WsSubmitConfig): Promise<LoadResult> {
  const tally = new Tally();
  const latencies: number[] = [];
  let k = 0;
  let requests = 0;
  const run = (ws: WebSocket, handlers: Map<string, (f: Frame) => void>): Promise<void> =>
    new Promise((resolve) => {
      let id = 0;
      let started = 0;
      const next = (): void => {
        if (performance.now() >= deadline) {
          resolve();
          return;
        }
        const { index, n } = kth(++k, cfg.channels);
        const op = String(++id);
        started = performance.now();
        handlers.set(op, (f) => {
          if (f.type === 'next') {
            const a = f.payload as GraphQLAnswer<{ submitMessage?: Ack }>;
            tally.ack(a.data?.submitMessage, errorCode(a));
            return;
          }
          handlers.delete(op);
          requests++;
          latencies.push((performance.now() - started) * 1000);
          if (f.type === 'error') tally.count('error:ws');
          next();
        });
        const variables = graphqlEnvelope(channelName(cfg.prefix, index), n);
        ws.send(JSON.stringify({ id: op, type: 'subscribe', payload: { query: SUBMIT_MESSAGE, variables } }));
      };
      next();
    });
  const sockets = await Promise.all(
    Array.from({ length: cfg.clients }, async () => {
      const handlers = new Map<string, (f: Frame) => void>();
      const ws = await openSocket(cfg.wsUrl, (f) => handlers.get(f.id ?? '')?.(f));
      return { ws, handlers };
    }),
  );
  const start = performance.now();
  const deadline = start + cfg.durationMs;
  await Promise.all(sockets.map((s) => run(s.ws, s.handlers)));
  const durationUs = (performance.now() - start) * 1000;
  for (const s of sockets) s.ws.close();
  const p = percentiles(latencies);
  const mean = latencies.reduce((a, b) => a + b, 0) / Math.max(1, latencies.length);
  return {
    prefix: cfg.prefix,
    channels: cfg.channels,
    sent: k,
    acked: tally.acked,
    unacked: tally.unacked(),
    counts: tally.counts,
    requests,
    durationUs,
    errors: {},
    latencyUs: { p50: p.p50, p99: p.p99, mean, max: p.max },
  };
}

interface SubsConfig {
  readonly httpUrl: string;
  readonly wsUrl: string;
  readonly singles: number;
  readonly alls: number;
  /** Messages per second; 0 for as fast as 32 posts in flight allow. */
  readonly rate: number;
  readonly durationMs: number;
  readonly prefix: string;
  /** Subscribe after this position (the head of the log before the run). */
  readonly after: number;
  /** graphql-ws (the default), or GraphQL over server-sent events. */
  readonly transport?: 'ws' | 'sse';
}

const EVENTS = `subscription Events($channel: String, $after: SafeInt) {
  eventAppended(channel: $channel, after: $after) { position channel messageNumber recordedAt }
}`;

interface EventFrame {
  readonly channel: string;
  readonly messageNumber: number;
  readonly recordedAt: string;
}

async function subs(cfg: SubsConfig): Promise<SubsResult> {
  const sendTimes = new Map<string, number>();
  const publishToDeliver: number[] = [];
  const sendToDeliver: number[] = [];
  let deliveries = 0;
  let outOfOrder = 0;
  let lastDelivery = 0;
  /** Per subscriber: the highest number received per channel (contiguous from 1, else out of order). */
  const received: Array<Map<string, number>> = [];

  const subscribe = async (channel: string | null): Promise<{ close(): void }> => {
    const seen = new Map<string, number>();
    received.push(seen);
    const onResult = (result: unknown): void => {
      const now = Date.now();
      const e = (result as GraphQLAnswer<{ eventAppended?: EventFrame }>).data?.eventAppended;
      if (!e) return;
      deliveries++;
      lastDelivery = now;
      if ((seen.get(e.channel) ?? 0) + 1 !== e.messageNumber) outOfOrder++;
      seen.set(e.channel, Math.max(seen.get(e.channel) ?? 0, e.messageNumber));
      publishToDeliver.push(now - Date.parse(e.recordedAt));
      const sentAt = sendTimes.get(`${e.channel}#${e.messageNumber}`);
      if (sentAt === undefined) return;
      sendToDeliver.push(now - sentAt);
    };
    const variables = { channel, after: cfg.after };
    if (cfg.transport === 'sse') return openStream(cfg.httpUrl, EVENTS, variables, onResult);
    const ws = await openSocket(cfg.wsUrl, (f) => {
      if (f.type === 'next') onResult(f.payload);
    });
    ws.send(
      JSON.stringify({
        id: '1',
        type: 'subscribe',
        payload: { query: EVENTS, variables },
      }),
    );
    return ws;
  };
  const sockets: Array<{ close(): void }> = [];
  for (let i = 0; i < cfg.singles; i += 50) {
    const batch = Array.from({ length: Math.min(50, cfg.singles - i) }, (_, j) =>
      subscribe(channelName(cfg.prefix, i + j)),
    );
    sockets.push(...(await Promise.all(batch)));
  }
  for (let i = 0; i < cfg.alls; i++) sockets.push(await subscribe(null));
  // Ingest starts once the server holds every subscription (both servers count them in GET /health).
  const wanted = cfg.singles + cfg.alls;
  for (let waited = 0; ; waited += 50) {
    const h = (await getJson(`${cfg.httpUrl}/health`)) as { subscribers?: number };
    if ((h.subscribers ?? 0) >= wanted) break;
    if (waited > 30_000) throw new Error(`only ${h.subscribers ?? 0} of ${wanted} subscriptions registered`);
    await new Promise((r) => setTimeout(r, 50));
  }

  const ackedMax = new Map<string, number>();
  let sent = 0;
  let acked = 0;
  let failed = 0;
  const send = async (): Promise<void> => {
    const { index, n } = kth(++sent, cfg.singles);
    const channel = channelName(cfg.prefix, index);
    sendTimes.set(`${channel}#${n}`, Date.now());
    try {
      const r = await post(`${cfg.httpUrl}/messages`, JSON.stringify(envelope(channel, n)));
      if (r.status !== 202) throw new Error(String(r.status));
      acked++;
      ackedMax.set(channel, Math.max(ackedMax.get(channel) ?? 0, n));
    } catch {
      failed++;
    }
  };
  const firstSend = Date.now();
  const start = performance.now();
  const inFlight = new Set<Promise<void>>();
  const track = (p: Promise<void>): void => {
    inFlight.add(p);
    void p.then(() => inFlight.delete(p));
  };
  if (cfg.rate > 0) {
    // Open loop: every millisecond, send what the schedule says is due.
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const elapsed = performance.now() - start;
        const due = Math.floor((Math.min(elapsed, cfg.durationMs) * cfg.rate) / 1000);
        while (sent < due) track(send());
        if (elapsed >= cfg.durationMs) {
          clearInterval(timer);
          resolve();
        }
      }, 1);
    });
  } else {
    const loop = async (): Promise<void> => {
      while (performance.now() - start < cfg.durationMs) await send();
    };
    await Promise.all(Array.from({ length: 32 }, loop));
  }
  await Promise.all([...inFlight]);
  const ingestMs = performance.now() - start;

  const missingNow = (): number => {
    let missing = 0;
    received.forEach((seen, i) => {
      const single = i < cfg.singles ? channelName(cfg.prefix, i) : undefined;
      for (const [channel, n] of ackedMax)
        if (single === undefined || single === channel) missing += Math.max(0, n - (seen.get(channel) ?? 0));
    });
    return missing;
  };
  // Deliveries trail the acknowledgements a little; wait for the last ones (bounded).
  for (let waited = 0; missingNow() > 0 && waited < 10_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
  const windowMs = Math.max(1, lastDelivery - firstSend);
  for (const ws of sockets) ws.close();
  return {
    sent,
    acked,
    failed,
    expectedDeliveries: acked * (1 + cfg.alls),
    deliveries,
    missing: missingNow(),
    outOfOrder,
    ingestMs,
    windowMs,
    deliveriesPerSec: Math.round((deliveries * 1000) / windowMs),
    publishToDeliverMs: percentiles(publishToDeliver),
    sendToDeliverMs: percentiles(sendToDeliver),
  };
}

interface SeedConfig {
  readonly url: string;
  readonly graphql: boolean;
  readonly prefix: string;
  readonly channels: number;
  readonly total: number;
  readonly batch: number;
  readonly concurrency: number;
}

async function seed(cfg: SeedConfig): Promise<SeedResult> {
  const tally = new Tally();
  let k = 0;
  const started = performance.now();
  const worker = async (): Promise<void> => {
    while (k < cfg.total) {
      const from = k;
      k = Math.min(cfg.total, k + (cfg.graphql ? cfg.batch : 1));
      const messages = Array.from({ length: k - from }, (_, i) => {
        const { index, n } = kth(from + i + 1, cfg.channels);
        return [channelName(cfg.prefix, index), n] as const;
      });
      if (cfg.graphql) {
        const body = JSON.stringify({
          query: SUBMIT_MESSAGES,
          variables: { messages: messages.map(([c, n]) => graphqlEnvelope(c, n)) },
        });
        const r = await post(`${cfg.url}/graphql`, body);
        const a = JSON.parse(r.text) as GraphQLAnswer<{ submitMessages?: Ack[] }>;
        if (!a.data?.submitMessages) throw new Error(`seed batch failed: ${r.status} ${r.text.slice(0, 300)}`);
        for (const x of a.data.submitMessages) tally.ack(x);
      } else {
        for (const [c, n] of messages) {
          const r = await post(`${cfg.url}/messages`, JSON.stringify(envelope(c, n)));
          if (r.status !== 202) throw new Error(`seed post failed: ${r.status} ${r.text.slice(0, 300)}`);
          tally.restAck(r.text);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: cfg.concurrency }, worker));
  return {
    sent: k,
    ms: performance.now() - started,
    counts: tally.counts,
    acked: tally.acked,
    unacked: tally.unacked(),
  };
}

interface HttpConfig {
  readonly url: string;
  readonly mode: 'rest' | 'graphql' | 'batch' | 'static';
  readonly connections: number;
  readonly durationMs: number;
  readonly prefix: string;
  readonly channels: number;
  readonly batch: number;
  readonly method?: string;
  readonly path?: string;
  readonly body?: string;
}

/** The fallback for bench/wrk.lua: the same requests and the same report, from autocannon. */
async function http(cfg: HttpConfig): Promise<LoadResult> {
  const tally = new Tally();
  let k = 0;
  const next = (): [string, number] => {
    const { index, n } = kth(++k, cfg.channels);
    return [channelName(cfg.prefix, index), n];
  };
  const body = (): string => {
    if (cfg.mode === 'rest') return JSON.stringify(envelope(...next()));
    if (cfg.mode === 'graphql') return JSON.stringify({ query: SUBMIT_MESSAGE, variables: graphqlEnvelope(...next()) });
    const messages = Array.from({ length: cfg.batch }, () => graphqlEnvelope(...next()));
    return JSON.stringify({ query: SUBMIT_MESSAGES, variables: { messages } });
  };
  const onResponse = (status: number, text: string): void => {
    if (status < 200 || status > 299) tally.count(`http${status}`);
    else if (cfg.mode === 'rest') tally.restAck(text);
    else if (cfg.mode === 'graphql') {
      const a = JSON.parse(text) as GraphQLAnswer<{ submitMessage?: Ack }>;
      tally.ack(a.data?.submitMessage, errorCode(a));
    } else {
      const a = JSON.parse(text) as GraphQLAnswer<{ submitMessages?: Ack[] }>;
      for (const x of a.data?.submitMessages ?? []) tally.ack(x);
    }
  };
  const path = cfg.mode === 'rest' ? '/messages' : '/graphql';
  const result = await autocannon({
    url: cfg.url,
    connections: cfg.connections,
    duration: cfg.durationMs / 1000,
    requests: [
      cfg.mode === 'static'
        ? {
            method: cfg.method ?? 'GET',
            path: cfg.path ?? '/',
            body: cfg.body,
            headers: { 'content-type': 'application/json' },
          }
        : {
            method: 'POST',
            path,
            headers: { 'content-type': 'application/json' },
            setupRequest: (req) => ({ ...req, body: body() }),
            onResponse,
          },
    ],
  });
  return {
    prefix: cfg.prefix,
    channels: cfg.channels,
    sent: k,
    acked: tally.acked,
    unacked: tally.unacked(),
    counts: tally.counts,
    requests: result.requests.total,
    durationUs: result.duration * 1e6,
    errors: { status: result.non2xx, connect: result.errors, timeout: result.timeouts },
    latencyUs: {
      p50: result.latency.p50 * 1000,
      p99: result.latency.p99 * 1000,
      mean: result.latency.mean * 1000,
      max: result.latency.max * 1000,
    },
  };
}

async function main(): Promise<void> {
  const [mode, json] = process.argv.slice(2);
  const cfg: unknown = JSON.parse(json ?? '{}');
  let result: unknown;
  if (mode === 'ws-submit') result = await wsSubmit(cfg as WsSubmitConfig);
  else if (mode === 'subs') result = await subs(cfg as SubsConfig);
  else if (mode === 'seed') result = await seed(cfg as SeedConfig);
  else if (mode === 'http') result = await http(cfg as HttpConfig);
  else throw new Error(`unknown mode ${mode ?? ''}`);
  console.log(`RESULT ${JSON.stringify(result)}`);
  agent.destroy();
}

if (require.main === module) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
}
