import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import {
  parseArgs,
  parseDuration,
  type LaunchOptions,
  type ParsedArgs,
  type PlanOptions,
} from '../../src/launch/flags';
import {
  channelId,
  plan,
  random,
  shuffleWithin,
  type Change,
  type Delivery,
  type Telemetry,
} from '../../src/launch/generation';
import { differences, evolveModel, fold, type ModelRocket } from '../../src/launch/model';
import { emptyStats, summary } from '../../src/launch/sending';
import { getJson, postJson, startServer, type ServerProcess } from '../support/process';

const LAUNCH = join(__dirname, '..', '..', 'dist', 'src', 'launch', 'main.js');

const options = (parsed: ParsedArgs): LaunchOptions => {
  if (parsed.kind !== 'run') throw new Error(`expected options, got ${JSON.stringify(parsed)}`);
  return parsed.options;
};
const invalid = (parsed: ParsedArgs): string => (parsed.kind === 'invalid' ? parsed.message : '');

describe('parseDuration', () => {
  it('reads Go durations into milliseconds', () => {
    expect(parseDuration('0')).toBe(0);
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('1s')).toBe(1000);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('1m30s')).toBe(90_000);
    expect(parseDuration('2h')).toBe(7_200_000);
    expect(parseDuration('250us')).toBeCloseTo(0.25);
    expect(parseDuration('250µs')).toBeCloseTo(0.25);
    expect(parseDuration('1000000ns')).toBeCloseTo(1);
    expect(parseDuration('+1s')).toBe(1000);
    expect(parseDuration('-1s')).toBe(-1000);
  });

  it('refuses what Go refuses: no unit, unknown units, empty text, a unit alone', () => {
    for (const text of ['', '5', '1x', '1sec', 'ms', '.s', '1s 2s', '1s-2s', '-', ' 1s'])
      expect(parseDuration(text)).toBeUndefined();
  });
});

describe('parseArgs', () => {
  it('gives the test program its defaults, and a random seed when none is set', () => {
    expect(options(parseArgs(['http://localhost:8088/messages'], () => 42, {}))).toStrictEqual({
      url: 'http://localhost:8088/messages',
      concurrencyLevel: 3,
      maxMessages: 100_000,
      messageDelayMs: 0,
      seed: 42,
      rockets: 20,
      duplicates: 0.05,
      shuffle: 0,
      giveUpAfterMs: 60_000,
      verify: false,
      token: undefined,
    });
  });

  it('takes --name=value, --name value and -name, before or after the URL', () => {
    const o = options(
      parseArgs([
        '--message-delay=500ms',
        'http://localhost:8088/messages',
        '--concurrency-level',
        '1',
        '-max-messages=20',
        '--seed',
        '7',
        '--rockets=4',
        '--duplicates',
        '0.25',
        '--shuffle=16',
        '--give-up-after=90s',
        '--verify',
        '--token',
        's3cret',
      ]),
    );
    expect(o).toMatchObject({
      concurrencyLevel: 1,
      maxMessages: 20,
      messageDelayMs: 500,
      seed: 7,
      rockets: 4,
      duplicates: 0.25,
      shuffle: 16,
      giveUpAfterMs: 90_000,
      verify: true,
      token: 's3cret',
    });
  });

  it('takes the token from --token, else from INGEST_TOKEN; empty sends none', () => {
    const url = 'http://localhost:8088/messages';
    const token = (argv: string[], env: Record<string, string>): string | undefined =>
      options(parseArgs([url, ...argv], () => 1, env)).token;
    expect(token([], {})).toBeUndefined();
    expect(token([], { INGEST_TOKEN: 'from-env' })).toBe('from-env');
    expect(token(['--token=from-flag'], { INGEST_TOKEN: 'from-env' })).toBe('from-flag');
    expect(token(['--token='], { INGEST_TOKEN: 'from-env' })).toBeUndefined();
    expect(token([], { INGEST_TOKEN: '' })).toBeUndefined();
  });

  it('refuses a token no server could be given, without printing it', () => {
    const url = 'http://localhost:8088/messages';
    expect(invalid(parseArgs([url, '--token', 'two words'], () => 1, {}))).toBe(
      '--token must be visible ASCII characters with no spaces, as a bearer token is',
    );
    expect(invalid(parseArgs([url], () => 1, { INGEST_TOKEN: 'line\n' }))).toBe(
      'INGEST_TOKEN (the default of --token) must be visible ASCII characters with no spaces, as a bearer token is',
    );
    expect(invalid(parseArgs([url, '--token=caf\u00e9'], () => 1, {}))).not.toContain('caf');
    expect(invalid(parseArgs([url, '--token']))).toBe('--token needs a value');
  });

  it('prints help for -h or --help whatever else is there', () => {
    expect(parseArgs(['--help'])).toEqual({ kind: 'help' });
    expect(parseArgs(['http://x', '--rockets=0', '-h'])).toEqual({ kind: 'help' });
  });

  it('names the flag and what it must be when a value is wrong', () => {
    const url = 'http://localhost:8088/messages';
    expect(invalid(parseArgs([url, '--concurrency-level', '0']))).toBe(
      '--concurrency-level must be from 1 to 10000, got 0',
    );
    expect(invalid(parseArgs([url, '--max-messages=1e3']))).toBe('--max-messages must be a whole number, got "1e3"');
    expect(invalid(parseArgs([url, '--message-delay=5']))).toMatch(/--message-delay must be a Go duration .*"5"/);
    expect(invalid(parseArgs([url, '--message-delay=-1s']))).toBe('--message-delay must not be negative, got "-1s"');
    expect(invalid(parseArgs([url, '--give-up-after=soon']))).toMatch(/--give-up-after must be a Go duration .*"soon"/);
    expect(invalid(parseArgs([url, '--give-up-after=0s']))).toBe('--give-up-after must be more than 0, got "0s"');
    // Node's timers hold no longer: a longer delay would fire at once.
    expect(invalid(parseArgs([url, '--message-delay=600h']))).toBe(
      '--message-delay must be at most 2147483647 ms (24.8 days), got "600h"',
    );
    expect(invalid(parseArgs([url, '--duplicates=1']))).toMatch(/--duplicates must be a ratio from 0 to below 1/);
    expect(invalid(parseArgs([url, '--shuffle=-3']))).toMatch(/--shuffle must be a whole number/);
    expect(invalid(parseArgs([url, '--seed=abc']))).toMatch(/--seed must be a whole number/);
    expect(invalid(parseArgs([url, '--seed=99999999999999999999']))).toBe(
      '--seed must be at most 9007199254740991 (2^53 - 1), got 99999999999999999999',
    );
    expect(invalid(parseArgs([url, '--seed=9007199254740992']))).toMatch(/--seed must be at most 9007199254740991 /);
    expect(options(parseArgs([url, '--seed=9007199254740991'])).seed).toBe(Number.MAX_SAFE_INTEGER);
    expect(invalid(parseArgs([url, '--max-messages=0']))).toBe('--max-messages must be at least 1, got 0');
    expect(invalid(parseArgs([url, '--rockets']))).toBe('--rockets needs a value');
    expect(invalid(parseArgs([url, '--verify=maybe']))).toMatch(/--verify takes no value/);
    expect(invalid(parseArgs([url, '--speed=9']))).toBe('unknown flag --speed');
  });

  it('wants exactly one http(s) target URL', () => {
    expect(invalid(parseArgs([]))).toMatch(/expected one target URL .*got none/);
    expect(invalid(parseArgs(['http://a/messages', 'http://b/messages']))).toMatch(/got "http:\/\/a\/messages", "http/);
    expect(invalid(parseArgs(['localhost:8088']))).toMatch(/http:\/\/ or https:\/\//);
    expect(invalid(parseArgs(['not a url']))).toMatch(/must be a URL/);
    expect(options(parseArgs(['--', 'https://example.com/messages'])).url).toBe('https://example.com/messages');
  });
});

const planOf = (o: Partial<PlanOptions> = {}): { deliveries: Delivery[]; model: Map<string, ModelRocket> } => {
  const model = new Map<string, ModelRocket>();
  const deliveries = [
    ...plan({ seed: 1, rockets: 5, maxMessages: 5000, duplicates: 0.1, shuffle: 0, ...o }, (t) => {
      fold(model, t);
    }),
  ];
  return { deliveries, model };
};
const key = (t: Telemetry): string => `${t.channel}#${t.messageNumber}`;

describe('the generator', () => {
  it('sends exactly --max-messages, numbering each rocket 1..n once, each starting with RocketLaunched', () => {
    const { deliveries } = planOf();
    expect(deliveries).toHaveLength(5000);
    const numbers = new Map<string, number[]>();
    for (const d of deliveries.filter((x) => !x.duplicate)) {
      const list = numbers.get(d.telemetry.channel) ?? [];
      list.push(d.telemetry.messageNumber);
      numbers.set(d.telemetry.channel, list);
      if (d.telemetry.messageNumber === 1) expect(d.telemetry.messageType).toBe('RocketLaunched');
    }
    expect(numbers.size).toBe(5);
    for (const list of numbers.values()) expect(list).toEqual(list.map((_, i) => i + 1));
  });

  it('posts the seed envelope, with times that grow with the numbers', () => {
    const { deliveries } = planOf({ maxMessages: 200 });
    const first = deliveries[0];
    expect(JSON.parse(first?.body ?? '')).toEqual({
      metadata: {
        channel: first?.telemetry.channel,
        messageNumber: 1,
        messageTime: expect.stringMatching(/^2022-02-02T\d\d:\d\d:\d\d\.\d{3}\+01:00$/) as unknown,
        messageType: 'RocketLaunched',
      },
      message: {
        type: expect.any(String) as unknown,
        launchSpeed: expect.any(Number) as unknown,
        mission: expect.any(String) as unknown,
      },
    });
    const times = deliveries.filter((d) => !d.duplicate).map((d) => Date.parse(d.telemetry.messageTime));
    expect(times).toEqual([...times].sort((a, b) => a - b));
  });

  it('makes about --duplicates of the deliveries exact copies of messages it also sends fresh', () => {
    const { deliveries } = planOf({ duplicates: 0.1 });
    const fresh = new Map(deliveries.filter((d) => !d.duplicate).map((d) => [key(d.telemetry), d.body]));
    const duplicates = deliveries.filter((d) => d.duplicate);
    expect(duplicates.length / deliveries.length).toBeGreaterThan(0.08);
    expect(duplicates.length / deliveries.length).toBeLessThan(0.12);
    for (const d of duplicates) expect(d.body).toBe(fresh.get(key(d.telemetry)));
    expect(planOf({ duplicates: 0 }).deliveries.some((d) => d.duplicate)).toBe(false);
  });

  it('keeps the generation order without --shuffle', () => {
    const { deliveries } = planOf({ duplicates: 0 });
    const last = new Map<string, number>();
    for (const { telemetry: t } of deliveries) {
      expect(t.messageNumber).toBe((last.get(t.channel) ?? 0) + 1);
      last.set(t.channel, t.messageNumber);
    }
  });

  it('swaps two items only when they are fewer than --shuffle positions apart', () => {
    const window = 20;
    const input = Array.from({ length: 10_000 }, (_, i) => i);
    const output = [...shuffleWithin(input, window, random(3, 'test'))];
    expect([...output].sort((a, b) => a - b)).toEqual(input);
    let highest = -1;
    let reordered = 0;
    for (const x of output) {
      // Everything at least `window` before x already went out.
      expect(x).toBeGreaterThan(highest - window);
      if (x < highest) reordered++;
      highest = Math.max(highest, x);
    }
    expect(reordered).toBeGreaterThan(1000);
    expect([...shuffleWithin(input, 0, random(3, 'test'))]).toEqual(input);
    expect([...shuffleWithin(input, 1, random(3, 'test'))]).toEqual(input);
  });

  it('shuffles the same deliveries it would send in order, each within the window', () => {
    const straight = planOf({ shuffle: 0 }).deliveries.map((d) => d.body);
    const shuffled = planOf({ shuffle: 20 }).deliveries.map((d) => d.body);
    expect([...shuffled].sort()).toEqual([...straight].sort());
    expect(shuffled).not.toEqual(straight);
    shuffled.forEach((body, i) => expect(straight.slice(Math.max(0, i - 19), i + 20)).toContain(body));
  });

  it('is deterministic with a seed, and another seed uses other channels', () => {
    const bodies = (seed: number): string[] => planOf({ seed, shuffle: 8 }).deliveries.map((d) => d.body);
    expect(bodies(7)).toEqual(bodies(7));
    const channels = (seed: number): Set<string> =>
      new Set(planOf({ seed, maxMessages: 500 }).deliveries.map((d) => d.telemetry.channel));
    const seven = channels(7);
    expect([...channels(8)].filter((c) => seven.has(c))).toEqual([]);
  });

  it('sends the same message under the same number whatever --duplicates, --shuffle and --max-messages are', () => {
    const a = new Map(planOf({ seed: 5 }).deliveries.map((d) => [key(d.telemetry), d.body]));
    const b = planOf({ seed: 5, duplicates: 0.3, shuffle: 50, maxMessages: 8000 }).deliveries;
    let shared = 0;
    for (const d of b) {
      const body = a.get(key(d.telemetry));
      if (body === undefined) continue;
      shared++;
      expect(d.body).toBe(body);
    }
    expect(shared).toBeGreaterThan(4000);
  });

  it('names channels with version 4 UUIDs that depend on the seed and the number of rockets', () => {
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    expect(channelId(7, 10, 0)).toMatch(uuid);
    expect(channelId(7, 10, 0)).toBe(channelId(7, 10, 0));
    expect(new Set([channelId(7, 10, 0), channelId(7, 10, 1), channelId(8, 10, 0), channelId(7, 11, 0)]).size).toBe(4);
  });

  it('folds every message it generates into the model, up to each rocket’s last number', () => {
    const { deliveries, model } = planOf({ shuffle: 30 });
    const last = new Map<string, number>();
    for (const { telemetry: t } of deliveries) last.set(t.channel, Math.max(t.messageNumber, last.get(t.channel) ?? 0));
    expect(new Map([...model.values()].map((r) => [r.channel, r.lastMessageNumber]))).toEqual(last);
  });
});

let time = Date.UTC(2022, 1, 2, 18, 39, 5);
const at = (n: number, change: Change, channel = 'r1'): Telemetry => ({
  channel,
  messageNumber: n,
  messageTime: new Date((time += 1000) + 3_600_000).toISOString().replace('Z', '+01:00'),
  ...change,
});
const launched = (type = 'Falcon-9', launchSpeed = 500, mission = 'ARTEMIS'): Change => ({
  messageType: 'RocketLaunched',
  message: { type, launchSpeed, mission },
});
const increased = (by: number): Change => ({ messageType: 'RocketSpeedIncreased', message: { by } });
const decreased = (by: number): Change => ({ messageType: 'RocketSpeedDecreased', message: { by } });
const missionChanged = (newMission: string): Change => ({
  messageType: 'RocketMissionChanged',
  message: { newMission },
});
const exploded = (reason: string): Change => ({ messageType: 'RocketExploded', message: { reason } });

const foldAll = (changes: Change[]): ModelRocket =>
  changes.reduce<ModelRocket | undefined>((s, c, i) => evolveModel(s, at(i + 1, c)), undefined) as ModelRocket;

describe('the model', () => {
  it('launches a rocket with the launch message’s type, speed, mission and UTC time', () => {
    const launch = at(1, launched());
    expect(evolveModel(undefined, launch)).toEqual({
      channel: 'r1',
      type: 'Falcon-9',
      mission: 'ARTEMIS',
      speed: 500,
      status: 'flying',
      explodedReason: null,
      launchedAt: new Date(Date.parse(launch.messageTime)).toISOString(),
      updatedAt: new Date(Date.parse(launch.messageTime)).toISOString(),
      lastMessageNumber: 1,
    });
  });

  it('adds and removes speed, stopping at 0 below zero', () => {
    expect(foldAll([launched(), increased(300), decreased(100)]).speed).toBe(700);
    expect(foldAll([launched(), decreased(501)]).speed).toBe(0);
    expect(foldAll([launched(), decreased(501), increased(5)]).speed).toBe(5);
  });

  it('changes the mission', () => {
    expect(foldAll([launched(), missionChanged('GEMINI')]).mission).toBe('GEMINI');
  });

  it('freezes an exploded rocket: the first reason stands, only the number and time move on', () => {
    const s = foldAll([launched(), exploded('FUEL'), increased(100), missionChanged('X'), exploded('AGAIN')]);
    expect(s).toMatchObject({ status: 'exploded', explodedReason: 'FUEL', speed: 500, mission: 'ARTEMIS' });
    expect(s.lastMessageNumber).toBe(5);
  });

  it('ignores a second launch, but counts it as the latest message', () => {
    const s = foldAll([launched(), increased(1), launched('Soyuz', 9, 'OTHER')]);
    expect(s).toMatchObject({ type: 'Falcon-9', speed: 501, mission: 'ARTEMIS', lastMessageNumber: 3 });
    expect(s.updatedAt).not.toBe(s.launchedAt);
  });

  it('refuses a message that is not the next number, which would be a generator bug', () => {
    const s = evolveModel(undefined, at(1, launched()));
    expect(() => evolveModel(s, at(3, increased(1)))).toThrow('r1 expected message 2, got 3');
    expect(() => evolveModel(undefined, at(2, increased(1)))).toThrow('expected message 1, got 2');
  });
});

describe('differences', () => {
  const rocket = foldAll([launched(), increased(100)]);
  const model = new Map([[rocket.channel, rocket]]);
  const live = (patch: Record<string, unknown> = {}): unknown[] => [
    { ...rocket, buffer: { waitingFor: 3, count: 0, oldestSince: null }, ...patch },
    { channel: 'another-run', speed: 1 },
  ];

  it('finds none when every rocket of the model is there in the same state', () => {
    expect(differences(model, live())).toEqual([]);
  });

  it('names the rocket, the field, the expected and the actual value', () => {
    expect(differences(model, live({ speed: 601, explodedReason: 'X' }))).toEqual([
      'r1: speed: expected 600, got 601',
      'r1: explodedReason: expected null, got "X"',
    ]);
    expect(differences(model, live({ buffer: { waitingFor: 3, count: 2, oldestSince: null } }))).toEqual([
      'r1: buffer.count: expected 0, got 2',
    ]);
  });

  it('reports a missing rocket and a body that is not an array', () => {
    expect(differences(model, [])).toEqual(['r1: missing from GET /rockets']);
    expect(differences(model, { rockets: [] })).toEqual(['GET /rockets: expected a JSON array, got object']);
  });
});

describe('summary', () => {
  it('says what was sent, acknowledged, retried and verified, and how fast', () => {
    const s = { ...emptyStats(), sent: 10, acknowledged: 9, applied: 7, buffered: 1, duplicate: 1, retried: 2 };
    expect(summary({ ...s, duplicatesSent: 1 }, 2000, 'no')).toBe(
      'sent 10, acknowledged 9 (applied 7, buffered 1, duplicate 1), retried 2, duplicates sent 1, 5 msg/s, ' +
        'elapsed 2.0 s, verified no',
    );
  });
});

interface Exit {
  readonly code: number | string;
  readonly stdout: string;
  readonly stderr: string;
}

interface Launched {
  readonly child: ChildProcess;
  readonly exit: Promise<Exit>;
  /** Resolves with the first stderr line that matches. */
  stderrLine(pattern: RegExp): Promise<string>;
}

/** A short run for the tests that need only a few messages through. */
const small = ['--max-messages=200', '--rockets=2', '--verify'];

describe('the built CLI', () => {
  let dir: string;
  let server: ServerProcess;
  const children = new Set<ChildProcess>();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rockets-launch-'));
    server = await startServer({ DATABASE_URL: `sqlite:${join(dir, 'rockets.db')}` });
  });
  afterEach(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    children.clear();
  });
  afterAll(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs the CLI with `env` over this process's environment, without its INGEST_TOKEN unless given. */
  const launch = (args: string[], env: Record<string, string> = {}): Launched => {
    const inherited = { ...process.env };
    delete inherited.INGEST_TOKEN;
    const child = spawn(process.execPath, [LAUNCH, ...args], {
      env: { ...inherited, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    let stdout = '';
    let stderr = '';
    const waiting: { pattern: RegExp; resolve: (line: string) => void }[] = [];
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    createInterface({ input: child.stderr }).on('line', (line) => {
      stderr += `${line}\n`;
      for (const w of waiting.filter((x) => x.pattern.test(line))) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve(line);
      }
    });
    const exit = new Promise<Exit>((resolve) =>
      child.once('close', (code, signal) => resolve({ code: code ?? signal ?? 'unknown', stdout, stderr })),
    );
    return {
      child,
      exit,
      stderrLine: (pattern) =>
        new Promise((resolve, reject) => {
          waiting.push({ pattern, resolve });
          void exit.then((e) => reject(new Error(`exited (${e.code}) before printing ${pattern}:\n${e.stderr}`)));
        }),
    };
  };

  it('sends a shuffled, duplicated stream at concurrency 8, ends by itself and verifies every rocket', async () => {
    const run = await launch([
      `${server.url}/messages`,
      ...['--max-messages', '2000', '--rockets', '10', '--concurrency-level', '8'],
      ...['--duplicates', '0.1', '--shuffle', '20', '--seed', '7', '--verify'],
    ]).exit;
    expect(run.stderr).toMatch(/^rockets-launch: 2000 messages for 10 rockets to .*seed 7$/m);
    expect(run.stderr).toMatch(/^progress: 100% \(2000\/2000 acknowledged\)/m);
    expect(run.stdout).toMatch(
      /^done: sent 2000, acknowledged 2000 \(applied \d+, buffered \d+, duplicate \d+\), retried 0, duplicates sent [1-9]\d+, \d+ msg\/s, elapsed [\d.]+ s, verified yes\n$/,
    );
    expect(run.code).toBe(0);
    const rockets = (await getJson(`${server.url}/rockets`)).body as { channel: string }[];
    const ours = Array.from({ length: 10 }, (_, i) => channelId(7, 10, i));
    expect(ours.every((c) => rockets.some((r) => r.channel === c))).toBe(true);
  });

  it('fails verification, listing the difference, when the server holds a message the generator never sent', async () => {
    const args = [`${server.url}/messages`, '--max-messages=300', '--rockets=3', '--seed=11', '--verify'];
    const first = await launch(args).exit;
    expect(first.stdout).toMatch(/verified yes/);
    expect(first.code).toBe(0);

    const channel = channelId(11, 3, 0);
    const before = (await getJson(`${server.url}/rockets/${channel}`)).body as { lastMessageNumber: number };
    const n = before.lastMessageNumber;
    const extra = await postJson(`${server.url}/messages`, {
      metadata: {
        channel,
        messageNumber: n + 1,
        messageTime: '2030-01-01T00:00:00Z',
        messageType: 'RocketSpeedIncreased',
      },
      message: { by: 1 },
    });
    expect(extra.body).toMatchObject({ status: 'applied' });

    const second = await launch(args).exit;
    expect(second.stdout).toMatch(/^verify: \d+ difference\(s\) between the generator's model of 3 rockets and GET /m);
    expect(second.stdout).toContain(`  ${channel}: lastMessageNumber: expected ${n}, got ${n + 1}\n`);
    expect(second.stdout).toContain(`  ${channel}: updatedAt: expected `);
    expect(second.stdout).toMatch(
      /^done: sent 300, acknowledged 300 \(applied 0, buffered 0, duplicate 300\), .* verified no$/m,
    );
    expect(second.code).toBe(1);
  });

  it('stops, says why and exits 1 on an answer no retry can change, such as a URL with no route', async () => {
    const run = await launch([`${server.url}/nothing`, '--max-messages=50', '--concurrency-level=4', '--seed=13']).exit;
    expect(run.stdout).toMatch(/^stopped: 404 for \S+ #\d+: .*no route.* \(retrying cannot change this answer\)$/m);
    expect(run.stdout).toMatch(/^done: sent \d+, acknowledged 0 .*, retried 0, .*verified skipped$/m);
    expect(run.code).toBe(1);
  });

  it.each([
    // One sender, a shuffle far wider than the two messages the server buffers a channel: the message the
    // channel waits for stays behind the one being refused, so the refusal never ends.
    ['429', { MAX_BUFFERED_PER_CHANNEL: '2' }, '--rockets=1'],
    // The same with the total cap: 503 BUFFER_FULL, which the store's failures share a status with.
    ['503', { MAX_BUFFERED_TOTAL: '2' }, '--rockets=2'],
  ])(
    'stops, says why and exits 1 once one message has been refused with %s at a cap for --give-up-after',
    async (status, caps, rockets) => {
      const narrow = await startServer({ DATABASE_URL: `sqlite:${join(dir, `narrow-${status}.db`)}`, ...caps });
      try {
        const args = ['--max-messages=200', rockets, '--duplicates=0', '--shuffle=100', '--seed=5'];
        const run = await launch([`${narrow.url}/messages`, ...args, '--concurrency-level=1', '--give-up-after=1s'])
          .exit;
        expect(run.stdout).toMatch(
          new RegExp(
            `^stopped: ${status} for \\S+ #\\d+: .* \\(refused for 1 s, --give-up-after: is --shuffle wider than the server's MAX_BUFFERED_PER_CHANNEL or MAX_BUFFERED_TOTAL\\?\\)$`,
            'm',
          ),
        );
        expect(run.stdout).toMatch(/^done: sent \d+, acknowledged \d+ .*, retried [1-9]\d*, .*verified skipped$/m);
        expect(run.code).toBe(1);
      } finally {
        await narrow.stop();
      }
    },
  );

  it('pauses --message-delay only between two messages of a sender, never after its last', async () => {
    // Two senders with one message each: no pause is due, so the run ends long before the delay would.
    const run = await launch([
      `${server.url}/messages`,
      ...['--max-messages=2', '--concurrency-level=2', '--message-delay=10m', '--seed=14'],
    ]).exit;
    expect(run.stdout).toMatch(/^done: sent 2, acknowledged 2 .*verified skipped\n$/);
    expect(run.code).toBe(0);
  });

  it.each([
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)('prints the summary so far and exits 128 + its number on %s', async (signal, status) => {
    const run = launch([`${server.url}/messages`, '--max-messages=1000000', '--message-delay=1s', '--seed=12']);
    await run.stderrLine(/^rockets-launch: 1000000 messages/);
    run.child.kill(signal);
    const exit = await run.exit;
    expect(exit.stdout).toMatch(/^interrupted: sent \d+, acknowledged \d+ .*, verified skipped\n$/);
    expect(exit.code).toBe(status);
  });

  describe('against a server with INGEST_TOKEN', () => {
    const TOKEN = 'launch-test-token-7f3a';
    let guarded: ServerProcess;
    beforeAll(async () => {
      guarded = await startServer({ DATABASE_URL: `sqlite:${join(dir, 'guarded.db')}`, INGEST_TOKEN: TOKEN });
    });
    afterAll(async () => {
      await guarded.stop();
    });

    it.each([
      ['--token', '21', [`--token=${TOKEN}`], {}],
      ['INGEST_TOKEN', '22', [], { INGEST_TOKEN: TOKEN }],
    ])('sends, verifies and never prints the token given by %s', async (_, seed, flags, env) => {
      const run = await launch([`${guarded.url}/messages`, `--seed=${seed}`, ...small, ...flags], env).exit;
      expect(run.stdout).toMatch(/^done: sent 200, acknowledged 200 .*, retried 0, .*verified yes\n$/);
      expect(run.code).toBe(0);
      expect(run.stdout + run.stderr).not.toContain(TOKEN);
    });

    it('stops at the first 401 without a token, as with any answer no retry can change', async () => {
      const run = await launch([`${guarded.url}/messages`, '--seed=23', ...small]).exit;
      expect(run.stdout).toMatch(
        /^stopped: 401 for \S+ #\d+: .*INGEST_TOKEN.* \(retrying cannot change this answer; give the token with --token\)$/m,
      );
      expect(run.stdout).toMatch(/^done: sent \d+, acknowledged 0 .*, retried 0, .*verified skipped$/m);
      expect(run.code).toBe(1);
      const wrong = await launch([`${guarded.url}/messages`, '--seed=23', ...small, '--token=not-it']).exit;
      expect(wrong.stdout).toMatch(/^stopped: 401 for .*; check --token\)$/m);
      expect(wrong.code).toBe(1);
    });
  });

  it('sends the token with every request it makes, the posts and the GET of --verify', async () => {
    const seen: { method: string; url: string; headers: IncomingHttpHeaders }[] = [];
    const fake = createServer((req, res) => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
      req.resume();
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        if (req.method === 'POST') res.writeHead(202).end('{"status":"applied"}');
        else res.writeHead(200).end('[]');
      });
    });
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = fake.address() as AddressInfo;
      const run = await launch([
        `http://127.0.0.1:${port}/messages`,
        ...['--max-messages=5', '--rockets=1', '--verify', '--token=abc.DEF-123'],
      ]).exit;
      // The fake stores nothing, so --verify finds the rocket missing.
      expect(run.stdout).toMatch(/missing from GET /);
      expect(seen.map((r) => `${r.method} ${r.url}`)).toEqual([
        ...Array<string>(5).fill('POST /messages'),
        'GET /rockets',
      ]);
      for (const r of seen) expect(r.headers.authorization).toBe('Bearer abc.DEF-123');
    } finally {
      await new Promise((resolve) => fake.close(resolve));
    }
  });

  it('says what is wrong with a flag and exits 2', async () => {
    const run = await launch(['http://localhost:8088/messages', '--concurrency-level=0']).exit;
    expect(run.stderr).toBe(
      'rockets-launch: --concurrency-level must be from 1 to 10000, got 0\nRun rockets-launch --help for the flags.\n',
    );
    expect(run.code).toBe(2);
  });

  it('prints its usage on --help', async () => {
    const run = await launch(['--help']).exit;
    expect(run.stdout).toMatch(/^Usage: rockets-launch <url> \[flags\]/);
    expect(run.stdout).toContain('--concurrency-level <n>');
    expect(run.stdout).toMatch(/--token <t> .*\n.*\(default: the INGEST_TOKEN environment variable/);
    expect(run.stdout).toMatch(
      /^Exit status: .*1 verification failed or the run stopped at an answer it cannot get\npast/m,
    );
    expect(run.stdout).toMatch(/130 interrupted \(Ctrl-C\) or 143 terminated \(SIGTERM\), with the summary so far\.$/m);
    expect(run.code).toBe(0);
  });
});
