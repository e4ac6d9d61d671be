import {
  execute,
  GraphQLError,
  parse,
  subscribe as graphqlSubscribe,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
} from 'graphql';
import { schema } from '../../schema/index';
import { Hub } from '../../src/engine/hub';
import { LanePool } from '../../src/engine/lanes';
import { RocketService } from '../../src/engine/service';
import { SHARED_RECENT, SharedSubscriptions } from '../../src/http/graphql/shared-subscriptions';
import { MemoryStore } from '../../src/store/memory';
import { take } from '../support/iterate';
import { envelope } from '../support/telemetry';

type Stream = AsyncIterableIterator<ExecutionResult>;

const EVENTS = parse(`subscription Events($channel: String) {
  eventAppended(channel: $channel) { channel messageNumber messageType }
}`);
const ROCKETS = parse('subscription { rocketUpdated { channel speed } }');

describe('SharedSubscriptions: one execution of each live event per question', () => {
  let hub: Hub;
  let service: RocketService;
  let shared: SharedSubscriptions;
  /** Executions of an event, by the channel and number of the event executed. */
  let executions: string[];
  let fallbacks: number;
  const open: Stream[] = [];

  beforeEach(() => {
    const store = new MemoryStore();
    hub = new Hub(store, 100);
    service = new RocketService(store, new LanePool(store, 2), hub);
    executions = [];
    fallbacks = 0;
    shared = new SharedSubscriptions((args) => {
      // An event, or a rocket's update.
      const root = args.rootValue as {
        channel: string;
        messageNumber?: number;
        rocket?: { lastMessageNumber: number };
      };
      executions.push(`${root.channel}#${root.messageNumber ?? root.rocket?.lastMessageNumber ?? '?'}`);
      return execute(args);
    });
  });

  afterEach(async () => {
    for (const s of open.splice(0)) await s.return?.();
    hub.close();
  });

  const subscribe = async (
    document: DocumentNode,
    variableValues: Record<string, unknown> = {},
    canWrite = false,
  ): Promise<Stream> => {
    const args: ExecutionArgs = { schema, document, variableValues, contextValue: { service, canWrite } };
    const stream = await shared.subscribe(args, (a) => {
      fallbacks++;
      return execute(a);
    });
    if (!(Symbol.asyncIterator in stream)) throw new Error(`no stream: ${JSON.stringify(stream)}`);
    open.push(stream);
    return stream;
  };
  const launch = (channel: string) =>
    service.submit(envelope(channel, 1, 'RocketLaunched', { type: 'Falcon-9', launchSpeed: 500, mission: 'M' }));
  const increase = (channel: string, n: number) =>
    service.submit(envelope(channel, n, 'RocketSpeedIncreased', { by: 10 }));

  it('subscribes unshared, leaving nothing behind, a question whose variables cannot be keyed', async () => {
    // Up to Node 24, variables nested 20,000 deep make JSON.stringify throw a RangeError; Node 26's does
    // not recurse. A cycle cannot be stringified on any Node, so it stands in for them here.
    const unkeyable: Record<string, unknown> = {};
    unkeyable.self = unkeyable;
    expect(() => JSON.stringify(unkeyable)).toThrow(TypeError);
    const args: ExecutionArgs = {
      schema,
      document: ROCKETS,
      variableValues: { unused: unkeyable },
      contextValue: { service, canWrite: false },
    };
    const stream = (await shared.subscribe(args, graphqlSubscribe)) as Stream;
    open.push(stream);
    expect(shared.size).toBe(0);
    expect(hub.subscribers).toBe(1);
    await launch('a');
    expect(await take(stream, 1)).toEqual([{ data: { rocketUpdated: { channel: 'a', speed: 500 } } }]);
    await stream.return?.();
    expect(hub.subscribers).toBe(0);
  });

  it('hands every subscriber of the same question the one result of each event, executed once', async () => {
    const streams = [await subscribe(EVENTS), await subscribe(EVENTS), await subscribe(EVENTS)];
    expect(shared.size).toBe(1);
    await launch('a');
    await increase('a', 2);
    const results = await Promise.all(streams.map((s) => take(s, 2)));

    expect(executions).toEqual(['a#1', 'a#2']);
    for (const r of results) {
      expect(r).toEqual([
        { data: { eventAppended: { channel: 'a', messageNumber: 1, messageType: 'ROCKET_LAUNCHED' } } },
        { data: { eventAppended: { channel: 'a', messageNumber: 2, messageType: 'ROCKET_SPEED_INCREASED' } } },
      ]);
      expect(r[0]).toBe(results[0]?.[0]);
    }
  });

  it('executes separately for other variables, another document or other write access', async () => {
    const all = [await subscribe(EVENTS), await subscribe(EVENTS)];
    const others = [
      await subscribe(EVENTS, { channel: 'a' }),
      await subscribe(EVENTS, {}, true),
      await subscribe(parse('subscription { eventAppended { channel messageNumber } }')),
    ];
    expect(shared.size).toBe(4);
    await launch('a');
    const results = await Promise.all([...all, ...others].map((s) => take(s, 1)));

    // The two identical subscriptions share one execution; each other question has its own.
    expect(executions).toEqual(['a#1', 'a#1', 'a#1', 'a#1']);
    expect(results[1]?.[0]).toBe(results[0]?.[0]);
    expect(results[2]?.[0]).not.toBe(results[0]?.[0]);
    expect(results[2]?.[0]).toEqual(results[0]?.[0]);
    expect(results[4]?.[0]).toEqual({ data: { eventAppended: { channel: 'a', messageNumber: 1 } } });
  });

  it('shares rocket states too, and a lone subscriber executes every event itself', async () => {
    const lone = await subscribe(EVENTS, { channel: 'b' });
    const rockets = [await subscribe(ROCKETS), await subscribe(ROCKETS)];
    // Rocket feeds keep only a rocket's latest state: read each state before the next commit.
    await launch('b');
    const first = await Promise.all(rockets.map((s) => take(s, 1)));
    await increase('b', 2);
    const second = await Promise.all(rockets.map((s) => take(s, 1)));
    const events = await take(lone, 2);

    expect(events.map((r) => (r.data?.eventAppended as { messageNumber: number }).messageNumber)).toEqual([1, 2]);
    expect([first[0]?.[0]?.data, second[0]?.[0]?.data]).toEqual([
      { rocketUpdated: { channel: 'b', speed: 500 } },
      { rocketUpdated: { channel: 'b', speed: 510 } },
    ]);
    expect(first[1]?.[0]).toBe(first[0]?.[0]);
    expect(second[1]?.[0]).toBe(second[0]?.[0]);
    expect(executions.sort()).toEqual(['b#1', 'b#1', 'b#2', 'b#2']);
  });

  it(`lets a subscriber more than ${SHARED_RECENT} events behind execute its own, and shares again once it caught up`, async () => {
    const ahead = await subscribe(EVENTS);
    const behind = await subscribe(EVENTS);
    const total = SHARED_RECENT * 2;
    await launch('c');
    for (let n = 2; n <= total; n++) await increase('c', n);
    const early = await take(ahead, total);
    const late = await take(behind, total);
    expect(late).toEqual(early);
    // Too far behind to find its first events remembered, the subscriber behind executed every one itself.
    expect(executions).toHaveLength(2 * total);

    for (let n = total + 1; n <= total + 3; n++) {
      await increase('c', n);
      const [a, b] = await Promise.all([take(ahead, 1), take(behind, 1)]);
      expect(b[0]).toBe(a[0]);
    }
    expect(executions).toHaveLength(2 * total + 3);
  });

  it('executes again for a subscriber that takes an update after a commit, which reads the buffer as it is then', async () => {
    const WITH_BUFFER = parse('subscription { rocketUpdated(channel: "d") { lastMessageNumber buffer { count } } }');
    const versioned = new SharedSubscriptions(
      (args) => {
        executions.push('d');
        return execute(args);
      },
      () => service.readVersion(),
    );
    const args: ExecutionArgs = { schema, document: WITH_BUFFER, contextValue: { service, canWrite: false } };
    const [prompt, late] = [
      (await versioned.subscribe(args, execute)) as Stream,
      (await versioned.subscribe(args, execute)) as Stream,
    ];
    open.push(prompt, late);
    await launch('d');
    const [shared1, shared2] = await Promise.all([take(prompt, 1), take(late, 1)]);
    expect(shared2[0]).toBe(shared1[0]);
    expect(executions).toEqual(['d']);

    await increase('d', 2);
    const [first] = await take(prompt, 1);
    // A commit that only buffers, between the two subscribers' reads of the same update.
    await increase('d', 4);
    const [second] = await take(late, 1);
    expect(first).toEqual({ data: { rocketUpdated: { lastMessageNumber: 2, buffer: { count: 0 } } } });
    expect(second).toEqual({ data: { rocketUpdated: { lastMessageNumber: 2, buffer: { count: 1 } } } });
    expect(executions).toEqual(['d', 'd', 'd']);
  });

  it('without a version of the store, shares a result only within the turn of the event loop it was made in', async () => {
    const streams = [await subscribe(ROCKETS), await subscribe(ROCKETS)];
    await launch('e');
    const [now] = await take(streams[0] as Stream, 1);
    await new Promise((resolve) => setImmediate(resolve));
    const [later] = await take(streams[1] as Stream, 1);
    expect(later).toEqual(now);
    expect(later).not.toBe(now);
    expect(executions).toEqual(['e#1', 'e#1']);
  });

  it('forgets a question when its last subscriber leaves, by unsubscribing or by falling behind', async () => {
    const one = await subscribe(EVENTS);
    const two = await subscribe(EVENTS);
    await one.return?.();
    expect(shared.size).toBe(1);
    await two.return?.();
    expect(shared.size).toBe(0);

    const small = new Hub(service.store, 2);
    const tight = new RocketService(service.store, new LanePool(service.store, 1), small);
    try {
      const args: ExecutionArgs = { schema, document: ROCKETS, contextValue: { service: tight, canWrite: false } };
      const stalled = (await shared.subscribe(args, execute)) as Stream;
      expect(shared.size).toBe(1);
      for (const c of ['x', 'y', 'z']) await launch(c);
      await expect(take(stalled, 10)).rejects.toMatchObject({
        message: expect.stringMatching(/fell more than 2 items behind/) as unknown,
        originalError: { code: 'FELL_BEHIND' },
      });
      expect(shared.size).toBe(0);
    } finally {
      small.close();
    }
  });

  it('answers a question that yields no stream through the stock subscribe, and keeps no group for it', async () => {
    const args: ExecutionArgs = {
      schema,
      document: parse('subscription($after: SafeInt) { eventAppended(after: $after) { position } }'),
      variableValues: { after: -1 },
      contextValue: { service, canWrite: false },
    };
    const answer = await shared.subscribe(args, (a) => {
      fallbacks++;
      return execute(a);
    });
    expect(fallbacks).toBe(1);
    expect(answer).toMatchObject({ errors: [expect.any(GraphQLError)] });
    expect(shared.size).toBe(0);
  });
});
