import { execFile } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MAIN, getJson, startServer, type ServerProcess } from '../support/process';

const run = promisify(execFile);
const failure = (args: string[], env: Record<string, string> = {}): Promise<unknown> =>
  run(process.execPath, [MAIN, ...args], { env: { ...process.env, ...env } }).then(
    () => Promise.reject(new Error('expected a failure')),
    (e: unknown) => e,
  );

/**
 * A request whose body never comes, in flight on `s` once this resolves: it holds a stop until the
 * returned socket is destroyed.
 */
async function holdStop(s: ServerProcess): Promise<Socket> {
  const socket = connect(s.port, '127.0.0.1');
  socket.on('error', () => undefined);
  socket.write('POST /messages HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{');
  // Once another request is answered, the server has read these headers.
  await getJson(`${s.url}/health`);
  return socket;
}

/** Resolves once `s` prints `words` on stdout. */
const said = (s: ServerProcess, words: string): Promise<void> =>
  new Promise((resolve) =>
    s.child.stdout?.on('data', (c: Buffer) => {
      if (c.toString('utf8').includes(words)) resolve();
    }),
  );

describe('the server command', () => {
  let server: ServerProcess | undefined;
  afterEach(async () => {
    await server?.stop('SIGKILL');
    server = undefined;
  });

  it('prints its usage on --help, and starts nothing', async () => {
    const { stdout } = await run(process.execPath, [MAIN, '--help']);
    expect(stdout).toMatch(/^Usage: node dist\/src\/main\.js \[--rebuild \| --backup <file>\]/);
  });

  it('refuses an unknown argument with exit 2, rather than serving (a typo of --rebuild)', async () => {
    expect(await failure(['--rebuld'])).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/^unknown argument "--rebuld"\n\nUsage:/) as unknown,
    });
  });

  it('refuses --rebuild of a store with no log to replay', async () => {
    expect(await failure(['--rebuild'], { DATABASE_URL: 'memory:' })).toMatchObject({
      code: 1,
      stdout: expect.stringContaining('--rebuild needs a stored log: DATABASE_URL is memory:') as unknown,
    });
  });

  it('says why it cannot start even under LOG_LEVEL=silent', async () => {
    expect(await failure([], { LOG_LEVEL: 'silent', DATABASE_URL: 'mysql://x/y' })).toMatchObject({
      code: 1,
      stdout: expect.stringMatching(
        /"level":60,.*unsupported database URL \(scheme \\"mysql\\"\).*"msg":"cannot start"/,
      ) as unknown,
    });
  });

  it('warns of a variable that looks like a mistyped setting, naming the one meant, and never its value', async () => {
    // The URL it refuses ends the run once the warnings are out.
    const { stdout } = (await failure([], {
      DATABASE_URL: 'mysql://x/y',
      GAP_TIMOUT: 'secret-looking-5s',
      port: '9000',
    })) as { stdout: string };
    const warned = stdout.split('\n').filter((l) => l.includes('"level":40'));
    expect(warned).toEqual([
      expect.stringContaining('"msg":"GAP_TIMOUT is not a setting and is ignored: did you mean GAP_TIMEOUT?"'),
      expect.stringContaining('"msg":"port is not a setting and is ignored: did you mean PORT?"'),
    ]);
    expect(stdout).not.toContain('secret-looking');
  });

  it('names HOST and PORT when it cannot listen where they say', async () => {
    expect(await failure([], { DATABASE_URL: 'memory:', HOST: 'nonexistent.invalid', PORT: '0' })).toMatchObject({
      code: 1,
      stdout: expect.stringContaining('cannot listen on HOST \\"nonexistent.invalid\\" PORT 0: ') as unknown,
    });
  });

  it('stops gracefully on SIGHUP as on SIGTERM', async () => {
    const s = (server = await startServer({ DATABASE_URL: 'memory:' }));
    expect((await getJson(`${s.url}/health`)).status).toBe(200);
    expect(await s.stop('SIGHUP')).toBe(0);
    expect(s.output.some((l) => l.includes('"signal":"SIGHUP"') && l.includes('"stopping"'))).toBe(true);
  });

  it.each(['exception', 'rejection'])('logs an uncaught %s as JSON, at level fatal, then exits 1', async (kind) => {
    const preload = join(__dirname, '..', 'support', 'raise-on-signal.js');
    const s = (server = await startServer({
      DATABASE_URL: 'memory:',
      RAISE: kind,
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require "${preload}"`,
    }));
    const exited = new Promise<number | null>((resolve) => s.child.once('close', resolve));
    s.child.kill('SIGUSR2');
    expect(await exited).toBe(1);
    const lines = s.output.flatMap((l) => {
      try {
        return [JSON.parse(l) as { level?: number; msg?: string; err?: { message?: string } }];
      } catch {
        return [];
      }
    });
    expect(lines.find((l) => l.level === 60)).toMatchObject({
      msg: kind === 'exception' ? 'uncaught exception' : 'unhandled rejection',
      err: { message: `raised by the test: ${kind}` },
    });
  });

  it('takes the same signal again at once for its echo, as Ctrl-C under npm start sends it, and stops gracefully', async () => {
    const s = (server = await startServer({ DATABASE_URL: 'memory:' }));
    // A request in flight keeps the stop waiting until the test lets it end.
    const socket = await holdStop(s);
    const stopping = said(s, '"stopping"');
    const echo = said(s, 'taken as its echo');
    // The terminal signals the whole process group, and npm forwards what it got to the server it runs.
    s.child.kill('SIGINT');
    await stopping;
    s.child.kill('SIGINT');
    // Taken as a second signal, it would end the process at once, with 1.
    await Promise.race([echo, new Promise((resolve) => s.child.once('exit', resolve))]);
    socket.destroy();
    expect(await s.stop('SIGINT')).toBe(0);
    expect(s.output.some((l) => l.includes('"stopped"'))).toBe(true);
    expect(s.output.some((l) => l.includes('second signal'))).toBe(false);
  });

  it('exits at once, with 1, on a second signal while it stops', async () => {
    const s = (server = await startServer({ DATABASE_URL: 'memory:' }));
    // A request in flight keeps the stop waiting.
    const socket = await holdStop(s);
    const stopping = said(s, '"stopping"');
    s.child.kill('SIGTERM');
    await stopping;
    expect(await s.stop('SIGINT')).toBe(1);
    expect(s.output.some((l) => l.includes('second signal while stopping: exiting now'))).toBe(true);
    socket.destroy();
  });
});
