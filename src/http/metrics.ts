import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Hub } from '../engine/hub';
import type { LanePool } from '../engine/lanes';
import type { Telemetry } from '../engine/telemetry';
import { codingOf, compress, COMPRESS_MIN_BYTES, withVary } from './io';
import type { EventStore } from '../store/types';

/** A message count of one outcome and type. */
interface Count {
  readonly outcome: string;
  readonly type: string;
  n: number;
}

/**
 * Prometheus metrics (`GET /metrics`). Counters are fed by the engine through `Telemetry`; gauges are
 * read from the lanes, the store and the hub when scraped. Default Node metrics include event-loop lag.
 */
export class Metrics implements Telemetry {
  readonly registry = new Registry();
  /**
   * Message counts by outcome and type, counted here and handed to the counter when scraped: a labelled
   * `inc` hashes and validates its labels, twice per message on the hot path. By outcome, then type: no
   * key string is built per message.
   */
  private readonly counts = new Map<string, Map<string, Count>>();
  private readonly commitSeconds: Histogram;
  private readonly storeErrors: Counter;
  private readonly deliveries: Counter;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'rockets_', eventLoopMonitoringPrecision: 20 });
    const counts = this.counts;
    new Counter({
      name: 'rockets_messages_total',
      help: 'Messages by outcome (received, rejected, applied, buffered, duplicate, conflict, refused) and messageType',
      labelNames: ['outcome', 'type'],
      registers,
      collect() {
        this.reset();
        for (const byType of counts.values())
          for (const c of byType.values()) this.inc({ outcome: c.outcome, type: c.type }, c.n);
      },
    });
    this.commitSeconds = new Histogram({
      name: 'rockets_commit_seconds',
      help: 'Duration of one store commit (a batch of messages)',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.storeErrors = new Counter({ name: 'rockets_store_errors_total', help: 'Failed store commits', registers });
    this.deliveries = new Counter({
      name: 'rockets_subscription_deliveries_total',
      help: 'Items handed to live subscribers',
      registers,
    });
  }

  /** Adds the gauges read at scrape time. */
  observe(lanes: LanePool, store: EventStore, hub: Hub): void {
    const registers = [this.registry];
    new Gauge({
      name: 'rockets_lane_queue_depth',
      help: 'Messages waiting in or being committed by each lane',
      labelNames: ['lane'],
      registers,
      collect() {
        lanes.depths().forEach((d, i) => this.set({ lane: String(i) }, d));
      },
    });
    new Gauge({
      name: 'rockets_buffered_messages',
      help: 'Messages held in the reorder buffer, waiting for a gap to fill',
      registers,
      async collect() {
        this.set((await store.stats()).buffered);
      },
    });
    new Gauge({
      name: 'rockets_subscriptions_open',
      help: 'Open live subscriptions',
      registers,
      collect() {
        this.set(hub.subscribers);
      },
    });
  }

  received(messageType: string): void {
    this.count('received', messageType);
  }
  rejected(messageType: string | undefined): void {
    this.count('rejected', messageType ?? 'invalid');
  }
  decided(status: string, messageType: string): void {
    this.count(status, messageType);
  }

  private count(outcome: string, type: string): void {
    let byType = this.counts.get(outcome);
    if (byType === undefined) this.counts.set(outcome, (byType = new Map<string, Count>()));
    const c = byType.get(type);
    if (c === undefined) byType.set(type, { outcome, type, n: 1 });
    else c.n++;
  }
  committed(seconds: number): void {
    this.commitSeconds.observe(seconds);
  }
  storeFailed(): void {
    this.storeErrors.inc();
  }
  delivered(count: number): void {
    this.deliveries.inc(count);
  }

  /**
   * Answers a scrape: the text format, compressed when the scraper takes a coding (Prometheus takes gzip) and it
   * is 1 KiB or more.
   */
  async respond(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const text = Buffer.from(await this.registry.metrics());
    const headers = { 'content-type': this.registry.contentType, vary: withVary(res, 'accept-encoding') };
    const coding = text.length >= COMPRESS_MIN_BYTES ? codingOf(req.headers['accept-encoding']) : undefined;
    if (coding !== undefined) {
      const body = await compress(text, coding);
      res.writeHead(200, { ...headers, 'content-encoding': coding, 'content-length': String(body.length) });
      res.end(body);
      return;
    }
    res.writeHead(200, { ...headers, 'content-length': String(text.length) });
    res.end(text);
  }
}
