/**
 * How this store connects: the one PostgreSQL URL an operator gives, checked for what pg would silently
 * misread, and turned into the connection string every connection of an instance uses.
 */

/**
 * Every connection: TCP keepalive probes from 10 s of silence (the OS sets their interval and count), so
 * a silently dead LISTEN connection is noticed at all, and a bound on waiting for a connection or a pool
 * slot, so a commit fails instead of hanging.
 */
export const CONNECTION = { keepAlive: true, keepAliveInitialDelayMillis: 10_000, connectionTimeoutMillis: 30_000 };

const SCHEMA_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,47}$/;

/**
 * The parameters a PostgreSQL URL may carry: `schema` (ours), and those pg reads from a connection string
 * and that leave its answers as this store expects them (not `binary`, `replication` or
 * `client_encoding`: pg decodes text as UTF-8). libpq's others, such as `connect_timeout` or
 * `target_session_attrs`, pg would ignore.
 */
const URL_PARAMETERS: ReadonlySet<string> = new Set([
  'schema',
  'host',
  'user',
  'password',
  'ssl',
  'sslmode',
  'sslcert',
  'sslkey',
  'sslrootcert',
  'sslnegotiation',
  'uselibpqcompat',
  'application_name',
  'fallback_application_name',
  'options',
  'statement_timeout',
  'lock_timeout',
  'query_timeout',
  'idle_in_transaction_session_timeout',
]);

/**
 * The connection string for `url` and the schema it names (`schemaOverride` wins over its `schema=`;
 * `public` when neither is given). Throws, naming the part and never repeating the URL (it may carry a
 * password), for a URL that is not PostgreSQL's, a malformed user or password, a parameter pg would
 * ignore or misread, or a schema name that is not a plain identifier.
 */
export function connectionOf(
  url: string,
  schemaOverride: string | undefined,
): { readonly connectionString: string; readonly schema: string } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error('the PostgreSQL URL is not a valid URL');
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:')
    throw new Error(`a PostgreSQL URL starts with postgres:// or postgresql://, not ${parsed.protocol}//`);
  // pg would fail on it later with a message about something else; the value itself is never repeated.
  for (const [part, value] of [
    ['user', parsed.username],
    ['password', parsed.password],
  ] as const) {
    try {
      decodeURIComponent(value);
    } catch {
      throw new Error(`the PostgreSQL URL's ${part} holds a malformed percent escape: write a % as %25`);
    }
  }
  // The URL is the only place an operator names the schema: a spelling pg would ignore, or a second
  // value, would quietly put this instance in another schema's fleet. No parameter is given twice.
  for (const key of new Set(parsed.searchParams.keys())) {
    if (key !== 'schema' && key.toLowerCase() === 'schema')
      throw new Error(`the PostgreSQL URL's "${key}=" parameter is spelt "schema=" (lower case)`);
    // pg passes every other parameter on as a setting of its own and ignores the ones it does not
    // know, so a misspelt `sslmode` would connect without TLS and say nothing.
    if (!URL_PARAMETERS.has(key))
      throw new Error(
        `the PostgreSQL URL's "${key}=" parameter is not one this server or pg reads; it takes ${[...URL_PARAMETERS].map((k) => `${k}=`).join(', ')}`,
      );
    // pg reads one copy and drops the other: `sslmode=require&sslmode=disable` says two things.
    if (parsed.searchParams.getAll(key).length > 1)
      throw new Error(`the PostgreSQL URL names "${key}=" more than once`);
  }
  const schema = schemaOverride ?? parsed.searchParams.get('schema') ?? 'public';
  if (!SCHEMA_NAME.test(schema))
    throw new Error(`schema "${schema}" must be letters, digits and _ (at most 48), not starting with a digit`);
  parsed.searchParams.delete('schema');
  // Every connection resolves the tables in the schema; set through the URL because pg lets the
  // connection string override explicit options. A transaction of ours is never idle for long; one that
  // is (a frozen process) would hold the append lock and stall every instance, so the server ends it.
  const extra = parsed.searchParams.get('options');
  parsed.searchParams.set(
    'options',
    `${extra === null ? '' : `${extra} `}-c search_path="${schema}" -c idle_in_transaction_session_timeout=60000`,
  );
  if (!parsed.searchParams.has('application_name')) parsed.searchParams.set('application_name', 'rockets');
  return { connectionString: parsed.toString(), schema };
}
