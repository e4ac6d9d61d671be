import { once } from 'node:events';
import { request, type IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { buildApp, type App } from '../../src/app';
import { loadConfig } from '../../src/config';
import { getJson, postJson, send, startServer } from '../support/process';

const launch = (channel: string, n = 1) => ({
  metadata: { channel, messageNumber: n, messageTime: '2022-02-02T19:39:05Z', messageType: 'RocketLaunched' },
  message: { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' },
});

describe('metrics', () => {
  let app: App;
  let base: string;
  afterEach(() => app.stop());

  const boot = async (env: Record<string, string> = {}): Promise<void> => {
    app = await buildApp({ ...loadConfig({ LOG_LEVEL: 'silent', ...env }), databaseUrl: 'memory:' });
    base = `http://127.0.0.1:${await app.start(0, '127.0.0.1')}`;
  };

  it('counts messages by outcome and type, and reports lanes, buffer, commits and event-loop lag', async () => {
    await boot();
    await postJson(`${base}/messages`, launch('a'));
    await postJson(`${base}/messages`, launch('a'));
    await postJson(`${base}/messages`, launch('b', 3));
    await postJson(`${base}/messages`, { nonsense: true });
    // A known type with a bad payload is counted under its type; an unknown type is not a label.
    await postJson(`${base}/messages`, { ...launch('c'), message: { launchSpeed: 'fast' } });
    await postJson(`${base}/messages`, { metadata: { messageType: 'RocketTeleported' }, message: {} });
    const r = await send(`${base}/metrics`, 'GET');
    expect(r.status).toBe(200);
    const text = String(r.body);
    for (const line of [
      'rockets_messages_total{outcome="received",type="RocketLaunched"} 3',
      'rockets_messages_total{outcome="applied",type="RocketLaunched"} 1',
      'rockets_messages_total{outcome="duplicate",type="RocketLaunched"} 1',
      'rockets_messages_total{outcome="buffered",type="RocketLaunched"} 1',
      'rockets_messages_total{outcome="rejected",type="invalid"} 2',
      'rockets_messages_total{outcome="rejected",type="RocketLaunched"} 1',
      'rockets_buffered_messages 1',
      'rockets_subscriptions_open 0',
      'rockets_store_errors_total 0',
    ])
      expect(text).toContain(line);
    expect(text).toMatch(/rockets_lane_queue_depth\{lane="0"\} 0/);
    expect(text).toMatch(/rockets_commit_seconds_count \d+/);
    expect(text).toMatch(/rockets_nodejs_eventloop_lag_seconds \d/);
  });

  it('counts a body that is not JSON or not UTF-8 as rejected, type invalid; one refused unread not', async () => {
    await boot({ MAX_BODY_BYTES: '1024' });
    const rejected = async (): Promise<number> => {
      const text = String((await send(`${base}/metrics`, 'GET')).body);
      return Number(/^rockets_messages_total\{outcome="rejected",type="invalid"\} (\d+)$/m.exec(text)?.[1] ?? 0);
    };
    /** POSTs `body` as bytes (send would encode a string as UTF-8); resolves to the status. */
    const post = async (body: Buffer, headers: Record<string, string> = {}): Promise<number> => {
      const req = request(`${base}/messages`, { method: 'POST', headers });
      req.end(body);
      const [reply] = (await once(req, 'response')) as [IncomingMessage];
      reply.resume();
      await once(reply, 'end');
      return reply.statusCode ?? 0;
    };
    expect(await post(Buffer.from('not json'))).toBe(400);
    expect(await rejected()).toBe(1);
    expect(await post(Buffer.from([0xff, 0xfe]))).toBe(400);
    expect(await rejected()).toBe(2);
    // Bodies refused unread, for their size or coding, say nothing of the message: not counted.
    expect(await post(Buffer.alloc(2048, 'x'))).toBe(413);
    expect(await post(Buffer.from('not json'), { 'content-encoding': 'gzip' })).toBe(415);
    expect(await rejected()).toBe(2);
  });

  it('answers 405 with Allow to a method other than GET, HEAD or OPTIONS', async () => {
    await boot();
    const allow = 'GET, HEAD, OPTIONS';
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const r = await send(`${base}/metrics`, method);
      expect({ method, status: r.status, allow: r.headers.allow }).toEqual({ method, status: 405, allow });
    }
    expect((await send(`${base}/metrics`, 'HEAD')).status).toBe(200);
    const options = await send(`${base}/metrics`, 'OPTIONS');
    expect({ status: options.status, allow: options.headers.allow }).toEqual({ status: 204, allow });
  });

  it('is not served when disabled', async () => {
    await boot({ METRICS: 'false' });
    expect((await getJson(`${base}/metrics`)).status).toBe(404);
    expect((await send(`${base}/metrics`, 'OPTIONS')).status).toBe(404);
  });

  it('echoes a request id, and puts it in error bodies', async () => {
    await boot();
    const mine = await send(`${base}/rockets/nope`, 'GET', undefined, { 'x-request-id': 'trace-42' });
    expect(mine.headers['x-request-id']).toBe('trace-42');
    expect(mine.body).toMatchObject({ error: { code: 'NOT_FOUND', requestId: 'trace-42' } });
    const generated = await getJson(`${base}/rockets/nope`);
    expect(generated.headers['x-request-id']).toMatch(/^[0-9a-f]{8}-\w+$/);
  });
});

describe('logs', () => {
  it('writes one JSON line per request at debug level, with the request id and no credentials', async () => {
    const s = await startServer({ DATABASE_URL: 'memory:', LOG_LEVEL: 'debug' });
    try {
      await send(`${s.url}/messages`, 'POST', JSON.stringify(launch('a')), {
        authorization: 'Bearer sekret-token',
        'x-request-id': 'req-1',
      });
      await getJson(`${s.url}/rockets`);
    } finally {
      await s.stop('SIGTERM');
    }
    const lines = s.output.map((l) => JSON.parse(l) as Record<string, unknown>);
    const requests = lines.filter((l) => l.msg === 'request');
    expect(requests).toHaveLength(2);
    expect(requests[0]).toMatchObject({ requestId: 'req-1', method: 'POST', path: '/messages', status: 202 });
    expect(s.output.join('\n')).not.toContain('sekret-token');
  });

  it('logs no credentials of an absolute-form target, and a client gone mid-body as no fault', async () => {
    const s = await startServer({ DATABASE_URL: 'memory:', LOG_LEVEL: 'debug' });
    const wentAway = new Promise<void>((resolve) =>
      s.child.stdout?.on('data', (c: Buffer) => {
        if (c.toString('utf8').includes('client went away')) resolve();
      }),
    );
    try {
      // An absolute-form target, with credentials in it.
      const absolute = request({ host: '127.0.0.1', port: s.port, path: 'http://user:s3cret-pass@x/health' });
      absolute.end();
      const [reply] = (await once(absolute, 'response')) as [IncomingMessage];
      reply.resume();
      await once(reply, 'end');
      // A body cut off: once another request is answered, the server has read its headers.
      const socket = connect(s.port, '127.0.0.1');
      socket.on('error', () => undefined);
      await once(socket, 'connect');
      socket.write('POST /messages HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{');
      await getJson(`${s.url}/health`);
      socket.destroy();
      await wentAway;
    } finally {
      await s.stop('SIGTERM');
    }
    const lines = s.output.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.find((l) => l.msg === 'request')).toMatchObject({ method: 'GET', path: '/health', status: 200 });
    expect(s.output.join('\n')).not.toContain('s3cret-pass');
    expect(lines.filter((l) => (l.level as number) >= 50)).toEqual([]);
  });

  it('writes no line per request at the default info level', async () => {
    const s = await startServer({ DATABASE_URL: 'memory:' });
    try {
      await postJson(`${s.url}/messages`, launch('a'));
    } finally {
      await s.stop('SIGTERM');
    }
    const msgs = s.output.map((l) => (JSON.parse(l) as { msg: string }).msg);
    expect(msgs).toEqual(['listening', 'stopping', 'stopped']);
  });
});
