import type { MessageType } from '../domain/message';
import type { SubmitStatus } from '../store/types';

/**
 * What the engine reports while it works. Metrics implement it; the engine never imports a metrics
 * library. Every method is called on the hot path: it must be cheap and must not throw.
 */
export interface Telemetry {
  /** A message passed validation; `messageType` is its type. */
  received(messageType: string): void;
  /**
   * A submission failed validation (nothing stored); `messageType` is its type when it named one of the
   * known types, and `undefined` otherwise (never the sender's text: labels stay few).
   */
  rejected(messageType: MessageType | undefined): void;
  /** The store decided a message's fate. */
  decided(status: SubmitStatus, messageType: string): void;
  /** One store commit of `messages` messages took `seconds`. */
  committed(seconds: number, messages: number): void;
  /** A store commit failed: its messages were not acknowledged. */
  storeFailed(): void;
  /** `count` items were handed to live subscribers. */
  delivered(count: number): void;
}

export const noTelemetry: Telemetry = {
  received: () => undefined,
  rejected: () => undefined,
  decided: () => undefined,
  committed: () => undefined,
  storeFailed: () => undefined,
  delivered: () => undefined,
};
