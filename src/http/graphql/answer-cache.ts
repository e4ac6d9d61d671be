import { ENTRY_BYTES, KeptAnswers } from '../kept-answers';

/** What the answer cache of queries holds at most, in bytes of answers and UTF-16 code units of keys. */
const ANSWER_CACHE_SIZE = 8 * 1024 * 1024;
/** Larger answers (every rocket of a big fleet) are not kept, nor are questions with a longer key. */
const ANSWER_CACHE_MAX_ANSWER = 1024 * 1024;
const ANSWER_CACHE_MAX_KEY = 16 * 1024;

/** A GraphQL-over-HTTP request as graphql-http parsed it: what its answer depends on, with the data. */
export interface Question {
  readonly query: string;
  readonly operationName?: string | null | undefined;
  readonly variables?: Readonly<Record<string, unknown>> | null | undefined;
}

/**
 * Serialised answers of queries over HTTP, by query text, operation name and variables, kept while the
 * service's `readVersion()` stays the same (`KeptAnswers`). Only answers of queries without errors are kept
 * (so nothing depends on who asked: only mutations do). A request whose query text has no answer kept costs
 * one map lookup (no key is built), so mutations pay next to nothing.
 */
export class AnswerCache {
  /** How many answers are kept for each query text. */
  private readonly texts = new Map<string, number>();
  private readonly kept = new KeptAnswers<{ readonly query: string; readonly answer: Buffer }>(
    ANSWER_CACHE_SIZE,
    (key, e) => ENTRY_BYTES + key.length + e.answer.length,
    {
      dropped: (_, e) => {
        const left = (this.texts.get(e.query) ?? 1) - 1;
        if (left > 0) this.texts.set(e.query, left);
        else this.texts.delete(e.query);
      },
      cleared: () => {
        this.texts.clear();
      },
    },
  );

  /** undefined (not kept) for a long key, or variables nested too deep for JSON.stringify. */
  private static keyOf(q: Question): string | undefined {
    let variables: string;
    try {
      variables = JSON.stringify(q.variables ?? null);
    } catch {
      return undefined;
    }
    const key = `${q.operationName ?? ''}\n${variables}\n${q.query}`;
    return key.length <= ANSWER_CACHE_MAX_KEY ? key : undefined;
  }

  get(q: Question, version: number): Buffer | undefined {
    if (!this.kept.at(version) || !this.texts.has(q.query)) return undefined;
    const key = AnswerCache.keyOf(q);
    return key === undefined ? undefined : this.kept.get(key, version)?.answer;
  }

  /** Keeps an answer computed after `version` was read; a later version drops it. */
  set(q: Question, version: number, answer: Buffer): void {
    if (answer.length > ANSWER_CACHE_MAX_ANSWER) return;
    const key = AnswerCache.keyOf(q);
    if (key !== undefined && this.kept.set(key, version, { query: q.query, answer }))
      this.texts.set(q.query, (this.texts.get(q.query) ?? 0) + 1);
  }
}
