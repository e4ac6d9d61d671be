import { spawn, type ChildProcess } from 'node:child_process';
import { request, type Agent } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';

/**
 * The codings answers are compressed with: each with an `Accept-Encoding` that picks it (a browser's, for
 * Brotli) and what decodes it.
 */
export const CODINGS = [
  ['gzip', 'gzip', gunzipSync],
  ['br', 'gzip, deflate, br, zstd', brotliDecompressSync],
] as const;

/** The built entry point, as `npm start` runs it. */
export const MAIN = join(__dirname, '..', '..', 'dist', 'src', 'main.js');

export interface ServerProcess {
  readonly port: number;
  readonly url: string;
  readonly child: ChildProcess;
  /** Lines the process printed on stdout and stderr. */
  readonly output: string[];
  /** Sends a signal and resolves with the exit code (or signal name) once the process is gone. */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

/**
 * Starts the built server (`npm run build` output, as `npm start` runs it) as a child process on a free
 * port, resolving once it logs that it listens. Rejects with its output if it exits first.
 */
export function startServer(env: Record<string, string>): Promise<ServerProcess> {
  const child = spawn(process.execPath, [MAIN], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  // 'close', not 'exit': it comes after the process's output is fully read.
  const exited = new Promise<number | string>((resolve) =>
    child.once('close', (code, signal) => resolve(code ?? signal ?? 'unknown')),
  );
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (l) => output.push(l));
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      output.push(line);
      let msg: { msg?: string; port?: number } = {};
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        return;
      }
      if (msg.msg === 'listening' && typeof msg.port === 'number') {
        const port = msg.port;
        resolve({
          port,
          url: `http://127.0.0.1:${port}`,
          child,
          output,
          stop: (signal = 'SIGTERM') => {
            if (child.exitCode === null && child.signalCode === null) child.kill(signal);
            return exited;
          },
        });
      }
    });
    void exited.then((code) => reject(new Error(`server exited (${code}) before listening:\n${output.join('\n')}`)));
  });
}

export interface Reply {
  readonly status: number;
  /** The body parsed as JSON, or else as text. */
  readonly body: unknown;
  /** The body's bytes as they came (compressed, if the answer says so). */
  readonly raw: Buffer;
  readonly headers: Record<string, string | string[] | undefined>;
}

/**
 * Resolves with the first line the process printed that `matches`, at once or as it prints it (its log
 * may come after the answer it tells of); rejects if the process ends without printing one.
 */
export function printed(server: ServerProcess, matches: (line: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdout = server.child.stdout as NodeJS.ReadableStream;
    const done = (): void => {
      stdout.removeListener('data', look);
      server.child.removeListener('close', ended);
    };
    // After the listener that reads the lines into `output`, which was added first.
    const look = (): void => {
      const line = server.output.find(matches);
      if (line === undefined) return;
      done();
      resolve(line);
    };
    const ended = (): void => {
      done();
      const line = server.output.find(matches);
      if (line === undefined) reject(new Error('the process ended without printing the line looked for'));
      else resolve(line);
    };
    stdout.on('data', look);
    server.child.once('close', ended);
    look();
  });
}

/**
 * One HTTP request on a new TCP connection (no keep-alive), as the challenge's test program sends them,
 * unless an `agent` is given (thousands of requests would otherwise leave as many ports in TIME_WAIT).
 */
export function send(
  url: string,
  method: string,
  body?: string,
  headers: Record<string, string> = {},
  agent: Agent | false = false,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        const text = raw.toString('utf8');
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // Not JSON: keep the text.
        }
        resolve({ status: res.statusCode ?? 0, body: parsed, raw, headers: res.headers });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export const postJson = (url: string, value: unknown, headers: Record<string, string> = {}): Promise<Reply> =>
  send(url, 'POST', JSON.stringify(value), { 'content-type': 'application/json', ...headers });

export const getJson = (url: string): Promise<Reply> => send(url, 'GET');

/**
 * Checks that a read of `url` holding `etag` is answered 304, without a body, with the tag, `no-cache`,
 * `vary` and a request id: asked with GET and HEAD, with the tag as sent, weak, in a list and as `*`.
 */
export async function expectNotModified(
  url: string,
  etag: string,
  vary: string,
  headers: Record<string, string> = {},
): Promise<void> {
  for (const [method, header] of [
    ['GET', etag],
    ['HEAD', etag],
    ['GET', `W/${etag}`],
    ['GET', `"other", ${etag}`],
    ['GET', '*'],
  ] as const) {
    const held = await send(url, method, undefined, { ...headers, 'if-none-match': header });
    expect({ url, method, header, status: held.status, body: held.body }).toEqual({
      url,
      method,
      header,
      status: 304,
      body: '',
    });
    expect(held.headers).toMatchObject({ etag, 'cache-control': 'no-cache', vary });
    expect(held.headers['x-request-id']).toEqual(expect.any(String));
  }
}

/** Runs `work` over `items` with at most `concurrency` in flight; resolves when all are done. */
export async function pool<T>(
  items: readonly T[],
  concurrency: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await work(items[next++] as T);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

/**
 * Posts a message to a server until it answers 2xx, as the test program retries; a refusal that a
 * retry cannot change (a 4xx other than 429) fails the test.
 */
export async function deliver(server: { readonly url: string }, message: unknown): Promise<Reply> {
  for (;;) {
    const r = await postJson(`${server.url}/messages`, message);
    if (r.status >= 200 && r.status < 300) return r;
    if (r.status !== 429 && r.status < 500) throw new Error(`unexpected ${r.status}: ${JSON.stringify(r.body)}`);
  }
}
