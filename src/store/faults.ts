/**
 * Failures of a store that no retry soon will mend, told apart from the rest so that callers hear what is
 * wrong instead of "Unexpected error.": its disk is full, or its file is damaged. Each store's driver says
 * so in its own codes (SQLite's result codes, PostgreSQL's SQLSTATEs); this is the one place that reads
 * them.
 */

/** What an operator must do before the store works again. */
export interface StoreFault {
  readonly code: 'STORAGE_FULL' | 'STORE_DAMAGED';
  /** Said to the caller: what is wrong, and whether trying again can help. */
  readonly message: string;
  /** The HTTP status of an answer that failed on it. */
  readonly status: 503 | 500;
  /** Seconds before trying again is worth it; none when it will not help. */
  readonly retryAfterSeconds?: number;
}

export const STORAGE_FULL: StoreFault = {
  code: 'STORAGE_FULL',
  message:
    "the server's disk is full: nothing was done, and no message can be stored until its operator frees space; try again later",
  status: 503,
  retryAfterSeconds: 30,
};

export const STORE_DAMAGED: StoreFault = {
  code: 'STORE_DAMAGED',
  message: "the server's store is damaged: trying again will not help until its operator repairs it",
  status: 500,
};

/**
 * Codes of a full disk: SQLite's (`database or disk is full`; on a read too, as a read first writes what
 * the rockets table lags behind) and PostgreSQL's `disk_full`. Not the file system's `ENOSPC` of a failed
 * WAL sync: after one, nothing is known to be on disk until a restart (see WalSync), and "later" would not
 * be true.
 */
const FULL = new Set(['SQLITE_FULL', '53100']);

/**
 * Codes of a damaged store: SQLite's (a page that is not what it should be, a file that is not a
 * database), PostgreSQL's `data_corrupted` and `index_corrupted`.
 */
const DAMAGED = new Set(['SQLITE_CORRUPT', 'SQLITE_NOTADB', 'XX001', 'XX002']);

/** The fault behind `error`, looked for down its chain of causes (a GraphQL error's too), or undefined. */
export function storeFaultOf(error: unknown): StoreFault | undefined {
  const seen = new Set<unknown>();
  for (let e = error; typeof e === 'object' && e !== null && !seen.has(e);) {
    seen.add(e);
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') {
      if (FULL.has(code)) return STORAGE_FULL;
      // SQLite's extended codes name the kind: SQLITE_CORRUPT_INDEX, SQLITE_CORRUPT_VTAB.
      if (DAMAGED.has(code) || code.startsWith('SQLITE_CORRUPT_')) return STORE_DAMAGED;
    }
    e = (e as { originalError?: unknown }).originalError ?? (e as { cause?: unknown }).cause;
  }
  return undefined;
}
