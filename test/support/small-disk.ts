/**
 * A disk that fills: a tmpfs of a given size, mounted on a fresh directory, for tests of what a full disk
 * does. Mounting needs root, as the tests and CI run here; without it the test fails, saying so.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface SmallDisk {
  readonly dir: string;
  /** Gives the disk a new size (`8m`): room again, with what it holds kept. */
  resize(size: string): void;
  /** Unmounts it (lazily: a file a failed test left open must not keep the mount behind) and removes it. */
  remove(): void;
}

export function mountSmallDisk(size: string): SmallDisk {
  const dir = mkdtempSync(join(tmpdir(), 'rockets-disk-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`this test mounts a small tmpfs as its full disk, which needs root: ${String(e)}`, { cause: e });
  }
  return {
    dir,
    resize: (to) => execFileSync('mount', ['-o', `remount,size=${to}`, dir]),
    remove: () => {
      execFileSync('umount', ['--lazy', dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
