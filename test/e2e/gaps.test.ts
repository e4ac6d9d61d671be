import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { getJson, MAIN, postJson, startServer, type ServerProcess } from '../support/process';

const speedUp = (channel: string, n: number, by = 1) => ({
  metadata: { channel, messageNumber: n, messageTime: '2022-02-02T19:40:05Z', messageType: 'RocketSpeedIncreased' },
  message: { by },
});
const launch = (channel: string) => ({
  metadata: { channel, messageNumber: 1, messageTime: '2022-02-02T19:39:05Z', messageType: 'RocketLaunched' },
  message: { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' },
});

interface GapJson {
  channel: string;
  waitingFor: number;
  count: number;
  oldestSince: string;
}

describe('the built server as a process: a bounded, visible buffer and the gap policy', () => {
  let dir: string;
  let server: ServerProcess | undefined;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rockets-gaps-'));
  });
  afterEach(async () => {
    await server?.stop('SIGKILL');
    server = undefined;
    rmSync(dir, { recursive: true, force: true });
  });
  const databaseUrl = (): string => `sqlite:${join(dir, 'rockets.db')}`;
  const start = async (env: Record<string, string>): Promise<ServerProcess> =>
    (server = await startServer({ DATABASE_URL: databaseUrl(), ...env }));

  it('answers 429 and 503 with Retry-After at the configured caps, stores nothing of them, and lists the gaps', async () => {
    const s = await start({ MAX_BUFFERED_PER_CHANNEL: '2', MAX_BUFFERED_TOTAL: '3' });
    const post = (body: unknown) => postJson(`${s.url}/messages`, body);
    expect((await post(speedUp('a', 2))).status).toBe(202);
    expect((await post(speedUp('a', 3))).status).toBe(202);

    const ahead = await post(speedUp('a', 4));
    expect(ahead.status).toBe(429);
    expect(ahead.headers['retry-after']).toBe('1');
    expect(ahead.body).toMatchObject({
      error: { code: 'CHANNEL_BUFFER_FULL', cap: 'MAX_BUFFERED_PER_CHANNEL', limit: 2, waitingFor: 1 },
    });

    expect((await post(speedUp('b', 2))).status).toBe(202);
    const full = await post(speedUp('c', 2));
    expect(full.status).toBe(503);
    expect(full.headers['retry-after']).toBe('5');
    expect(full.body).toMatchObject({ error: { code: 'BUFFER_FULL', cap: 'MAX_BUFFERED_TOTAL', limit: 3 } });

    expect((await getJson(`${s.url}/health`)).body).toMatchObject({ rockets: 0, events: 0, buffered: 3 });
    const gaps = (await getJson(`${s.url}/gaps`)).body as GapJson[];
    expect(gaps.map((g) => [g.channel, g.waitingFor, g.count])).toEqual([
      ['a', 1, 2],
      ['b', 1, 1],
    ]);
    // Without GAP_TIMEOUT nothing is ever skipped: the gap is still there after a restart.
    expect(await s.stop('SIGTERM')).toBe(0);
    const again = await start({ MAX_BUFFERED_PER_CHANNEL: '2', MAX_BUFFERED_TOTAL: '3' });
    expect((await getJson(`${again.url}/gaps`)).body).toEqual(gaps);
    expect((await postJson(`${again.url}/messages`, speedUp('c', 2))).status).toBe(503);
    expect((await postJson(`${again.url}/messages`, launch('a'))).body).toMatchObject({ status: 'applied' });
    expect((await getJson(`${again.url}/rockets/a`)).body).toMatchObject({ lastMessageNumber: 3, speed: 502 });
  });

  it('skips a gap after GAP_TIMEOUT, refuses the late message with a 409, and rebuilds the same state', async () => {
    const s = await start({ GAP_TIMEOUT: '200ms' });
    expect((await postJson(`${s.url}/messages`, launch('a'))).status).toBe(202);
    expect((await postJson(`${s.url}/messages`, speedUp('a', 4, 40))).body).toMatchObject({ status: 'buffered' });

    // The sweep runs on its own timer: wait for what it does to show, polling as fast as the server answers.
    let gaps: GapJson[];
    do {
      await new Promise((resolve) => setImmediate(resolve));
      gaps = (await getJson(`${s.url}/gaps`)).body as GapJson[];
    } while (gaps.length > 0);

    const events = (await getJson(`${s.url}/rockets/a/events`)).body as Array<Record<string, unknown>>;
    expect(events.map((e) => [e.messageNumber, e.messageType])).toEqual([
      [1, 'RocketLaunched'],
      [2, 'MessageSkipped'],
      [3, 'MessageSkipped'],
      [4, 'RocketSpeedIncreased'],
    ]);
    expect(events[1]?.payload).toEqual({ reason: 'not received within GAP_TIMEOUT (200ms)' });
    expect(Date.parse(String(events[1]?.messageTime))).toBeGreaterThan(Date.parse(String(events[0]?.recordedAt)));

    const late = await postJson(`${s.url}/messages`, speedUp('a', 3, 30));
    expect(late.status).toBe(409);
    expect(late.body).toMatchObject({ error: { code: 'CONFLICT', skipped: true } });
    const live = (await getJson(`${s.url}/rockets`)).body;
    expect(live).toMatchObject([{ channel: 'a', speed: 540, lastMessageNumber: 4, buffer: { count: 0 } }]);
    const logged = s.output.find((line) => line.includes('gaps skipped after GAP_TIMEOUT'));
    expect(JSON.parse(logged ?? '{}')).toMatchObject({ channels: 1, gaps: 1, numbers: 2 });
    expect(await s.stop('SIGTERM')).toBe(0);

    const { stdout } = await promisify(execFile)(process.execPath, [MAIN, '--rebuild'], {
      env: { ...process.env, DATABASE_URL: databaseUrl() },
    });
    expect(JSON.parse(stdout)).toMatchObject({ msg: 'projection rebuilt', events: 4, rockets: 1 });
    const again = await start({});
    expect((await getJson(`${again.url}/rockets`)).body).toEqual(live);
  });
});
