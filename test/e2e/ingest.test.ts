import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { delivery, expected, fleet, type Envelope, type ModelRocket, modelOf } from '../support/model';
import { getJson, MAIN, pool, postJson, startServer, type ServerProcess, deliver } from '../support/process';

interface RocketJson extends ModelRocket {
  buffer: { waitingFor: number; count: number; oldestSince: string | null };
}
interface EventJson {
  channel: string;
  messageNumber: number;
  position: number;
}

const key = (m: Envelope): string => `${m.metadata.channel}#${m.metadata.messageNumber}`;

async function rockets(server: ServerProcess): Promise<Map<string, RocketJson>> {
  const r = await getJson(`${server.url}/rockets`);
  expect(r.status).toBe(200);
  return new Map((r.body as RocketJson[]).map((x) => [x.channel, x]));
}

/** Every rocket matches the model, and its log holds numbers 1..n once each, in order. */
async function expectFleet(server: ServerProcess, histories: Envelope[][]): Promise<void> {
  const live = await rockets(server);
  for (const h of histories) {
    const want = expected(h);
    const got = live.get(want.channel);
    expect(got && modelOf(got)).toEqual(want);
    expect(got?.buffer.count).toBe(0);
  }
  await pool(histories, 8, async (h) => {
    const channel = h[0]?.metadata.channel ?? '';
    const r = await getJson(`${server.url}/rockets/${encodeURIComponent(channel)}/events`);
    const numbers = (r.body as EventJson[]).map((e) => e.messageNumber);
    expect(numbers).toEqual(h.map((m) => m.metadata.messageNumber));
  });
}

describe('the built server as a process, on a SQLite file', () => {
  let dir: string;
  let server: ServerProcess | undefined;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rockets-e2e-'));
  });
  afterEach(async () => {
    await server?.stop('SIGKILL');
    server = undefined;
    rmSync(dir, { recursive: true, force: true });
  });
  const start = async (): Promise<ServerProcess> =>
    (server = await startServer({ DATABASE_URL: `sqlite:${join(dir, 'rockets.db')}` }));

  it('ends every one of 200 rockets in the model state after a shuffled, duplicated stream at concurrency 16', async () => {
    const histories = fleet(200, 12, 1);
    const s = await start();
    const statuses = new Map<string, number>();
    await pool(delivery(histories, 0.25, 2), 16, async (m) => {
      const r = await postJson(`${s.url}/messages`, m);
      statuses.set(String(r.status), (statuses.get(String(r.status)) ?? 0) + 1);
      expect(r.status).toBe(202);
      expect((r.body as { status: string }).status).toMatch(/^(applied|buffered|duplicate)$/);
    });
    expect([...statuses.keys()]).toEqual(['202']);
    await expectFleet(s, histories);
  });

  it('keeps state, events and buffered messages across a restart, and resumes the buffer', async () => {
    const histories = fleet(20, 8, 3);
    const held = (m: Envelope): boolean => m.metadata.messageNumber === 4;
    let s = await start();
    await pool(
      delivery(histories, 0.1, 4).filter((m) => !held(m)),
      8,
      async (m) => {
        await deliver(s, m);
      },
    );
    const before = await rockets(s);
    for (const h of histories) {
      const r = before.get(h[0]?.metadata.channel ?? '');
      expect(r?.lastMessageNumber).toBe(3);
      expect(r?.buffer).toMatchObject({ waitingFor: 4, count: 4 });
    }
    expect(await s.stop('SIGTERM')).toBe(0);

    s = await start();
    expect(await rockets(s)).toEqual(before);
    for (const h of histories) await deliver(s, h[3]);
    await expectFleet(s, histories);
  });

  it('rebuilds, with `--rebuild`, exactly the projection the live server had', async () => {
    const histories = fleet(30, 15, 7);
    let s = await start();
    await pool(delivery(histories, 0.2, 8), 8, async (m) => {
      await deliver(s, m);
    });
    const live = await rockets(s);
    expect(await s.stop('SIGTERM')).toBe(0);

    const { stdout: out } = await promisify(execFile)(process.execPath, [MAIN, '--rebuild'], {
      env: { ...process.env, DATABASE_URL: `sqlite:${join(dir, 'rockets.db')}` },
    });
    expect(JSON.parse(out)).toMatchObject({
      msg: 'projection rebuilt',
      events: 450,
      rockets: 30,
      database: realpathSync(join(dir, 'rockets.db')),
    });
    s = await start();
    expect(await rockets(s)).toEqual(live);
  });

  it('names the database file it serves, and refuses `--rebuild` of a file that is not there, creating nothing', async () => {
    const s = await start();
    const listening = s.output.find((l) => l.includes('"msg":"listening"')) ?? '{}';
    expect(JSON.parse(listening)).toMatchObject({ store: 'sqlite', database: realpathSync(join(dir, 'rockets.db')) });
    const typo = join(dir, 'typo', 'rockets.db');
    await expect(
      promisify(execFile)(process.execPath, [MAIN, '--rebuild'], {
        env: { ...process.env, DATABASE_URL: `sqlite:${typo}` },
      }),
    ).rejects.toMatchObject({
      code: 1,
      stdout: expect.stringContaining(`there is no SQLite database at ${typo}`) as unknown,
    });
    expect(existsSync(join(dir, 'typo'))).toBe(false);
  });

  it('refuses to start a second server, or `--rebuild`, on the file a running server writes', async () => {
    const s = await start();
    const url = `sqlite:${join(dir, 'rockets.db')}`;
    const second = startServer({ DATABASE_URL: url });
    // Should it start after all, it is stopped, so the failure does not leave a process behind.
    void second.then(
      (extra) => extra.stop('SIGKILL'),
      () => undefined,
    );
    await expect(second).rejects.toThrow(/already open for writing/);
    await expect(
      promisify(execFile)(process.execPath, [MAIN, '--rebuild'], { env: { ...process.env, DATABASE_URL: url } }),
    ).rejects.toMatchObject({ code: 1, stdout: expect.stringMatching(/already open for writing/) as unknown });
    expect((await postJson(`${s.url}/messages`, fleet(1, 1, 3)[0]?.[0])).status).toBe(202);
  });

  it('after kill -9 under load, every acknowledged message is present exactly once', async () => {
    const histories = fleet(50, 40, 5);
    const stream = delivery(histories, 0.1, 6);
    let s = await start();
    const acked = new Set<string>();
    let killed = false;
    const isKilled = (): boolean => killed;
    await pool(stream, 16, async (m) => {
      if (killed) return;
      try {
        const r = await postJson(`${s.url}/messages`, m);
        if (r.status === 202) acked.add(key(m));
        if (acked.size >= 800 && !isKilled()) {
          killed = true;
          await s.stop('SIGKILL');
        }
      } catch {
        // The connection died with the server: not acknowledged, so not counted.
      }
    });
    expect(killed).toBe(true);

    s = await start();
    const after = await rockets(s);
    const numbersOf = new Map<string, Set<number>>();
    await pool(histories, 8, async (h) => {
      const channel = h[0]?.metadata.channel ?? '';
      const r = await getJson(`${s.url}/rockets/${encodeURIComponent(channel)}/events`);
      // 404: nothing of this rocket is applied yet (its acknowledged messages are all buffered).
      const numbers = r.status === 404 ? [] : (r.body as EventJson[]).map((e) => e.messageNumber);
      expect(new Set(numbers).size).toBe(numbers.length);
      numbersOf.set(channel, new Set(numbers));
    });
    const bufferedAbove = new Map<string, number>();
    for (const k of acked) {
      const [channel, n] = k.split('#') as [string, string];
      const last = after.get(channel)?.lastMessageNumber ?? 0;
      if (Number(n) <= last) expect(numbersOf.get(channel)?.has(Number(n))).toBe(true);
      else bufferedAbove.set(channel, (bufferedAbove.get(channel) ?? 0) + 1);
    }
    const health = (await getJson(`${s.url}/health`)).body as { buffered: number };
    let ackedBuffered = 0;
    for (const [channel, count] of bufferedAbove) {
      ackedBuffered += count;
      expect(after.get(channel)?.buffer.count ?? health.buffered).toBeGreaterThanOrEqual(count);
    }
    expect(health.buffered).toBeGreaterThanOrEqual(ackedBuffered);

    // The sender retries what was never acknowledged (and some of what was): the end state is exact.
    await pool(stream, 16, async (m) => {
      await deliver(s, m);
    });
    await expectFleet(s, histories);
  });
});
