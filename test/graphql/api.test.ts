import { print } from 'graphql';
import {
  EventsDocument,
  RocketDocument,
  RocketEventsDocument,
  RocketsDocument,
  SubmitMessageDocument,
  SubmitMessagesDocument,
  SubmitMessagesDetailsDocument,
  SubmitStatusDocument,
  type MessageEnvelopeInput,
  type RocketSortField,
  type RocketsQuery,
  type RocketsQueryVariables,
} from '../generated/graphql';
import { CODINGS, expectNotModified, send } from '../support/process';
import { data, messages, post, postRaw, startServer, type TestServer } from './support';

const a = messages('a');

describe('GraphQL over HTTP', () => {
  let server: TestServer;
  const submit = (m: MessageEnvelopeInput) => post(server, SubmitMessageDocument, m);
  const status = async (m: MessageEnvelopeInput) => (await data(server, SubmitStatusDocument, m)).submitMessage.status;

  beforeEach(async () => {
    server = await startServer({ maxBodyBytes: 256 * 1024 });
  });
  afterEach(() => server.app.stop());

  describe('submitMessage', () => {
    it('answers APPLIED with the rocket state once the message is recorded', async () => {
      const r = await submit(a.launched(1, { mission: 'ARTEMIS', launchSpeed: 500 }));
      expect(r.status).toBe(200);
      expect(r.body.data?.submitMessage).toEqual({
        status: 'APPLIED',
        channel: 'a',
        messageNumber: 1,
        rocket: expect.objectContaining({
          channel: 'a',
          type: 'Falcon-9',
          mission: 'ARTEMIS',
          speed: 500,
          status: 'FLYING',
          lastMessageNumber: 1,
          buffer: { waitingFor: 2, count: 0, oldestSince: null },
        }) as unknown,
      });
    });

    it('buffers a message from the future, with no rocket yet, and applies it once the gap fills', async () => {
      const early = await data(server, SubmitMessageDocument, a.increased(2, 100));
      expect(early.submitMessage).toMatchObject({ status: 'BUFFERED', rocket: null });
      const filled = await data(server, SubmitMessageDocument, a.launched(1));
      expect(filled.submitMessage).toMatchObject({
        status: 'APPLIED',
        rocket: { speed: 600, lastMessageNumber: 2, buffer: { waitingFor: 3, count: 0 } },
      });
    });

    it('shows what the reorder buffer holds for a rocket', async () => {
      await status(a.launched(1));
      const r = await data(server, SubmitMessageDocument, a.increased(4, 10));
      expect(r.submitMessage.status).toBe('BUFFERED');
      expect(r.submitMessage.rocket?.buffer).toEqual({
        waitingFor: 2,
        count: 1,
        oldestSince: expect.any(String) as unknown,
      });
    });

    it('acknowledges a redelivery as DUPLICATE and changes nothing', async () => {
      await status(a.launched(1));
      expect(await status(a.launched(1))).toBe('DUPLICATE');
      expect((await data(server, EventsDocument, {})).events).toHaveLength(1);
    });

    it('answers CONFLICT to the same number with a different body, and the first one stands', async () => {
      await status(a.launched(1, { mission: 'ARTEMIS' }));
      const r = await submit(a.launched(1, { mission: 'OTHER' }));
      expect(r.body.data).toBeNull();
      expect(r.body.errors).toEqual([
        expect.objectContaining({
          path: ['submitMessage'],
          extensions: { code: 'CONFLICT', channel: 'a', messageNumber: 1 },
        }),
      ]);
      expect((await data(server, RocketDocument, { channel: 'a' })).rocket?.mission).toBe('ARTEMIS');
    });

    it('answers BAD_USER_INPUT naming every wrong field, and stores nothing', async () => {
      const bad: MessageEnvelopeInput = {
        metadata: { channel: 'a', messageNumber: 0, messageTime: 'yesterday', messageType: 'ROCKET_SPEED_INCREASED' },
        message: { rocketSpeedIncreased: { by: -5 } },
      };
      const r = await submit(bad);
      expect(r.body.errors).toHaveLength(1);
      const [error] = r.body.errors ?? [];
      expect(error?.extensions?.code).toBe('BAD_USER_INPUT');
      expect(error?.extensions?.issues?.map((i) => i.field)).toEqual([
        'metadata.messageNumber',
        'metadata.messageTime',
        'message.rocketSpeedIncreased.by',
      ]);
      expect((await data(server, RocketsDocument, {})).rockets.edges).toEqual([]);
    });

    it('refuses an empty channel as BAD_USER_INPUT on metadata.channel', async () => {
      const r = await submit(messages('').launched(1));
      expect(r.body.errors?.[0]?.extensions).toMatchObject({
        code: 'BAD_USER_INPUT',
        issues: [{ field: 'metadata.channel' }],
      });
    });

    it('refuses a payload that does not match messageType, saying which field to give', async () => {
      const r = await submit({ ...a.launched(1), message: { rocketExploded: { reason: 'boom' } } });
      expect(r.body.errors?.[0]?.extensions).toEqual({
        code: 'BAD_USER_INPUT',
        issues: [
          {
            field: 'message',
            problem:
              'must hold the rocketLaunched payload, since metadata.messageType is ROCKET_LAUNCHED; got rocketExploded',
          },
        ],
      });
      expect((await data(server, EventsDocument, {})).events).toEqual([]);
    });

    it('names the metadata problems too when the payload does not match messageType, as REST does', async () => {
      const bad = messages('').launched(0);
      const r = await submit({
        ...bad,
        metadata: { ...bad.metadata, messageTime: '2022-01-01' },
        message: { rocketExploded: { reason: 'boom' } },
      });
      expect(r.body.errors?.[0]?.extensions?.issues?.map((i) => i.field)).toEqual([
        'metadata.channel',
        'metadata.messageNumber',
        'metadata.messageTime',
        'message',
      ]);
    });

    it('refuses a message beyond the per-channel buffer cap with CHANNEL_BUFFER_FULL and when to retry', async () => {
      await server.app.stop();
      server = await startServer({ bufferLimits: { perChannel: 2, total: 100 } });
      await status(a.launched(1));
      const r = await submit(a.increased(5, 1));
      expect(r.body.errors?.[0]?.extensions).toEqual({
        code: 'CHANNEL_BUFFER_FULL',
        channel: 'a',
        messageNumber: 5,
        waitingFor: 2,
        cap: 'MAX_BUFFERED_PER_CHANNEL',
        limit: 2,
        retryAfterSeconds: 1,
      });
      expect(await status(a.increased(4, 1))).toBe('BUFFERED');
    });

    it('refuses two payload fields at once, as the @oneOf input demands', async () => {
      const r = await postRaw(server, {
        query: print(SubmitMessageDocument),
        variables: {
          ...a.launched(1),
          message: { rocketLaunched: { type: 'x', launchSpeed: 1, mission: 'm' }, rocketExploded: { reason: 'r' } },
        },
      });
      expect(r.status).toBe(400);
      expect(r.body.data).toBeUndefined();
      expect(r.body.errors?.[0]?.message).toMatch(
        /Exactly one key must be specified for OneOf type "MessagePayloadInput"/,
      );
    });
  });

  describe('submitMessages', () => {
    it('answers one result per envelope, in order, refusing bad ones without stopping the others', async () => {
      await status(a.launched(1, { mission: 'ARTEMIS' }));
      const r = await data(server, SubmitMessagesDocument, {
        messages: [
          a.increased(2, 10),
          messages('').launched(1),
          { ...messages('b').launched(1), message: { rocketSpeedIncreased: { by: 1 } } },
          a.launched(1, { mission: 'OTHER' }),
          a.launched(1, { mission: 'ARTEMIS' }),
          a.increased(5, 10),
        ],
      });
      expect(r.submitMessages).toEqual([
        { __typename: 'SubmitMessagePayload', status: 'APPLIED', channel: 'a', messageNumber: 2 },
        {
          __typename: 'SubmitMessageError',
          code: 'BAD_USER_INPUT',
          message: 'metadata.channel: must not be empty',
          issues: [{ field: 'metadata.channel', problem: 'must not be empty' }],
        },
        expect.objectContaining({
          __typename: 'SubmitMessageError',
          code: 'BAD_USER_INPUT',
          issues: [expect.objectContaining({ field: 'message' })],
        }),
        expect.objectContaining({ __typename: 'SubmitMessageError', code: 'CONFLICT', issues: [] }),
        { __typename: 'SubmitMessagePayload', status: 'DUPLICATE', channel: 'a', messageNumber: 1 },
        { __typename: 'SubmitMessagePayload', status: 'BUFFERED', channel: 'a', messageNumber: 5 },
      ]);
    });

    it('gives a refused envelope the details submitMessage gives in extensions', async () => {
      await status(a.launched(1, { mission: 'ARTEMIS' }));
      const r = await data(server, SubmitMessagesDetailsDocument, {
        messages: [a.launched(1, { mission: 'OTHER' }), a.increased(5000, 1), messages('').launched(1)],
      });
      const none = {
        channel: null,
        messageNumber: null,
        retryAfterSeconds: null,
        waitingFor: null,
        cap: null,
        limit: null,
      };
      expect(r.submitMessages).toEqual([
        { ...none, code: 'CONFLICT', channel: 'a', messageNumber: 1, skipped: false },
        {
          code: 'CHANNEL_BUFFER_FULL',
          channel: 'a',
          messageNumber: 5000,
          skipped: false,
          retryAfterSeconds: expect.any(Number) as unknown,
          waitingFor: 2,
          cap: 'MAX_BUFFERED_PER_CHANNEL',
          limit: 1000,
        },
        { ...none, code: 'BAD_USER_INPUT', skipped: false },
      ]);
    });

    it('tells a late envelope for a number the gap policy skipped: CONFLICT with skipped true', async () => {
      await server.app.stop();
      let clock = Date.UTC(2026, 0, 1);
      server = await startServer({ gapTimeoutMs: 30_000 }, () => new Date(clock));
      const g = messages('g');
      await status(g.launched(1));
      await status(g.increased(3, 1));
      clock += 31_000;
      expect(await server.app.service.skipStaleGaps()).toEqual([{ channel: 'g', from: 2, to: 2 }]);
      const r = await data(server, SubmitMessagesDetailsDocument, { messages: [g.increased(2, 1)] });
      expect(r.submitMessages).toEqual([
        expect.objectContaining({ code: 'CONFLICT', messageNumber: 2, skipped: true }),
      ]);
    });

    it('refuses a batch of more than 1000 envelopes as a whole', async () => {
      const batch = Array.from({ length: 1001 }, (_, i) => messages(`c${i}`).launched(1));
      const r = await post(server, SubmitMessagesDocument, { messages: batch });
      expect(r.body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', issues: [{ field: 'messages' }] });
      expect((await data(server, EventsDocument, {})).events).toEqual([]);
    });
  });

  describe('rocket and events', () => {
    beforeEach(async () => {
      for (const m of [
        a.launched(1),
        messages('b').launched(1, { launchSpeed: 100 }),
        a.increased(2, 50),
        a.missionChanged(3, 'MARS'),
        messages('b').exploded(2, 'engine'),
        a.decreased(4, 20),
      ])
        await status(m);
    });

    it('answers a null rocket with NOT_FOUND for a channel with no applied message', async () => {
      const r = await post(server, RocketDocument, { channel: 'nope' });
      expect(r.body.data).toEqual({ rocket: null });
      expect(r.body.errors).toEqual([expect.objectContaining({ path: ['rocket'], extensions: { code: 'NOT_FOUND' } })]);
    });

    it('lists every event after a position with its typed payload', async () => {
      const { events } = await data(server, EventsDocument, { after: 2, first: 3 });
      expect(events.map((e) => [e.position, e.channel, e.messageNumber, e.messageType])).toEqual([
        [3, 'a', 2, 'ROCKET_SPEED_INCREASED'],
        [4, 'a', 3, 'ROCKET_MISSION_CHANGED'],
        [5, 'b', 2, 'ROCKET_EXPLODED'],
      ]);
      expect(events.map((e) => e.payload)).toEqual([
        { __typename: 'RocketSpeedIncreased', by: 50 },
        { __typename: 'RocketMissionChanged', newMission: 'MARS' },
        { __typename: 'RocketExploded', reason: 'engine' },
      ]);
    });

    it("lists one rocket's events after a message number", async () => {
      const { rocket } = await data(server, RocketEventsDocument, { channel: 'a', after: 1, first: 2 });
      expect(rocket?.events.map((e) => e.messageNumber)).toEqual([2, 3]);
      const { events } = await data(server, EventsDocument, { channel: 'a', afterMessageNumber: 3 });
      expect(events.map((e) => e.payload)).toEqual([{ __typename: 'RocketSpeedDecreased', by: 20 }]);
    });

    it('gives a past state (asOf) with its events up to that point, and no later one', async () => {
      const at = (asOf: string, args = '') =>
        postRaw<{ rocket: { lastMessageNumber: number; events: Array<{ messageNumber: number }> } | null }>(server, {
          query: `{ rocket(channel: "a"${asOf}) { lastMessageNumber events${args} { messageNumber } } }`,
        });
      const numbers = async (asOf: string, args = '') => {
        const r = await at(asOf, args);
        expect(r.body.errors).toBeUndefined();
        return {
          last: r.body.data?.rocket?.lastMessageNumber,
          events: r.body.data?.rocket?.events.map((e) => e.messageNumber),
        };
      };
      expect(await numbers(', asOf: { messageNumber: 2 }')).toEqual({ last: 2, events: [1, 2] });
      expect(await numbers(', asOf: { messageNumber: 2 }', '(after: 1)')).toEqual({ last: 2, events: [2] });
      expect(await numbers(', asOf: { messageNumber: 2 }', '(after: 2)')).toEqual({ last: 2, events: [] });
      expect(await numbers(', asOf: { messageNumber: 3 }', '(first: 10)')).toEqual({ last: 3, events: [1, 2, 3] });
      expect(await numbers('')).toEqual({ last: 4, events: [1, 2, 3, 4] });
    });

    it("keeps the sender's message time as text and gives server times as UTC DateTime", async () => {
      const { events } = await data(server, EventsDocument, { channel: 'a', first: 1 });
      expect(events[0]?.messageTime).toBe('2022-02-02T18:39:06.000Z');
      expect(events[0]?.recordedAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    });

    it('refuses a page size out of range as BAD_USER_INPUT naming the argument sent', async () => {
      const events = await post(server, EventsDocument, { first: 0 });
      expect(events.body.errors?.[0]?.extensions).toMatchObject({
        code: 'BAD_USER_INPUT',
        issues: [{ field: 'first' }],
      });
      const rockets = await post(server, RocketsDocument, { first: 0 });
      expect(rockets.body.errors?.[0]?.extensions).toMatchObject({ issues: [{ field: 'first' }] });
      const ofOne = await post(server, RocketEventsDocument, { channel: 'a', after: -1, first: 0 });
      expect(ofOne.body.errors?.[0]?.extensions).toMatchObject({ issues: [{ field: 'after' }, { field: 'first' }] });
    });

    it('refuses afterMessageNumber without a channel: message numbers count within one rocket', async () => {
      const r = await post(server, EventsDocument, { afterMessageNumber: 1 });
      expect(r.body.errors?.[0]?.extensions).toMatchObject({
        code: 'BAD_USER_INPUT',
        issues: [{ field: 'afterMessageNumber', problem: 'needs channel: message numbers count within one rocket' }],
      });
    });
    it('refuses after and afterMessageNumber together, naming both, rather than dropping after', async () => {
      const both = await post(server, EventsDocument, { channel: 'a', after: 1, afterMessageNumber: 1, first: 10 });
      expect(both.body.data).toBeNull();
      expect(both.body.errors).toEqual([
        expect.objectContaining({
          message:
            'afterMessageNumber: cannot be combined with after: give a position (after) or a message number, not both',
          path: ['events'],
          extensions: {
            code: 'BAD_USER_INPUT',
            issues: [
              {
                field: 'afterMessageNumber',
                problem: 'cannot be combined with after: give a position (after) or a message number, not both',
              },
            ],
          },
        }),
      ]);
      // Each alone is answered.
      const after = await data(server, EventsDocument, { channel: 'a', after: 1, first: 10 });
      expect(after.events.map((e) => e.position)).toEqual([3, 4, 6]);
      const number = await data(server, EventsDocument, { channel: 'a', afterMessageNumber: 1, first: 10 });
      expect(number.events.map((e) => e.messageNumber)).toEqual([2, 3, 4]);
    });
  });

  describe('rockets', () => {
    beforeEach(async () => {
      await status(messages('r1').launched(1, { type: 'Falcon-9', mission: 'B', launchSpeed: 300 }));
      await status(messages('r2').launched(1, { type: 'Ariane', mission: 'A', launchSpeed: 100 }));
      await status(messages('r3').launched(1, { type: 'Soyuz', mission: 'C', launchSpeed: 200 }));
      await status(messages('r3').exploded(2, 'fuel'));
      await status(messages('r4').launched(1, { type: 'Ariane', mission: 'D', launchSpeed: 300 }));
    });
    const channels = async (v: RocketsQueryVariables) =>
      (await data(server, RocketsDocument, v)).rockets.edges.map((e) => e.node.channel);

    it.each<[RocketSortField, 'ASC' | 'DESC', string[]]>([
      ['CHANNEL', 'ASC', ['r1', 'r2', 'r3', 'r4']],
      ['CHANNEL', 'DESC', ['r4', 'r3', 'r2', 'r1']],
      ['SPEED', 'ASC', ['r2', 'r3', 'r1', 'r4']],
      ['SPEED', 'DESC', ['r4', 'r1', 'r3', 'r2']],
      ['TYPE', 'ASC', ['r2', 'r4', 'r1', 'r3']],
      ['MISSION', 'DESC', ['r4', 'r3', 'r1', 'r2']],
      ['STATUS', 'ASC', ['r3', 'r1', 'r2', 'r4']],
    ])('sorts by %s %s, channel breaking ties', async (sort, order, expected) => {
      expect(await channels({ sort, order })).toEqual(expected);
    });

    it('filters by status', async () => {
      expect(await channels({ status: 'EXPLODED' })).toEqual(['r3']);
      expect(await channels({ status: 'FLYING', sort: 'SPEED', order: 'DESC' })).toEqual(['r4', 'r1', 'r2']);
    });

    it('pages with cursors: every rocket once, then no next page', async () => {
      const seen: string[] = [];
      let after: string | null = null;
      for (;;) {
        const { rockets }: RocketsQuery = await data(server, RocketsDocument, {
          sort: 'SPEED',
          order: 'DESC',
          first: 3,
          after,
        });
        seen.push(...rockets.edges.map((e) => e.node.channel));
        expect(rockets.pageInfo.endCursor).toBe(rockets.edges[rockets.edges.length - 1]?.cursor ?? null);
        if (!rockets.pageInfo.hasNextPage) break;
        after = rockets.pageInfo.endCursor;
      }
      expect(seen).toEqual(['r4', 'r1', 'r3', 'r2']);
    });

    it('says there is no next page on a last page exactly as long as first', async () => {
      const { rockets }: RocketsQuery = await data(server, RocketsDocument, { sort: 'SPEED', order: 'DESC', first: 4 });
      expect(rockets.edges.map((e) => e.node.channel)).toEqual(['r4', 'r1', 'r3', 'r2']);
      expect(rockets.pageInfo.hasNextPage).toBe(false);
    });

    it('refuses a cursor of another sort as BAD_USER_INPUT naming after', async () => {
      const { rockets } = await data(server, RocketsDocument, { sort: 'SPEED', first: 1 });
      const r = await post(server, RocketsDocument, { sort: 'MISSION', after: rockets.pageInfo.endCursor });
      expect(r.body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', issues: [{ field: 'after' }] });
    });
  });

  describe('the events an operation reads', () => {
    it('are at most 10,000 over all its events fields, whatever first says or leaves out', async () => {
      // 20 rockets of 501 events: 10,020 in all.
      for (let r = 0; r < 20; r++) {
        const m = messages(`b${r}`);
        const history = [m.launched(1), ...Array.from({ length: 500 }, (_, i) => m.increased(i + 2, 1))];
        await data(server, SubmitMessagesDocument, { messages: history });
      }
      const whole = await postRaw(server, { query: '{ rockets { nodes { channel events { messageNumber } } } }' });
      expect(whole.body.errors?.[0]?.extensions).toMatchObject({
        code: 'BAD_USER_INPUT',
        issues: [
          {
            field: 'events',
            problem:
              'one operation reads at most 10000 events over all its events fields: page them with first and after',
          },
        ],
      });
      // A `first` given as a variable, which the cost limit counts once.
      const page = await postRaw<{ events: unknown[] }>(server, {
        query: 'query ($n: Int) { events(first: $n) { position } }',
        variables: { n: 10_000 },
      });
      expect(page.body.errors).toBeUndefined();
      expect(page.body.data?.events).toHaveLength(10_000);
      const two = await postRaw(server, {
        query: 'query ($n: Int) { x: events(first: $n) { position } y: events(first: $n) { position } }',
        variables: { n: 6000 },
      });
      expect(two.body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', issues: [{ field: 'events' }] });
      // What is read is bounded too, not only what is answered: fields that start together share the count.
      const reads = jest.spyOn(server.app.service, 'events');
      const aliases = Array.from({ length: 15 }, (_, i) => `a${i}: events { position }`).join(' ');
      const many = await postRaw(server, { query: `{ ${aliases} }` });
      expect(many.body.errors?.[0]?.extensions).toMatchObject({
        code: 'BAD_USER_INPUT',
        issues: [{ field: 'events' }],
      });
      const asked = reads.mock.calls.reduce((n, [args]) => n + (args?.limit ?? 0), 0);
      reads.mockRestore();
      expect(asked).toBeLessThanOrEqual(10_000 + 15);
      // Each operation has its own count.
      const again = await postRaw(server, {
        query: 'query ($n: Int) { events(first: $n) { position } }',
        variables: { n: 6000 },
      });
      expect(again.body.errors).toBeUndefined();
    });
  });

  describe('the events budget, shared by sibling fields', () => {
    /** Submits `count` events of one rocket, 1,000 a request. */
    const history = async (channel: string, count: number) => {
      const m = messages(channel);
      const all = [m.launched(1), ...Array.from({ length: count - 1 }, (_, i) => m.increased(i + 2, 1))];
      for (let i = 0; i < all.length; i += 1000)
        await data(server, SubmitMessagesDocument, { messages: all.slice(i, i + 1000) });
    };
    /** Counts the events the service hands the GraphQL fields: what the store read for them. */
    const countReads = () => {
      const reads = jest.spyOn(server.app.service, 'events');
      return async () => {
        const settled = await Promise.allSettled(reads.mock.results.map((r) => r.value as Promise<unknown[]>));
        reads.mockRestore();
        return settled.reduce((n, r) => n + (r.status === 'fulfilled' ? r.value.length : 0), 0);
      };
    };
    const refusal = {
      code: 'BAD_USER_INPUT',
      issues: [
        {
          field: 'events',
          problem:
            'one operation reads at most 10000 events over all its events fields: page them with first and after',
        },
      ],
    };

    it('answers sibling events fields that each leave first out, when what they read fits', async () => {
      await history('t1', 5);
      await history('rocket-1', 2);
      const r = await postRaw<Record<string, { events: unknown[] }>>(server, {
        query:
          '{ a: rocket(channel: "t1") { events { messageNumber } } b: rocket(channel: "rocket-1") { events { messageNumber } } }',
      });
      expect(r.body.errors).toBeUndefined();
      expect(r.body.data?.a?.events).toHaveLength(5);
      expect(r.body.data?.b?.events).toHaveLength(2);
      const both = await postRaw<Record<string, unknown[]>>(server, {
        query:
          'query ($n: Int) { x: events(channel: "t1") { position } y: events { position } z: events(first: $n) { position } }',
        variables: { n: 10_000 },
      });
      expect(both.body.errors).toBeUndefined();
      expect(both.body.data?.x).toHaveLength(5);
      expect(both.body.data?.y).toHaveLength(7);
      expect(both.body.data?.z).toHaveLength(7);
    });

    it("answers every rocket's events in one listing, when they fit", async () => {
      for (let r = 0; r < 5; r++) await history(`n${r}`, 3 + r);
      const r = await postRaw<{ rockets: { nodes: Array<{ channel: string; events: unknown[] }> } }>(server, {
        query: '{ rockets { nodes { channel events { messageNumber } } } }',
      });
      expect(r.body.errors).toBeUndefined();
      expect(r.body.data?.rockets.nodes.map((n) => n.events.length)).toEqual([3, 4, 5, 6, 7]);
    });

    it('answers exactly 10,000 events over several fields, and refuses the one that goes beyond', async () => {
      await history('x', 6000);
      await history('y', 3000);
      await history('z', 1000);
      const fields = ['x', 'y', 'z'].map((c) => `${c}: rocket(channel: "${c}") { events { messageNumber } }`);
      const fits = await postRaw(server, { query: `{ ${fields.join(' ')} }` });
      expect(fits.body.errors).toBeUndefined();
      // One more event anywhere is over: one field is refused, the others are answered in full.
      await history('w', 1);
      fields.push('w: rocket(channel: "w") { events { messageNumber } }');
      const read = countReads();
      const over = await postRaw<Record<string, { events: unknown[] } | null>>(server, {
        query: `{ ${fields.join(' ')} }`,
      });
      expect(await read()).toBeLessThanOrEqual(10_001);
      expect(over.body.errors).toHaveLength(1);
      expect(over.body.errors?.[0]?.extensions).toEqual(refusal);
      const refused = over.body.errors?.[0]?.path?.[0] as string;
      expect(over.body.errors?.[0]?.path).toEqual([refused, 'events']);
      const sizes = { x: 6000, y: 3000, z: 1000, w: 1 };
      for (const [c, n] of Object.entries(sizes))
        expect(over.body.data?.[c]?.events.length ?? null).toBe(c === refused ? null : n);
    });

    it('reads at most one event beyond 10,000 over all the rockets of a listing, and then refuses', async () => {
      // 30 rockets of 400 events: 12,000 in all, 10,000 of which fit.
      for (let r = 0; r < 30; r++) await history(`r${String(r).padStart(2, '0')}`, 400);
      const read = countReads();
      const r = await postRaw(server, { query: '{ rockets { nodes { channel events { messageNumber } } } }' });
      expect(r.body.errors?.[0]?.extensions).toEqual(refusal);
      // The budget is spent before the refusal, and no more: the event that proves it over is the only extra.
      expect(await read()).toBe(10_001);
    });
  });

  describe('transport', () => {
    it('runs a query sent with GET', async () => {
      const url = `${server.http}/graphql?query=${encodeURIComponent('{ rockets { nodes { channel } } }')}`;
      const r = await send(url, 'GET', undefined, { accept: 'application/graphql-response+json' });
      expect(r.status).toBe(200);
      expect(r.body).toEqual({ data: { rockets: { nodes: [] } } });
    });

    it('tags a query’s answer over GET with an ETag, and answers 304 to a client that holds it', async () => {
      await status(a.launched(1, { launchSpeed: 500 }));
      const url = `${server.http}/graphql?query=${encodeURIComponent('{ rockets { nodes { channel speed } } }')}`;
      const json = { accept: 'application/json' };
      // The first answer is computed, the second comes from the answers kept by request: both carry the tag.
      const first = await send(url, 'GET', undefined, json);
      const again = await send(url, 'GET', undefined, json);
      expect(first.status).toBe(200);
      expect(first.body).toEqual({ data: { rockets: { nodes: [{ channel: 'a', speed: 500 }] } } });
      const etag = first.headers.etag as string;
      expect(etag).toMatch(/^"[\w-]{27}"$/);
      expect(again.headers).toMatchObject({
        etag,
        'cache-control': 'no-cache',
        vary: 'origin, accept, accept-encoding',
      });
      expect(first.headers).toMatchObject({ 'cache-control': 'no-cache', vary: 'origin, accept, accept-encoding' });
      await expectNotModified(url, etag, 'origin, accept, accept-encoding', json);
      // A page of another origin gets its allowance with the answer and with the 304, and one Vary.
      const origin = { ...json, origin: 'https://elsewhere.example' };
      for (const held of [{}, { 'if-none-match': etag }] as Array<Record<string, string>>) {
        const cross = await send(url, 'GET', undefined, { ...origin, ...held });
        expect([cross.status, cross.headers['access-control-allow-origin'], cross.headers.vary]).toEqual([
          'if-none-match' in held ? 304 : 200,
          'https://elsewhere.example',
          'origin, accept, accept-encoding',
        ]);
      }
      // The other media type is another representation, with its own tag.
      const typed = await send(url, 'GET', undefined, { accept: 'application/graphql-response+json' });
      expect(typed.body).toEqual(first.body);
      expect(typed.headers.etag).not.toBe(etag);
      const crossed = await send(url, 'GET', undefined, {
        accept: 'application/graphql-response+json',
        'if-none-match': etag,
      });
      expect(crossed.status).toBe(200);

      // A commit that changes the answer changes its tag; the old one then gets the new answer.
      await status(a.increased(2, 100));
      const after = await send(url, 'GET', undefined, { ...json, 'if-none-match': etag });
      expect(after.status).toBe(200);
      expect(after.body).toEqual({ data: { rockets: { nodes: [{ channel: 'a', speed: 600 }] } } });
      expect(after.headers.etag).not.toBe(etag);
      // A redelivery changes nothing: the same bytes, the same tag.
      expect(await status(a.increased(2, 100))).toBe('DUPLICATE');
      const same = await send(url, 'GET', undefined, { ...json, 'if-none-match': after.headers.etag as string });
      expect(same.status).toBe(304);

      // A POST is not revalidated: it is answered in full, with no tag.
      const posted = await send(
        url.replace(/\?.*/, ''),
        'POST',
        JSON.stringify({ query: '{ rockets { nodes { channel } } }' }),
        {
          'content-type': 'application/json',
          'if-none-match': '*',
        },
      );
      expect(posted.status).toBe(200);
      expect(posted.headers.etag).toBeUndefined();
    });

    it.each(CODINGS)(
      'compresses an answer of 1 KiB or more as %s for a client that takes it, over GET with its own ETag',
      async (coding, header, decompress) => {
        for (const c of ['g1', 'g2', 'g3', 'g4', 'g5', 'g6', 'g7', 'g8'])
          await status(messages(`${coding}-${c}`).launched(1));
        const query = '{ rockets { nodes { channel type mission speed status launchedAt updatedAt } } }';
        const url = `${server.http}/graphql?query=${encodeURIComponent(query)}`;
        const json = { accept: 'application/json' };
        const gz = { ...json, 'accept-encoding': header };
        const plain = await send(url, 'GET', undefined, json);
        expect(plain.raw.length).toBeGreaterThan(1024);
        const gzTag = `${(plain.headers.etag as string).slice(0, -1)}-${coding}"`;
        // Computed, then answered from the answers kept by request: both compressed, with the coding's tag.
        for (const round of [1, 2]) {
          const r = await send(url, 'GET', undefined, gz);
          expect({ round, encoding: r.headers['content-encoding'], etag: r.headers.etag }).toEqual({
            round,
            encoding: coding,
            etag: gzTag,
          });
          expect(Number(r.headers['content-length'])).toBe(r.raw.length);
          expect(decompress(r.raw)).toEqual(plain.raw);
        }
        await expectNotModified(url, gzTag, 'origin, accept, accept-encoding', gz);

        // A POST's answer is compressed too, with no tag but with its Vary, whether executed or sent again
        // from the answer cache; a short one (a mutation's) is not.
        const body = JSON.stringify({ query });
        for (const round of ['executed', 'kept']) {
          const posted = await send(`${server.http}/graphql`, 'POST', body, {
            ...gz,
            'content-type': 'application/json',
          });
          expect({
            round,
            status: posted.status,
            encoding: posted.headers['content-encoding'],
            etag: posted.headers.etag,
            vary: posted.headers.vary,
          }).toEqual({ round, status: 200, encoding: coding, etag: undefined, vary: 'accept-encoding' });
          expect(decompress(posted.raw)).toEqual(plain.raw);
        }
        const mutation = JSON.stringify({
          query: print(SubmitStatusDocument),
          variables: messages(`${coding}-g9`).launched(1),
        });
        const small = await send(`${server.http}/graphql`, 'POST', mutation, {
          ...gz,
          'content-type': 'application/json',
        });
        expect([small.status, small.headers['content-encoding']]).toEqual([200, undefined]);
        expect(small.body).toEqual({ data: { submitMessage: { status: 'APPLIED' } } });
      },
    );

    it('refuses a mutation over GET or HEAD with a 405 asking for POST, storing nothing', async () => {
      const query = print(SubmitMessageDocument);
      const url = `${server.http}/graphql?query=${encodeURIComponent(query)}&variables=${encodeURIComponent(JSON.stringify(a.launched(1)))}`;
      for (const accept of ['application/graphql-response+json', 'application/json']) {
        for (const method of ['GET', 'HEAD']) {
          const r = await send(url, method, undefined, { accept });
          expect(r.status).toBe(405);
          expect(r.headers.allow).toBe('POST');
          // Said in the media type asked for, as the other GraphQL errors are.
          expect(r.headers['content-type']).toBe(`${accept}; charset=utf-8`);
          if (method === 'GET')
            expect(r.body).toEqual({
              errors: [
                {
                  message: 'mutations need POST: a GET (or HEAD) of /graphql only runs queries',
                  extensions: { code: 'METHOD_NOT_ALLOWED' },
                },
              ],
            });
        }
      }
      expect((await data(server, EventsDocument, {})).events).toEqual([]);
    });

    it('refuses a subscription asked for as one answer with BAD_REQUEST saying where it runs, in either media type', async () => {
      const query = 'subscription { rocketUpdated { channel } }';
      const refusal = {
        errors: [
          {
            message:
              'subscriptions run over WebSocket (graphql-ws, protocol graphql-transport-ws) on /graphql, or over HTTP as an event stream (Accept: text/event-stream), not as one answer',
            extensions: { code: 'BAD_REQUEST' },
          },
        ],
      };
      for (const [accept, status] of [
        ['application/json', 200],
        ['application/graphql-response+json', 400],
      ] as const) {
        const posted = await send(`${server.http}/graphql`, 'POST', JSON.stringify({ query }), {
          accept,
          'content-type': 'application/json',
        });
        const got = await send(`${server.http}/graphql?query=${encodeURIComponent(query)}`, 'GET', undefined, {
          accept,
        });
        for (const r of [posted, got]) {
          expect(r.status).toBe(status);
          expect(r.body).toEqual(refusal);
        }
      }
    });

    it('refuses a body larger than the configured limit with 413', async () => {
      const r = await postRaw(server, { query: `{ rockets { nodes { channel } } } # ${'x'.repeat(256 * 1024)}` });
      expect(r.status).toBe(413);
      expect(r.body.errors?.[0]?.extensions?.code).toBe('PAYLOAD_TOO_LARGE');
    });

    /** `POST /messages` of the launch of `channel`, as REST takes it. */
    const launchOverRest = (channel: string) =>
      send(
        `${server.http}/messages`,
        'POST',
        JSON.stringify({
          metadata: { channel, messageNumber: 1, messageTime: '2022-02-02T19:39:05Z', messageType: 'RocketLaunched' },
          message: { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' },
        }),
        { 'content-type': 'application/json' },
      );

    it('says a full disk as REST does, and logs it once a while, not for every write it refuses', async () => {
      const full = Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
      const failing = jest.spyOn(server.app.store, 'commit').mockRejectedValue(full);
      const logged = jest.spyOn(server.app.log, 'error').mockImplementation(() => undefined);
      try {
        for (let i = 0; i < 3; i++) {
          const r = await submit(messages('full').launched(1));
          expect(r.body.errors).toEqual([
            expect.objectContaining({
              path: ['submitMessage'],
              extensions: { code: 'STORAGE_FULL', retryAfterSeconds: 30 },
            }),
          ]);
        }
        const rest = await launchOverRest('full');
        expect({ status: rest.status, retryAfter: rest.headers['retry-after'] }).toEqual({
          status: 503,
          retryAfter: '30',
        });
        // Four refusals, one line: the first (this server logged no full disk before).
        expect(logged.mock.calls).toEqual([
          [
            expect.objectContaining({ err: full, unlogged: 0, requestId: expect.any(String) as unknown }),
            'store fault',
          ],
        ]);
      } finally {
        failing.mockRestore();
        logged.mockRestore();
      }
    });

    it('answers a mutation the store failed as REST does: UNAVAILABLE, retry, nothing recorded', async () => {
      const failing = jest
        .spyOn(server.app.store, 'commit')
        .mockRejectedValue(new Error('terminating connection due to administrator command'));
      const logged = jest.spyOn(server.app.log, 'error').mockImplementation(() => undefined);
      try {
        const r = await submit(messages('down').launched(1));
        expect(r.body.errors).toEqual([
          expect.objectContaining({
            message: 'Unexpected error.',
            path: ['submitMessage'],
            extensions: { code: 'UNAVAILABLE', retryAfterSeconds: 1, unexpected: true },
          }),
        ]);
        const rest = await launchOverRest('down');
        expect(rest.status).toBe(503);
        expect(rest.headers['retry-after']).toBe('1');
      } finally {
        failing.mockRestore();
        logged.mockRestore();
      }
      expect((await post(server, RocketDocument, { channel: 'down' })).body.errors?.[0]?.extensions?.code).toBe(
        'NOT_FOUND',
      );
    });

    it('masks an unexpected failure as a retryable "Unexpected error." and logs the cause, as JSON, on the server', async () => {
      const logged = jest.spyOn(server.app.log, 'error');
      const failing = jest
        .spyOn(server.app.store, 'listRockets')
        .mockRejectedValue(new Error('disk on fire at /var/lib/secret'));
      try {
        const r = await post(server, RocketsDocument, {}, { 'x-request-id': 'report-42' });
        expect(JSON.stringify(r.body)).not.toContain('secret');
        expect(r.body.errors).toEqual([
          expect.objectContaining({
            message: 'Unexpected error.',
            extensions: { code: 'UNAVAILABLE', retryAfterSeconds: 1, unexpected: true },
          }),
        ]);
        // Once, as REST logs it: with the request id the answer carried, so a user's report finds it.
        const lines = logged.mock.calls.filter(
          ([fields]) => (fields as { err?: { message?: string } }).err?.message === 'disk on fire at /var/lib/secret',
        );
        expect(lines).toEqual([
          [expect.objectContaining({ requestId: 'report-42', err: expect.any(Error) as unknown }), 'unexpected error'],
        ]);
      } finally {
        failing.mockRestore();
        logged.mockRestore();
      }
    });
  });
});
