// B0, the platform limit: bare node:http that reads and parses the JSON body and answers 202.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

interface Body {
  metadata?: { channel?: unknown; messageNumber?: unknown };
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
    // The same answer as ours, so the load generator parses the same bytes.
    const text = JSON.stringify({
      status: 'applied',
      channel: body.metadata?.channel,
      messageNumber: body.metadata?.messageNumber,
    });
    res.writeHead(202, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
  });
});
server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ msg: 'listening', port: (server.address() as AddressInfo).port }));
});
