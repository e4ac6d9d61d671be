import { MemoryStore } from '../../src/store/memory';
import { createTestClock, describeStoreContract } from './contract';

describeStoreContract('MemoryStore', () => {
  const clock = createTestClock();
  const store = new MemoryStore(clock.now);
  return Promise.resolve({ store, clock, cleanup: () => store.close() });
});
