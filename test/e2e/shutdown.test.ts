import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildApp as startInProcess } from '../../src/app';
import { loadConfig } from '../../src/config';
import { delivery, fleet } from '../support/model';
import { until } from '../graphql/support';
import { getJson, pool, postJson, startServer, type ServerProcess } from '../support/process';

describe('graceful shutdown', () => {
  let dir: string;
  let server: ServerProcess | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rockets-stop-'));
  });
  afterEach(async () => {
    await server?.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it.each(['SIGTERM', 'SIGINT'] as const)(
    'on %s under load exits 0, and everything it acknowledged is stored',
    async (signal) => {
      const url = `sqlite:${join(dir, 'rockets.db')}`;
      const s = (server = await startServer({ DATABASE_URL: url }));
      const acked: Array<{ channel: string; n: number }> = [];
      let stopping: Promise<number | string> | undefined;
      await pool(delivery(fleet(20, 30, 11), 0, 12), 8, async (m) => {
        if (stopping) return;
        try {
          const r = await postJson(`${s.url}/messages`, m);
          if (r.status === 202) acked.push({ channel: m.metadata.channel, n: m.metadata.messageNumber });
        } catch {
          // Refused or cut while stopping: not acknowledged.
        }
        stopping ??= acked.length >= 200 ? s.stop(signal) : undefined;
      });
      expect(await stopping).toBe(0);
      expect(s.output.some((l) => l.includes('"stopping"'))).toBe(true);

      const again = (server = await startServer({ DATABASE_URL: url }));
      // Each acknowledged message is applied (at or below its rocket's last number) or waits in its channel's
      // buffer: a channel holds at least as many as it has acknowledged above its last applied number.
      const rockets = (await getJson(`${again.url}/rockets?limit=10000`)).body as {
        channel: string;
        lastMessageNumber: number;
      }[];
      const gaps = (await getJson(`${again.url}/gaps?limit=10000`)).body as { channel: string; count: number }[];
      const last = new Map(rockets.map((r) => [r.channel, r.lastMessageNumber]));
      const waiting = new Map(gaps.map((g) => [g.channel, g.count]));
      for (const channel of new Set(acked.map((a) => a.channel))) {
        const above = acked.filter((a) => a.channel === channel && a.n > (last.get(channel) ?? 0)).length;
        expect({ channel, buffered: Math.min(above, waiting.get(channel) ?? 0) }).toEqual({ channel, buffered: above });
      }
    },
  );

  it('closes a connection that has sent nothing, and still answers a request in flight', async () => {
    const s = (server = await startServer({ DATABASE_URL: `sqlite:${join(dir, 'rockets.db')}` }));
    const silent = connect(s.port, '127.0.0.1');
    await once(silent, 'connect');
    const silentClosed = once(silent, 'close');
    const held = await postByHand(s.port, JSON.stringify(fleet(1, 1, 6)[0]?.[0]), false);
    // Once another request is answered, the server has read these headers: the request is in flight.
    expect((await getJson(`${s.url}/health`)).status).toBe(200);

    const exit = s.stop('SIGTERM');
    // Closed by the stop, while it waits for the request in flight: before, it was cut only with that
    // request, when the stop's grace ran out.
    await silentClosed;
    held.sendBody();
    await held.closed;
    expect(held.answer()).toMatch(/^HTTP\/1\.1 202 /);
    expect(await exit).toBe(0);
  });

  it('answers a request sent on a new connection just as the stop begins, rather than cutting it', async () => {
    const app = await startInProcess({ ...loadConfig({}), databaseUrl: 'memory:', logLevel: 'silent' });
    const port = await app.start(0, '127.0.0.1');
    // Written, and the stop begun, before the server has read a byte of it.
    const post = await postByHand(port, JSON.stringify(fleet(1, 1, 7)[0]?.[0]), true);
    const stopped = app.stop();
    await post.closed;
    await stopped;
    expect(post.answer()).toMatch(/^HTTP\/1\.1 202 /);
    expect(post.answer()).toMatch(/\r\nconnection: close\r\n/i);
  });

  it('lets an answer already made but still going out to a slow reader finish before it closes', async () => {
    const app = await startInProcess({ ...loadConfig({}), databaseUrl: 'memory:', logLevel: 'silent', graphiql: true });
    const port = await app.start(0, '127.0.0.1');
    const answers: { writableEnded: boolean }[] = [];
    app.server.on('request', (_req, res: { writableEnded: boolean }) => answers.push(res));
    // GraphiQL's nine megabytes, ended by the server but unread by the client when the stop begins.
    const socket = connect(port, '127.0.0.1');
    socket.pause();
    socket.write('GET /graphql HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n');
    await until(() => answers[0]?.writableEnded === true);
    const stopped = app.stop();
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.resume();
    await once(socket, 'close');
    await stopped;
    const wire = Buffer.concat(chunks).toString('latin1');
    const length = Number(/\r\ncontent-length: (\d+)\r\n/i.exec(wire)?.[1]);
    expect(length).toBeGreaterThan(9_000_000);
    expect(wire.length - wire.indexOf('\r\n\r\n') - 4).toBe(length);
    expect(wire.trimEnd().endsWith('</html>')).toBe(true);
  });

  it('answers a request in flight when it stops, stores it, and ends its connection with that answer', async () => {
    const url = `sqlite:${join(dir, 'rockets.db')}`;
    const s = (server = await startServer({ DATABASE_URL: url }));
    const m = fleet(1, 1, 5)[0]?.[0];
    const post = await postByHand(s.port, JSON.stringify(m), false);
    // Once another request is answered, the server has read these headers: the request is in flight.
    expect((await getJson(`${s.url}/health`)).status).toBe(200);
    const logged = new Promise<void>((resolve) => {
      const onData = (c: Buffer): void => {
        if (!c.toString('utf8').includes('"stopping"')) return;
        s.child.stdout?.off('data', onData);
        resolve();
      };
      s.child.stdout?.on('data', onData);
    });
    const exit = s.stop('SIGTERM');
    await logged;
    post.sendBody();
    // The answer says the connection ends, and the server ends it: the stop does not wait for the client
    // or for keep-alive to time out.
    await post.closed;
    expect(post.answer()).toMatch(/^HTTP\/1\.1 202 /);
    expect(post.answer()).toMatch(/\r\nconnection: close\r\n/i);
    expect(await exit).toBe(0);

    const again = (server = await startServer({ DATABASE_URL: url }));
    expect((await getJson(`${again.url}/rockets/${m?.metadata.channel ?? ''}`)).status).toBe(200);
  });
});

/**
 * A POST of /messages written by hand on a connection of its own: its headers at once, and its body with
 * them (`withBody`) or when `sendBody` is called. `closed` resolves when the connection ends.
 */
async function postByHand(port: number, body: string, withBody: boolean) {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  let answer = '';
  socket.on('data', (c: Buffer) => (answer += c.toString('latin1')));
  const closed = once(socket, 'close');
  socket.write(
    `POST /messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\n\r\n${withBody ? body : ''}`,
  );
  return { closed, answer: () => answer, sendBody: () => socket.write(body) };
}
