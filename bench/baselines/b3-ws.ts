// B3: a bare `ws` server that takes the ingest on POST /messages and broadcasts each event, serialised once
// into one frame, to the same subscribers as ours (graphql-transport-ws framing, so the same client reads
// both). Every bench subscriber uses subscription id "1" on its own socket, so one frame fits all.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';

interface Envelope {
  metadata: { channel: string; messageNumber: number };
}
interface Subscribe {
  type?: string;
  payload?: { variables?: { channel?: string | null } };
}

const all = new Set<WebSocket>();
const byChannel = new Map<string, Set<WebSocket>>();
let position = 0;

const server = createServer((req, res) => {
  if (req.method === 'GET') {
    const text = JSON.stringify({ subscribers: all.size + [...byChannel.values()].reduce((n, s) => n + s.size, 0) });
    res.writeHead(200, { 'content-type': 'application/json' }).end(text);
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const { metadata } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Envelope;
    const event = { position: ++position, ...metadata, recordedAt: new Date().toISOString() };
    const frame = Buffer.from(JSON.stringify({ id: '1', type: 'next', payload: { data: { eventAppended: event } } }));
    for (const ws of all) ws.send(frame, { binary: false });
    for (const ws of byChannel.get(metadata.channel) ?? []) ws.send(frame, { binary: false });
    const text = JSON.stringify({
      status: 'applied',
      channel: metadata.channel,
      messageNumber: metadata.messageNumber,
    });
    res.writeHead(202, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
  });
});

new WebSocketServer({ server, handleProtocols: () => 'graphql-transport-ws' }).on('connection', (ws) => {
  ws.on('message', (data: Buffer) => {
    const m = JSON.parse(data.toString('utf8')) as Subscribe;
    if (m.type === 'connection_init') ws.send('{"type":"connection_ack"}');
    if (m.type === 'ping') ws.send('{"type":"pong"}');
    if (m.type !== 'subscribe') return;
    const channel = m.payload?.variables?.channel;
    let set = all;
    if (typeof channel === 'string') {
      set = byChannel.get(channel) ?? new Set();
      byChannel.set(channel, set);
    }
    set.add(ws);
    ws.on('close', () => set.delete(ws));
  });
});

server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ msg: 'listening', port: (server.address() as AddressInfo).port }));
});
