/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': 'ts-jest' },
  // Each test file's SqliteErrors of its own realm: see the file.
  setupFiles: ['<rootDir>/test/support/sqlite-realm.ts'],
  setupFilesAfterEnv: ['<rootDir>/test/support/assertions.ts'],
  // Real databases and child processes: give slow CI machines room, never used as a timing assertion.
  testTimeout: 60_000,
};
