import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { BatchingWebSocket, SEND_HIGH_WATER } from '../../src/http/graphql/batching-websocket';

/** A ws server using BatchingWebSocket, as the GraphQL transport does, and the server side of each connection. */
async function serve(): Promise<{
  http: Server;
  url: string;
  accepted: () => Promise<{ ws: BatchingWebSocket; tcp: Duplex }>;
}> {
  const wss = new WebSocketServer({ noServer: true, WebSocket: BatchingWebSocket });
  const waiting: Array<(c: { ws: BatchingWebSocket; tcp: Duplex }) => void> = [];
  const http = createServer();
  http.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.attach(socket);
      waiting.shift()?.({ ws, tcp: socket });
    });
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const { port } = http.address() as AddressInfo;
  return {
    http,
    url: `ws://127.0.0.1:${port}`,
    accepted: () => new Promise((resolve) => waiting.push(resolve)),
  };
}

describe('BatchingWebSocket', () => {
  let server: Awaited<ReturnType<typeof serve>>;
  let client: WebSocket;
  let conn: { ws: BatchingWebSocket; tcp: Duplex };
  let received: string[];

  beforeEach(async () => {
    server = await serve();
    const accepted = server.accepted();
    client = new WebSocket(server.url);
    received = [];
    client.on('message', (data: Buffer) => received.push(data.toString('utf8')));
    await new Promise((resolve) => client.once('open', resolve));
    conn = await accepted;
  });

  afterEach(async () => {
    client.terminate();
    conn.ws.terminate();
    await new Promise((resolve) => server.http.close(resolve));
  });

  const arrived = (n: number): Promise<void> =>
    new Promise((resolve) => {
      const check = (): void => {
        if (received.length >= n) resolve();
        else client.once('message', () => setImmediate(check));
      };
      check();
    });

  it('writes the frames of one turn together when the turn ends, and completes each send at once', async () => {
    const done: number[] = [];
    // As graphql-ws sends: the next frame once the last send completed, each in a promise job.
    const sendAll = async (): Promise<void> => {
      for (let i = 0; i < 20; i++) {
        await new Promise<void>((resolve, reject) => {
          conn.ws.send(`frame ${i}`, (err) => (err ? reject(err) : resolve()));
        });
        done.push(i);
      }
    };
    const sending = sendAll();
    // Still corked after the first send: nothing has left yet.
    expect(conn.tcp.writableCorked).toBe(1);
    expect(conn.tcp.writableLength).toBeGreaterThan(0);
    await sending;
    // Every send completed within the turn, and the socket is still corked until it ends.
    expect(done).toHaveLength(20);
    expect(conn.tcp.writableCorked).toBe(1);
    await new Promise((resolve) => setImmediate(resolve));
    expect(conn.tcp.writableCorked).toBe(0);

    await arrived(20);
    expect(received).toEqual(Array.from({ length: 20 }, (_, i) => `frame ${i}`));
  });

  it(`makes a send wait for its write once ${SEND_HIGH_WATER} bytes wait to leave, until the client reads again`, async () => {
    client.pause();
    const big = 'x'.repeat(256 * 1024);
    let sent = 0;
    // Until the client's and the kernel's buffers fill, every send completes; then one waits for its write.
    let waiting: Promise<void> | undefined;
    // Bounded: a socket whose sends never waited would take 100 MB before the test gives up.
    while (waiting === undefined && sent < 400) {
      const send = { completed: false };
      const write = new Promise<void>((resolve, reject) => {
        conn.ws.send(big, (err) => {
          send.completed = true;
          if (err) reject(err);
          else resolve();
        });
      });
      sent++;
      await new Promise((resolve) => setImmediate(resolve));
      if (send.completed) await write;
      else waiting = write;
    }
    if (waiting === undefined) throw new Error(`${sent} sends of 256 KiB all completed while the client read nothing`);
    expect(conn.ws.bufferedAmount).toBeGreaterThanOrEqual(SEND_HIGH_WATER);

    let finished = false;
    void waiting.then(() => (finished = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(finished).toBe(false);

    client.resume();
    await waiting;
    await arrived(sent);
    expect(received).toHaveLength(sent);
    expect(received.every((m) => m === big)).toBe(true);
  });

  it('passes a send on a closed socket to ws, which reports it to the callback', async () => {
    const closed = new Promise((resolve) => conn.ws.once('close', resolve));
    client.close();
    await closed;
    const err = await new Promise<Error | undefined>((resolve) => conn.ws.send('late', resolve));
    expect(err).toBeInstanceOf(Error);
  });
});
