/**
 * A store that cannot work until its operator acts, seen by a client of a real server process: a disk that
 * is full (a tmpfs of a few hundred KiB, so the test mounts one: it runs as root, as CI does) and a SQLite
 * file damaged in its middle. Each is said to REST and GraphQL clients in its own words and code, with
 * `Retry-After` only where trying again can help, and changes nothing.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteDatabase } from '../../src/store/sqlite/database';
import { getJson, postJson, printed, send, startServer, type Reply, type ServerProcess } from '../support/process';
import { mountSmallDisk, type SmallDisk } from '../support/small-disk';

interface ErrorJson {
  error: { code: string; message: string; requestId: string };
}
interface GraphQLJson {
  data?: unknown;
  errors?: { message: string; path?: string[]; extensions: Record<string, unknown> }[];
}

const FULL = {
  code: 'STORAGE_FULL',
  message:
    "the server's disk is full: nothing was done, and no message can be stored until its operator frees space; try again later",
};
const DAMAGED = {
  code: 'STORE_DAMAGED',
  message: "the server's store is damaged: trying again will not help until its operator repairs it",
};

/** Message `n` of `channel`: a launch, then mission changes of a long name, so that few fill a small disk. */
function envelope(channel: string, n: number) {
  return {
    metadata: {
      channel,
      messageNumber: n,
      messageTime: new Date(Date.UTC(2022, 1, 2) + n * 1000).toISOString(),
      messageType: n === 1 ? 'RocketLaunched' : 'RocketMissionChanged',
    },
    message: n === 1 ? { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' } : { newMission: `M${n}`.repeat(60) },
  };
}

/**
 * Resolves once the server has logged its answer `reply` as a store fault, with the SQLite error, under its
 * id: the first of a kind (the next within FAULT_LOG_EVERY_MS are counted, not logged).
 */
const loggedFault = (server: ServerProcess, reply: Reply): Promise<string> =>
  printed(server, (line) => {
    const entry = JSON.parse(line.startsWith('{') ? line : '{}') as {
      msg?: string;
      requestId?: string;
      err?: { code?: string };
    };
    return (
      entry.msg === 'store fault' &&
      entry.requestId === reply.headers['x-request-id'] &&
      entry.err?.code === 'SQLITE_FULL'
    );
  });

const graphql = (server: ServerProcess, query: string, variables: Record<string, unknown> = {}): Promise<Reply> =>
  postJson(`${server.url}/graphql`, { query, variables });

const SUBMIT = `mutation ($metadata: MessageMetadataInput!, $message: MessagePayloadInput!) {
  submitMessage(metadata: $metadata, message: $message) { status }
}`;

/** An envelope as the mutation's variables: the type as its enum value, the message under its type's field. */
function asVariables(e: ReturnType<typeof envelope>) {
  const type = e.metadata.messageType;
  return {
    metadata: { ...e.metadata, messageType: type.replace(/(?<=.)([A-Z])/g, '_$1').toUpperCase() },
    message: { [type.charAt(0).toLowerCase() + type.slice(1)]: e.message },
  };
}

describe('a full disk', () => {
  let disk: SmallDisk | undefined;
  let server: ServerProcess | undefined;

  beforeAll(() => {
    disk = mountSmallDisk('512k');
  });

  afterAll(async () => {
    await server?.stop();
    disk?.remove();
  });

  it('refuses what it cannot store with 503 STORAGE_FULL and Retry-After, and takes it once space is freed', async () => {
    const dir = (disk as SmallDisk).dir;
    server = await startServer({ DATABASE_URL: `sqlite:${join(dir, 'rockets.db')}` });
    const channels = Array.from({ length: 8 }, (_, i) => `full-${i}`);
    const acknowledged = new Map<string, number>();
    let refused: { envelope: ReturnType<typeof envelope>; reply: Reply } | undefined;
    // A few hundred messages fill 512 KiB; the bound only keeps a broken test from running forever.
    for (let n = 1; n <= 2000 && refused === undefined; n++) {
      for (const channel of channels) {
        const e = envelope(channel, n);
        const reply = await postJson(`${server.url}/messages`, e);
        if (reply.status !== 202) {
          refused = { envelope: e, reply };
          break;
        }
        acknowledged.set(channel, n);
      }
    }
    if (refused === undefined) throw new Error('the disk never filled');
    expect(acknowledged.size).toBeGreaterThan(0);
    const { reply } = refused;
    expect({ status: reply.status, retryAfter: reply.headers['retry-after'] }).toEqual({
      status: 503,
      retryAfter: '30',
    });
    expect((reply.body as ErrorJson).error).toEqual({ ...FULL, requestId: reply.headers['x-request-id'] });
    await loggedFault(server, reply);

    // While it lasts, the rockets are still read, each as far as it was acknowledged (the table is brought up
    // to the log in a transaction that is rolled back), and the server is healthy: only writes are refused.
    const expectAcknowledged = async (): Promise<void> => {
      const read = await getJson(`${server?.url ?? ''}/rockets`);
      expect(read.status).toBe(200);
      const rockets = read.body as { channel: string; lastMessageNumber: number }[];
      expect(new Map(rockets.map((r) => [r.channel, r.lastMessageNumber]))).toEqual(acknowledged);
      for (const [channel, last] of acknowledged) {
        const one = await getJson(`${server?.url ?? ''}/rockets/${channel}`);
        expect({ status: one.status, last: (one.body as { lastMessageNumber: number }).lastMessageNumber }).toEqual({
          status: 200,
          last,
        });
      }
    };
    await expectAcknowledged();
    expect((await getJson(`${server.url}/health`)).status).toBe(200);
    const query = await graphql(server, '{ rockets { nodes { channel lastMessageNumber } } }');
    expect(query.body).toEqual({
      data: {
        rockets: {
          nodes: [...acknowledged].map(([channel, lastMessageNumber]) => ({ channel, lastMessageNumber })),
        },
      },
    });
    const mutation = await graphql(server, SUBMIT, asVariables(refused.envelope));
    expect((mutation.body as GraphQLJson).errors).toEqual([
      expect.objectContaining({
        message: FULL.message,
        path: ['submitMessage'],
        extensions: { code: 'STORAGE_FULL', retryAfterSeconds: 30 },
      }),
    ]);

    // Space freed: the message refused is taken as new (it was never stored), and nothing acknowledged is lost.
    disk?.resize('8m');
    const again = await postJson(`${server.url}/messages`, refused.envelope);
    expect({ status: again.status, body: again.body }).toEqual({
      status: 202,
      body: {
        status: 'applied',
        channel: refused.envelope.metadata.channel,
        messageNumber: refused.envelope.metadata.messageNumber,
      },
    });
    acknowledged.set(refused.envelope.metadata.channel, refused.envelope.metadata.messageNumber);
    await expectAcknowledged();
    for (const [channel, last] of acknowledged) {
      const events = await getJson(`${server.url}/rockets/${channel}/events?limit=2000`);
      expect(events.status).toBe(200);
      const numbers = (events.body as { messageNumber: number }[]).map((e) => e.messageNumber);
      expect(numbers).toEqual(Array.from({ length: last }, (_, i) => i + 1));
    }
    expect((await getJson(`${server.url}/health`)).status).toBe(200);
  });
});

describe('a SQLite file damaged in its middle', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rockets-damaged-'));
  const file = join(dir, 'rockets.db');
  let server: ServerProcess | undefined;

  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers a read of the damage 500 STORE_DAMAGED, with no Retry-After, to REST and GraphQL', async () => {
    server = await startServer({ DATABASE_URL: `sqlite:${file}` });
    for (let n = 1; n <= 60; n++)
      for (let c = 0; c < 20; c++)
        expect((await postJson(`${server.url}/messages`, envelope(`d-${c}`, n))).status).toBe(202);
    // A clean stop checkpoints the WAL into the file, so the pages damaged below are the ones read.
    expect(await server.stop()).toBe(0);
    server = undefined;

    // Overwrite the middle third of the log's leaf pages: its head (the last page) and the rockets stay whole.
    const db = new SqliteDatabase(file, { readonly: true });
    const leaves = db
      .prepare<[], { pageno: number }>(
        "SELECT pageno FROM dbstat WHERE name = 'events' AND pagetype = 'leaf' ORDER BY pageno",
      )
      .all()
      .map((r) => r.pageno);
    const pageSize = db.pragma('page_size', { simple: true }) as number;
    db.close();
    expect(leaves.length).toBeGreaterThan(9);
    const fd = openSync(file, 'r+');
    try {
      for (const page of leaves.slice(leaves.length / 3, (2 * leaves.length) / 3))
        writeSync(fd, Buffer.alloc(pageSize, 0xde), 0, pageSize, (page - 1) * pageSize);
    } finally {
      closeSync(fd);
    }

    server = await startServer({ DATABASE_URL: `sqlite:${file}` });
    const log = await getJson(`${server.url}/events?limit=1000`);
    expect({ status: log.status, retryAfter: log.headers['retry-after'] }).toEqual({
      status: 500,
      retryAfter: undefined,
    });
    expect((log.body as ErrorJson).error).toEqual({ ...DAMAGED, requestId: log.headers['x-request-id'] });

    const query = await graphql(server, '{ events(first: 1000) { position } }');
    expect((query.body as GraphQLJson).errors).toEqual([
      expect.objectContaining({ message: DAMAGED.message, path: ['events'], extensions: { code: 'STORE_DAMAGED' } }),
    ]);
    // What the damage spares is still served: the head of the log, and the server's health.
    expect((await send(`${server.url}/health`, 'GET')).status).toBe(200);
  });
});
