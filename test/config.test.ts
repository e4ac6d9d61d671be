import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, SETTINGS, loadConfig, mistypedSettings } from '../src/config';

describe('loadConfig', () => {
  it('reads an empty LOG_LEVEL or SQLITE_SYNCHRONOUS as unset, as every other variable', () => {
    expect(loadConfig({ LOG_LEVEL: '', SQLITE_SYNCHRONOUS: '' })).toMatchObject({
      logLevel: 'info',
      sqliteSynchronous: 'FULL',
    });
    expect(loadConfig({ LOG_LEVEL: ' Debug ', SQLITE_SYNCHRONOUS: 'normal' })).toMatchObject({
      logLevel: 'debug',
      sqliteSynchronous: 'NORMAL',
    });
  });

  it('names the variable and the value it refuses', () => {
    expect(() => loadConfig({ LOG_LEVEL: 'loud' })).toThrow(
      'LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "loud"',
    );
    expect(() => loadConfig({ SQLITE_SYNCHRONOUS: 'OFF' })).toThrow(
      'SQLITE_SYNCHRONOUS must be FULL or NORMAL, got "OFF"',
    );
  });

  it('reads the PostgreSQL pool size, 10 by default, and refuses a pool of one', () => {
    expect(loadConfig({}).databasePoolSize).toBe(10);
    expect(loadConfig({ DATABASE_POOL_SIZE: '4' }).databasePoolSize).toBe(4);
    expect(() => loadConfig({ DATABASE_POOL_SIZE: '1' })).toThrow(/^DATABASE_POOL_SIZE must be/);
  });

  it('refuses a token that begins or ends with whitespace, which no client could send', () => {
    for (const name of ['INGEST_TOKEN', 'SUBSCRIPTION_TOKEN']) {
      for (const value of ['abc\n', ' abc', ' '])
        expect(() => loadConfig({ [name]: value })).toThrow(
          new ConfigError(
            `${name} must not begin or end with whitespace (a newline from a file?): no client could send it`,
          ),
        );
      expect(loadConfig({ [name]: '' })).toMatchObject({ ingestToken: undefined, subscriptionToken: undefined });
    }
    expect(loadConfig({ INGEST_TOKEN: 'a b' }).ingestToken).toBe('a b');
  });

  it('refuses an ALLOWED_ORIGINS entry that no browser would send, naming the one it would', () => {
    const refused = (value: string, hint: string): void => {
      expect(() => loadConfig({ ALLOWED_ORIGINS: `https://ok.example, ${value}` })).toThrow(
        new ConfigError(
          `ALLOWED_ORIGINS: "${value}" is not an origin as browsers send it (scheme://host[:port], lower case)${hint}`,
        ),
      );
    };
    refused('HTTP://Example.COM', '; did you mean "http://example.com"?');
    refused('http://example.com:80', '; did you mean "http://example.com"?');
    refused('https://example.com/app', '; did you mean "https://example.com"?');
    refused('example.com', ' such as "https://example.com"');
    refused('not a url', ' such as "https://example.com"');
    refused('null', ' such as "https://example.com"');
    refused('file:///tmp/page.html', ' such as "https://example.com"');
    expect(
      loadConfig({ ALLOWED_ORIGINS: 'https://ok.example/, http://localhost:5173, http://[::1]:8080' }).allowedOrigins,
    ).toEqual(['https://ok.example', 'http://localhost:5173', 'http://[::1]:8080']);
    expect(loadConfig({ ALLOWED_ORIGINS: ' * ' }).allowedOrigins).toBeUndefined();
  });
});

describe('mistypedSettings', () => {
  it('names the setting a variable one or two edits away was meant to be, and a setting in another case', () => {
    expect(
      mistypedSettings({
        GAP_TIMOUT: '5s',
        SOCKET_TIEMOUT_MS: '0',
        WS_MAX_PAYLOD: '1',
        log_level: 'debug',
        PROT: '80',
      }),
    ).toEqual([
      { name: 'GAP_TIMOUT', meant: 'GAP_TIMEOUT' },
      { name: 'SOCKET_TIEMOUT_MS', meant: 'SOCKET_TIMEOUT_MS' },
      { name: 'WS_MAX_PAYLOD', meant: 'WS_MAX_PAYLOAD' },
      { name: 'log_level', meant: 'LOG_LEVEL' },
      { name: 'PROT', meant: 'PORT' },
    ]);
  });

  it('leaves the settings themselves, and the variables of a shell or container, alone', () => {
    const shell = ['HOME', 'HOSTNAME', 'PATH', 'PWD', 'USER', 'SHELL', 'TERM', 'LANG', 'TMPDIR', 'NODE_OPTIONS'];
    const pg = ['PGHOST', 'PGPORT', 'PGUSER', 'PGPASSWORD', 'PGDATABASE'];
    expect(mistypedSettings(Object.fromEntries([...SETTINGS, ...shell, ...pg].map((n) => [n, 'x'])))).toEqual([]);
  });

  it('names every variable loadConfig reads', () => {
    const read = new Set<string>();
    const env = new Proxy<Record<string, string | undefined>>(
      {},
      {
        get: (_, name) => {
          if (typeof name === 'string') read.add(name);
          return undefined;
        },
      },
    );
    loadConfig(env);
    expect([...read].sort()).toEqual([...SETTINGS].sort());
  });

  it("are the rows of the README's configuration table, in its order", () => {
    const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');
    const table = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('## The reorder buffer'));
    expect([...table.matchAll(/^\| `([A-Z_]+)` /gm)].map((m) => m[1])).toEqual(SETTINGS);
  });
});
