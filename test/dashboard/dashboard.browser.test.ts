import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../support/browser';
import { buildApp, type App } from '../../src/app';
import { loadConfig } from '../../src/config';
import type { MessageType, PayloadByType } from '../../src/domain/message';
import { until } from '../graphql/support';
import { getJson, pool, postJson, send, startServer, type ServerProcess } from '../support/process';
import { envelope } from '../support/telemetry';

const ARTIFACTS = join(__dirname, '..', '..', 'test-artifacts');

/**
 * How long a wait for the page to show something may last: a bound for a page that never shows it, not a
 * claim on speed (tests time nothing; a row follows its rocket as the update is pushed over graphql-ws, and
 * gaps are read every second), loose enough for a loaded machine.
 */
const SHOWN_WITHIN = 20_000;

/** Whether the table shows exactly these rows, in this order; runs in the page. */
const showsInOrder = (want: readonly string[]): boolean =>
  [...document.querySelectorAll<HTMLElement>('#rockets tbody tr[data-channel]')]
    .map((tr) => tr.dataset.channel)
    .join() === want.join();

const cell = (channel: string, column: string): string =>
  `#rockets tr[data-channel="${channel}"] td[data-col="${column}"]`;

interface RocketJson {
  readonly channel: string;
  readonly speed: number;
}

describe('the live dashboard in headless Chromium', () => {
  let app: App;
  let base: string;
  let browser: Browser;
  let page: Page;
  /** Console errors (CSP violations among them), uncaught exceptions, failed requests. */
  const problems: string[] = [];
  /** Requests to anything but this server. */
  const foreign: string[] = [];

  const post = async <K extends MessageType>(
    channel: string,
    n: number,
    type: K,
    payload: PayloadByType[K],
  ): Promise<void> => {
    const reply = await postJson(`${base}/messages`, envelope(channel, n, type, payload));
    expect(reply.status).toBe(202);
  };

  const waitForText = (selector: string, text: string) =>
    page.waitForFunction(([s, t]) => document.querySelector(s)?.textContent === t, [selector, text] as const, {
      timeout: SHOWN_WITHIN,
    });

  const rowOrder = (): Promise<string[]> =>
    page.$$eval('#rockets tbody tr[data-channel]', (trs) => trs.map((tr) => (tr as HTMLElement).dataset.channel ?? ''));

  const serverOrder = async (sort: string, order: string): Promise<string[]> =>
    ((await getJson(`${base}/rockets?sort=${sort}&order=${order}`)).body as RocketJson[]).map((r) => r.channel);

  beforeAll(async () => {
    app = await buildApp({ ...loadConfig({ LOG_LEVEL: 'silent' }), databaseUrl: 'memory:' });
    base = `http://127.0.0.1:${await app.start(0, '127.0.0.1')}`;

    await post('alpha', 1, 'RocketLaunched', { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' });
    await post('bravo', 1, 'RocketLaunched', { type: 'Soyuz', launchSpeed: 100, mission: 'LUNA' });
    await post('charlie', 1, 'RocketLaunched', { type: 'Ariane-5', launchSpeed: 300, mission: 'APOLLO' });
    await post('charlie', 2, 'RocketExploded', { reason: 'PRESSURE_VESSEL_FAILURE' });
    await post('delta', 1, 'RocketLaunched', { type: 'Atlas-V', launchSpeed: 50, mission: 'GEMINI' });
    await post('delta', 3, 'RocketSpeedIncreased', { by: 10 });
    await post('echo', 1, 'RocketLaunched', { type: 'Electron', launchSpeed: 750, mission: 'CAPSTONE' });
    await post('echo', 3, 'RocketSpeedIncreased', { by: 5 });
    await post('echo', 4, 'RocketMissionChanged', { newMission: 'CAPSTONE-2' });

    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
    page.on('request', (r) => {
      const url = r.url();
      if (!url.startsWith(base) && !url.startsWith(base.replace('http', 'ws')) && !url.startsWith('data:'))
        foreign.push(url);
    });
    await page.goto(`${base}/`);
  });

  afterAll(async () => {
    await browser.close();
    await app.stop();
  });

  it('loads with a row for each rocket posted before it opened, reaching nothing beyond this server', async () => {
    await page.waitForFunction(() => document.querySelectorAll('#rockets tbody tr[data-channel]').length === 5);
    expect(await page.title()).toBe('Rockets · live');
    expect(await rowOrder()).toEqual(['alpha', 'bravo', 'charlie', 'delta', 'echo']);
    const alpha = await page.$$eval('#rockets tr[data-channel="alpha"] td', (tds) =>
      Object.fromEntries(
        tds.map((td): [string, string | null] => [(td as HTMLElement).dataset.col ?? '', td.textContent]),
      ),
    );
    expect(alpha).toEqual({
      channel: 'alpha',
      type: 'Falcon-9',
      mission: 'ARTEMIS',
      speed: '500',
      status: 'flying',
      last: '#1',
      gap: '',
      updated: '2022-02-02 18:39:06',
    });
    await waitForText('#connection', 'live');
    await until(() => app.service.hub.subscribers === 1);
    expect(foreign).toEqual([]);
  });

  it('changes a row within a second of a message posted through REST', async () => {
    await post('alpha', 2, 'RocketSpeedIncreased', { by: 100 });
    await waitForText(cell('alpha', 'speed'), '600');
    expect(await page.textContent(cell('alpha', 'last'))).toBe('#2');

    await post('alpha', 3, 'RocketMissionChanged', { newMission: 'MARS' });
    await waitForText(cell('alpha', 'mission'), 'MARS');
  });

  it('sorts by a column when its header is clicked, ascending and then descending', async () => {
    await page.click('#rockets th[data-sort="speed"]');
    const ascending = await serverOrder('speed', 'asc');
    expect(ascending).toEqual(['delta', 'bravo', 'charlie', 'alpha', 'echo']);
    await page.waitForFunction(showsInOrder, ascending);
    expect(await page.getAttribute('#rockets th[data-sort="speed"]', 'aria-sort')).toBe('ascending');

    await page.click('#rockets th[data-sort="speed"]');
    await page.waitForFunction(showsInOrder, await serverOrder('speed', 'desc'));
    expect(await page.getAttribute('#rockets th[data-sort="speed"]', 'aria-sort')).toBe('descending');

    await page.click('#rockets th[data-sort="mission"]');
    await page.waitForFunction(showsInOrder, await serverOrder('mission', 'asc'));
  });

  it('marks exploded rockets, including one that explodes while the page is open', async () => {
    expect(await page.getAttribute('#rockets tr[data-channel="charlie"]', 'class')).toContain('exploded');
    expect(await page.textContent(cell('charlie', 'status'))).toBe('exploded');
    expect(await page.getAttribute(cell('charlie', 'status'), 'title')).toBe('exploded: PRESSURE_VESSEL_FAILURE');

    await post('bravo', 2, 'RocketExploded', { reason: 'LOST_CONTACT' });
    await waitForText(cell('bravo', 'status'), 'exploded');
    expect(await page.getAttribute('#rockets tr[data-channel="bravo"]', 'class')).toContain('exploded');
    await waitForText('#count-exploded', '2');
  });

  it('shows open gaps, new ones as they open and closed ones no more', async () => {
    await waitForText(cell('delta', 'gap'), 'waiting for #2 · 1 buffered');
    await waitForText(cell('echo', 'gap'), 'waiting for #2 · 2 buffered');
    const listed = await page.$$eval('#gaps tbody tr', (trs) =>
      trs.map((tr) => [...tr.querySelectorAll('td')].slice(0, 3).map((td) => td.textContent)),
    );
    expect(listed).toEqual([
      ['delta', '#2', '1'],
      ['echo', '#2', '2'],
    ]);

    await post('delta', 2, 'RocketSpeedIncreased', { by: 20 });
    await waitForText(cell('delta', 'speed'), '80');
    await waitForText(cell('delta', 'gap'), '');
    await page.waitForFunction(() => document.querySelector('#gaps tbody tr[data-channel="delta"]') === null, null, {
      timeout: SHOWN_WITHIN,
    });

    await post('alpha', 5, 'RocketSpeedDecreased', { by: 50 });
    await waitForText(cell('alpha', 'gap'), 'waiting for #4 · 1 buffered');
    await waitForText('#count-gaps', '2');
  });

  it("shows a rocket's event history when it is clicked, and its new events as they are applied", async () => {
    await page.click('#rockets tr[data-channel="alpha"]');
    await page.waitForFunction(() => document.querySelectorAll('#history tbody tr').length === 3);
    expect(await page.isVisible('#history')).toBe(true);
    expect(await page.textContent('#history-channel')).toBe('alpha');
    const rows = (): Promise<string[][]> =>
      page.$$eval('#history tbody tr', (trs) =>
        trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)),
      );
    expect(await rows()).toEqual([
      ['#3', 'mission', '18:39:08.000', '→ MARS'],
      ['#2', 'speed up', '18:39:07.000', '+100'],
      ['#1', 'launched', '18:39:06.000', 'Falcon-9 on ARTEMIS at 500'],
    ]);
    expect(await page.getAttribute('#history tbody tr:last-child td.time', 'title')).toMatch(
      /^2022-02-02T18:39:06\.000Z as sent; recorded /,
    );

    // #4 fills the gap: #4 and the buffered #5 are applied together.
    await post('alpha', 4, 'RocketSpeedIncreased', { by: 25 });
    await page.waitForFunction(() => document.querySelectorAll('#history tbody tr').length === 5, null, {
      timeout: SHOWN_WITHIN,
    });
    expect((await rows()).slice(0, 2).map((r) => r.slice(0, 2))).toEqual([
      ['#5', 'speed down'],
      ['#4', 'speed up'],
    ]);
    await waitForText(cell('alpha', 'speed'), '575');
  });

  it('keeps up with a burst of messages, painting them in batches', async () => {
    const channels = Array.from({ length: 16 }, (_, i) => `load-${String(i).padStart(2, '0')}`);
    const before = await page.evaluate(() => ({ ...(globalThis as unknown as Dashboard).rocketsDashboard.stats }));
    await pool(channels, channels.length, async (channel) => {
      await post(channel, 1, 'RocketLaunched', { type: 'Falcon-Heavy', launchSpeed: 1000, mission: `M-${channel}` });
      for (let n = 2; n <= 40; n++) await post(channel, n, 'RocketSpeedIncreased', { by: n });
    });
    const want = Object.fromEntries(
      ((await getJson(`${base}/rockets`)).body as RocketJson[]).map((r) => [
        r.channel,
        r.speed.toLocaleString('en-US'),
      ]),
    );
    await page.waitForFunction((speeds) => {
      for (const [channel, speed] of Object.entries(speeds)) {
        const td = document.querySelector(`#rockets tr[data-channel="${channel}"] td[data-col="speed"]`);
        if (td?.textContent !== speed) return false;
      }
      return true;
    }, want);
    const after = await page.evaluate(() => ({ ...(globalThis as unknown as Dashboard).rocketsDashboard.stats }));
    const updates = after.updates - before.updates;
    const flushes = after.flushes - before.flushes;
    expect(updates).toBeGreaterThan(channels.length);
    expect(flushes).toBeLessThan(updates);
  });

  it('renders only the rows in view of a large fleet, and the others as it scrolls', async () => {
    const channels = Array.from({ length: 400 }, (_, i) => `zz-${String(i).padStart(3, '0')}`);
    await pool(channels, 16, async (channel) => {
      await post(channel, 1, 'RocketLaunched', { type: 'Vega', launchSpeed: 10, mission: 'FLEET' });
    });
    await page.click('#rockets th[data-sort="channel"]');
    await waitForText('#count-rockets', '421');
    const rendered = await page.$$eval('#rockets tbody tr[data-channel]', (trs) => trs.length);
    expect(rendered).toBeLessThan(100);
    expect(await page.isVisible('#rockets tr[data-channel="zz-399"]')).toBe(false);

    await page.$eval('.fleet', (fleet) => fleet.scrollTo(0, fleet.scrollHeight));
    await page.locator('#rockets tr[data-channel="zz-399"]').waitFor({ timeout: SHOWN_WITHIN });
    expect(await page.$$eval('#rockets tbody tr[data-channel]', (trs) => trs.length)).toBeLessThan(100);
    await page.$eval('.fleet', (fleet) => fleet.scrollTo(0, 0));
    await page.locator('#rockets tr[data-channel="alpha"]').waitFor({ timeout: SHOWN_WITHIN });
  });

  it('writes a screenshot, and logged no script error, CSP violation or failed request', async () => {
    await page.click('#rockets th[data-sort="speed"]');
    await page.click('#rockets th[data-sort="speed"]');
    await page.waitForFunction(
      () => document.querySelector('#rockets th[data-sort="speed"]')?.getAttribute('aria-sort') === 'descending',
    );
    await page.click('#rockets tr[data-channel="alpha"]');
    await page.waitForFunction(() => document.querySelectorAll('#history tbody tr').length === 5);
    // The highlights of the last changes fade first, so the picture shows the steady state.
    await page.waitForFunction(() => document.getAnimations().length === 0);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });
    expect(problems).toEqual([]);
    expect(foreign).toEqual([]);
  });
});

/** What the page exposes for tests and operators: how many updates it received, and how many paints. */
interface Dashboard {
  readonly rocketsDashboard: { readonly stats: { readonly updates: number; readonly flushes: number } };
}

describe('the dashboard with SUBSCRIPTION_TOKEN', () => {
  it('connects with a base64 token given as /#token=, kept as written, and takes it out of the address bar', async () => {
    const token = 'abc+def/ghi==';
    const app = await buildApp({
      ...loadConfig({ LOG_LEVEL: 'silent', SUBSCRIPTION_TOKEN: token }),
      databaseUrl: 'memory:',
    });
    const base = `http://127.0.0.1:${await app.start(0, '127.0.0.1')}`;
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      await page.goto(`${base}/#token=${token}`);
      await page.waitForFunction(() => document.querySelector('#connection')?.textContent === 'live', undefined, {
        timeout: SHOWN_WITHIN,
      });
      expect(await page.evaluate(() => location.href)).toBe(`${base}/`);
      // A new page: from `/`, going to `/#token=…` would only move to a fragment of the same document.
      const refused = await browser.newPage();
      await refused.goto(`${base}/#token=wrong`);
      await refused.waitForFunction(
        () => /Forbidden/.test(document.querySelector('#connection')?.textContent ?? ''),
        undefined,
        { timeout: SHOWN_WITHIN },
      );
    } finally {
      await browser.close();
      await app.stop();
    }
  });
});

describe('the dashboard of the built server', () => {
  let server: ServerProcess;

  beforeAll(async () => {
    server = await startServer({ DATABASE_URL: 'memory:' });
  });
  afterAll(async () => {
    await server.stop();
  });

  it('finds its page and scripts from dist/, with content types and revalidation', async () => {
    const page = await send(`${server.url}/`, 'GET');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.headers['cache-control']).toBe('no-cache');
    expect(page.headers['content-security-policy']).toContain("default-src 'self'");
    expect(String(page.body)).toContain('<script type="module" src="/dashboard/dashboard.js"></script>');

    for (const path of ['/dashboard/dashboard.js', '/dashboard/dashboard.css', '/dashboard/graphql-ws/client.js']) {
      const asset = await send(`${server.url}${path}`, 'GET');
      expect([path, asset.status]).toEqual([path, 200]);
      expect(asset.headers['content-type']).toMatch(path.endsWith('.css') ? /^text\/css/ : /^text\/javascript/);
      const etag = asset.headers.etag as string;
      expect((await send(`${server.url}${path}`, 'GET', undefined, { 'if-none-match': etag })).status).toBe(304);
    }
    // Every module the graphql-ws client imports is served next to it.
    const client = String((await send(`${server.url}/dashboard/graphql-ws/client.js`, 'GET')).body);
    const imports = [...client.matchAll(/^(?:import|export)\b[^;'"]*?['"]\.\/([^'"]+)['"]/gm)].map((m) => m[1]);
    expect(imports.length).toBeGreaterThan(0);
    for (const name of imports)
      expect((await send(`${server.url}/dashboard/graphql-ws/${name ?? ''}`, 'GET')).status).toBe(200);

    expect((await send(`${server.url}/`, 'POST', '{}')).status).toBe(405);
    expect((await send(`${server.url}/dashboard/nothing.js`, 'GET')).status).toBe(404);
  });
});
