// B5, the durable limit: B0 that also appends each message, durably, to the same SQLite `events` table as
// ours before it answers 202, with the same group commit (one transaction per group, up to 64 rows an
// INSERT, one fdatasync of the WAL off the event loop per group, groups gathered while the previous sync
// runs). No validation, no sequencing, no projection, no reorder buffer: what any server that
// acknowledges only stored messages pays on this machine and disk. Our REST figure over this one is the
// share of that limit we reach.
import { fdatasync, openSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import Database from 'better-sqlite3';
import { CREATE_EVENTS, prepareInsert, type EventRow } from './events';

interface Body {
  metadata: { channel: string; messageNumber: number; messageTime: string; messageType: string };
  message: unknown;
}

const file = process.env.BENCH_FILE ?? '';
const db = new Database(file);
// `exec`, not `pragma`: pragma's statement would be garbage, and under Node 24 collecting a better-sqlite3
// 12 object can abort the process (see src/store/sqlite/database.ts). The statements below live as long.
db.exec('PRAGMA journal_mode = WAL');
db.exec('PRAGMA synchronous = NORMAL');
db.exec(CREATE_EVENTS);
const wal = openSync(`${file}-wal`, 'r+');
const insert = prepareInsert(db);

interface Pending {
  readonly body: Body;
  readonly res: ServerResponse;
}
let queue: Pending[] = [];
let syncing = false;
let scheduled = false;

const commit = db.transaction((group: readonly Pending[], at: string) => {
  insert(
    group.map(({ body: b }): EventRow => [
      b.metadata.channel,
      b.metadata.messageNumber,
      b.metadata.messageType,
      b.metadata.messageTime,
      JSON.stringify(b.message),
    ]),
    at,
  );
});

function answer({ body, res }: Pending, status: number): void {
  const text = JSON.stringify({
    status: 'applied',
    channel: body.metadata.channel,
    messageNumber: body.metadata.messageNumber,
  });
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function flush(): void {
  scheduled = false;
  const group = queue;
  queue = [];
  if (group.length === 0) return;
  try {
    commit.immediate(group, new Date().toISOString());
  } catch {
    for (const p of group) answer(p, 409);
    return;
  }
  syncing = true;
  fdatasync(wal, () => {
    syncing = false;
    for (const p of group) answer(p, 202);
    if (queue.length > 0) schedule();
  });
}

function schedule(): void {
  if (scheduled || syncing) return;
  scheduled = true;
  setImmediate(flush);
}

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    let body: Body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Body;
    } catch {
      res.writeHead(400).end();
      return;
    }
    queue.push({ body, res });
    schedule();
  });
});
server.listen(Number(process.env.PORT ?? 0), process.env.HOST ?? '127.0.0.1', () => {
  console.log(JSON.stringify({ msg: 'listening', port: (server.address() as AddressInfo).port }));
});
