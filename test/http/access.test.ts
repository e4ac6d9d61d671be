import { request, type IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { buildApp, type App } from '../../src/app';
import { loadConfig } from '../../src/config';
import { holdCommits, until } from '../graphql/support';
import { CODINGS, getJson, postJson, send, startServer } from '../support/process';

const INGEST = 'ingest-sekret-1';
const SUBSCRIBE = 'subscribe-sekret-2';

const envelope = (channel: string, n = 1) => ({
  metadata: { channel, messageNumber: n, messageTime: '2022-02-02T19:39:05Z', messageType: 'RocketLaunched' },
  message: { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' },
});
const SUBMIT = `mutation {
  submitMessage(
    metadata: { channel: "g", messageNumber: 1, messageTime: "2022-02-02T19:39:05Z", messageType: ROCKET_LAUNCHED }
    message: { rocketLaunched: { type: "Falcon-9", launchSpeed: 500, mission: "ARTEMIS" } }
  ) { status }
}`;

describe('access', () => {
  let app: App;
  let base: string;
  const boot = async (env: Record<string, string>): Promise<void> => {
    app = await buildApp({ ...loadConfig({ LOG_LEVEL: 'silent', ...env }), databaseUrl: 'memory:' });
    base = `http://127.0.0.1:${await app.start(0, '127.0.0.1')}`;
  };
  afterEach(() => app.stop());
  const events = async (): Promise<number> => ((await getJson(`${base}/health`)).body as { events: number }).events;
  const graphql = (query: string, headers: Record<string, string> = {}) =>
    send(`${base}/graphql`, 'POST', JSON.stringify({ query }), { 'content-type': 'application/json', ...headers });

  /** The first answer to a mutation over graphql-ws, or the close code when the socket is refused. */
  const submitOverWs = async (connectionParams: Record<string, string>): Promise<unknown> => {
    const client: Client = createClient({
      url: base.replace('http', 'ws') + '/graphql',
      webSocketImpl: WebSocket,
      connectionParams,
      retryAttempts: 0,
    });
    try {
      return await new Promise((resolve) => {
        client.subscribe(
          { query: SUBMIT },
          { next: resolve, error: (e) => resolve((e as { code?: number }).code), complete: () => undefined },
        );
      });
    } finally {
      await client.dispose();
    }
  };

  describe('with INGEST_TOKEN', () => {
    beforeEach(() => boot({ INGEST_TOKEN: INGEST }));

    it('refuses POST /messages without the bearer token with a 401, and stores nothing', async () => {
      const attempts: Array<Record<string, string>> = [
        {},
        { authorization: 'Bearer wrong' },
        { authorization: INGEST },
      ];
      for (const headers of attempts) {
        const r = await postJson(`${base}/messages`, envelope('a'), headers);
        expect(r.status).toBe(401);
        expect(r.headers['www-authenticate']).toBe('Bearer');
        expect(r.body).toMatchObject({ error: { code: 'UNAUTHENTICATED' } });
        expect(JSON.stringify(r.body)).not.toContain(INGEST);
      }
      expect(await events()).toBe(0);
    });

    it('accepts POST /messages with the bearer token', async () => {
      const r = await postJson(`${base}/messages`, envelope('a'), { authorization: `Bearer ${INGEST}` });
      expect(r.status).toBe(202);
    });

    it('refuses mutations without the token, over HTTP, and keeps reads open', async () => {
      const refused = await graphql(SUBMIT);
      expect(JSON.stringify(refused.body)).toContain('UNAUTHENTICATED');
      expect(await events()).toBe(0);
      const ok = await graphql(SUBMIT, { authorization: `Bearer ${INGEST}` });
      expect(ok.body).toMatchObject({ data: { submitMessage: { status: 'APPLIED' } } });
      expect((await graphql('{ rockets(first: 5) { nodes { channel } } }')).body).toMatchObject({
        data: { rockets: { nodes: [{ channel: 'g' }] } },
      });
    });

    it('takes the token for mutations over graphql-ws from connection_init', async () => {
      expect(JSON.stringify(await submitOverWs({}))).toContain('UNAUTHENTICATED');
      expect(await submitOverWs({ authorization: `Bearer ${INGEST}` })).toMatchObject({
        data: { submitMessage: { status: 'APPLIED' } },
      });
    });
  });

  describe('with INGEST_TOKEN and a different SUBSCRIPTION_TOKEN', () => {
    beforeEach(() => boot({ INGEST_TOKEN: INGEST, SUBSCRIPTION_TOKEN: SUBSCRIBE }));

    it('takes each token from either field of connection_init, so a client can send both', async () => {
      expect(await submitOverWs({ token: SUBSCRIBE, authorization: `Bearer ${INGEST}` })).toMatchObject({
        data: { submitMessage: { status: 'APPLIED' } },
      });
      expect(await submitOverWs({ token: INGEST, authorization: `Bearer ${SUBSCRIBE}` })).toMatchObject({
        data: { submitMessage: { status: 'DUPLICATE' } },
      });
      expect(JSON.stringify(await submitOverWs({ token: SUBSCRIBE }))).toContain('UNAUTHENTICATED');
      expect(await submitOverWs({ authorization: `Bearer ${INGEST}` })).toBe(4403);
      expect(await events()).toBe(1);
    });
  });

  describe('production settings', () => {
    it('turns GraphiQL and introspection off under NODE_ENV=production unless enabled', async () => {
      const production = loadConfig({ NODE_ENV: 'production' });
      expect(production).toMatchObject({ graphiql: false, introspection: false, allowedOrigins: [] });
      expect(loadConfig({ NODE_ENV: 'production', GRAPHIQL: 'true', INTROSPECTION: 'true' })).toMatchObject({
        graphiql: true,
        introspection: true,
      });
      await boot({ NODE_ENV: 'production' });
      const page = await send(`${base}/graphql`, 'GET', undefined, { accept: 'text/html' });
      expect(String(page.body)).not.toContain('<html');
      expect(JSON.stringify((await graphql('{ __schema { types { name } } }')).body)).toMatch(/introspection/i);
    });

    it('refuses a write from an origin not allowed, even a simple one a browser sends without preflight', async () => {
      await boot({ NODE_ENV: 'production', ALLOWED_ORIGINS: 'https://ok.example' });
      const body = JSON.stringify(envelope('csrf'));
      const evil = await send(`${base}/messages`, 'POST', body, {
        origin: 'https://evil.example',
        'content-type': 'text/plain',
      });
      expect(evil.status).toBe(403);
      expect(evil.body).toMatchObject({ error: { code: 'FORBIDDEN' } });
      expect(await events()).toBe(0);
      const ok = await send(`${base}/messages`, 'POST', body, {
        origin: 'https://ok.example',
        'content-type': 'text/plain',
      });
      expect(ok.status).toBe(202);
      expect((await postJson(`${base}/messages`, envelope('csrf', 2))).status).toBe(202);
    });

    it('compares allowed origins without trailing slashes, on REST as on GraphQL', async () => {
      expect(loadConfig({ ALLOWED_ORIGINS: 'https://ok.example/, https://two.example' }).allowedOrigins).toEqual([
        'https://ok.example',
        'https://two.example',
      ]);
      await boot({ ALLOWED_ORIGINS: 'https://ok.example/' });
      const r = await send(`${base}/rockets`, 'GET', undefined, { origin: 'https://ok.example' });
      expect(r.headers['access-control-allow-origin']).toBe('https://ok.example');
    });

    it('answers CORS only for allowed origins, on REST and GraphQL', async () => {
      await boot({ ALLOWED_ORIGINS: 'https://ok.example' });
      for (const path of ['/rockets', '/graphql']) {
        const ok = await send(`${base}${path}`, 'OPTIONS', undefined, {
          origin: 'https://ok.example',
          'access-control-request-method': 'POST',
        });
        expect(ok.status).toBe(204);
        expect(ok.headers['access-control-allow-origin']).toBe('https://ok.example');
        const evil = await send(`${base}${path}`, 'OPTIONS', undefined, { origin: 'https://evil.example' });
        expect(evil.headers['access-control-allow-origin']).toBeUndefined();
      }
      const get = await send(`${base}/rockets`, 'GET', undefined, { origin: 'https://ok.example' });
      expect(get.headers['access-control-allow-origin']).toBe('https://ok.example');
      // Each route allows its own methods; a path that is no route allows nothing.
      const messages = await send(`${base}/messages`, 'OPTIONS', undefined, {
        origin: 'https://ok.example',
        'access-control-request-method': 'POST',
      });
      expect(messages.headers['access-control-allow-methods']).toBe('POST');
      expect(messages.headers.allow).toBe('POST, OPTIONS');
      const rocket = await send(`${base}/rockets/a/events`, 'OPTIONS', undefined, { origin: 'https://ok.example' });
      expect(rocket.headers['access-control-allow-methods']).toBe('GET, HEAD');
      const nowhere = await send(`${base}/nowhere`, 'OPTIONS', undefined, { origin: 'https://ok.example' });
      expect(nowhere.status).toBe(404);
      expect(nowhere.headers['access-control-allow-methods']).toBeUndefined();
      // Without an Origin, OPTIONS is a plain question: the answer lists the route's methods.
      const plain = await send(`${base}/rockets`, 'OPTIONS');
      expect(plain.status).toBe(204);
      expect(plain.headers.allow).toBe('GET, HEAD, OPTIONS');
      // A page on that origin can read the cursor of the next page, and the rest of our own headers.
      expect(get.headers['access-control-expose-headers']).toBe('link, x-next-cursor, x-request-id, retry-after, etag');
      // And send back the ETag it read, to be answered 304.
      const preflight = await send(`${base}/rockets`, 'OPTIONS', undefined, {
        origin: 'https://ok.example',
        'access-control-request-method': 'GET',
        'access-control-request-headers': 'if-none-match',
      });
      expect(String(preflight.headers['access-control-allow-headers']).split(', ')).toContain('if-none-match');
      // A reconnecting EventSource sends the last id it had.
      expect(String(preflight.headers['access-control-allow-headers']).split(', ')).toContain('last-event-id');
    });

    it('answers OPTIONS on /metrics and the dashboard as on a REST route of GET and HEAD', async () => {
      await boot({ ALLOWED_ORIGINS: 'https://ok.example', METRICS: 'true', DASHBOARD: 'true' });
      /** What an OPTIONS answer says: its status, and what it allows whom. */
      const options = async (path: string, headers: Record<string, string>) => {
        const r = await send(`${base}${path}`, 'OPTIONS', undefined, headers);
        return {
          status: r.status,
          ...Object.fromEntries(
            Object.entries(r.headers).filter(([name]) => name === 'allow' || name.startsWith('access-control-')),
          ),
        };
      };
      const asks: Array<Record<string, string>> = [
        { origin: 'https://ok.example', 'access-control-request-method': 'GET' },
        { origin: 'https://evil.example', 'access-control-request-method': 'GET' },
        {},
      ];
      for (const headers of asks) {
        const rest = await options('/health', headers);
        expect(rest).toMatchObject({ status: 204, allow: 'GET, HEAD, OPTIONS' });
        for (const path of ['/metrics', '/', '/dashboard/dashboard.js'])
          expect({ path, headers, answer: await options(path, headers) }).toEqual({ path, headers, answer: rest });
      }
      // What a preflight allowed, the answer carries too: else a browser passes the one and drops the other.
      const cors = async (path: string, method: string, origin: string): Promise<Record<string, unknown>> => {
        const r = await send(`${base}${path}`, method, undefined, { origin });
        return {
          status: r.status,
          ...Object.fromEntries(Object.entries(r.headers).filter(([name]) => name.startsWith('access-control-'))),
        };
      };
      for (const origin of ['https://ok.example', 'https://evil.example']) {
        const rest = await cors('/health', 'GET', origin);
        expect(rest.status).toBe(200);
        for (const path of ['/metrics', '/', '/dashboard/dashboard.js'])
          expect({ path, origin, answer: await cors(path, 'GET', origin) }).toEqual({ path, origin, answer: rest });
      }
      expect((await cors('/metrics', 'GET', 'https://ok.example'))['access-control-allow-origin']).toBe(
        'https://ok.example',
      );
    });

    it('answers 404 to a path that is no route, whatever the method and the origin', async () => {
      await boot({ ALLOWED_ORIGINS: 'https://ok.example', METRICS: 'true', DASHBOARD: 'true' });
      for (const origin of [undefined, 'https://ok.example', 'https://evil.example'])
        for (const method of ['GET', 'POST', 'DELETE', 'OPTIONS'])
          for (const path of ['/nowhere', '/dashboard/nowhere.js']) {
            const r = await send(`${base}${path}`, method, undefined, origin === undefined ? {} : { origin });
            // An allowed origin's page may read the 404; no other gets the allowance.
            const allowed = origin === 'https://ok.example' ? origin : undefined;
            expect({ path, method, origin, status: r.status, cors: r.headers['access-control-allow-origin'] }).toEqual({
              path,
              method,
              origin,
              status: 404,
              cors: allowed,
            });
          }
    });
  });

  describe('methods', () => {
    const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'];
    /** Every route, each of which answers OPTIONS (a preflight, or what it allows). */
    const ROUTES = [
      '/graphql',
      '/messages',
      '/rockets',
      '/rockets/a',
      '/rockets/a/events',
      '/events',
      '/gaps',
      '/health',
      '/openapi.json',
      '/metrics',
      '/',
      '/dashboard/dashboard.js',
    ];

    it('lists in the Allow of every 405 exactly the methods its path takes, OPTIONS too', async () => {
      await boot({ METRICS: 'true', DASHBOARD: 'true' });
      for (const path of ROUTES) {
        const answers = await Promise.all(METHODS.map((m) => send(`${base}${path}`, m)));
        const answered = METHODS.filter((_, i) => answers[i]?.status !== 405);
        expect({ path, options: answered.includes('OPTIONS') }).toEqual({ path, options: true });
        const allows = answers.flatMap((r) => (r.status === 405 ? [String(r.headers.allow)] : []));
        const refused = METHODS.length - answered.length;
        expect({ path, refused: allows.length }).toEqual({ path, refused });
        // Every method the path refuses is refused alike, naming all those it answers, in any order.
        const expected = [...answered].sort();
        for (const allow of allows)
          expect({ path, allow: allow.split(', ').sort() }).toEqual({ path, allow: expected });
      }
    });

    it('answers 404, whatever the method, to a dashboard file that is not there', async () => {
      await boot({ DASHBOARD: 'true' });
      for (const method of ['GET', 'POST', 'PUT', 'DELETE', 'PATCH']) {
        const r = await send(`${base}/dashboard/nowhere.js`, method);
        expect({ method, status: r.status, body: r.body }).toMatchObject({
          method,
          status: 404,
          body: { error: { code: 'NOT_FOUND' } },
        });
      }
      expect((await send(`${base}/dashboard/dashboard.js`, 'POST')).status).toBe(405);
    });

    it.each(CODINGS)(
      'compresses the dashboard’s files and /metrics as %s for a client that takes it',
      async (coding, header, decompress) => {
        await boot({ METRICS: 'true', DASHBOARD: 'true' });
        const gz = { 'accept-encoding': header };
        for (const path of ['/', '/dashboard/dashboard.js', '/dashboard/dashboard.css']) {
          const plain = await send(`${base}${path}`, 'GET');
          const zipped = await send(`${base}${path}`, 'GET', undefined, gz);
          const etag = `${(plain.headers.etag as string).slice(0, -1)}-${coding}"`;
          expect({ path, encoding: zipped.headers['content-encoding'], etag: zipped.headers.etag }).toEqual({
            path,
            encoding: coding,
            etag,
          });
          // Whether an answer carries a CORS allowance depends on the Origin, so caches are told, when none is sent too.
          expect([plain.headers.vary, zipped.headers.vary]).toEqual([
            'origin, accept-encoding',
            'origin, accept-encoding',
          ]);
          expect(decompress(zipped.raw)).toEqual(plain.raw);
          expect(zipped.headers['content-type']).toBe(plain.headers['content-type']);
          const held = await send(`${base}${path}`, 'GET', undefined, { ...gz, 'if-none-match': etag });
          expect({ path, status: held.status }).toEqual({ path, status: 304 });
        }
        const metrics = await send(`${base}/metrics`, 'GET', undefined, gz);
        expect([metrics.status, metrics.headers['content-encoding'], metrics.headers.vary]).toEqual([
          200,
          coding,
          'origin, accept-encoding',
        ]);
        expect(decompress(metrics.raw).toString('utf8')).toContain('rockets_messages_total');
        // A page's request, with its CORS allowance: Vary names both.
        for (const path of ['/dashboard/dashboard.js', '/metrics']) {
          const cross = await send(`${base}${path}`, 'GET', undefined, { ...gz, origin: base });
          expect({ path, allowed: cross.headers['access-control-allow-origin'], vary: cross.headers.vary }).toEqual({
            path,
            allowed: base,
            vary: 'origin, accept-encoding',
          });
        }
        expect((await send(`${base}/metrics`, 'GET')).headers['content-encoding']).toBeUndefined();
      },
    );

    /** What the server sends back to `request` and then a GET of /health, pipelined on one connection. */
    const twoAnswers = (request: string, accept: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const socket = connect(Number(new URL(base).port), '127.0.0.1', () =>
          socket.write(
            `${request} HTTP/1.1\r\nhost: x\r\naccept: ${accept}\r\n\r\nGET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`,
          ),
        );
        let got = '';
        socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
        socket.on('error', reject);
        socket.on('close', () => resolve(got));
      });

    it('answers HEAD /graphql as GET, without the body', async () => {
      await boot({});
      const query = `${base}/graphql?query=${encodeURIComponent('{ rockets { nodes { channel } } }')}`;
      for (const accept of ['application/json', 'application/graphql-response+json', 'text/html']) {
        const get = await send(query, 'GET', undefined, { accept });
        const head = await send(query, 'HEAD', undefined, { accept });
        expect(get.status).toBe(200);
        expect({ accept, status: head.status }).toEqual({ accept, status: 200 });
        expect(head.headers['content-type']).toBe(get.headers['content-type']);
        expect(head.headers['content-length']).toBe(get.headers['content-length']);
        // No body on the wire: the next answer on the same connection follows the HEAD's headers at once.
        const wire = await twoAnswers(`HEAD ${new URL(query).pathname}${new URL(query).search}`, accept);
        const [headAnswer = '', next = ''] = wire.split(/(?=HTTP\/1\.1 )/);
        expect({ accept, headAnswer: headAnswer.endsWith('\r\n\r\n'), next: next.slice(0, 12) }).toEqual({
          accept,
          headAnswer: true,
          next: 'HTTP/1.1 200',
        });
      }
      // A request error is one for HEAD too (a 400 in application/graphql-response+json).
      const bad = `${base}/graphql?query=${encodeURIComponent('{ nope }')}`;
      const accept = { accept: 'application/graphql-response+json' };
      expect((await send(bad, 'HEAD', undefined, accept)).status).toBe(400);
    });
  });
});

/**
 * A POST that sends `Expect: 100-continue` and its body only once told to (as curl does with a large body):
 * whether it was told, and the answer. A body declared but never sent leaves the request open: it is
 * destroyed once answered.
 */
function postExpectingContinue(
  url: string,
  body: string,
  headers: Record<string, string> = {},
): Promise<{ continued: boolean; status: number; connection: string | undefined; body: unknown }> {
  return new Promise((resolve, reject) => {
    let continued = false;
    const req = request(url, {
      method: 'POST',
      agent: false,
      headers: {
        expect: '100-continue',
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(body)),
        ...headers,
      },
    });
    req.on('continue', () => {
      continued = true;
      req.end(body);
    });
    req.on('response', (res: IncomingMessage) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => {
        resolve({ continued, status: res.statusCode ?? 0, connection: res.headers.connection, body: JSON.parse(text) });
        req.destroy();
      });
    });
    req.on('error', reject);
    req.flushHeaders();
  });
}

describe('Expect: 100-continue', () => {
  let app: App;
  let base: string;
  beforeAll(async () => {
    app = await buildApp({
      ...loadConfig({
        LOG_LEVEL: 'silent',
        INGEST_TOKEN: INGEST,
        MAX_BODY_BYTES: '4096',
        ALLOWED_ORIGINS: 'http://good.example',
      }),
      databaseUrl: 'memory:',
    });
    base = `http://127.0.0.1:${await app.start(0, '127.0.0.1')}`;
  });
  afterAll(() => app.stop());
  const bearer = { authorization: `Bearer ${INGEST}` };

  it('tells the client to send a body it reads, on REST and GraphQL', async () => {
    const rest = await postExpectingContinue(`${base}/messages`, JSON.stringify(envelope('c')), bearer);
    expect(rest).toMatchObject({ continued: true, status: 202, body: { status: 'applied' } });
    const graphql = await postExpectingContinue(`${base}/graphql`, JSON.stringify({ query: SUBMIT }), bearer);
    expect(graphql).toMatchObject({
      continued: true,
      status: 200,
      body: { data: { submitMessage: { status: 'APPLIED' } } },
    });
  });

  it('refuses at once, the body unsent and the connection closed, what it would refuse unread', async () => {
    const message = JSON.stringify(envelope('refused'));
    const huge = JSON.stringify({ ...envelope('refused'), padding: 'x'.repeat(5000) });
    const refusals = [
      { path: '/messages', body: message, headers: {}, status: 401, code: 'UNAUTHENTICATED' },
      { path: '/messages', body: huge, headers: bearer, status: 413, code: 'PAYLOAD_TOO_LARGE' },
      { path: '/graphql', body: huge, headers: bearer, status: 413, code: 'PAYLOAD_TOO_LARGE' },
      {
        path: '/messages',
        body: message,
        headers: { ...bearer, origin: 'http://evil.example' },
        status: 403,
        code: 'FORBIDDEN',
      },
      { path: '/rockets', body: message, headers: bearer, status: 405, code: 'METHOD_NOT_ALLOWED' },
      { path: '/nowhere', body: message, headers: bearer, status: 404, code: 'NOT_FOUND' },
    ];
    for (const { path, body, headers, status, code } of refusals) {
      const r = await postExpectingContinue(`${base}${path}`, body, headers);
      const got = JSON.stringify(r.body);
      expect({
        path,
        continued: r.continued,
        status: r.status,
        connection: r.connection,
        coded: got.includes(code),
      }).toEqual({
        path,
        continued: false,
        status,
        connection: 'close',
        coded: true,
      });
    }
    expect((await getJson(`${base}/rockets/refused`)).status).toBe(404);
  });
});

describe('timeouts', () => {
  describe('SOCKET_TIMEOUT_MS', () => {
    let app: App;
    let port: number;
    beforeEach(async () => {
      app = await buildApp({
        ...loadConfig({ LOG_LEVEL: 'silent', SOCKET_TIMEOUT_MS: '300', WS_KEEPALIVE_MS: '0' }),
        databaseUrl: 'memory:',
      });
      port = await app.start(0, '127.0.0.1');
    });
    afterEach(() => app.stop());
    const connections = (): Promise<number> =>
      new Promise((resolve, reject) => app.server.getConnections((e, n) => (e ? reject(e) : resolve(n))));
    /**
     * A connection that sends `first`, then two thousand requests for the OpenAPI document in one write, and
     * reads not one answer: far more than the socket buffers take, so the server's writes stall.
     */
    const greedy = (first = '') => {
      const socket = connect(port, '127.0.0.1', () =>
        socket.write(first + 'GET /openapi.json HTTP/1.1\r\nhost: x\r\n\r\n'.repeat(2000)),
      );
      socket.pause();
      socket.on('error', () => undefined);
      return socket;
    };
    const stream = (query: string) =>
      new Promise<IncomingMessage>((resolve) =>
        request(`http://127.0.0.1:${port}/graphql?query=${encodeURIComponent(query)}`, {
          headers: { accept: 'text/event-stream' },
        })
          .on('response', resolve)
          .end(),
      );

    it('cuts a connection that reads none of its answers, and keeps a quiet stream', async () => {
      // A stream with no keepalive: it moves no byte until an event comes.
      const quiet = await stream('subscription { rocketUpdated { channel } }');
      let streamed = '';
      quiet.on('data', (d: Buffer) => (streamed += d.toString()));
      await until(() => app.service.hub.subscribers === 1);
      const reader = greedy();
      await until(async () => (await connections()) === 2);
      // The greedy one is cut once it has taken nothing for 300 ms; the stream, quiet as long, stays.
      await until(async () => (await connections()) === 1);
      expect(await connections()).toBe(1);
      reader.destroy();
      await postJson(`http://127.0.0.1:${port}/messages`, envelope('quiet'));
      await until(() => streamed.includes('event: next'));
      expect(streamed).toContain('data: {"data":{"rocketUpdated":{"channel":"quiet"}}}');
      quiet.destroy();
    });

    it('cuts one whose pipeline begins with an event stream all the same', async () => {
      const query = encodeURIComponent('{ __typename }');
      const reader = greedy(`GET /graphql?query=${query} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n`);
      await until(async () => (await connections()) === 1);
      // The stream it opened with does not keep it: it is cut as the first test's reader was (the wait fails
      // the test by its timeout otherwise), after the requests went out.
      await until(async () => (await connections()) === 0);
      expect(reader.bytesWritten).toBeGreaterThan(0);
      reader.destroy();
    });

    it('keeps a client waiting for an answer still being made, and closes one idle past keep-alive', async () => {
      // A commit held up for longer than the timeout: its sender waits for it, and gets its 202.
      const release = holdCommits(app.store);
      try {
        const posted = postJson(`http://127.0.0.1:${port}/messages`, envelope('slow'));
        // The clock: a greedy reader cut after 300 ms of silence, while the commit is still held.
        const reader = greedy();
        await until(async () => (await connections()) === 2);
        await until(async () => (await connections()) === 1);
        reader.destroy();
        release();
        expect((await posted).status).toBe(202);
      } finally {
        // Never left held: the stop after the test waits for every commit.
        release();
      }
      // Idle on a kept-alive connection past the keep-alive timeout, a connection is closed as before.
      app.server.keepAliveTimeout = 100;
      const idle = connect(port, '127.0.0.1', () => idle.write('GET /health HTTP/1.1\r\nhost: x\r\n\r\n'));
      idle.resume();
      await new Promise((resolve) => idle.once('close', resolve));
      expect(idle.bytesRead).toBeGreaterThan(0);
    });
  });

  it('refuses a headers timeout longer than the request timeout, naming both settings', () => {
    expect(() => loadConfig({ HEADERS_TIMEOUT_MS: '60000' })).toThrow(
      'HEADERS_TIMEOUT_MS (60000) must not exceed REQUEST_TIMEOUT_MS (30000)',
    );
    expect(loadConfig({ HEADERS_TIMEOUT_MS: '60000', REQUEST_TIMEOUT_MS: '60000' }).headersTimeoutMs).toBe(60_000);
  });
});

describe('secrets', () => {
  it('never appear in logs or error bodies', async () => {
    const s = await startServer({
      DATABASE_URL: 'memory:',
      LOG_LEVEL: 'trace',
      INGEST_TOKEN: INGEST,
      SUBSCRIPTION_TOKEN: SUBSCRIBE,
    });
    const bodies: string[] = [];
    try {
      for (const auth of [`Bearer ${INGEST}x`, `Bearer ${INGEST}`, `Bearer ${SUBSCRIBE}`]) {
        const r = await postJson(`${s.url}/messages`, envelope('s'), { authorization: auth });
        bodies.push(JSON.stringify(r.body));
      }
      const ws = new WebSocket(`${s.url.replace('http', 'ws')}/graphql`, 'graphql-transport-ws');
      const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
      ws.once('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: { token: `${SUBSCRIBE}x` } })));
      expect(await closed).toBe(4403);
    } finally {
      await s.stop('SIGTERM');
    }
    const everything = [...bodies, ...s.output].join('\n');
    expect(everything).not.toContain(INGEST);
    expect(everything).not.toContain(SUBSCRIBE);
  });
});
