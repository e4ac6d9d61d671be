import fc from 'fast-check';
import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { WebSocket } from 'ws';
import { getJson, pool, postJson, send, startServer, type ServerProcess } from '../support/process';

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

/** A valid `submitMessage` over graphql-ws, for frames that break it in one place. */
const SUBMIT = `mutation ($metadata: MessageMetadataInput!, $message: MessagePayloadInput!) {
  submitMessage(metadata: $metadata, message: $message) { __typename }
}`;
const validVariables = () => ({
  metadata: {
    channel: 'fuzz-target',
    messageNumber: 2,
    messageTime: '2022-02-02T19:39:05.86337+01:00',
    messageType: 'ROCKET_SPEED_INCREASED',
  } as Record<string, unknown>,
  message: { rocketSpeedIncreased: { by: 10 } } as Record<string, unknown>,
});

/**
 * One malformed graphql-ws exchange: what the socket does first (`none`: nothing; `init`: a
 * connection_init and its ack; `live`: also a live subscription with id "live"), then the frame.
 */
interface BadFrame {
  readonly setup: 'none' | 'init' | 'live';
  readonly frame: string | Buffer;
}

const subscribe = (id: unknown, payload: unknown): string => JSON.stringify({ type: 'subscribe', id, payload });

/** GraphQL operations that are certainly refused: syntax, validation, limits, or variables. */
const badOperation: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  fc.string().map((query) => ({ query: `{ ${query}` })),
  fc.constantFrom(
    { query: '{ nope }' },
    { query: 'mutation { submitMessage }' },
    { query: `{ ${Array.from({ length: 16 }, (_, i) => `r${i}: rocket(channel: "a") { channel }`).join(' ')} }` },
    { query: `{ rockets { nodes { channel ${'channel '.repeat(1000)} } } }` },
    { query: '{ rockets { edges { node { events { payload { a { b { c { d } } } } } } } } }' },
    { query: SUBMIT, variables: { metadata: validVariables().metadata } },
    {
      query: SUBMIT,
      variables: {
        ...validVariables(),
        message: { rocketSpeedIncreased: { by: 1 }, rocketExploded: { reason: 'x' } },
      },
    },
    { query: SUBMIT, operationName: 'Missing', variables: validVariables() },
  ),
  fc
    .record({
      field: fc.constantFrom('channel', 'messageNumber', 'messageTime', 'messageType'),
      value: fc.constantFrom<unknown>(
        null,
        0,
        -1,
        1.5,
        2 ** 63,
        '2',
        true,
        [],
        {},
        '',
        ' ',
        'ROCKET_LANDED',
        'x'.repeat(201),
      ),
    })
    .map(({ field, value }) => {
      const variables = validVariables();
      // Keep every value certainly wrong for its field.
      if (field === 'messageTime' && typeof value === 'string') value = `not a time ${value}`;
      if (field === 'channel' && typeof value === 'string' && value.trim() !== '' && value.length <= 200) value = 7;
      variables.metadata[field] = value;
      return { query: SUBMIT, variables };
    }),
  fc.constantFrom<unknown>(-1, -1e9, Number.POSITIVE_INFINITY, '10', null, [], {}, true).map((by) => ({
    query: SUBMIT,
    variables: { ...validVariables(), message: { rocketSpeedIncreased: { by } } },
  })),
);

/** Frames that are certainly wrong: not JSON, not a graphql-ws message, out of order, or a bad operation. */
const badFrame: fc.Arbitrary<BadFrame> = fc.oneof(
  // Not a graphql-ws message at all.
  fc
    .oneof(
      fc.string(),
      fc.jsonValue().map((v) => JSON.stringify(v)),
      fc.constantFrom('', '{', 'null', '[]', '"subscribe"', '['.repeat(100_000), `{"type":"${'x'.repeat(10_000)}"}`),
    )
    .filter((text) => {
      try {
        const v: unknown = JSON.parse(text);
        return typeof v !== 'object' || v === null || Array.isArray(v) || !('type' in v);
      } catch {
        return true;
      }
    })
    .chain((frame) =>
      fc.record({ setup: fc.constantFrom('none' as const, 'init' as const), frame: fc.constant(frame) }),
    ),
  // A message with a type graphql-ws does not have, or fields of the wrong shape.
  fc.record({
    setup: fc.constantFrom('none' as const, 'init' as const),
    frame: fc.oneof(
      fc
        .oneof(fc.string(), fc.integer(), fc.constant(null))
        .filter((t) => !['connection_init', 'ping', 'pong', 'subscribe', 'complete'].includes(String(t)))
        .map((type) => JSON.stringify({ type })),
      fc.constantFrom(
        subscribe(undefined, { query: '{ rockets { nodes { channel } } }' }),
        subscribe(7, { query: '{ rockets { nodes { channel } } }' }),
        subscribe('', { query: '{ rockets { nodes { channel } } }' }),
        subscribe('a', null),
        subscribe('a', 'query'),
        subscribe('a', { query: 42 }),
        subscribe('a', { query: '{ rockets { nodes { channel } } }', variables: [] }),
        subscribe('a', { query: '{ rockets { nodes { channel } } }', extensions: 'x' }),
        JSON.stringify({ type: 'complete' }),
        JSON.stringify({ type: 'complete', id: 5 }),
        JSON.stringify({ type: 'connection_init', payload: 'token' }),
        JSON.stringify({ type: 'ping', payload: 'not an object' }),
      ),
    ),
  }),
  // In the wrong order: an operation before the ack, a second init, an id already in use.
  fc.constantFrom<BadFrame>(
    { setup: 'none', frame: subscribe('a', { query: SUBMIT, variables: validVariables() }) },
    { setup: 'init', frame: JSON.stringify({ type: 'connection_init' }) },
    { setup: 'live', frame: subscribe('live', { query: SUBMIT, variables: validVariables() }) },
  ),
  // Well-formed messages whose operation is wrong.
  fc.record({
    setup: fc.constant('init' as const),
    frame: badOperation.chain((payload) => fc.stringMatching(/^[a-z0-9]{1,8}$/).map((id) => subscribe(id, payload))),
  }),
  // Binary frames, and frames over WS_MAX_PAYLOAD.
  fc.record({
    setup: fc.constantFrom('none' as const, 'init' as const),
    frame: fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 64 }).map((bytes) => Buffer.concat([Buffer.from([0xff]), bytes])),
      fc.constant(Buffer.from(JSON.stringify({ type: 'connection_init', payload: { x: 'y'.repeat(300 * 1024) } }))),
      fc.constant('x'.repeat(300 * 1024)),
    ),
  }),
);

/** Close codes a malformed frame may end its socket with: graphql-ws's 4400, 4401, 4409 and 4429, and ws's 1007 and 1009. */
const REFUSALS = new Set([4400, 4401, 4409, 4429, 1007, 1009]);

describe('hostile input against the running server', () => {
  let server: ServerProcess;
  const agent = new Agent({ keepAlive: true, maxSockets: 32 });
  beforeAll(async () => {
    server = await startServer({
      DATABASE_URL: 'memory:',
      MAX_BODY_BYTES: String(256 * 1024),
      WS_MAX_PAYLOAD: String(256 * 1024),
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

  /** Bodies of GraphQL requests that are certainly refused: malformed, or an operation that fails. */
  const badGraphqlBodies = (numRuns: number): string[] =>
    fc.sample(
      fc.oneof(
        { weight: 4, arbitrary: badOperation.map((o) => JSON.stringify(o)) },
        fc.constantFrom(
          '',
          '{',
          'null',
          '[]',
          '{"query": 42}',
          '{"query": "{ rockets { nodes { channel } } }", "variables": []}',
          '{"query": "{ rockets { nodes { channel } } }", "operationName": 7}',
          '{"variables": {}}',
        ),
      ),
      { numRuns, seed: 42 },
    );

  /** Whether a GraphQL result refuses: it has errors, or its `submitMessage` is a refusal. */
  const refuses = (answer: { errors?: unknown[]; data?: { submitMessage?: { __typename?: string } } }): boolean =>
    (answer.errors?.length ?? 0) > 0 || answer.data?.submitMessage?.__typename === 'SubmitMessageError';

  it('answers 10,000 malformed GraphQL requests over HTTP with a 4xx or errors, never a 5xx, and stores nothing', async () => {
    const before = await snapshot();
    const bodies = badGraphqlBodies(10_000);
    const accepts = ['application/graphql-response+json', 'application/json'];
    const statuses = new Map<number, number>();
    const wrong: Array<{ body: string; status: number; answer: string }> = [];
    let i = 0;
    await pool(bodies, 32, async (body) => {
      const accept = accepts[i++ % accepts.length] as string;
      const r = await send(
        `${server.url}/graphql`,
        'POST',
        body,
        { 'content-type': 'application/json', accept },
        agent,
      );
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      let fine = r.status >= 400 && r.status < 500;
      if (r.status === 200) fine = refuses(r.body as Parameters<typeof refuses>[0]);
      if (!fine)
        wrong.push({ body: body.slice(0, 200), status: r.status, answer: JSON.stringify(r.body).slice(0, 300) });
    });
    expect(wrong.slice(0, 5)).toEqual([]);
    expect([...statuses.keys()].sort()).toEqual([200, 400]);
    expect(await snapshot()).toEqual(before);
  });

  it('answers 10,000 malformed GraphQL requests for an event stream with a 4xx or a stream of errors, and stores nothing', async () => {
    const before = await snapshot();
    const bodies = badGraphqlBodies(10_000);
    // Now and then a Last-Event-ID that is not a position, on a request that is otherwise fine or not.
    const lastIds = ['', '', '', 'x', '-1', '1e3', '99999999999999999'];
    const statuses = new Map<number, number>();
    const wrong: Array<{ body: string; status: number; answer: string }> = [];
    let i = 0;
    await pool(bodies, 32, async (body) => {
      const lastId = lastIds[i++ % lastIds.length] as string;
      const { status, type, text } = await new Promise<{ status: number; type: string; text: string }>(
        (resolve, reject) => {
          const req = request(
            `${server.url}/graphql`,
            {
              method: 'POST',
              agent,
              headers: {
                'content-type': 'application/json',
                accept: 'text/event-stream',
                ...(lastId === '' ? {} : { 'last-event-id': lastId }),
              },
            },
            (res) => {
              let answer = '';
              res.setEncoding('utf8');
              res.on('data', (c: string) => (answer += c));
              res.on('end', () =>
                resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), text: answer }),
              );
            },
          );
          req.on('error', reject);
          req.end(body);
        },
      );
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      let fine = status >= 400 && status < 500 && type.startsWith('application/json');
      if (status === 200) {
        // A stream that ends: each result refuses, and the last event is `complete`.
        const events = text.split('\n\n').filter((b) => b.startsWith('event:'));
        const results = events.filter((e) => e.startsWith('event: next'));
        fine =
          type.startsWith('text/event-stream') &&
          events.at(-1) === 'event: complete\ndata:' &&
          results.length > 0 &&
          results.every((e) => refuses(JSON.parse(e.slice(e.indexOf('data: ') + 6)) as Parameters<typeof refuses>[0]));
      }
      if (!fine) wrong.push({ body: body.slice(0, 200), status, answer: text.slice(0, 300) });
    });
    expect(wrong.slice(0, 5)).toEqual([]);
    expect([...statuses.keys()].sort()).toEqual([200, 400]);
    expect(await snapshot()).toEqual(before);
  });

  /** What a graphql-ws socket did with a bad frame: closed with a code, or answered it and then a ping. */
  interface WsOutcome {
    readonly code: number;
    readonly answered: boolean;
    readonly messages: ReadonlyArray<{ type: string; payload?: unknown }>;
  }

  const LIVE = 'subscription { rocketUpdated(channel: "fuzz-target") { channel } }';

  /**
   * One socket: its setup, the bad frame, then a ping. A pong means the server read the frame, answered
   * what it had to and kept the socket open; otherwise it closed it, with a code.
   */
  const wsExchange = (bad: BadFrame): Promise<WsOutcome> =>
    new Promise((resolve) => {
      const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws');
      const messages: Array<{ type: string; payload?: unknown }> = [];
      let sent = false;
      let answered = false;
      const sendBad = (): void => {
        sent = true;
        ws.send(bad.frame);
        ws.send(JSON.stringify({ type: 'ping' }));
      };
      ws.on('error', () => undefined); // the close that follows says what happened
      ws.on('open', () => {
        if (bad.setup === 'none') sendBad();
        else ws.send(JSON.stringify({ type: 'connection_init' }));
      });
      ws.on('message', (data: Buffer) => {
        const m = JSON.parse(data.toString('utf8')) as { type: string; payload?: unknown };
        if (!sent) {
          if (m.type !== 'connection_ack') return;
          if (bad.setup === 'live') ws.send(subscribe('live', { query: LIVE }));
          sendBad();
        } else if (m.type === 'pong') {
          answered = true;
          ws.close();
        } else messages.push(m);
      });
      ws.on('close', (code: number) => resolve({ code, answered, messages }));
    });

  /** An answer to a bad operation: errors, or the mutation's own refusal; nothing that ran and stored. */
  const refusal = (m: { type: string; payload?: unknown }): boolean => {
    const p = m.payload as { errors?: unknown[]; data?: { submitMessage?: { __typename?: string } } } | undefined;
    if (m.type === 'error') return Array.isArray(m.payload) && m.payload.length > 0;
    if (m.type === 'complete') return true;
    return (
      m.type === 'next' && ((p?.errors?.length ?? 0) > 0 || p?.data?.submitMessage?.__typename === 'SubmitMessageError')
    );
  };

  // A socket of its own for each frame (a handshake, an init, often a subscription): 1,500 of them reach every
  // refusal (the close codes below), at a seventh of the time 10,000 took in CI, run twice there.
  it('answers 1,500 malformed graphql-ws frames with errors or a refusing close, and stores nothing', async () => {
    const before = await snapshot();
    const frames = fc.sample(badFrame, { numRuns: 1_500, seed: 42 });
    const closes = new Map<number, number>();
    let answered = 0;
    const wrong: Array<{ frame: string; outcome: WsOutcome }> = [];
    await pool(frames, 64, async (bad) => {
      const outcome = await wsExchange(bad);
      if (outcome.answered) answered++;
      else closes.set(outcome.code, (closes.get(outcome.code) ?? 0) + 1);
      const fine = outcome.answered
        ? outcome.messages.length > 0 && outcome.messages.every(refusal)
        : REFUSALS.has(outcome.code);
      if (!fine) wrong.push({ frame: String(bad.frame).slice(0, 200), outcome });
    });
    expect(wrong.slice(0, 5)).toEqual([]);
    // Each kind of refusal was met, so the generator reaches every path it means to.
    expect(answered).toBeGreaterThan(300);
    expect([...closes.keys()].sort()).toEqual([1007, 1009, 4400, 4401, 4409, 4429]);
    expect(await snapshot()).toEqual(before);
  }, 180_000);

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
