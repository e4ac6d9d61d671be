import { existsSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, extname, join } from 'node:path';
import type { Logger } from 'pino';
import {
  COMPRESS_MIN_BYTES,
  READ_METHODS,
  codedTag,
  codingOf,
  compressOnce,
  etagMatches,
  etagOf,
  sendMethodNotAllowed,
  sendProblem,
  withVary,
  type Coding,
} from './io';

/** The page's own files, committed as-is: plain HTML, CSS and one ES module, with no build step. */
const PAGE_FILES = ['index.html', 'dashboard.css', 'dashboard.js'] as const;

/** URL prefix of every asset; the page itself is at `/`. */
const PREFIX = '/dashboard/';

/** Where the graphql-ws browser client (its ES module build and the chunks it imports) is served. */
const CLIENT_PREFIX = `${PREFIX}graphql-ws/`;

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
};

/**
 * The page loads only its own files and talks only to this server (REST, and graphql-ws on /graphql, which
 * `'self'` covers for ws: and wss: as well).
 */
const PAGE_HEADERS = {
  'content-security-policy': [
    "default-src 'self'",
    "img-src 'self' data:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; '),
  'referrer-policy': 'no-referrer',
};

/** A file as it is sent: its body, and for one of 1 KiB or more the same compressed, with its own tag. */
interface Representation {
  readonly body: Buffer;
  readonly etag: string;
}

interface Asset extends Representation {
  readonly type: string;
  /** The file in each coding, for one of 1 KiB or more. */
  readonly coded?: Readonly<Record<Coding, Representation>>;
  readonly headers?: Record<string, string>;
}

/** A file, compressed once here, when the server starts (`compressOnce`). */
function asset(body: Buffer, name: string, headers?: Record<string, string>): Asset {
  const etag = etagOf(body);
  const as = (coding: Coding): Representation => ({
    body: compressOnce(body, coding),
    etag: codedTag(etag, coding),
  });
  const coded = body.length >= COMPRESS_MIN_BYTES ? { br: as('br'), gzip: as('gzip') } : undefined;
  return { body, etag, type: TYPES[extname(name)] ?? 'application/octet-stream', coded, headers };
}

/**
 * Where the page's files are. tsc copies no assets, so they stay in the source tree: next to this module when
 * it runs from `src/http/` (ts-jest, ts-node), and three levels up when it runs compiled from `dist/src/http/`.
 * A copy next to the compiled module (`dist/src/http/dashboard/`) wins, for deployments that ship no `src/`.
 */
export function dashboardDir(from: string = __dirname): string | undefined {
  const candidates = [join(from, 'dashboard'), join(from, '..', '..', '..', 'src', 'http', 'dashboard')];
  return candidates.find((dir) => existsSync(join(dir, 'index.html')));
}

/**
 * The graphql-ws browser client: `dist/client.js` of the installed package and every chunk it imports,
 * by file name. Throws if it imports anything a browser could not load from the same folder.
 */
export function graphqlWsClient(): Map<string, Buffer> {
  // The CommonJS entry (`dist/client.cjs`) resolves here; its ES module twin sits next to it.
  const dir = dirname(require.resolve('graphql-ws/client'));
  const files = new Map<string, Buffer>();
  const visit = (name: string): void => {
    if (files.has(name)) return;
    const body = readFileSync(join(dir, name));
    files.set(name, body);
    // Statements at the start of a line only: the client's own messages mention `import … from 'ws'`.
    for (const m of body.toString('utf8').matchAll(/^(?:import|export)\b[^;'"]*?['"]([^'"]+)['"]/gm)) {
      const spec = m[1] as string;
      if (!/^\.\/[\w.-]+\.js$/.test(spec))
        throw new Error(`graphql-ws's browser client imports "${spec}", which the dashboard cannot serve`);
      visit(spec.slice(2));
    }
  };
  visit('client.js');
  return files;
}

/** Loads every file once; the reason they are missing, if they are. */
function loadAssets(): { assets: Map<string, Asset>; missing?: string } {
  const assets = new Map<string, Asset>();
  const dir = dashboardDir();
  if (dir === undefined)
    return { assets, missing: `its files were not found (looked for src/http/dashboard/ from ${__dirname})` };
  for (const name of PAGE_FILES) {
    const path = name === 'index.html' ? '/' : PREFIX + name;
    assets.set(path, asset(readFileSync(join(dir, name)), name, name === 'index.html' ? PAGE_HEADERS : undefined));
  }
  try {
    for (const [name, body] of graphqlWsClient()) assets.set(CLIENT_PREFIX + name, asset(body, name));
  } catch (e) {
    return { assets, missing: `the graphql-ws browser client could not be loaded: ${(e as Error).message}` };
  }
  return { assets };
}

export interface Dashboard {
  /**
   * Answers `GET /` with the live dashboard page, and `/dashboard/…` with its assets. Returns false, having
   * answered nothing, for any other path. Never throws.
   */
  handle(req: IncomingMessage, res: ServerResponse, url: URL): boolean;
  /** The methods a path answers besides OPTIONS: READ_METHODS for a file, else undefined (no route). */
  methodsOf(path: string): string | undefined;
}

/**
 * The live dashboard: a static page and one ES module that read the fleet through GraphQL (one query, then a
 * `rocketUpdated` subscription over graphql-ws) and REST (`/gaps`, `/rockets/:channel/events`). The files are
 * read once, here; if they are missing the routes answer 404 saying so (and it is logged), and the rest of the
 * server is unaffected.
 *
 * Every file is sent with `cache-control: no-cache` and an ETag: their URLs carry no version, so a browser
 * revalidates (a 304 when unchanged) and picks up a new version as soon as the server has one.
 */
export function createDashboard(log?: Logger): Dashboard {
  const { assets, missing } = loadAssets();
  if (missing !== undefined) log?.warn(`dashboard unavailable: ${missing}`);

  return {
    handle(req, res, url) {
      const path = url.pathname;
      if (path !== '/' && !path.startsWith(PREFIX)) return false;
      // A path that is no file is no route, whatever the method: a 405 would say it exists.
      const file = assets.get(path);
      if (file === undefined) {
        const message = missing !== undefined ? `the dashboard is unavailable: ${missing}` : `no route for ${path}`;
        sendProblem(res, 404, { code: 'NOT_FOUND', message });
        return true;
      }
      const method = req.method ?? 'GET';
      if (method !== 'GET' && method !== 'HEAD') {
        sendMethodNotAllowed(res, READ_METHODS);
        return true;
      }
      const coding = file.coded === undefined ? undefined : codingOf(req.headers['accept-encoding']);
      const sent: Representation = coding === undefined || file.coded === undefined ? file : file.coded[coding];
      const headers: Record<string, string> = {
        'cache-control': 'no-cache',
        etag: sent.etag,
        'x-content-type-options': 'nosniff',
        // Beside the `Vary: Origin` of a page's CORS allowance, if it has one.
        ...(file.coded === undefined ? {} : { vary: withVary(res, 'accept-encoding') }),
        ...file.headers,
      };
      if (etagMatches(req.headers['if-none-match'], sent.etag)) {
        res.writeHead(304, headers);
        res.end();
        return true;
      }
      res.writeHead(200, {
        ...headers,
        'content-type': file.type,
        ...(coding === undefined ? {} : { 'content-encoding': coding }),
        'content-length': String(sent.body.length),
      });
      res.end(method === 'HEAD' ? undefined : sent.body);
      return true;
    },
    methodsOf: (path) => (assets.has(path) ? READ_METHODS : undefined),
  };
}
