import { setTimeout as sleep } from 'node:timers/promises';
import { isDomainError } from '../domain/errors';
import { STORE_DAMAGED, storeFaultOf } from '../store/faults';

/**
 * A store read of a live feed's catch-up, tried again while the store fails (a dropped connection, a
 * database restarting): after 100 ms, then twice as long each time up to 2 s, for `retryMs` in all, the
 * last wait cut short so that the last try comes as it runs out; then it rejects with the read's error.
 * A refusal (a domain error) and a damaged store are not tried again: no wait mends them. Resolves to
 * undefined once `closed()` says the feed ended meanwhile.
 */
export async function readRetrying<T>(
  read: () => Promise<T>,
  retryMs: number,
  closed: () => boolean,
): Promise<T | undefined> {
  const started = performance.now();
  for (let wait = 100; ; wait = Math.min(2 * wait, 2000)) {
    try {
      return await read();
    } catch (e) {
      const left = retryMs - (performance.now() - started);
      if (isDomainError(e) || storeFaultOf(e) === STORE_DAMAGED || left <= 0) throw e;
      await sleep(Math.min(wait, left), undefined, { ref: false });
    }
    if (closed()) return undefined;
  }
}
