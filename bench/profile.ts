/**
 * Self time of a V8 `.cpuprofile` (from `node --cpu-prof`): the functions, and the files or packages,
 * where the samples landed. Also runnable alone: `node dist/bench/profile.js <file.cpuprofile> [top]`.
 */
import { readFileSync } from 'node:fs';
import { ROOT } from './harness';

interface CpuProfile {
  readonly nodes: ReadonlyArray<{
    readonly id: number;
    readonly callFrame: {
      readonly functionName: string;
      readonly url: string;
      readonly lineNumber: number;
    };
  }>;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

export interface ProfileSummary {
  readonly totalMs: number;
  /** Busy time: everything but `(idle)`. */
  readonly busyMs: number;
  readonly functions: ReadonlyArray<{ readonly name: string; readonly ms: number }>;
  readonly places: ReadonlyArray<{ readonly name: string; readonly ms: number }>;
}

/** Where a script lives: a package under node_modules, node's own code, or a file of ours. */
function place(url: string): string {
  if (url === '') return '(native / VM)';
  if (url.startsWith('node:')) return 'node internals';
  const path = url.replace(/^file:\/\//, '');
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path);
  if (pkg) return pkg[1] ?? path;
  return path.startsWith(ROOT) ? path.slice(ROOT.length + 1) : path;
}

const top = (m: Map<string, number>, n: number): Array<{ name: string; ms: number }> =>
  [...m.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, us]) => ({ name, ms: us / 1000 }));

export function summarise(file: string, n = 25): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const functions = new Map<string, number>();
  const places = new Map<string, number>();
  let total = 0;
  let idle = 0;
  profile.samples.forEach((id, i) => {
    const us = profile.timeDeltas[i] ?? 0;
    const f = byId.get(id);
    if (!f) return;
    total += us;
    if (f.functionName === '(idle)') idle += us;
    const where = place(f.url);
    const name = `${f.functionName || '(anonymous)'} ${where}${f.url === '' ? '' : `:${f.lineNumber + 1}`}`;
    functions.set(name, (functions.get(name) ?? 0) + us);
    const group = f.url === '' ? f.functionName || '(anonymous)' : where;
    places.set(group, (places.get(group) ?? 0) + us);
  });
  return { totalMs: total / 1000, busyMs: (total - idle) / 1000, functions: top(functions, n), places: top(places, n) };
}

export function formatSummary(title: string, s: ProfileSummary): string {
  const pct = (ms: number): string => `${((100 * ms) / s.totalMs).toFixed(1)}%`;
  const lines = [
    `### ${title}`,
    '',
    `${Math.round(s.totalMs)} ms sampled, ${pct(s.busyMs)} busy.`,
    '',
    '| self time | function |',
    '|---:|---|',
    ...s.functions.map((f) => `| ${pct(f.ms)} | \`${f.name}\` |`),
    '',
    '| self time | package / file |',
    '|---:|---|',
    ...s.places.map((f) => `| ${pct(f.ms)} | \`${f.name}\` |`),
    '',
  ];
  return lines.join('\n');
}

if (require.main === module) {
  const [file, n] = process.argv.slice(2);
  if (file === undefined) throw new Error('usage: node dist/bench/profile.js <file.cpuprofile> [top]');
  console.log(formatSummary(file, summarise(file, Number(n ?? 25))));
}
