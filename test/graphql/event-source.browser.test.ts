import type { Browser, Page } from 'playwright-core';
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
