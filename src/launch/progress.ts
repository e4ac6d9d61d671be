/** The progress of a run, written to stderr while it sends. */
import type { Stats } from './sending';

/** A bar rewritten in place on a terminal; plain lines every 5 s or 10 % otherwise. */
export class Progress {
  private timer: NodeJS.Timeout | undefined;
  private lastLineAt: number;
  private lastDecile = 0;
  private stopped = false;

  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly total: number,
    private readonly stats: Stats,
    private readonly started: number,
  ) {
    this.lastLineAt = started;
  }

  start(): void {
    this.timer = setInterval(
      () => {
        this.render();
      },
      this.out.isTTY ? 100 : 500,
    );
    this.timer.unref();
  }

  /** A line of its own, above the bar. */
  note(line: string): void {
    if (this.out.isTTY) this.out.write('\r\x1b[K');
    this.out.write(`${line}\n`);
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    this.render();
    if (this.out.isTTY) this.out.write('\n');
  }

  private render(): void {
    const now = performance.now();
    const { acknowledged, retried } = this.stats;
    const seconds = (now - this.started) / 1000;
    const rate = seconds > 0 ? acknowledged / seconds : 0;
    const percent = Math.floor((acknowledged * 100) / this.total);
    if (this.out.isTTY) {
      const width = 30;
      const filled = Math.floor((width * acknowledged) / this.total);
      const left =
        rate > 0 && acknowledged < this.total ? `, ${Math.ceil((this.total - acknowledged) / rate)} s left` : '';
      const line =
        `[${'█'.repeat(filled)}${'░'.repeat(width - filled)}] ${percent}% ${acknowledged}/${this.total}, ` +
        `${Math.round(rate)} msg/s, retried ${retried}${left}`;
      this.out.write(`\r${this.out.columns > 1 ? line.slice(0, this.out.columns - 1) : line}\x1b[K`);
      return;
    }
    const decile = Math.floor(percent / 10);
    if (now - this.lastLineAt < 5000 && decile <= this.lastDecile) return;
    this.lastLineAt = now;
    this.lastDecile = decile;
    this.out.write(
      `progress: ${percent}% (${acknowledged}/${this.total} acknowledged), ${Math.round(rate)} msg/s, ` +
        `retried ${retried}, ${seconds.toFixed(1)} s\n`,
    );
  }
}
