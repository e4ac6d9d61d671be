import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../support/browser';
import { postJson, send } from '../support/process';
import { envelope } from '../support/telemetry';
import { startServer, until, type TestServer } from './support';

/** The text GraphiQL shows in its result pane (Monaco draws spaces as no-break spaces). */
const resultText = (page: Page): Promise<string> =>
  page.evaluate(() => (document.querySelector('.graphiql-response')?.textContent ?? '').replace(/\u00a0/g, ' '));

describe('GraphiQL in headless Chromium', () => {
  let server: TestServer;
  let browser: Browser;
  /** Requests the page made to anything but this server: offline, each would fail. */
  const foreign: string[] = [];
  const sockets: string[] = [];

  beforeAll(async () => {
    server = await startServer({ graphiql: true });
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser.close();
    await server.app.stop();
  });

  const open = async (query: string): Promise<Page> => {
    const html = String((await send(`${server.http}/graphql`, 'GET', undefined, { accept: 'text/html' })).body);
    // yoga's default page loads GraphiQL from unpkg.com, out of reach here; the offline page comes from the
    // @graphql-yoga/render-graphiql package, with every script and style inlined.
    if (html.includes('https://unpkg.com/'))
      throw new Error('GraphiQL would load its assets from a CDN: add the @graphql-yoga/render-graphiql dependency');
    const page = await browser.newPage();
    page.on('request', (r) => {
      const url = r.url();
      if (!url.startsWith(server.http) && !url.startsWith('blob:') && !url.startsWith('data:')) foreign.push(url);
    });
    page.on('websocket', (ws) => sockets.push(ws.url()));
    await page.goto(`${server.http}/graphql?query=${encodeURIComponent(query)}`);
    await page.locator('.graphiql-execute-button').waitFor();
    return page;
  };

  it('loads with its scripts inlined, reaching nothing beyond this server', async () => {
    const page = await open('{ __typename }');
    expect(await page.title()).toBe('Rockets');
    expect(foreign).toEqual([]);
    await page.close();
  });

  it('runs a query and shows its result', async () => {
    await postJson(
      `${server.http}/messages`,
      envelope('graphiql-query', 1, 'RocketLaunched', { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' }),
    );
    const page = await open('{ rockets { nodes { channel mission } } }');
    await page.locator('.graphiql-execute-button').click();
    await page.waitForFunction(() => document.querySelector('.graphiql-response')?.textContent.includes('ARTEMIS'));
    expect(JSON.parse(await resultText(page))).toEqual({
      data: { rockets: { nodes: [{ channel: 'graphiql-query', mission: 'ARTEMIS' }] } },
    });
    await page.close();
  });

  it('shows, over graphql-ws, an event of a subscription started in GraphiQL', async () => {
    const page = await open('subscription { rocketUpdated(channel: "graphiql-live") { channel speed } }');
    await page.locator('.graphiql-execute-button').click();
    await until(() => server.app.service.hub.subscribers === 1);
    expect(sockets).toEqual([`${server.http.replace('http', 'ws')}/graphql`]);

    await postJson(
      `${server.http}/messages`,
      envelope('graphiql-live', 1, 'RocketLaunched', { type: 'Soyuz', launchSpeed: 321, mission: 'LIVE' }),
    );
    await page.waitForFunction(() =>
      document.querySelector('.graphiql-response')?.textContent.includes('graphiql-live'),
    );
    expect(JSON.parse(await resultText(page))).toEqual({
      data: { rocketUpdated: { channel: 'graphiql-live', speed: 321 } },
    });
    await page.close();
    await until(() => server.app.service.hub.subscribers === 0);
  });
});
