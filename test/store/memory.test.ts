import type { Rocket } from '../../src/domain/rocket';
import { MemoryStore } from '../../src/store/memory';
import { createTestClock, describeStoreContract } from './contract';

describeStoreContract('MemoryStore', (options) => {
  const clock = createTestClock();
  const store = new MemoryStore(clock.now, options.bufferLimits);
  return Promise.resolve({
    store,
    clock,
    cleanup: () => store.close(),
    tamperRocket: (row: Rocket) => {
      // The projection is a private map: reached around the type, as only a test may.
      (store as unknown as { rockets: Map<string, Rocket> }).rockets.set(row.channel, row);
      return Promise.resolve();
    },
  });
});
