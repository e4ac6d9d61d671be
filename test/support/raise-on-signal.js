// Preloaded into the built server (NODE_OPTIONS=--require) by test/e2e/cli.test.ts: on SIGUSR2, a fault
// that no handler catches, of the kind RAISE names: "exception", thrown from a callback, or "rejection",
// a promise rejected with no handler.
'use strict';
process.on('SIGUSR2', () => {
  setImmediate(() => {
    if (process.env.RAISE === 'rejection') void Promise.reject(new Error('raised by the test: rejection'));
    else throw new Error('raised by the test: exception');
  });
});
