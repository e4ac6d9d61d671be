import { ValidationError } from '../../src/domain/errors';
import { readRetrying } from '../../src/engine/retry';

/** A read that fails with each of `errors` in turn, then answers `value`; counts its calls. */
function reads<T>(errors: readonly Error[], value: T) {
  let calls = 0;
  return {
    read: (): Promise<T> => {
      const e = errors[calls++];
      return e === undefined ? Promise.resolve(value) : Promise.reject(e);
    },
    calls: () => calls,
  };
}

describe('readRetrying', () => {
  it('tries a failed read again until it answers', async () => {
    const r = reads([new Error('connection terminated'), new Error('connection terminated')], 'page');
    await expect(readRetrying(r.read, 5_000, () => false)).resolves.toBe('page');
    expect(r.calls()).toBe(3);
  });

  it('does not try again a refusal, or a damaged store: no wait mends them', async () => {
    const damaged = Object.assign(new Error('database disk image is malformed'), { code: 'SQLITE_CORRUPT' });
    for (const error of [new ValidationError([{ field: 'after', problem: 'is past the end' }]), damaged]) {
      const r = reads([error], 'page');
      await expect(readRetrying(r.read, 5_000, () => false)).rejects.toBe(error);
      expect(r.calls()).toBe(1);
    }
  });

  it('gives up with the last error once the time is out, and stops when the feed closed meanwhile', async () => {
    const down = reads(
      Array.from({ length: 100 }, (_, i) => new Error(`down ${i}`)),
      'page',
    );
    const failed = await readRetrying(down.read, 250, () => false).catch((e: unknown) => e);
    // Tried again (after 100 ms, then the rest), and rejected with the last try's error.
    expect(down.calls()).toBeGreaterThanOrEqual(2);
    expect(failed).toEqual(new Error(`down ${down.calls() - 1}`));
    const closing = reads([new Error('down')], 'page');
    await expect(readRetrying(closing.read, 5_000, () => true)).resolves.toBeUndefined();
    expect(closing.calls()).toBe(1);
  });
});
