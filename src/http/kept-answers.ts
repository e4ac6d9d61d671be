/** About what an entry costs beyond its key and value: the map entry and the objects that hold the value. */
export const ENTRY_BYTES = 200;

/**
 * Serialised answers kept by key while the service's `readVersion()` stays the same: the REST and GraphQL
 * transports' read caches. A lookup under another version drops them all; an answer computed under an
 * earlier version than the last one seen is refused. Versions only grow, and every lookup passes the
 * current one, so an answer kept for a version that has since moved on is never served. Bounded by the
 * weight of what it holds (in bytes, as the caller weighs it); least recently used first out.
 */
export class KeptAnswers<V> {
  private seen: number | undefined;
  private readonly entries = new Map<string, V>();
  private size = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly weigh: (key: string, value: V) => number,
    /** Told of each entry that goes: evicted (`dropped`), or all at once when the version moves (`cleared`). */
    private readonly hooks: { dropped?(key: string, value: V): void; cleared?(): void } = {},
  ) {}

  /** How many answers are kept. */
  get count(): number {
    return this.entries.size;
  }

  /**
   * Whether answers may be served under `version`, the service's `readVersion()` now: never while it is
   * undefined. A version other than the last one seen drops everything kept.
   */
  at(version: number | undefined): boolean {
    if (version === undefined) return false;
    if (version !== this.seen) this.moveTo(version);
    return true;
  }

  /** The answer kept for `key` under `version`, now the most recently used. */
  get(key: string, version: number | undefined): V | undefined {
    if (!this.at(version)) return undefined;
    const hit = this.entries.get(key);
    if (hit === undefined) return undefined;
    this.entries.delete(key);
    this.entries.set(key, hit);
    return hit;
  }

  /**
   * Keeps an answer computed after `since` was read from `readVersion()`, unless a later version was seen
   * meanwhile, one is kept for `key` already, or it weighs more than the whole bound. Returns whether kept.
   */
  set(key: string, since: number | undefined, value: V): boolean {
    if (since === undefined || (this.seen !== undefined && since < this.seen) || this.entries.has(key)) return false;
    const weight = this.weigh(key, value);
    if (weight > this.maxBytes) return false;
    if (since !== this.seen) this.moveTo(since);
    this.entries.set(key, value);
    this.size += weight;
    for (const [k, v] of this.entries) {
      if (this.size <= this.maxBytes) break;
      this.entries.delete(k);
      this.size -= this.weigh(k, v);
      this.hooks.dropped?.(k, v);
    }
    return true;
  }

  private moveTo(version: number): void {
    this.entries.clear();
    this.size = 0;
    this.seen = version;
    this.hooks.cleared?.();
  }
}
