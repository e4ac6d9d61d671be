const { availableParallelism } = require('node:os');

/** @type {import('jest').Config} */
module.exports = {
  // jest's default, a worker per core but one, runs files one at a time on 2 cores, where most of a test's
  // time is spent waiting on servers, sockets and disks: two workers took a 2-core machine from 377 s to
  // 248 s for the suite (three, 251 s).
  maxWorkers: Math.max(2, availableParallelism() - 1),
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
