import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EventType as DomainEventType } from '../../src/domain/message';
import {
  EventsDocument,
  RocketDocument,
  RocketEventsDocument,
  RocketsDocument,
  SubmitMessageDocument,
  type EventFieldsFragment,
  type EventType,
  type RocketFieldsFragment,
  type RocketSortField,
  type RocketStatus,
  type SortOrder,
} from '../generated/graphql';
import { getJson, postJson } from '../support/process';
import { envelope } from '../support/telemetry';
import { data, messages, post, startServer, type TestServer } from './support';

const DOMAIN_TYPE: Record<EventType, DomainEventType> = {
  ROCKET_LAUNCHED: 'RocketLaunched',
  ROCKET_SPEED_INCREASED: 'RocketSpeedIncreased',
  ROCKET_SPEED_DECREASED: 'RocketSpeedDecreased',
  ROCKET_MISSION_CHANGED: 'RocketMissionChanged',
  ROCKET_EXPLODED: 'RocketExploded',
  MESSAGE_SKIPPED: 'MessageSkipped',
};

/** A GraphQL rocket in REST's JSON shape: enums are the only difference in representation. */
const asRest = (r: RocketFieldsFragment) => ({ ...r, status: r.status.toLowerCase() });

/** A GraphQL event in REST's JSON shape: the payload's type name is the message type. */
function eventAsRest(e: EventFieldsFragment) {
  const { __typename, ...payload } = e.payload;
  expect(__typename).toBe(DOMAIN_TYPE[e.messageType]);
  return { ...e, messageType: DOMAIN_TYPE[e.messageType], payload };
}

const SORTS: Array<[RocketSortField, string]> = [
  ['CHANNEL', 'channel'],
  ['TYPE', 'type'],
  ['MISSION', 'mission'],
  ['SPEED', 'speed'],
  ['STATUS', 'status'],
  ['LAUNCHED_AT', 'launchedAt'],
  ['UPDATED_AT', 'updatedAt'],
];

/** A fresh SQLite file per run, removed afterwards; the memory store runs the same checks. */
const sqliteDir = mkdtempSync(join(tmpdir(), 'rockets-graphql-'));
afterAll(() => rmSync(sqliteDir, { recursive: true, force: true }));

describe.each([
  ['memory', 'memory:'],
  ['SQLite', `sqlite:${join(sqliteDir, 'parity.db')}`],
])('the REST shim and GraphQL on the same data (%s store)', (_store, databaseUrl) => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startServer({ databaseUrl, sqliteSynchronous: 'NORMAL' });
    const rest = (e: unknown) => postJson(`${server.http}/messages`, e);
    // Written through both transports, out of order, with duplicates, a buffered gap and ties on every key.
    await rest(envelope('zulu', 2, 'RocketSpeedIncreased', { by: 300 }));
    await rest(envelope('zulu', 1, 'RocketLaunched', { type: 'Falcon-9', launchSpeed: 200, mission: 'ARTEMIS' }));
    await data(
      server,
      SubmitMessageDocument,
      messages('alpha').launched(1, { type: 'Ariane', launchSpeed: 500, mission: 'MARS' }),
    );
    await rest(envelope('mike', 1, 'RocketLaunched', { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' }));
    await data(server, SubmitMessageDocument, messages('mike').exploded(2, 'engine'));
    await rest(envelope('alpha', 2, 'RocketMissionChanged', { newMission: 'VENUS' }));
    await data(server, SubmitMessageDocument, messages('alpha').decreased(3, 100));
    await rest(envelope('alpha', 5, 'RocketSpeedIncreased', { by: 1 }));
    await rest(envelope('Écho', 1, 'RocketLaunched', { type: 'Soyuz', launchSpeed: 500, mission: 'mars' }));
    await data(
      server,
      SubmitMessageDocument,
      messages('zulu').launched(1, { type: 'Falcon-9', launchSpeed: 200, mission: 'ARTEMIS' }),
    );
  });
  afterAll(() => server.app.stop());

  const restRockets = async (query: string) => (await getJson(`${server.http}/rockets?${query}`)).body;

  it.each(SORTS.flatMap(([field, param]) => (['ASC', 'DESC'] as const).map((order) => [field, param, order] as const)))(
    'lists the same rockets sorted by %s (%s) %s',
    async (sort, param, order) => {
      const { rockets } = await data(server, RocketsDocument, { sort, order });
      expect(rockets.edges.map((e) => asRest(e.node))).toEqual(
        await restRockets(`sort=${param}&order=${order.toLowerCase()}`),
      );
      expect(rockets.edges).toHaveLength(4);
    },
  );

  it.each<[RocketStatus, string]>([
    ['FLYING', 'flying'],
    ['EXPLODED', 'exploded'],
  ])('lists the same %s rockets', async (status, param) => {
    const { rockets } = await data(server, RocketsDocument, { status, sort: 'SPEED', order: 'DESC' });
    expect(rockets.edges.map((e) => asRest(e.node))).toEqual(
      await restRockets(`status=${param}&sort=speed&order=desc`),
    );
  });

  it('pages with the same cursors', async () => {
    const order: SortOrder = 'DESC';
    const first = await data(server, RocketsDocument, { sort: 'MISSION', order, first: 2 });
    const restPage = await getJson(`${server.http}/rockets?sort=mission&order=desc&limit=2`);
    expect(first.rockets.edges.map((e) => asRest(e.node))).toEqual(restPage.body);
    expect(first.rockets.pageInfo.endCursor).toBe(restPage.headers['x-next-cursor']);
    const after = first.rockets.pageInfo.endCursor;
    const second = await data(server, RocketsDocument, { sort: 'MISSION', order, first: 2, after });
    expect(second.rockets.edges.map((e) => asRest(e.node))).toEqual(
      await restRockets(`sort=mission&order=desc&limit=2&after=${after ?? ''}`),
    );
  });

  it('shows the same rocket, buffer included', async () => {
    for (const channel of ['alpha', 'mike', 'zulu', 'Écho']) {
      const { rocket } = await data(server, RocketDocument, { channel });
      expect(rocket && asRest(rocket)).toEqual(
        (await getJson(`${server.http}/rockets/${encodeURIComponent(channel)}`)).body,
      );
    }
    expect((await data(server, RocketDocument, { channel: 'alpha' })).rocket?.buffer.count).toBe(1);
  });

  it('lists the same events of one rocket after a message number', async () => {
    const { rocket } = await data(server, RocketEventsDocument, { channel: 'alpha', after: 1, first: 5 });
    expect(rocket?.events.map(eventAsRest)).toEqual(
      (await getJson(`${server.http}/rockets/alpha/events?after=1&limit=5`)).body,
    );
    expect(rocket?.events).toHaveLength(2);
  });

  it('lists the same events of every rocket after a position', async () => {
    const { events } = await data(server, EventsDocument, { after: 2, first: 4 });
    expect(events.map(eventAsRest)).toEqual((await getJson(`${server.http}/events?after=2&limit=4`)).body);
    expect(events.map((e) => e.position)).toEqual([3, 4, 5, 6]);
  });

  it('judges a message the same way, whichever transport carried it first', async () => {
    const viaRest = envelope('mike', 3, 'RocketSpeedIncreased', { by: 1 });
    expect((await postJson(`${server.http}/messages`, viaRest)).body).toMatchObject({ status: 'applied' });
    const again = await data(server, SubmitMessageDocument, messages('mike').increased(3, 1));
    expect(again.submitMessage.status).toBe('DUPLICATE');
    const conflict = await post(server, SubmitMessageDocument, messages('mike').increased(3, 2));
    expect(conflict.body.errors?.[0]?.extensions?.code).toBe('CONFLICT');
    const restConflict = await postJson(
      `${server.http}/messages`,
      envelope('mike', 3, 'RocketSpeedIncreased', { by: 2 }),
    );
    expect(restConflict.status).toBe(409);
  });

  it('answers a speed held at 2^53 - 1 the same over both transports', async () => {
    const max = Number.MAX_SAFE_INTEGER;
    const rest = async (e: unknown) => (await postJson(`${server.http}/messages`, e)).body;
    const launch = envelope('max', 1, 'RocketLaunched', { type: 'T', launchSpeed: max, mission: 'M' });
    expect(await rest(launch)).toMatchObject({ status: 'applied' });
    const viaGraphql = await data(server, SubmitMessageDocument, messages('max').increased(2, max));
    expect(viaGraphql.submitMessage).toMatchObject({ status: 'APPLIED', rocket: { speed: max } });
    const plusOne = envelope('max', 3, 'RocketSpeedIncreased', { by: 1 });
    expect(await rest(plusOne)).toMatchObject({ status: 'applied' });
    const { rocket } = await data(server, RocketDocument, { channel: 'max' });
    expect(rocket?.speed).toBe(max);
    expect(rocket && asRest(rocket)).toEqual((await getJson(`${server.http}/rockets/max`)).body);
  });
});
