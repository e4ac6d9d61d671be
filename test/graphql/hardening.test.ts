import { connect } from 'node:net';
import { print } from 'graphql';
import { auditServer, type AuditResult } from 'graphql-http';
import { RocketUpdatedDocument, SubmitStatusDocument } from '../generated/graphql';
import { CODINGS, send } from '../support/process';
import { envelope } from '../support/telemetry';
import { ARMOR_LIMITS } from '../../src/http/graphql/transport';
import type { Config } from '../../src/config';
import {
  holdCommits,
  messages,
  postRaw,
  RawSocket,
  startServer,
  until,
  type ProtocolMessage,
  type TestServer,
} from './support';

const times = (n: number, f: (i: number) => string): string => Array.from({ length: n }, (_, i) => f(i)).join(' ');

/** Every field of a rocket, its buffer included: what REST answers for one. */
const ROCKET_FIELDS =
  'channel type mission speed status explodedReason launchedAt updatedAt lastMessageNumber buffer { waitingFor count oldestSince }';

/** Every field of a rocket's events. */
const EVENT_FIELDS = `events { position channel messageNumber messageType messageTime recordedAt payload { __typename
  ... on RocketLaunched { type launchSpeed mission } ... on RocketSpeedIncreased { by } ... on RocketSpeedDecreased { by }
  ... on RocketMissionChanged { newMission } ... on RocketExploded { reason } } }`;

/** A page of 100 rockets with every field, as edges with cursors and the whole pageInfo: 7,606.25 cost units. */
const REST_PAGE = `rockets(first: 100, sort: SPEED, order: DESC) { edges { cursor node { ${ROCKET_FIELDS} } }
  pageInfo { hasNextPage hasPreviousPage startCursor endCursor } }`;

/** Every field of every rocket and of their events, `first` left out: 282 cost units. */
const FULL_PAGE = `rockets { edges { cursor node { ${ROCKET_FIELDS} ${EVENT_FIELDS} } } pageInfo { hasNextPage endCursor } }`;

describe('GraphQL hardening', () => {
  let server: TestServer;
  const sockets: RawSocket[] = [];
  const start = async (overrides: Partial<Config> = {}): Promise<TestServer> => (server = await startServer(overrides));
  const open = async (headers: Record<string, string> = {}): Promise<RawSocket> => {
    const s = await RawSocket.open(server.ws, headers);
    sockets.push(s);
    return s;
  };
  /** Commits held by a test (`holdServerCommits`), let go before the stop, which waits for every commit. */
  const held: Array<() => void> = [];
  afterEach(async () => {
    for (const release of held.splice(0)) release();
    for (const s of sockets.splice(0)) await s.close();
    await server.app.stop();
  });

  describe('GraphQL over HTTP conformance', () => {
    it("passes every MUST audit of graphql-http's server audits", async () => {
      await start();
      const results = await auditServer({ url: `${server.http}/graphql` });
      const failing = (level: string): AuditResult[] =>
        results.filter((r) => r.name.startsWith(level) && r.status !== 'ok');
      expect(results.length).toBeGreaterThan(50);
      expect(failing('MUST').map((r) => r.name)).toEqual([]);
      // No SHOULD audit fails either (graphql-http 1.23.1, 61 audits). Two of them pass only because the
      // transport turns graphql-http's 200 into a 400 for an executed request that produced no `data` (variables
      // that do not coerce) under application/graphql-response+json.
      expect(failing('SHOULD').map((r) => r.name)).toEqual([]);
    });
  });

  describe('requests graphql-http refuses before any GraphQL', () => {
    it('answers each with an error that carries a message and extensions.code', async () => {
      await start({ graphiql: false });
      const url = `${server.http}/graphql`;
      const json = { 'content-type': 'application/json' };
      const cases: Array<[string, Promise<{ status: number; body: unknown }>, number, string, RegExp]> = [
        ['no query', send(url, 'POST', '{}', json), 400, 'BAD_REQUEST', /^the body has no "query": send the GraphQL/],
        [
          'a GET with no query',
          send(url, 'GET', undefined, { accept: 'application/json' }),
          400,
          'BAD_REQUEST',
          /^the URL has no query parameter: send the GraphQL document in it/,
        ],
        [
          'a body that is not JSON',
          send(url, 'POST', 'not json', json),
          400,
          'BAD_REQUEST',
          /^the body is not valid JSON \(.+\): send a JSON object with the GraphQL document in "query"$/,
        ],
        ['an empty body', send(url, 'POST', '', json), 400, 'BAD_REQUEST', /^the body is empty: send a JSON object/],
        [
          'a body that is a JSON array',
          send(url, 'POST', '[{"query":"{__typename}"}]', json),
          400,
          'BAD_REQUEST',
          /^the body must be a JSON object with the GraphQL document in "query", got an array$/,
        ],
        [
          'a body that is a JSON number',
          send(url, 'POST', '42', json),
          400,
          'BAD_REQUEST',
          /^the body must be a JSON object with the GraphQL document in "query", got a number$/,
        ],
        [
          'a GET whose variables are not JSON',
          send(`${url}?query=${encodeURIComponent('{__typename}')}&variables=${encodeURIComponent('{bad')}`, 'GET'),
          400,
          'BAD_REQUEST',
          /^the variables parameter is not valid JSON \(.+\): send it as a URL-encoded JSON object$/,
        ],
        [
          'a GET whose extensions are not JSON',
          send(`${url}?query=${encodeURIComponent('{__typename}')}&extensions=${encodeURIComponent('{bad')}`, 'GET'),
          400,
          'BAD_REQUEST',
          /^the extensions parameter is not valid JSON \(.+\): send it as a URL-encoded JSON object$/,
        ],
        [
          'variables as a string',
          send(url, 'POST', JSON.stringify({ query: '{__typename}', variables: '{bad' }), json),
          400,
          'BAD_REQUEST',
          /^"variables" in the body must be a JSON object of the operation's variables, or null, got a string$/,
        ],
        [
          'variables as an array',
          send(url, 'POST', JSON.stringify({ query: '{__typename}', variables: [1] }), json),
          400,
          'BAD_REQUEST',
          /^"variables" in the body must be a JSON object of the operation's variables, or null, got an array$/,
        ],
        [
          'operationName as a number',
          send(url, 'POST', JSON.stringify({ query: '{__typename}', operationName: 1 }), json),
          400,
          'BAD_REQUEST',
          /^"operationName" in the body must be a string naming the operation to run, or null, got a number$/,
        ],
        [
          'query as a number',
          send(url, 'POST', JSON.stringify({ query: 1 }), json),
          400,
          'BAD_REQUEST',
          /^"query" in the body must be a string holding the GraphQL document, got a number$/,
        ],
        [
          'extensions as an array',
          send(url, 'POST', JSON.stringify({ query: '{__typename}', extensions: [] }), json),
          400,
          'BAD_REQUEST',
          /^"extensions" in the body must be a JSON object, or null, got an array$/,
        ],
        [
          "curl's default form body",
          send(url, 'POST', '{"query":"{__typename}"}', { 'content-type': 'application/x-www-form-urlencoded' }),
          415,
          'UNSUPPORTED_MEDIA_TYPE',
          /send Content-Type: application\/json/,
        ],
        [
          'a browser asking for a page, GraphiQL off',
          send(`${url}?query=%7B__typename%7D`, 'GET', undefined, { accept: 'text/html' }),
          406,
          'NOT_ACCEPTABLE',
          /accept one of them/,
        ],
      ];
      for (const [what, reply, status, code, message] of cases) {
        const r = await reply;
        expect({ what, status: r.status }).toEqual({ what, status });
        const errors = (r.body as { errors?: Array<{ message: string; extensions?: { code?: string } }> }).errors;
        expect({ what, code: errors?.[0]?.extensions?.code }).toEqual({ what, code });
        expect({ what, message: errors?.[0]?.message }).toEqual({
          what,
          message: expect.stringMatching(message) as unknown,
        });
      }
    });
  });

  describe('a document whose operation cannot be told', () => {
    const query = 'query A { gaps { channel } } query B { rockets { nodes { channel } } }';
    const several = 'the document holds 2 operations: name the one to run in operationName';
    const missing = 'the document holds no operation named "C"';
    const code = 'OPERATION_RESOLUTION_FAILURE';

    it('is answered 400 over HTTP with a message and a code', async () => {
      await start();
      for (const [body, message] of [
        [{ query }, several],
        [{ query, operationName: 'C' }, missing],
      ] as const) {
        const r = await postRaw(server, body);
        expect({ status: r.status, body: r.body }).toEqual({
          status: 400,
          body: { errors: [{ message, extensions: { code } }] },
        });
      }
      expect((await postRaw(server, { query, operationName: 'A' })).body).toEqual({ data: { gaps: [] } });
    });

    it('is answered with an error message and a code over graphql-ws, and the socket stays open', async () => {
      await start();
      const s = await open();
      await s.init();
      s.send({ type: 'subscribe', id: '1', payload: { query } });
      expect(await s.next()).toEqual({ type: 'error', id: '1', payload: [{ message: several, extensions: { code } }] });
      s.send({ type: 'subscribe', id: '2', payload: { query, operationName: 'C' } });
      expect(await s.next()).toEqual({ type: 'error', id: '2', payload: [{ message: missing, extensions: { code } }] });
      s.send({ type: 'subscribe', id: '3', payload: { query, operationName: 'A' } });
      expect(await s.next()).toEqual({ type: 'next', id: '3', payload: { data: { gaps: [] } } });
    });
  });

  describe('graphql-armor limits', () => {
    beforeEach(() => start());

    it.each<[string, string, RegExp]>([
      [
        'a depth bomb',
        `{ rockets { edges { node { events { payload { ${'a { '.repeat(6)} b ${'} '.repeat(6)} } } } } } }`,
        new RegExp(`depth limit of ${ARMOR_LIMITS.maxDepth} exceeded`),
      ],
      [
        'an alias bomb',
        `{ ${times(ARMOR_LIMITS.maxAliases + 1, (i) => `r${i}: rocket(channel: "a") { channel }`)} }`,
        new RegExp(`Aliases limit of ${ARMOR_LIMITS.maxAliases} exceeded`),
      ],
      [
        // armor exempts `__typename` unless told otherwise; README promises 15 aliases, whatever they name.
        'an alias bomb of __typename',
        `{ ${times(ARMOR_LIMITS.maxAliases + 1, (i) => `t${i}: __typename`)} }`,
        new RegExp(`Aliases limit of ${ARMOR_LIMITS.maxAliases} exceeded`),
      ],
      [
        'a cost bomb: two pages of 100 rockets with every field',
        `{ p0: ${REST_PAGE} p1: ${REST_PAGE} }`,
        new RegExp(`Cost limit of ${ARMOR_LIMITS.maxCost} exceeded`),
      ],
      [
        'a cost bomb: a page of 100 rockets with every event',
        `{ rockets(first: 100) { nodes { channel ${EVENT_FIELDS} } } }`,
        new RegExp(`Cost limit of ${ARMOR_LIMITS.maxCost} exceeded`),
      ],
      [
        'a cost bomb: a page of 1,000 rockets with every field',
        `{ rockets(first: 1000) { nodes { ${ROCKET_FIELDS} } } }`,
        new RegExp(`Cost limit of ${ARMOR_LIMITS.maxCost} exceeded`),
      ],
      [
        'a token bomb',
        `{ rockets { nodes { ${times(ARMOR_LIMITS.maxTokens, () => 'channel')} } } }`,
        new RegExp(`Token limit of ${ARMOR_LIMITS.maxTokens} exceeded`),
      ],
      [
        'a directive bomb',
        `{ rockets { nodes { ${times(ARMOR_LIMITS.maxDirectives + 1, () => 'channel @include(if: true)')} } } }`,
        new RegExp(`Directives limit of ${ARMOR_LIMITS.maxDirectives} exceeded`),
      ],
    ])('refuses %s with 400 before executing anything', async (_name, query, message) => {
      const r = await postRaw(server, { query });
      expect(r.status).toBe(400);
      expect(r.body.data).toBeUndefined();
      expect(r.body.errors?.map((e) => e.message)).toContainEqual(expect.stringMatching(message));
    });

    it('counts depth as README says: eight levels pass the depth limit, a ninth is refused', async () => {
      // Deeper than any real field (6 levels), so both fail validation: only the depth error differs.
      const deep = (levels: number): string =>
        `{ rockets { edges { node { events { payload { ${'a { '.repeat(levels - 6)} b ${'} '.repeat(levels - 6)} } } } } } }`;
      const depthErrors = async (levels: number): Promise<string[]> =>
        ((await postRaw(server, { query: deep(levels) })).body.errors ?? [])
          .map((e) => e.message)
          .filter((m) => /depth limit/.test(m));
      expect(await depthErrors(8)).toEqual([]);
      expect(await depthErrors(9)).toEqual([expect.stringMatching(/depth limit of 8 exceeded/)]);
    });

    it('lets the page REST answers through: 100 rockets with every field, cursors and pageInfo', async () => {
      const r = await postRaw(server, { query: `{ ${REST_PAGE} }` });
      expect(r.status).toBe(200);
      expect(r.body.errors).toBeUndefined();
    });

    it('lets seven full pages through in one operation', async () => {
      const r = await postRaw(server, { query: `{ ${times(7, (i) => `p${i}: ${FULL_PAGE}`)} }` });
      expect(r.status).toBe(200);
      expect(r.body.errors).toBeUndefined();
    });

    it('refuses a bomb sent over graphql-ws with errors, keeping the socket open', async () => {
      const s = await open();
      await s.init();
      s.subscribe(
        'bomb',
        `{ ${times(ARMOR_LIMITS.maxAliases + 1, (i) => `r${i}: rocket(channel: "a") { channel }`)} }`,
      );
      expect(await s.next()).toMatchObject({ id: 'bomb', type: 'error' });
      s.subscribe('fine', '{ rockets { nodes { channel } } }');
      expect(await s.next()).toMatchObject({ id: 'fine', type: 'next' });
    });
  });

  describe('introspection and GraphiQL switches', () => {
    it('answers introspection by default', async () => {
      await start();
      const r = await postRaw(server, { query: '{ __schema { queryType { name } } }' });
      expect(r.body).toEqual({ data: { __schema: { queryType: { name: 'Query' } } } });
    });

    it('refuses introspection, and hides field suggestions, when introspection is off', async () => {
      await start({ introspection: false });
      const r = await postRaw(server, { query: '{ __schema { queryType { name } } }' });
      expect(r.status).toBe(400);
      expect(r.body.errors?.[0]?.message).toMatch(/introspection has been disabled/);
      const typo = await postRaw(server, { query: '{ rocketz { channel } }' });
      expect(JSON.stringify(typo.body)).not.toMatch(/Did you mean/);
      const typename = await postRaw(server, { query: '{ __typename }' });
      expect(typename.body).toEqual({ data: { __typename: 'Query' } });
    });

    it('names no field, input field, argument or enum value of the schema in any error when introspection is off', async () => {
      // Each of these is answered with a "Did you mean …?" while introspection is on.
      const hinted = [
        { query: '{ rockets(sort: LAUNCHED) { nodes { channel } } }' },
        { query: '{ rockets(sortt: SPEED) { nodes { channel } } }' },
        {
          query:
            'query($a: RocketAsOfInput, $s: RocketSortField) { rockets(sort: $s) { nodes { channel } } rocket(channel: "r", asOf: $a) { channel } }',
          variables: { a: { tim: 'x' }, s: 'SPED' },
        },
      ];
      const hints = async (): Promise<string[]> => {
        const said: string[] = [];
        for (const body of hinted) {
          const r = await postRaw(server, body);
          expect(r.status).toBe(400);
          said.push(...(r.body.errors ?? []).map((e) => e.message));
        }
        return said;
      };
      await start();
      const hinting = await hints();
      expect(hinting.filter((m) => /Did you mean/.test(m))).toHaveLength(4);
      await server.app.stop();

      await start({ introspection: false });
      const closed = await hints();
      expect(closed).toEqual(hinting.map((m) => m.replace(/\s*Did you mean [^?]*\?/, '')));
      expect(closed.join('\n')).not.toMatch(/LAUNCHED_AT|"sort"|"time"|"SPEED"/);
      // And over graphql-ws, where the variables are coerced alike.
      const s = await open();
      await s.init();
      s.subscribe('v', hinted[2]?.query ?? '', hinted[2]?.variables);
      const refused = await s.next();
      expect(JSON.stringify(refused)).toMatch(/RocketAsOfInput/);
      expect(JSON.stringify(refused)).not.toMatch(/Did you mean/);
    });

    it('serves GraphiQL, speaking graphql-ws, to a browser asking GET /graphql', async () => {
      await start({ graphiql: true });
      const r = await send(`${server.http}/graphql`, 'GET', undefined, { accept: 'text/html' });
      expect(r.status).toBe(200);
      expect(r.headers['content-type']).toMatch(/^text\/html/);
      expect(String(r.body)).toContain('<title>Rockets</title>');
      expect(String(r.body)).toContain('"subscriptionsProtocol":"WS"');
      // Nine megabytes: sent compressed to a browser, and not again to one that holds it.
      const etag = r.headers.etag as string;
      expect(etag).toMatch(/^"/);
      for (const [coding, header, decompress] of CODINGS) {
        const zipped = await send(`${server.http}/graphql`, 'GET', undefined, {
          accept: 'text/html',
          'accept-encoding': header,
        });
        expect([zipped.headers['content-encoding'], zipped.headers.etag]).toEqual([
          coding,
          `${etag.slice(0, -1)}-${coding}"`,
        ]);
        expect(Number(zipped.headers['content-length'])).toBeLessThan(r.raw.length / 3);
        // Buffer.equals: jest's toEqual walks nine million bytes one by one (50 s).
        expect(decompress(zipped.raw).equals(r.raw)).toBe(true);
      }
      const held = await send(`${server.http}/graphql`, 'GET', undefined, {
        accept: 'text/html',
        'if-none-match': etag,
      });
      expect(held.status).toBe(304);
      const head = await send(`${server.http}/graphql`, 'HEAD', undefined, { accept: 'text/html' });
      expect([head.status, head.headers['content-length'], head.raw.length]).toEqual([200, String(r.raw.length), 0]);
    });

    it('serves no GraphiQL when it is off', async () => {
      await start({ graphiql: false });
      const r = await send(`${server.http}/graphql`, 'GET', undefined, { accept: 'text/html' });
      expect(r.status).toBe(406);
      // An error saying what it answers instead, not a page.
      expect(r.headers['content-type']).toBe('application/json; charset=utf-8');
    });
  });

  describe('WebSocket housekeeping', () => {
    it('closes with 4403 Forbidden when connection_init lacks the configured token', async () => {
      await start({ subscriptionToken: 's3cret' });
      for (const payload of [undefined, { token: 'wrong' }, { authorization: 'Bearer wrong' }]) {
        const s = await open();
        s.send({ type: 'connection_init', ...(payload ? { payload } : {}) });
        expect(await s.closed).toEqual({ code: 4403, reason: 'Forbidden' });
      }
    });

    it('acknowledges a connection_init that carries the token, as token or bearer authorization', async () => {
      await start({ subscriptionToken: 's3cret' });
      // init rejects unless the server answers connection_ack.
      await expect((await open()).init({ token: 's3cret' })).resolves.toBeUndefined();
      await expect((await open()).init({ authorization: 'Bearer s3cret' })).resolves.toBeUndefined();
    });

    it('refuses the upgrade from an origin not allowed, and takes the allowed, the same and no origin', async () => {
      await start({ allowedOrigins: ['https://rockets.example'] });
      await expect(open({ origin: 'https://evil.example' })).rejects.toThrow('upgrade refused: 403');
      await (await open({ origin: 'https://rockets.example' })).init();
      await (await open({ origin: server.http })).init();
      await (await open()).init();
    });

    it('answers CORS requests from allowed origins only', async () => {
      await start({ allowedOrigins: ['https://rockets.example'] });
      const body = JSON.stringify({ query: '{ __typename }' });
      const headers = { 'content-type': 'application/json' };
      const allowed = await send(`${server.http}/graphql`, 'POST', body, {
        ...headers,
        origin: 'https://rockets.example',
      });
      expect(allowed.headers['access-control-allow-origin']).toBe('https://rockets.example');
      const refused = await send(`${server.http}/graphql`, 'POST', body, {
        ...headers,
        origin: 'https://evil.example',
      });
      expect(refused.headers['access-control-allow-origin']).toBeUndefined();
      const preflight = await send(`${server.http}/graphql`, 'OPTIONS', undefined, {
        origin: 'https://rockets.example',
        'access-control-request-method': 'POST',
      });
      expect(preflight.status).toBe(204);
      expect(preflight.headers['access-control-allow-methods']).toBe('GET, HEAD, POST');
    });

    it('closes with 1009 a socket that sends a frame over the payload limit', async () => {
      await start({ wsMaxPayload: 1024 });
      const s = await open();
      await s.init();
      s.subscribe('big', `{ rocket(channel: "${'x'.repeat(2048)}") { channel } }`);
      expect((await s.closed).code).toBe(1009);
    });

    it('refuses an operation beyond WS_MAX_OPERATIONS on one socket, and keeps the others', async () => {
      await start({ wsMaxOperations: 3 });
      const s = await open();
      await s.init();
      for (const id of ['a', 'b', 'c']) s.subscribe(id, print(RocketUpdatedDocument));
      await until(() => server.app.service.hub.subscribers === 3);
      s.subscribe('d', print(RocketUpdatedDocument));
      const refused = await s.next();
      expect(refused).toMatchObject({ id: 'd', type: 'error' });
      expect(refused.payload).toEqual([
        expect.objectContaining({
          message: expect.stringContaining('WS_MAX_OPERATIONS') as unknown,
          extensions: { code: 'TOO_MANY_OPERATIONS', limit: 3 },
        }),
      ]);
      expect(server.app.service.hub.subscribers).toBe(3);
      // Once one completes, another may start; another socket has a limit of its own.
      s.send({ type: 'complete', id: 'a' });
      await until(() => server.app.service.hub.subscribers === 2);
      s.subscribe('e', print(RocketUpdatedDocument));
      await until(() => server.app.service.hub.subscribers === 3);
      const other = await open();
      await other.init();
      other.subscribe('a', print(RocketUpdatedDocument));
      await until(() => server.app.service.hub.subscribers === 4);
      expect(s.open && other.open).toBe(true);
    });

    /** Holds every commit of the server's store until the returned function is called (or the test ends). */
    const holdServerCommits = (): (() => void) => {
      const release = holdCommits(server.app.store);
      held.push(release);
      return release;
    };
    const inLanes = async (): Promise<number> =>
      (await server.app.service.health()).lanes.depths.reduce((a, b) => a + b, 0);

    it('counts an operation the client completed until it has ended: completing each one passes no limit', async () => {
      await start({ wsMaxOperations: 3 });
      const release = holdServerCommits();
      const s = await open();
      await s.init();
      // Ten mutations, each completed by the client as soon as it is sent: each still runs, its commit held.
      for (let i = 0; i < 10; i++) {
        s.subscribe(`m${i}`, print(SubmitStatusDocument), messages(`burst-${i}`).launched(1));
        s.send({ type: 'complete', id: `m${i}` });
      }
      // Three run; the others were refused (to no one: their client had completed them), and so is this one.
      s.subscribe('probe', '{ rockets { nodes { channel } } }');
      expect(await s.next()).toMatchObject({
        id: 'probe',
        type: 'error',
        payload: [expect.objectContaining({ extensions: { code: 'TOO_MANY_OPERATIONS', limit: 3 } })],
      });
      // The three reach the lanes after their parse and validation, which may end after the probe's refusal.
      await until(async () => (await inLanes()) >= 3);
      expect(await inLanes()).toBe(3);
      release();
      await until(async () => (await inLanes()) === 0);
      expect((await server.app.service.rockets({})).rockets).toHaveLength(3);
      // Once they have ended (a moment after their commits: their results are made and dropped), the socket
      // takes operations again. Nothing is sent when one ends, so the test asks until it is taken.
      let attempt = 0;
      await until(async () => {
        const id = `after-${attempt++}`;
        s.subscribe(id, '{ rockets { nodes { channel } } }');
        const answer = await s.next();
        expect(answer).toMatchObject({ id });
        return answer.type === 'next';
      });
    });

    it('closes with 4409 a socket that takes again the id of an operation it completed and that still runs', async () => {
      await start();
      const release = holdServerCommits();
      const s = await open();
      await s.init();
      // The mutation under X still runs (its commit held) when X subscribes again: graphql-ws would send the
      // mutation's result and `complete` under the new X, and lose track of its subscription for good.
      // An id as long as a client likes: the close reason does not repeat it (it holds at most 123 bytes).
      const X = 'X'.repeat(200);
      s.subscribe(X, print(SubmitStatusDocument), messages('reused').launched(1));
      s.send({ type: 'complete', id: X });
      s.subscribe(X, print(RocketUpdatedDocument));
      expect(await s.closed).toEqual({
        code: 4409,
        reason: 'an operation with this id is still finishing: subscribe with another id',
      });
      release();
      await until(async () => (await inLanes()) === 0);
      expect(server.app.service.hub.subscribers).toBe(0);
      // A finished operation's id may be taken again.
      const t = await open();
      await t.init();
      t.subscribe('Y', '{ rockets { nodes { channel } } }');
      expect(await t.next()).toMatchObject({ id: 'Y', type: 'next' });
      expect(await t.next()).toMatchObject({ id: 'Y', type: 'complete' });
      t.subscribe('Y', print(RocketUpdatedDocument));
      await until(() => server.app.service.hub.subscribers === 1);
      expect(t.open).toBe(true);
    });

    it('answers variables that do not coerce with BAD_USER_INPUT and no HTTP hints, over HTTP and graphql-ws', async () => {
      await start();
      const query = 'query ($n: Int) { events(first: $n) { position } }';
      const subscription = 'subscription ($c: String!) { rocketUpdated(channel: $c) { channel } }';
      const http = await send(`${server.http}/graphql`, 'POST', JSON.stringify({ query, variables: { n: 'x' } }), {
        'content-type': 'application/json',
      });
      const s = await open();
      await s.init();
      /** The first frame of operation `id` but its `complete`. */
      const answerOf = async (id: string): Promise<ProtocolMessage> => {
        for (;;) {
          const m = await s.next();
          if (m.id === id && m.type !== 'complete') return m;
        }
      };
      s.subscribe('q', query, { n: 'x' });
      const overWs = await answerOf('q');
      s.subscribe('s', subscription);
      const subscribed = await answerOf('s');
      const answers = [http.body, overWs.payload, subscribed.payload] as Array<{ errors?: unknown[] }>;
      for (const answer of answers) {
        expect(answer.errors).toEqual([
          expect.objectContaining({
            message: expect.stringMatching(/^Variable "\$[nc]"/) as unknown,
            extensions: { code: 'BAD_USER_INPUT' },
          }),
        ]);
      }
      expect([overWs.type, subscribed.type]).toEqual(['next', 'next']);
      // A scalar that fails with a plain error (graphql-scalars' SafeInt reading an object) stays masked,
      // as every error caused by anything but GraphQL is, on graphql-js's first run and graphql-jit's after.
      const safeInt = 'query ($a: SafeInt) { events(after: $a) { position } }';
      for (let run = 1; run <= 3; run++) {
        const r = await send(
          `${server.http}/graphql`,
          'POST',
          JSON.stringify({ query: safeInt, variables: { a: { toString: 1 } } }),
          { 'content-type': 'application/json' },
        );
        expect({ run, body: r.body }).toMatchObject({
          run,
          body: { errors: [{ message: 'Unexpected error.', extensions: { code: 'UNAVAILABLE' } }] },
        });
      }
    });

    it('closes with 1007 a socket that sends a binary frame that is not UTF-8, storing nothing', async () => {
      await start();
      const submit = (channel: string): string =>
        JSON.stringify({
          id: channel,
          type: 'subscribe',
          payload: {
            query: `mutation { submitMessage(metadata: { channel: "${channel}", messageNumber: 1,
              messageTime: "2022-02-02T19:39:05Z", messageType: ROCKET_LAUNCHED },
              message: { rocketLaunched: { type: "F", launchSpeed: 1, mission: "M" } }) { status } }`,
          },
        });
      // A binary frame of UTF-8 is read as ever.
      const fine = await open();
      await fine.init();
      fine.socket.send(Buffer.from(submit('caf\u00e9'), 'utf8'), { binary: true });
      expect(await fine.next()).toMatchObject({ id: 'caf\u00e9', type: 'next' });
      // "cafè" in ISO-8859-1 would read as "caf\uFFFD".
      const bad = await open();
      await bad.init();
      bad.socket.send(Buffer.from(submit('caf\u00e8'), 'latin1'), { binary: true });
      // A frame already on its way is not read either.
      bad.socket.send(submit('after'));
      expect((await bad.closed).code).toBe(1007);
      const health = await send(`${server.http}/health`, 'GET');
      expect(health.body).toMatchObject({ rockets: 1, events: 1 });
    });

    it('refuses an upgrade on another path with a 404 that names /graphql, and keeps serving', async () => {
      await start();
      for (const path of ['/rockets', '/', '/graphql/']) {
        const url = server.ws.replace(/\/graphql$/, path);
        await expect(RawSocket.open(url)).rejects.toThrow('upgrade refused: 404');
      }
      const { port } = new URL(server.http);
      const answer = await rawUpgrade(Number(port), '/messages');
      expect(answer).toMatch(/^HTTP\/1\.1 404 Not Found\r\n/);
      expect(answer).toMatch(
        /\r\n\r\nWebSocket connections are taken on \/graphql only \(graphql-ws\), not on \/messages$/,
      );
      expect((await send(`${server.http}/health`, 'GET')).status).toBe(200);
    });

    it('refuses an upgrade whose request target does not parse with a 400, and keeps serving', async () => {
      await start();
      const { port } = new URL(server.http);
      const answer = await rawUpgrade(Number(port), 'http://[');
      expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
      expect(answer).toMatch(/\r\n\r\nthe request target is not a valid URL$/);
      expect((await send(`${server.http}/health`, 'GET')).status).toBe(200);
    });

    it('answers a request that offers an upgrade to another protocol (h2c) as if it had not', async () => {
      await start();
      const { port } = new URL(server.http);
      const body = JSON.stringify(
        envelope('h2c', 1, 'RocketLaunched', { type: 'Soyuz', launchSpeed: 1, mission: 'UP' }),
      );
      // As `curl --http2` sends it over http://, its body in two writes; then, on the same connection once
      // it is answered, another request.
      const offer =
        'POST /messages HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n' +
        `HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = connect(Number(port), '127.0.0.1', () => {
          socket.write(offer + body.slice(0, 20), () => socket.write(body.slice(20)));
        });
        let got = '';
        socket.on('data', (d: Buffer) => {
          got += d.toString();
          if (got.endsWith('"messageNumber":1}'))
            socket.write('GET /rockets/h2c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        });
        socket.on('error', reject);
        socket.on('close', () => resolve(got));
      });
      const statuses = [...answer.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
      expect(statuses).toEqual(['202', '200']);
      expect(answer).toContain('"status":"applied"');
      expect(answer).toContain('"mission":"UP"');
      // A WebSocket upgrade to /graphql is still taken.
      const s = await open();
      await s.init();
      expect(s.open).toBe(true);
    });

    it('answers requests offering h2c pipelined behind others in order, and at most 16 on one connection', async () => {
      await start();
      const { port } = new URL(server.http);
      const h2c = (path: string) =>
        `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AA\r\n\r\n`;
      /** What the server answers to `requests`, sent in one write, until it closes the connection. */
      const answersTo = (requests: string) =>
        new Promise<string[]>((resolve, reject) => {
          const socket = connect(Number(port), '127.0.0.1', () => socket.write(requests));
          let got = '';
          socket.on('data', (d: Buffer) => (got += d.toString()));
          socket.on('error', reject);
          socket.on('close', () => resolve([...got.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1] ?? '')));
        });
      const warnings: Error[] = [];
      const warned = (w: Error) => warnings.push(w);
      process.on('warning', warned);
      try {
        const plain = 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n';
        const last = 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';
        // Behind an answer still to send, and one behind another: each in turn.
        expect(await answersTo(plain + h2c('/health') + plain + h2c('/gaps') + h2c('/health') + last)).toEqual(
          Array.from({ length: 6 }, () => '200'),
        );
        // Sixteen on one connection are answered; the seventeenth is refused, and the connection closed.
        expect(await answersTo(h2c('/health').repeat(17))).toEqual([...Array.from({ length: 16 }, () => '200'), '400']);
        expect(warnings).toEqual([]);
      } finally {
        process.off('warning', warned);
      }
    });

    it('pings idle sockets to keep them alive', async () => {
      await start({ keepAliveMs: 20 });
      const s = await open();
      await s.init();
      await new Promise((resolve) => s.socket.once('ping', resolve));
      expect(s.open).toBe(true);
    });

    it('refuses a WebSocket that does not offer the graphql-transport-ws subprotocol', async () => {
      await start();
      await expect(RawSocket.open(server.ws, {}, 'graphql-ws')).rejects.toThrow('Server sent no subprotocol');
    });

    it('keeps serving the other subscriptions of a socket whose operation failed', async () => {
      await start();
      const s = await open();
      await s.init();
      s.subscribe('live', print(RocketUpdatedDocument));
      await until(() => server.app.service.hub.subscribers === 1);
      s.subscribe('broken', '{');
      expect(await s.next()).toMatchObject({ id: 'broken', type: 'error' });
      expect(server.app.service.hub.subscribers).toBe(1);
    });
  });
});

/** All a server answers to a WebSocket handshake for `target`, sent by hand, until it closes the socket. */
function rawUpgrade(port: number, target: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(
        `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
          'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      );
    });
    let got = '';
    socket.on('data', (d: Buffer) => (got += d.toString()));
    socket.on('error', reject);
    // The server ends such a socket once it has answered; one it left open is cut here, and said so.
    socket.setTimeout(5000, () => {
      got = 'left open';
      socket.destroy();
    });
    socket.on('close', () => resolve(got));
  });
}
