import { MemoryStore } from '../../src/store/memory';
import { createTestClock, describeStoreContract } from './contract';

describeStoreContract('MemoryStore', (options) => {
  const clock = createTestClock();
  const store = new MemoryStore(clock.now, options.bufferLimits);
  return Promise.resolve({ store, clock, cleanup: () => store.close() });
});
