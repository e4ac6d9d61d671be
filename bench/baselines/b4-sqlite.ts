// B4: raw better-sqlite3 in one process, the SQLite limit for our rows.
//   insert: BENCH_ROWS bench messages as rows of the same `events` table as src/store/sqlite/schema.ts
//           (WAL, synchronous FULL like our default), one transaction per BENCH_BATCH rows and up to 64
//           rows an INSERT (as our store appends events), into BENCH_FILE.
//           With BENCH_PREFILL, that many rows of other channels are written first, untimed: each row
//           costs more as the table and its (channel, message_number) index grow, so the bench gives B4
//           as many rows before and during its timed run as our server held before and took during its
//           measured round.
//   read:   every row of BENCH_FILE's `events` (our server's database) in position order, the columns a
//           rebuild needs, payload parsed; rows as arrays (`.raw()`), better-sqlite3's fastest read.
// Prints {"msg":"result","rows","ms","rowsPerSec"}, and for an insert "cpuUsPerRow", the process's CPU
// (user and system) a timed row.
import Database from 'better-sqlite3';
import { CREATE_EVENTS, prepareInsert, type EventRow } from './events';
import { channelName, envelope, kth } from '../telemetry';

const file = process.env.BENCH_FILE ?? '';
const result = (rows: number, ms: number, extra: Record<string, number> = {}): void => {
  console.log(JSON.stringify({ msg: 'result', rows, ms, rowsPerSec: Math.round((rows * 1000) / ms), ...extra }));
};

if (process.argv[2] === 'read') {
  const db = new Database(file, { readonly: true });
  const started = performance.now();
  let rows = 0;
  const read = db
    .prepare<[], [string, number, string, string, string]>(
      'SELECT channel, message_number, message_type, message_time, payload FROM events ORDER BY position',
    )
    .raw();
  for (const row of read.iterate()) {
    if (JSON.parse(row[4]) !== null) rows++;
  }
  result(rows, performance.now() - started);
} else {
  const total = Number(process.env.BENCH_ROWS ?? 100_000);
  const batch = Number(process.env.BENCH_BATCH ?? 1000);
  const channels = Number(process.env.BENCH_CHANNELS ?? 10_000);
  const prefill = Number(process.env.BENCH_PREFILL ?? 0);
  const db = new Database(file);
  // `exec`, not `pragma`: no statement left as garbage (see b5-durable.ts).
  db.exec('PRAGMA journal_mode = WAL');
  db.exec(CREATE_EVENTS);
  const insert = prepareInsert(db);
  const row = (prefix: string, k: number): EventRow => {
    const { index, n } = kth(k, channels);
    const e = envelope(channelName(prefix, index), n);
    return [e.metadata.channel, n, e.metadata.messageType, e.metadata.messageTime, JSON.stringify(e.message)];
  };
  // Untimed, so written the quickest way: no syncs, large transactions, then the WAL emptied into the file.
  db.exec('PRAGMA synchronous = OFF');
  const fill = db.transaction((from: number, to: number, at: string) => {
    insert(
      Array.from({ length: to - from }, (_, i) => row('p', from + i + 1)),
      at,
    );
  });
  for (let from = 0; from < prefill; from += 10_000)
    fill.immediate(from, Math.min(prefill, from + 10_000), new Date().toISOString());
  db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
  db.exec('PRAGMA synchronous = FULL');
  const rows = Array.from({ length: total }, (_, i) => row('b', i + 1));
  const commit = db.transaction((from: number, at: string) => {
    insert(rows.slice(from, from + batch), at);
  });
  const started = performance.now();
  const cpu = process.cpuUsage();
  for (let from = 0; from < total; from += batch) commit.immediate(from, new Date().toISOString());
  const { user, system } = process.cpuUsage(cpu);
  result(total, performance.now() - started, { cpuUsPerRow: (user + system) / total });
  db.close();
}
