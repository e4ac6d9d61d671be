/**
 * Every test must check something: a test whose assertions never ran (an awaited branch not taken, a
 * loop over nothing, a callback never called) fails instead of passing without a word.
 */
beforeEach(() => {
  expect.hasAssertions();
});
