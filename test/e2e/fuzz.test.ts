import fc from 'fast-check';
import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { getJson, pool, postJson, startServer, type ServerProcess } from '../support/process';

const valid = () => ({
  metadata: {
    channel: 'fuzz-target',
    messageNumber: 1,
    messageTime: '2022-02-02T19:39:05.86337+01:00',
    messageType: 'RocketLaunched',
  },
  message: { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' } as Record<string, unknown>,
});

const badNumbers = [
  0,
  -1,
  1.5,
  2 ** 63,
  -0.5,
  '1',
  null,
  true,
  [],
  {},
  Number.POSITIVE_INFINITY,
  Number.MAX_SAFE_INTEGER + 2,
];
const badStrings = [null, 1, true, [], {}, ''];

/** Bodies that are certainly invalid: each breaks the valid envelope in at least one way. */
const invalidBody: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    '',
    '{',
    '{"metadata":',
    'null',
    '[]',
    '"text"',
    '42',
    'NaN',
    '{"metadata": {}, "message": {}}',
    '{"metadata": {"channel": "c", "messageNumber": 1e309, "messageTime": "2022-02-02T19:39:05Z", "messageType": "RocketExploded"}, "message": {"reason": "x"}}',
    '\u0000\u0001',
    `{"__proto__": {"polluted": true}, "metadata": {"__proto__": {"channel": "x"}}}`,
    `{"constructor": {"prototype": {"polluted": true}}}`,
    `${'{"a":'.repeat(30_000)}1${'}'.repeat(30_000)}`,
    '['.repeat(200_000),
  ),
  fc
    .record({
      field: fc.constantFrom('channel', 'messageNumber', 'messageTime', 'messageType'),
      value: fc.oneof(
        fc.constantFrom(...badNumbers, ...badStrings),
        fc.string(),
        fc.constantFrom('RocketLanded', 'rocketlaunched', '__proto__', 'constructor', 'toString'),
      ),
    })
    .map(({ field, value }) => {
      const e = valid();
      const meta = e.metadata as Record<string, unknown>;
      // Any string is a valid channel and some strings are valid times: force those invalid.
      if (field === 'channel' && typeof value === 'string' && value.trim() !== '') value = 7;
      if (field === 'messageTime' && typeof value === 'string') value = `not a time ${value}`;
      if (field === 'messageNumber' && value === 1) value = 0;
      if (field === 'messageType' && typeof value === 'string' && value.startsWith('Rocket')) value = `${value}!`;
      meta[field] = value;
      return JSON.stringify(e);
    }),
  fc
    .record({
      field: fc.constantFrom('type', 'launchSpeed', 'mission'),
      value: fc.constantFrom(-1, -1e9, '500', null, [], {}, true, 'x'.repeat(1001)),
    })
    .map(({ field, value }) => {
      const e = valid();
      if (field === 'launchSpeed' && typeof value === 'string' && value.length > 1000) value = -2;
      if (field !== 'launchSpeed' && typeof value === 'number') value = { n: value };
      if (field !== 'launchSpeed' && value === '500') value = 500;
      e.message[field] = value;
      return JSON.stringify(e);
    }),
  fc
    .jsonValue()
    .filter((v) => typeof v !== 'object' || v === null || Array.isArray(v))
    .map((v) => JSON.stringify(v)),
);

describe('hostile input against the running server', () => {
  let server: ServerProcess;
  const agent = new Agent({ keepAlive: true, maxSockets: 32 });
  beforeAll(async () => {
    server = await startServer({
      DATABASE_URL: 'memory:',
      MAX_BODY_BYTES: String(256 * 1024),
      HEADERS_TIMEOUT_MS: '1000',
    });
    await postJson(`${server.url}/messages`, valid());
  });
  afterAll(async () => {
    agent.destroy();
    await server.stop('SIGTERM');
  });

  const snapshot = async (): Promise<unknown> => ({
    rockets: (await getJson(`${server.url}/rockets`)).body,
    events: (await getJson(`${server.url}/events`)).body,
    health: (({ subscribers: _s, lanes: _l, ...rest }: Record<string, unknown>) => rest)(
      (await getJson(`${server.url}/health`)).body as Record<string, unknown>,
    ),
  });

  /**
   * One POST. A server that refuses a body early (413) may close while the rest is still being sent:
   * the answer then still counts, and the write error after it does not.
   */
  const raw = (body: string | Buffer, headers: Record<string, string>): Promise<number> =>
    new Promise((resolve, reject) => {
      let status: number | undefined;
      const req = request(`${server.url}/messages`, { method: 'POST', agent, headers }, (res) => {
        status = res.statusCode ?? 0;
        res.resume();
        res.on('end', () => resolve(status ?? 0));
      });
      req.on('error', (e) => {
        if (status !== undefined) resolve(status);
        else reject(e);
      });
      req.end(body);
    });

  it('answers 10,000 malformed requests with a 4xx each, never a 5xx, and stores nothing', async () => {
    const before = await snapshot();
    const bodies = fc.sample(invalidBody, { numRuns: 10_000, seed: 42 });
    const contentTypes = ['application/json', 'text/plain', 'application/x-www-form-urlencoded', 'image/png', ''];
    const statuses = new Map<number, number>();
    let i = 0;
    await pool(bodies, 32, async (body) => {
      const type = contentTypes[i++ % contentTypes.length] as string;
      const status = await raw(body, type === '' ? {} : { 'content-type': type });
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
    });
    for (const status of statuses.keys()) {
      expect(status).toBeGreaterThanOrEqual(400);
      expect(status).toBeLessThan(500);
    }
    expect([...statuses.values()].reduce((a, b) => a + b, 0)).toBe(10_000);
    expect(await snapshot()).toEqual(before);
  });

  it('refuses bodies over the size limit and 1 MB strings with a 413, and stays healthy', async () => {
    const before = await snapshot();
    const big = valid();
    big.message.mission = 'x'.repeat(1024 * 1024);
    expect(await raw(JSON.stringify(big), { 'content-type': 'application/json' })).toBe(413);
    expect(await raw(Buffer.alloc(300 * 1024, 0x7b), {})).toBe(413);
    expect((await getJson(`${server.url}/health`)).status).toBe(200);
    expect(await snapshot()).toEqual(before);
  });

  it('keeps serving while slowloris connections trickle partial headers, and closes them', async () => {
    const sockets: Socket[] = [];
    const closed: Array<Promise<void>> = [];
    for (let k = 0; k < 50; k++) {
      const s = connect(server.port, '127.0.0.1');
      s.on('error', () => undefined);
      s.resume(); // read the server's 408, so the close is seen
      closed.push(new Promise((resolve) => s.once('close', () => resolve())));
      s.write('POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n');
      sockets.push(s);
    }
    const r = await postJson(`${server.url}/messages`, {
      ...valid(),
      metadata: { ...valid().metadata, messageNumber: 2 },
    });
    expect(r.status).toBe(202);
    // The server, not the test, ends them: headersTimeout (HEADERS_TIMEOUT_MS) bounds a partial request.
    await Promise.all(closed);
    expect(sockets.every((s) => s.destroyed)).toBe(true);
  });
});
