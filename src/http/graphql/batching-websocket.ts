import { isUtf8 } from 'node:buffer';
import type { Duplex } from 'node:stream';
import { WebSocket } from 'ws';

/** Bytes a socket may hold unsent before a send waits for the write to finish, as every send of ws does. */
export const SEND_HIGH_WATER = 64 * 1024;

/** RFC 6455: a frame's data is not what its type says (here, not UTF-8). */
const INVALID_PAYLOAD = 1007;

type SendCallback = (err?: Error) => void;
type SendOptions = Exclude<Parameters<WebSocket['send']>[1], SendCallback | undefined>;

/**
 * A server-side WebSocket whose frames sent in one turn of the event loop leave in one write (one system
 * call), instead of one write each.
 *
 * graphql-ws waits for each frame's write to finish before it sends a subscription's next event, so a
 * subscriber of every rocket, handed several events by one commit, cost a write and a turn of the event loop
 * per event. Here a send completes at once while the socket holds less than `SEND_HIGH_WATER` unsent bytes:
 * the subscription sends its next event in the same turn, and the frames wait, corked, until the turn ends.
 * Past that mark a send completes only when its write does, so a client that stops reading still fills
 * its subscriptions' bounded buffers (and is dropped with FELL_BEHIND) instead of the server's memory. A
 * write that fails closes the socket, which ends its subscriptions, as before.
 */
export class BatchingWebSocket extends WebSocket {
  private tcp: Duplex | undefined;
  private corked = false;

  /** The upgraded connection ws writes to; call before the first send. */
  attach(socket: Duplex): void {
    this.tcp = socket;
  }

  override send(data: Parameters<WebSocket['send']>[0], cb?: SendCallback): void;
  override send(data: Parameters<WebSocket['send']>[0], options: SendOptions, cb?: SendCallback): void;
  override send(
    data: Parameters<WebSocket['send']>[0],
    optionsOrCb?: SendOptions | SendCallback,
    maybeCb?: SendCallback,
  ): void {
    const options = typeof optionsOrCb === 'function' ? {} : (optionsOrCb ?? {});
    const cb = typeof optionsOrCb === 'function' ? optionsOrCb : maybeCb;
    if (this.readyState !== WebSocket.OPEN) {
      super.send(data, options, cb);
      return;
    }
    this.corkForThisTurn();
    if (cb === undefined || this.bufferedAmount >= SEND_HIGH_WATER) {
      super.send(data, options, cb);
      return;
    }
    super.send(data, options);
    queueMicrotask(() => cb());
  }

  /**
   * graphql-ws reads every frame as text. ws checks a text frame's UTF-8, but a binary frame would be
   * decoded with U+FFFD for its bad bytes, and two channels could read as one, as over HTTP: a binary frame
   * that is not UTF-8 closes the socket with 1007 (invalid frame payload data) before anyone reads it.
   */
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'message') {
      // Frames that were already on the way when the socket began to close are read no more, as ws does
      // after a text frame that is not UTF-8.
      if (this.readyState !== WebSocket.OPEN) return true;
      if (args[1] === true && Buffer.isBuffer(args[0]) && !isUtf8(args[0])) {
        this.close(INVALID_PAYLOAD, 'a binary frame that is not UTF-8: send graphql-ws messages as text');
        return true;
      }
    }
    return super.emit(event, ...args);
  }

  /**
   * Corks the connection until the promise jobs of this turn have run (a tick queued from one of them runs
   * after them all), so that every frame they send leaves in one write.
   */
  private corkForThisTurn(): void {
    const tcp = this.tcp;
    if (this.corked || tcp === undefined || !tcp.writable) return;
    this.corked = true;
    tcp.cork();
    process.nextTick(() => {
      this.corked = false;
      tcp.uncork();
    });
  }
}
