#!/usr/bin/env node
/**
 * rockets-launch: a load generator that speaks the challenge's test program's language (its flags, one
 * POST per message on a new TCP connection, every non-2xx retried every 500 ms), and adds what the test
 * program lacks: several rockets, duplicates, reordering, a seed, and a check of the final state against
 * its own model of the rules.
 *
 * This file holds its entry, `main`; the rest is one file per concern: flags.ts (the command line),
 * generation.ts (the messages), model.ts (the rules, for --verify), sending.ts (posting, retrying and
 * the counts) and progress.ts (the progress shown while it runs).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { USAGE, parseArgs } from './flags';
import { plan } from './generation';
import { differences, fold, type ModelRocket } from './model';
import { Progress } from './progress';
import { RETRY_INTERVAL_MS, StopRun, deliver, emptyStats, readRockets, summary, type Verified } from './sending';

/** --verify prints at most this many differences. */
const MAX_DIFFERENCES_SHOWN = 50;

/**
 * Runs the command line and resolves with the exit status. Ctrl-C (SIGINT) or SIGTERM prints the summary
 * so far and exits the process at once, with 130 or 143.
 */
export async function main(argv: readonly string[]): Promise<number> {
  const parsed = parseArgs(argv);
  if (parsed.kind === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if (parsed.kind === 'invalid') {
    process.stderr.write(`rockets-launch: ${parsed.message}\nRun rockets-launch --help for the flags.\n`);
    return 2;
  }
  const o = parsed.options;
  const url = new URL(o.url);
  const stats = emptyStats();
  const model = new Map<string, ModelRocket>();
  const deliveries = plan(o, (t) => {
    fold(model, t);
  });
  const started = performance.now();
  const progress = new Progress(process.stderr, o.maxMessages, stats, started);
  // As a shell reports a process a signal ended: 128 + the signal's number.
  for (const [signal, status] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)
    process.once(signal, () => {
      progress.stop();
      process.stdout.write(`interrupted: ${summary(stats, performance.now() - started, 'skipped')}\n`);
      process.exit(status);
    });
  const warned = new Set<string>();
  const warn = (kind: string, text: string): void => {
    if (warned.has(kind)) return;
    warned.add(kind);
    progress.note(`warning: ${text}; retrying every ${RETRY_INTERVAL_MS} ms, as the test program does`);
  };

  process.stderr.write(
    `rockets-launch: ${o.maxMessages} messages for ${o.rockets} rockets to ${url.href}; concurrency ${o.concurrencyLevel}, ` +
      `delay ${o.messageDelayMs} ms, duplicates ${o.duplicates}, shuffle ${o.shuffle}, seed ${o.seed}\n`,
  );
  progress.start();
  /** Why the run stopped before its end, once a sender met an answer it cannot get past. */
  const run: { stop?: string } = {};
  const stopped = (): boolean => run.stop !== undefined;
  const sender = async (): Promise<void> => {
    for (let first = true; !stopped(); first = false) {
      const next = deliveries.next();
      if (next.done === true) return;
      // A pause between two of this sender's messages; none after its last, which would hold up the end.
      if (!first && o.messageDelayMs > 0) await sleep(o.messageDelayMs);
      if (stopped()) return;
      try {
        await deliver(url, o.token, next.value, stats, warn, stopped, o.giveUpAfterMs);
      } catch (e) {
        if (!(e instanceof StopRun)) throw e;
        run.stop ??= e.message;
      }
    }
  };
  await Promise.all(Array.from({ length: o.concurrencyLevel }, sender));
  const elapsed = performance.now() - started;
  progress.stop();
  if (run.stop !== undefined) {
    process.stdout.write(`stopped: ${run.stop}\ndone: ${summary(stats, elapsed, 'skipped')}\n`);
    return 1;
  }

  let verified: Verified = 'skipped';
  if (o.verify) {
    const rocketsUrl = new URL('rockets', url);
    let found: string[];
    try {
      found = differences(model, await readRockets(rocketsUrl, o.token));
    } catch (e) {
      found = [e instanceof Error ? e.message : String(e)];
    }
    verified = found.length === 0 ? 'yes' : 'no';
    if (found.length > 0) {
      process.stdout.write(
        `verify: ${found.length} difference(s) between the generator's model of ${model.size} rockets and GET ${rocketsUrl.href}:\n`,
      );
      for (const line of found.slice(0, MAX_DIFFERENCES_SHOWN)) process.stdout.write(`  ${line}\n`);
      if (found.length > MAX_DIFFERENCES_SHOWN)
        process.stdout.write(`  … and ${found.length - MAX_DIFFERENCES_SHOWN} more\n`);
    }
  }
  process.stdout.write(`done: ${summary(stats, elapsed, verified)}\n`);
  return verified === 'no' ? 1 : 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (status) => {
      process.exitCode = status;
    },
    (e: unknown) => {
      process.stderr.write(`rockets-launch: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}
