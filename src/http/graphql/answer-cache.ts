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

/** An answer kept for a request as sent: its body, and the media type it was sent as. */
export interface KeptReply {
  readonly answer: Buffer;
  readonly type: string;
}

/** A JSON.stringify replacer that throws on a number JSON cannot write (it would write it as `null`). */
const finiteOnly = (_key: string, value: unknown): unknown => {
  if (typeof value === 'number' && !Number.isFinite(value)) throw new RangeError('not a JSON number');
  return value;
};

/**
 * Serialised answers of queries over HTTP, by query text, operation name and variables, kept while the
 * service's `readVersion()` stays the same (`KeptAnswers`). Only answers of queries without errors are kept
 * (so nothing depends on who asked: only mutations do). A request whose query text has no answer kept costs
 * one map lookup (no key is built), so mutations pay next to nothing.
 *
 * The same answers are also kept by the request as sent (`replyTo`): a request whose method, media types
 * and body (or target, for a GET) equal those of one answered from here at this version is answered again
 * before graphql-http parses it. Equal bytes ask the same question, and were accepted as a request before.
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

  /** The same answers by request as sent (`replyTo`), bounded apart: they share their bytes with those above. */
  private readonly replies = new KeptAnswers<KeptReply>(
    ANSWER_CACHE_SIZE,
    (key, r) => ENTRY_BYTES + key.length + r.answer.length,
  );

  /**
   * The answer kept for a request as sent, at `version`: its method (GET for a HEAD), the media types it
   * was sent with and asks for, and its body, or its target for a GET. No key is built while none is kept.
   */
  replyTo(
    method: string,
    contentType: string | undefined,
    accept: string | undefined,
    sent: string,
    version: number | undefined,
  ): KeptReply | undefined {
    if (this.replies.count === 0) return undefined;
    const key = AnswerCache.requestKey(method, contentType, accept, sent);
    return key === undefined ? undefined : this.replies.get(key, version);
  }

  /** Keeps an answer of the cache's, computed after `version` was read, as the reply to a request as sent. */
  keepReply(
    method: string,
    contentType: string | undefined,
    accept: string | undefined,
    sent: string,
    version: number,
    reply: KeptReply,
  ): void {
    const key = AnswerCache.requestKey(method, contentType, accept, sent);
    if (key !== undefined) this.replies.set(key, version, reply);
  }

  /** What a reply depends on besides the read version; undefined (not kept) past a question's key length. */
  private static requestKey(
    method: string,
    contentType: string | undefined,
    accept: string | undefined,
    sent: string,
  ): string | undefined {
    return sent.length <= ANSWER_CACHE_MAX_KEY
      ? `${method}\n${contentType ?? ''}\n${accept ?? ''}\n${sent}`
      : undefined;
  }

  /**
   * undefined (not kept) for a long key, variables nested too deep for JSON.stringify, or variables that
   * hold a number JSON cannot write: JSON.parse reads `1e400` as Infinity, which JSON.stringify writes as
   * `null`, and graphql-js refuses for an Int where it takes a null.
   */
  private static keyOf(q: Question): string | undefined {
    let variables: string;
    try {
      variables = JSON.stringify(q.variables ?? null, finiteOnly);
    } catch {
      return undefined;
    }
    // As JSON: no operation name (null) is not an empty one, which names no operation and is refused.
    const key = `${JSON.stringify(q.operationName ?? null)}\n${variables}\n${q.query}`;
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
