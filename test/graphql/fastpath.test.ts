import { print } from 'graphql';
import {
  RocketDocument,
  RocketsDocument,
  SubmitMessageDocument,
  SubmitMessagesDocument,
  type RocketFieldsFragment,
} from '../generated/graphql';
import { AnswerCache } from '../../src/http/graphql/answer-cache';
import { getJson, send } from '../support/process';
import { data, messages, post, postRaw, startServer, wsClient, type TestServer } from './support';

const a = messages('a');

/** Every field REST answers for a rocket. */
const ROCKET_FIELDS =
  'channel type mission speed status explodedReason launchedAt updatedAt lastMessageNumber buffer { waitingFor count oldestSince }';

/** A GraphQL rocket in REST's JSON shape: enums are the only difference in representation. */
const asRest = (r: RocketFieldsFragment) => ({ ...r, status: r.status.toLowerCase() });

interface Page {
  readonly rockets: {
    readonly edges: Array<{ readonly cursor: string; readonly node: RocketFieldsFragment }>;
    readonly pageInfo: { readonly hasNextPage: boolean; readonly endCursor: string | null };
  };
}

describe('GraphQL fast paths: kept answers and graphql-jit', () => {
  let server: TestServer;
  beforeEach(async () => {
    server = await startServer();
  });
  afterEach(async () => {
    jest.restoreAllMocks();
    await server.app.stop();
  });

  it('answers the page REST answers, 100 rockets with every field, buffer included, and the same next cursor', async () => {
    const batch = Array.from({ length: 130 }, (_, i) =>
      messages(`r${i}`).launched(1, { launchSpeed: (i * 37) % 101, mission: `M${i % 7}` }),
    );
    await data(server, SubmitMessagesDocument, { messages: batch });
    await data(server, SubmitMessageDocument, messages('r5').increased(3, 1)); // something in a buffer
    const query = `{ rockets(first: 100, sort: SPEED, order: DESC) { edges { cursor node { ${ROCKET_FIELDS} } }
      pageInfo { hasNextPage endCursor } } }`;
    const r = await postRaw<Page>(server, { query });
    expect(r.status).toBe(200);
    expect(r.body.errors).toBeUndefined();
    const page = r.body.data?.rockets;
    const rest = await getJson(`${server.http}/rockets?sort=speed&order=desc&limit=100`);
    expect(page?.edges.map((e) => asRest(e.node))).toEqual(rest.body);
    expect(page?.edges).toHaveLength(100);
    expect(page?.pageInfo).toEqual({ hasNextPage: true, endCursor: rest.headers['x-next-cursor'] });
    expect(page?.edges.some((e) => e.node.buffer.count === 1)).toBe(true);
  });

  it('answers a repeated query without executing it, until a commit changes what it reads', async () => {
    await data(server, SubmitMessageDocument, a.launched(1));
    const listings = jest.spyOn(server.app.service, 'rockets');
    const first = await data(server, RocketsDocument, { sort: 'SPEED' });
    expect(await data(server, RocketsDocument, { sort: 'SPEED' })).toEqual(first);
    expect(listings).toHaveBeenCalledTimes(1);
    // Other variables are another question.
    await data(server, RocketsDocument, { sort: 'CHANNEL' });
    expect(listings).toHaveBeenCalledTimes(2);
    // A commit that only buffers: no event, yet the next answer shows it.
    await data(server, SubmitMessageDocument, a.increased(3, 1));
    const after = await data(server, RocketsDocument, { sort: 'SPEED' });
    expect(after.rockets.edges[0]?.node.buffer.count).toBe(1);
    expect(listings).toHaveBeenCalledTimes(3);
  });

  it('keeps no answer for variables JSON cannot write back, as 1e400 (Infinity), which would read as null', async () => {
    const body = (f: string) =>
      `{"query":"query Q($f: Int) { rockets(first: $f) { nodes { channel } } }","variables":{"f":${f}}}`;
    const post = async (f: string) => {
      const r = await send(`${server.http}/graphql`, 'POST', body(f), {
        'content-type': 'application/json',
        accept: 'application/graphql-response+json',
      });
      return { status: r.status, body: r.body };
    };
    const refused = await post('1e400');
    expect(refused.status).toBe(400);
    expect(JSON.stringify(refused.body)).toMatch(/Int cannot represent non-integer value: Infinity/);
    expect(await post('null')).toEqual({ status: 200, body: { data: { rockets: { nodes: [] } } } });
    expect(await post('null')).toEqual({ status: 200, body: { data: { rockets: { nodes: [] } } } });
    expect(await post('1e400')).toEqual(refused);
    expect(await post('-1e400')).toMatchObject({ status: 400 });
  });

  it('answers, and keeps no answer for, a query whose variables are nested too deep to make a key of', async () => {
    // A body graphql-http parses, with an unused variable JSON.stringify cannot write back.
    const body = `{"query":"{ gaps { channel } }","variables":{"unused":${'['.repeat(20_000)}${']'.repeat(20_000)}}}`;
    for (let i = 0; i < 2; i++) {
      const r = await send(`${server.http}/graphql`, 'POST', body, { 'content-type': 'application/json' });
      expect({ status: r.status, body: r.body }).toEqual({ status: 200, body: { data: { gaps: [] } } });
    }
  });

  it('keeps no answer with errors: a rocket not found yet is found once applied', async () => {
    const lookups = jest.spyOn(server.app.service, 'rocket');
    for (let i = 0; i < 2; i++) {
      const r = await post(server, RocketDocument, { channel: 'a' });
      expect(r.body.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
    }
    expect(lookups).toHaveBeenCalledTimes(2);
    await data(server, SubmitMessageDocument, a.launched(1));
    expect((await data(server, RocketDocument, { channel: 'a' })).rocket?.lastMessageNumber).toBe(1);
  });

  it('answers the same bytes from the cache, with the media type each request accepts', async () => {
    const body = JSON.stringify({ query: '{ rockets { nodes { channel speed } } }' });
    const ask = (accept: string) =>
      send(`${server.http}/graphql`, 'POST', body, { 'content-type': 'application/json', accept });
    const computed = await ask('application/graphql-response+json');
    const kept = await ask('application/json');
    expect(kept.body).toEqual(computed.body);
    expect(computed.headers['content-type']).toBe('application/graphql-response+json; charset=utf-8');
    expect(kept.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(kept.headers['content-length']).toBe(computed.headers['content-length']);
  });

  it('answers a request sent again as it was sent before parsing it, and only with the same media types', async () => {
    await data(server, SubmitMessageDocument, a.launched(1));
    const body = JSON.stringify({ query: '{ rockets { nodes { channel speed } } }' });
    const ask = (contentType: string, accept = 'application/json') =>
      send(`${server.http}/graphql`, 'POST', body, { 'content-type': contentType, accept });
    const questions = jest.spyOn(AnswerCache.prototype, 'get');
    const first = await ask('application/json');
    expect(questions).toHaveBeenCalledTimes(1);
    // The same bytes, media types and version: answered before graphql-http, which asks the cache by question.
    const again = await ask('application/json');
    expect(questions).toHaveBeenCalledTimes(1);
    expect({ status: again.status, body: again.body }).toEqual({ status: 200, body: first.body });
    expect(again.headers['content-type']).toBe(first.headers['content-type']);
    // Another media type is another request: graphql-http still judges it, here refusing it.
    const refused = await ask('text/plain');
    expect(refused.status).toBe(415);
    const other = await ask('application/json', 'application/graphql-response+json');
    expect(other.headers['content-type']).toBe('application/graphql-response+json; charset=utf-8');
    expect(other.body).toEqual(first.body);
    // A commit moves the version: the same request is asked again, and answers what changed.
    await data(server, SubmitMessageDocument, a.increased(2, 5));
    const after = await ask('application/json');
    expect(after.body).toEqual({ data: { rockets: { nodes: [{ channel: 'a', speed: 505 }] } } });
  });

  it('never answers a mutation sent again from memory: the same bytes are a duplicate the second time', async () => {
    const statuses: unknown[] = [];
    for (let i = 0; i < 2; i++)
      statuses.push((await data(server, SubmitMessageDocument, a.launched(1))).submitMessage.status);
    expect(statuses).toEqual(['APPLIED', 'DUPLICATE']);
  });

  it('answers a GET sent again by its target, and a HEAD as that GET without the body', async () => {
    await data(server, SubmitMessageDocument, a.launched(1));
    const target = `${server.http}/graphql?query=${encodeURIComponent('{ rockets { nodes { channel } } }')}`;
    const questions = jest.spyOn(AnswerCache.prototype, 'get');
    const first = await send(target, 'GET', undefined, { accept: 'application/json' });
    const again = await send(target, 'GET', undefined, { accept: 'application/json' });
    expect(questions).toHaveBeenCalledTimes(1);
    expect(again.body).toEqual({ data: { rockets: { nodes: [{ channel: 'a' }] } } });
    expect(again.body).toEqual(first.body);
    const head = await send(target, 'HEAD', undefined, { accept: 'application/json' });
    expect(questions).toHaveBeenCalledTimes(1);
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(first.headers['content-length']);
  });

  it('runs each operation of a document with several, whichever ran first', async () => {
    await data(server, SubmitMessageDocument, a.launched(1));
    const query = 'query Rockets { rockets { nodes { channel } } } query Gaps { gaps { channel } }';
    for (let i = 0; i < 3; i++) {
      // Variables differ each time, so nothing is answered from the cache.
      expect((await postRaw(server, { query, operationName: 'Rockets', variables: { i } })).body).toEqual({
        data: { rockets: { nodes: [{ channel: 'a' }] } },
      });
      expect((await postRaw(server, { query, operationName: 'Gaps', variables: { i } })).body).toEqual({
        data: { gaps: [] },
      });
    }
  });

  it('answers a document normally after a request named an operation it does not hold', async () => {
    const query = 'query Rockets { rockets { nodes { channel } } }';
    const wrong = await postRaw(server, { query, operationName: 'Nope' });
    expect(wrong.status).toBe(400);
    for (let i = 0; i < 3; i++)
      expect((await postRaw(server, { query, variables: { i } })).body).toEqual({ data: { rockets: { nodes: [] } } });
  });

  it('does not answer an empty operation name from an answer kept for none', async () => {
    const query = 'query A { rockets(first: 1) { nodes { channel } } }';
    const kept = await postRaw(server, { query, operationName: null });
    expect(kept.body).toEqual({ data: { rockets: { nodes: [] } } });
    // An empty name names no operation of the document: refused, kept answer or not.
    const empty = await postRaw(server, { query, operationName: '' });
    expect(empty.status).toBe(400);
    expect(empty.body).toMatchObject({ errors: [{ extensions: { code: 'OPERATION_RESOLUTION_FAILURE' } }] });
  });

  describe('once a document is compiled (from its second execution)', () => {
    const warm = async (): Promise<void> => {
      await data(server, SubmitMessageDocument, a.launched(1));
      await data(server, SubmitMessageDocument, a.increased(2, 1));
      await data(server, SubmitMessagesDocument, { messages: [messages('b').launched(1)] });
      await data(server, SubmitMessagesDocument, { messages: [messages('c').launched(1)] });
    };

    it('answers an answer with errors in the same bytes, and with the same ETag, as its first execution did', async () => {
      const url = `${server.http}/graphql?query=${encodeURIComponent('{ rocket(channel: "nobody") { channel } }')}`;
      const answers = [];
      for (let i = 0; i < 3; i++) {
        const r = await send(url, 'GET', undefined, { accept: 'application/json' });
        answers.push({ etag: r.headers.etag, text: JSON.stringify(r.body) });
      }
      expect(answers[0]?.text).toMatch(/^\{"errors":\[.*"code":"NOT_FOUND".*\],"data":\{"rocket":null\}\}$/);
      expect(answers[1]).toEqual(answers[0]);
      expect(answers[2]).toEqual(answers[0]);
    });

    it('still refuses variables that break @oneOf, as graphql-js does', async () => {
      await warm();
      const twoPayloads = {
        ...a.launched(3),
        message: { rocketLaunched: { type: 'x', launchSpeed: 1, mission: 'm' }, rocketExploded: { reason: 'r' } },
      };
      const one = await postRaw(server, { query: print(SubmitMessageDocument), variables: twoPayloads });
      expect(one.status).toBe(400);
      expect(one.body.data).toBeUndefined();
      expect(one.body.errors?.[0]?.message).toMatch(/Exactly one key must be specified for OneOf type/);
      const nullOne = { ...a.launched(3), message: { rocketLaunched: null } };
      expect((await postRaw(server, { query: print(SubmitMessageDocument), variables: nullOne })).status).toBe(400);
      const batch = await postRaw(server, {
        query: print(SubmitMessagesDocument),
        variables: { messages: [messages('d').launched(1), twoPayloads] },
      });
      expect(batch.status).toBe(400);
      expect(batch.body.errors?.[0]?.message).toMatch(/Exactly one key must be specified for OneOf type/);
      expect((await getJson(`${server.http}/rockets/d`)).status).toBe(404);
    });

    it('refuses variables that do not coerce with the words of graphql-js: the variable sent, and where in it', async () => {
      await warm();
      const query = print(SubmitMessageDocument);
      const launched = a.launched(3);
      const variables = { ...launched, metadata: { ...launched.metadata, messageNumber: 1.5 } };
      const answers = [];
      for (let i = 0; i < 3; i++) answers.push(await postRaw(server, { query, variables }));
      expect(answers[0]?.body.errors?.[0]?.message).toBe(
        'Variable "$metadata" got invalid value 1.5 at "metadata.messageNumber"; ' +
          'SafeInt cannot represent non-integer value: 1.5',
      );
      expect(answers[0]?.status).toBe(400);
      expect(answers[1]).toEqual(answers[0]);
      expect(answers[2]).toEqual(answers[0]);
    });

    it('answers domain errors with their codes', async () => {
      await warm();
      const conflict = await post(server, SubmitMessageDocument, a.increased(2, 99));
      expect(conflict.body.errors?.[0]?.extensions).toMatchObject({ code: 'CONFLICT', channel: 'a', messageNumber: 2 });
      const bad = await post(server, SubmitMessageDocument, messages('').launched(1));
      expect(bad.body.errors?.[0]?.extensions).toMatchObject({
        code: 'BAD_USER_INPUT',
        issues: [{ field: 'metadata.channel' }],
      });
    });

    it('answers an error the same way, locations included, whichever engine ran the query', async () => {
      const query = '{ rocket(channel: "nope") { channel speed } }';
      const answers = [];
      for (let i = 0; i < 3; i++) answers.push((await postRaw(server, { query })).body);
      expect(answers[0]?.errors).toEqual([
        {
          message: 'rocket "nope" not found',
          locations: [{ line: 1, column: 3 }],
          path: ['rocket'],
          extensions: { code: 'NOT_FOUND' },
        },
      ]);
      expect(answers[1]).toEqual(answers[0]);
      expect(answers[2]).toEqual(answers[0]);
    });

    it('masks an unexpected failure as "Unexpected error."', async () => {
      await warm();
      for (const first of [1, 2]) await data(server, RocketsDocument, { first });
      const logged = jest.spyOn(server.app.log, 'error');
      const failing = jest
        .spyOn(server.app.store, 'listRockets')
        .mockRejectedValue(new Error('disk on fire at /var/lib/secret'));
      try {
        const r = await post(server, RocketsDocument, { first: 3 });
        expect(logged).toHaveBeenCalled();
        expect(JSON.stringify(r.body)).not.toContain('secret');
        expect(r.body.errors).toEqual([
          expect.objectContaining({
            message: 'Unexpected error.',
            extensions: { code: 'UNAVAILABLE', retryAfterSeconds: 1, unexpected: true },
          }),
        ]);
      } finally {
        failing.mockRestore();
        logged.mockRestore();
      }
    });

    it('answers queries and mutations over graphql-ws the same way', async () => {
      const client = wsClient(server);
      interface Reply {
        readonly data?: Record<string, unknown> | null;
        readonly errors?: ReadonlyArray<{ readonly extensions?: Record<string, unknown> }>;
      }
      const once = (query: string, variables: Record<string, unknown> = {}) =>
        new Promise<Reply>((resolve, reject) => {
          let result: Reply = {};
          client.subscribe(
            { query, variables },
            { next: (r) => (result = r), error: reject, complete: () => resolve(result) },
          );
        });
      try {
        for (let n = 1; n <= 3; n++) {
          const r = await once(print(SubmitMessageDocument), messages('w').launched(1));
          expect(r.data).toEqual({
            submitMessage: expect.objectContaining({ status: n === 1 ? 'APPLIED' : 'DUPLICATE' }) as unknown,
          });
        }
        const conflict = await once(print(SubmitMessageDocument), messages('w').launched(1, { mission: 'OTHER' }));
        expect(conflict.errors?.[0]?.extensions?.code).toBe('CONFLICT');
        for (let i = 0; i < 3; i++)
          expect((await once('{ rockets { nodes { channel } } }')).data).toEqual({
            rockets: { nodes: [{ channel: 'w' }] },
          });
      } finally {
        await client.dispose();
      }
    });
  });
});
