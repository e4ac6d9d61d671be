import { sameContent, type RocketMessage } from './message';
import { evolve, type Rocket } from './rocket';

/** What a store knows about one channel when a message for it arrives. */
export interface ChannelState {
  readonly rocket: Rocket | undefined;
  /** Messages received ahead of their turn, by number. All are above `rocket.lastMessageNumber + 1`. */
  readonly pending: ReadonlyMap<number, RocketMessage>;
}

export type Decision =
  /** Already applied or already buffered with the same content: acknowledge, change nothing. */
  | { readonly outcome: 'duplicate' }
  /** Same (channel, number) as a message already received, with different content: the first stands. */
  | { readonly outcome: 'conflict' }
  /** Ahead of its turn: keep it until the gap before it fills. */
  | { readonly outcome: 'buffered' }
  /**
   * Its turn: `applied` is this message followed by every buffered one it unblocked, in number order;
   * `rocket` is the state after all of them.
   */
  | { readonly outcome: 'applied'; readonly applied: readonly RocketMessage[]; readonly rocket: Rocket };

export const nextExpected = (state: ChannelState): number => (state.rocket?.lastMessageNumber ?? 0) + 1;

/**
 * Decides what one message does to its channel. Pure: the store persists the decision.
 *
 * @param appliedTwin the already-applied message with the same number, which the store must look up
 *   whenever `m.messageNumber < nextExpected(state)`; it tells a redelivery from a conflict.
 */
export function decide(state: ChannelState, m: RocketMessage, appliedTwin?: RocketMessage): Decision {
  const expected = nextExpected(state);
  if (m.messageNumber < expected) {
    if (appliedTwin === undefined) throw new Error(`decide needs the applied message #${m.messageNumber}`);
    return { outcome: sameContent(m, appliedTwin) ? 'duplicate' : 'conflict' };
  }
  const buffered = state.pending.get(m.messageNumber);
  if (buffered !== undefined) return { outcome: sameContent(m, buffered) ? 'duplicate' : 'conflict' };
  if (m.messageNumber > expected) return { outcome: 'buffered' };

  const applied = [m];
  let rocket = evolve(state.rocket, m);
  for (let n = m.messageNumber + 1; ; n++) {
    const next = state.pending.get(n);
    if (next === undefined) break;
    applied.push(next);
    rocket = evolve(rocket, next);
  }
  return { outcome: 'applied', applied, rocket };
}
