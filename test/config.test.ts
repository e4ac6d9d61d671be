import { ConfigError, loadConfig } from '../src/config';

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
