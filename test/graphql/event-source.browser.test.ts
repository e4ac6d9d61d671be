import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { validateEnvelope, type RocketMessage } from '../../src/domain/message';
import { openStore } from '../../src/store/open';
import { launchChromium } from '../support/browser';
import { postJson } from '../support/process';
import { envelope } from '../support/telemetry';
import { startServer, until, type TestServer } from './support';

/** What the page's EventSource received: the data of each `next` event, and whether `complete` came. */
interface Received {
  readonly results: unknown[];
  readonly completed: boolean;
}

declare global {
  interface Window {
    received: { results: unknown[]; completed: boolean };
    source: EventSource;
  }
}

/** An envelope as the service validates it, for a store written to directly. */
function validated(sent: unknown): RocketMessage {
  const v = validateEnvelope(sent);
  if (!v.ok) throw new Error('an invalid fixture');
  return v.message;
}

describe('a browser’s EventSource, with no GraphQL client', () => {
  let server: TestServer;
  let browser: Browser;
  let page: Page;

  beforeAll(async () => {
    server = await startServer();
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser.close();
    await server.app.stop();
  });
  beforeEach(async () => {
    page = await browser.newPage();
    // Any page of the server's origin: the stream below is same-origin.
    await page.goto(`${server.http}/health`);
  });
  afterEach(() => page.close());

  /** Opens an EventSource on `/graphql` in the page for `query`; it closes itself on `complete`. */
  const listen = (query: string): Promise<void> =>
    page.evaluate(
      (url) => {
        window.received = { results: [], completed: false };
        const source = (window.source = new EventSource(url));
        source.addEventListener('next', (e) => window.received.results.push(JSON.parse(e.data as string)));
        source.addEventListener('complete', () => {
          window.received.completed = true;
          source.close();
        });
      },
      `/graphql?query=${encodeURIComponent(query)}`,
    );
  const received = (): Promise<Received> => page.evaluate(() => window.received);

  it('follows a subscription live, and closing it releases the subscription on the server', async () => {
    await listen('subscription { rocketUpdated(channel: "browser-live") { channel speed } }');
    await until(() => server.app.service.hub.subscribers === 1);
    await postJson(
      `${server.http}/messages`,
      envelope('browser-live', 1, 'RocketLaunched', { type: 'Soyuz', launchSpeed: 321, mission: 'LIVE' }),
    );
    await page.waitForFunction(() => window.received.results.length === 1);
    expect(await received()).toEqual({
      results: [{ data: { rocketUpdated: { channel: 'browser-live', speed: 321 } } }],
      completed: false,
    });

    await page.evaluate(() => window.source.close());
    await until(() => server.app.service.hub.subscribers === 0);
  });

  it('follows the log across a restart of the server: it reconnects, and goes on after the last event', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rockets-event-source-'));
    const databaseUrl = `sqlite:${join(dir, 'rockets.db')}`;
    let durable = await startServer({ databaseUrl });
    const port = Number(new URL(durable.http).port);
    const post = (n: number) =>
      postJson(
        `${durable.http}/messages`,
        n === 1
          ? envelope('restart', 1, 'RocketLaunched', { type: 'Soyuz', launchSpeed: 1, mission: 'LIVE' })
          : envelope('restart', n, 'RocketSpeedIncreased', { by: 1 }),
      );
    try {
      await page.goto(`${durable.http}/health`);
      await post(1);
      await post(2);
      await listen('subscription { eventAppended(after: 0) { position messageNumber } }');
      await page.waitForFunction(() => window.received.results.length === 2);

      // The stop ends the stream without `complete`; the browser reconnects (after its 3 s) to the same URL.
      await durable.app.stop();
      durable = await startServer({ databaseUrl }, undefined, port);
      await post(3);
      await post(4);
      await page.waitForFunction(() => window.received.results.length >= 4);
      expect(await received()).toEqual({
        results: [1, 2, 3, 4].map((n) => ({ data: { eventAppended: { position: n, messageNumber: n } } })),
        completed: false,
      });
      await page.evaluate(() => window.source.close());
    } finally {
      await durable.app.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('follows rocket updates across a restart: first the rockets that changed while it was away, then live', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rockets-event-source-'));
    const databaseUrl = `sqlite:${join(dir, 'rockets.db')}`;
    let durable = await startServer({ databaseUrl });
    const port = Number(new URL(durable.http).port);
    const update = (channel: string, n: number) =>
      n === 1
        ? envelope(channel, 1, 'RocketLaunched', { type: 'Soyuz', launchSpeed: 1, mission: 'LIVE' })
        : envelope(channel, n, 'RocketSpeedIncreased', { by: 1 });
    try {
      await page.goto(`${durable.http}/health`);
      await listen('subscription { rocketUpdated { channel lastMessageNumber } }');
      await until(() => durable.app.service.hub.subscribers === 1);
      await postJson(`${durable.http}/messages`, update('a', 1));
      await postJson(`${durable.http}/messages`, update('b', 1));
      await page.waitForFunction(() => window.received.results.length === 2);

      // While no server runs, the log grows in the file: a changes twice and c launches; b does not change.
      await durable.app.stop();
      const store = await openStore(databaseUrl);
      await store.commit([update('a', 2), update('a', 3), update('c', 1)].map(validated));
      await store.close();
      // The browser reconnects (after its 3 s, again while refused) with the id of b's update.
      durable = await startServer({ databaseUrl }, undefined, port);
      await page.waitForFunction(() => window.received.results.length >= 4);
      await postJson(`${durable.http}/messages`, update('b', 2));
      await page.waitForFunction(() => window.received.results.length >= 5);
      const states = [
        ['a', 1],
        ['b', 1],
        ['a', 3],
        ['c', 1],
        ['b', 2],
      ] as const;
      expect(await received()).toEqual({
        results: states.map(([channel, n]) => ({ data: { rocketUpdated: { channel, lastMessageNumber: n } } })),
        completed: false,
      });
      await page.evaluate(() => window.source.close());
    } finally {
      await durable.app.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs a query: one result, then `complete`', async () => {
    await postJson(
      `${server.http}/messages`,
      envelope('browser-query', 1, 'RocketLaunched', { type: 'Soyuz', launchSpeed: 1, mission: 'LIVE' }),
    );
    await listen('{ rocket(channel: "browser-query") { mission } }');
    await page.waitForFunction(() => window.received.completed);
    expect(await received()).toEqual({ results: [{ data: { rocket: { mission: 'LIVE' } } }], completed: true });
  });
});
