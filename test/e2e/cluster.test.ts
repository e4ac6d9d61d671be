import { delivery, expected, fleet, rng, type Envelope, type ModelRocket, modelOf } from '../support/model';
import { parse } from 'graphql';
import { Subscription, wsClient } from '../graphql/support';
import { admin, describePg, dropSchema, freshSchema, urlWithSchema } from '../support/postgres';
import { getJson, pool, postJson, startServer, type ServerProcess, deliver } from '../support/process';

interface RocketJson extends ModelRocket {
  buffer: { count: number };
}

async function channelNumbers(instance: ServerProcess, channel: string): Promise<number[]> {
  const r = await getJson(`${instance.url}/rockets/${encodeURIComponent(channel)}/events`);
  if (r.status === 404) return [];
  return (r.body as Array<{ messageNumber: number }>).map((e) => e.messageNumber);
}

/**
 * The next log line of `instance` (JSON) that `matches`, from the lines it prints from now on. A plain
 * 'data' listener, removed once it matched: closing a readline interface would pause the stream for the
 * other readers too.
 */
function nextLog(
  instance: ServerProcess,
  matches: (line: Record<string, unknown>) => boolean,
): Promise<Record<string, unknown>> {
  const stdout = instance.child.stdout as NodeJS.ReadableStream;
  return new Promise((resolve) => {
    let rest = '';
    const onData = (chunk: Buffer | string): void => {
      const lines = (rest + String(chunk)).split('\n');
      rest = lines.pop() ?? '';
      for (const text of lines) {
        let line: Record<string, unknown>;
        try {
          line = JSON.parse(text) as Record<string, unknown>;
        } catch {
          continue;
        }
        if (!matches(line)) continue;
        stdout.off('data', onData);
        resolve(line);
        return;
      }
    };
    stdout.on('data', onData);
  });
}

/** Every instance answers the model for every rocket, and every log holds 1..n once each. */
async function expectEveryInstanceAgrees(instances: ServerProcess[], histories: Envelope[][]): Promise<void> {
  const want = histories.map(expected).sort((a, b) => (a.channel < b.channel ? -1 : 1));
  for (const instance of instances) {
    const r = await getJson(`${instance.url}/rockets`);
    expect((r.body as RocketJson[]).map(modelOf)).toEqual(want);
  }
  await pool(histories, 8, async (h) => {
    const channel = h[0]?.metadata.channel ?? '';
    for (const instance of instances)
      expect(await channelNumbers(instance, channel)).toEqual(h.map((m) => m.metadata.messageNumber));
  });
}

describePg('several instances on one PostgreSQL', () => {
  let schema: string;
  let instances: ServerProcess[] = [];
  const startAll = async (n: number): Promise<ServerProcess[]> => {
    const url = urlWithSchema(schema);
    // Started together: migrations must be safe when instances race at start.
    instances = await Promise.all(Array.from({ length: n }, () => startServer({ DATABASE_URL: url })));
    return instances;
  };

  beforeEach(() => {
    schema = freshSchema();
  });
  afterEach(async () => {
    await Promise.all(instances.map((i) => i.stop('SIGKILL')));
    instances = [];
    await dropSchema(schema);
  });

  it('applies a shuffled, duplicated stream spread over three instances exactly as the model says', async () => {
    const histories = fleet(200, 10, 21, 'pg');
    const all = await startAll(3);
    const pickInstance = rng(22);
    await pool(delivery(histories, 0.25, 23), 16, async (m) => {
      const r = await postJson(`${(all[Math.floor(pickInstance() * all.length)] as ServerProcess).url}/messages`, m);
      expect(r.status).toBe(202);
    });
    await expectEveryInstanceAgrees(all, histories);
  });

  it('answers a channel PostgreSQL cannot hold (NUL) with a 400, not a server error', async () => {
    const [one] = await startAll(1);
    const url = (one as ServerProcess).url;
    const cursor = Buffer.from(JSON.stringify(['channel', 'a\u0000', ''])).toString('base64url');
    for (const path of ['/rockets/a%00b', '/rockets/a%00b/events', '/rockets/a%00b?asOf=1', `/rockets?after=${cursor}`])
      expect({ path, status: (await getJson(`${url}${path}`)).status }).toEqual({ path, status: 400 });
    expect((await getJson(`${url}/health`)).status).toBe(200);
  });

  it('after kill -9 of one instance under load, the others carry on and nothing acknowledged is lost', async () => {
    const histories = fleet(60, 25, 31, 'pg');
    const stream = delivery(histories, 0.1, 32);
    const [victim, ...survivors] = await startAll(3);
    if (!victim) throw new Error('no instances');
    const acked = new Set<string>();
    const pickSurvivor = rng(33);
    let killed = false;
    await pool(stream, 16, async (m) => {
      const target =
        !killed && pickSurvivor() < 0.5 ? victim : (survivors[Math.floor(pickSurvivor() * 2)] as ServerProcess);
      try {
        const r = await postJson(`${target.url}/messages`, m);
        if (r.status === 202) acked.add(`${m.metadata.channel}#${m.metadata.messageNumber}`);
      } catch {
        // The victim died mid-request: not acknowledged. The survivors must keep answering.
        expect(target).toBe(victim);
      }
      if (!killed && acked.size >= 400) {
        killed = true;
        await victim.stop('SIGKILL');
      }
    });
    expect(killed).toBe(true);

    // Every acknowledged message is in the log (or the buffer) exactly once, on every survivor.
    const last = new Map(
      ((await getJson(`${survivors[0]?.url ?? ''}/rockets`)).body as RocketJson[]).map((r) => [r.channel, r]),
    );
    const logs = new Map<string, number[]>();
    await pool(histories, 8, async (h) => {
      const channel = h[0]?.metadata.channel ?? '';
      const numbers = await channelNumbers(survivors[0] as ServerProcess, channel);
      expect(new Set(numbers).size).toBe(numbers.length);
      logs.set(channel, numbers);
    });
    for (const k of acked) {
      const [channel, n] = k.split('#') as [string, string];
      const r = last.get(channel);
      if (Number(n) <= (r?.lastMessageNumber ?? 0)) expect(logs.get(channel)).toContain(Number(n));
      else expect(r?.buffer.count ?? 1).toBeGreaterThan(0);
    }

    // The sender retries everything on the survivors: the end state is exact everywhere.
    await pool(stream, 16, async (m) => {
      await deliver(survivors[Math.floor(pickSurvivor() * 2)] as ServerProcess, m);
    });
    await expectEveryInstanceAgrees(survivors, histories);
  });

  it('logs when its LISTEN connection is lost and when it is back, and then feeds what another instance writes', async () => {
    const [a, b] = (await startAll(2)) as [ServerProcess, ServerProcess];
    const up = b.output
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg?: string; backendPid?: number })
      .find((l) => l.msg === 'PostgreSQL LISTEN connection up');
    expect(up?.backendPid).toEqual(expect.any(Number));
    const lost = nextLog(b, (l) => l.level === 40 && String(l.msg).startsWith('PostgreSQL LISTEN connection lost'));
    const back = nextLog(b, (l) => l.level === 30 && l.msg === 'PostgreSQL LISTEN connection up');
    await admin(async (c) => {
      await c.query('SELECT pg_terminate_backend($1)', [up?.backendPid]);
    });
    await lost;
    expect((await back).backendPid).not.toBe(up?.backendPid);

    const client = wsClient({ ws: `${b.url.replace('http:', 'ws:')}/graphql` });
    try {
      const feed = new Subscription<{ eventAppended: { channel: string; messageNumber: number } }>(
        client,
        parse('subscription { eventAppended(after: 0) { channel messageNumber } }'),
      );
      const launch = (fleet(1, 1, 41, 'listen')[0] as Envelope[])[0] as Envelope;
      expect((await postJson(`${a.url}/messages`, launch)).status).toBe(202);
      const [event] = await feed.until((items) => items.length > 0);
      expect(event?.eventAppended).toEqual({ channel: launch.metadata.channel, messageNumber: 1 });
      feed.unsubscribe();
    } finally {
      await client.dispose();
    }
  });
});
