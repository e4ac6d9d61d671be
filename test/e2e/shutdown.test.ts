import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { delivery, fleet } from '../support/model';
import { getJson, pool, postJson, startServer, type ServerProcess } from '../support/process';

describe('graceful shutdown', () => {
  let dir: string;
  let server: ServerProcess | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rockets-stop-'));
  });
  afterEach(async () => {
    await server?.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it.each(['SIGTERM', 'SIGINT'] as const)(
    'on %s under load exits 0, and everything it acknowledged is stored',
    async (signal) => {
      const url = `sqlite:${join(dir, 'rockets.db')}`;
      const s = (server = await startServer({ DATABASE_URL: url }));
      const acked: Array<{ channel: string; n: number }> = [];
      let stopping: Promise<number | string> | undefined;
      await pool(delivery(fleet(20, 30, 11), 0, 12), 8, async (m) => {
        if (stopping) return;
        try {
          const r = await postJson(`${s.url}/messages`, m);
          if (r.status === 202) acked.push({ channel: m.metadata.channel, n: m.metadata.messageNumber });
        } catch {
          // Refused or cut while stopping: not acknowledged.
        }
        stopping ??= acked.length >= 200 ? s.stop(signal) : undefined;
      });
      expect(await stopping).toBe(0);
      expect(s.output.some((l) => l.includes('"stopping"'))).toBe(true);

      const again = (server = await startServer({ DATABASE_URL: url }));
      // Every message is distinct (no duplicates in this stream): each acknowledged one is a stored row.
      const health = (await getJson(`${again.url}/health`)).body as { events: number; buffered: number };
      expect(health.events + health.buffered).toBeGreaterThanOrEqual(acked.length);
    },
  );
});
