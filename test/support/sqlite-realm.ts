/**
 * Run before each test file (jest `setupFiles`). better-sqlite3 gives its native addon the `SqliteError`
 * class once per process, when the first database opens, and jest hands every test file of a worker the
 * same addon. Each file runs in its own realm, with its own `Error`: in every file after the first that
 * opened a database, SqliteErrors would not be `instanceof Error`, and `rejects.toThrow(...)` would say
 * "did not throw" of a rejection that carries the expected error. Clearing the flag makes the addon take
 * this file's class when this file first opens a database.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const addon = require('better-sqlite3/build/Release/better_sqlite3.node') as { isInitialized?: boolean };
addon.isInitialized = false;
