/**
 * better-sqlite3's `Database`, opened so that none of its native objects is garbage collected while the
 * process runs.
 *
 * Why: under Node 24 (from 24.19), collecting a better-sqlite3 12 database, statement or statement
 * iterator in a garbage collection that V8 runs from a task, rather than from JavaScript, aborts the
 * process: the object's destructor asks for the current Node environment, and outside a context there is
 * none (`Assertion failed: (env) != nullptr` in `RemoveEnvironmentCleanupHook`; better-sqlite3 issue
 * 1515). It strikes at any moment after such an object becomes garbage, not only at exit. better-sqlite3
 * 13 fixes it, but needs Node 22, and the service runs on Node 20 too.
 *
 * So every database opened here, every statement prepared on one (`pragma` included: better-sqlite3's
 * own prepares a statement nothing can keep), and every iterator asked for through `rowsOf` stays
 * reachable until the process exits, when Node deletes them itself while its environment still exists.
 * A store prepares each of a bounded set of statements once (some on first use) and never one per
 * request, so what is kept is bounded by the databases opened: closing one still finalizes its statements
 * and frees SQLite's memory, and only the small wrappers stay (4.6 KiB of heap a store). Every other
 * module opens SQLite through here (lint enforces it).
 */
// eslint-disable-next-line no-restricted-imports -- the one module that may open better-sqlite3 itself.
import Database from 'better-sqlite3';

const kept: object[] = [];

const keep = <T extends object>(o: T): T => {
  kept.push(o);
  return o;
};

export class SqliteDatabase extends Database {
  constructor(file: string, options?: Database.Options) {
    super(file, options);
    keep(this);
  }

  override prepare<BindParameters extends unknown[] | object = unknown[], Result = unknown>(
    source: string,
  ): Database.Statement<BindParameters, Result> {
    return keep(super.prepare<BindParameters, Result>(source));
  }

  /**
   * As better-sqlite3's `pragma`, with its statement prepared (and kept) like any other. A pragma that
   * answers nothing (`synchronous = FULL`) is run, and gives `[]` as better-sqlite3's does (`undefined`
   * when `simple`).
   */
  override pragma(source: string, options?: Database.PragmaOptions): unknown {
    const statement = this.prepare(`PRAGMA ${source}`);
    const simple = options?.simple === true;
    if (!statement.reader) {
      statement.run();
      return simple ? undefined : [];
    }
    return simple ? statement.pluck().get() : statement.all();
  }
}

/** `statement.iterate(...parameters)`, with the iterator kept: a store iterates only to rebuild or recover. */
export function rowsOf<P extends unknown[], R>(statement: Database.Statement<P, R>, ...parameters: P): Iterable<R> {
  // eslint-disable-next-line no-restricted-properties -- the one place that iterates, keeping the iterator.
  return keep(statement.iterate(...parameters));
}
