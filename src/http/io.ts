import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { isDomainError, isOverloadedError, type DomainErrorCode, isValidationError } from '../domain/errors';

/** The request body exceeded the configured limit. */
export class BodyTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`the request body is larger than ${limit} bytes`);
  }
}

/**
 * Reads the whole body, refusing more than `limit` bytes (checked against Content-Length first, then
 * while streaming). Rejects with BodyTooLargeError, or with the socket's error if the client goes away.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) {
    req.resume();
    return Promise.reject(new BodyTooLargeError(limit));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        reject(new BodyTooLargeError(limit));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
    });
    req.on('error', reject);
  });
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

const STATUS: Record<DomainErrorCode, number> = {
  BAD_USER_INPUT: 400,
  UNAUTHENTICATED: 401,
  NOT_FOUND: 404,
  CONFLICT: 409,
  OVERLOADED: 503,
  UNAVAILABLE: 503,
  FELL_BEHIND: 503,
};

/** The HTTP status a domain error code maps to. */
export const httpStatusOf = (code: DomainErrorCode): number => STATUS[code];

/**
 * Answers an error as `{error: {code, message, issues?, requestId?}}`. Domain errors say what was wrong;
 * anything else is unexpected: logged with the request id, and answered with a 503 that says only
 * "Unexpected error." (the sender may retry), never the cause.
 */
export function sendError(res: ServerResponse, err: unknown, log?: Logger): void {
  const requestId = res.getHeader('x-request-id');
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (err instanceof BodyTooLargeError) {
    sendJson(res, 413, { error: { code: 'PAYLOAD_TOO_LARGE', message: err.message } }, { connection: 'close' });
    return;
  }
  if (isDomainError(err)) {
    const headers: Record<string, string> = {};
    if (isOverloadedError(err)) headers['retry-after'] = String(err.retryAfterSeconds);
    const body: Record<string, unknown> = { code: err.code, message: err.message };
    if (isValidationError(err)) body.issues = err.issues;
    if (requestId !== undefined) body.requestId = requestId;
    sendJson(res, httpStatusOf(err.code), { error: body }, headers);
    return;
  }
  log?.error({ err, requestId }, 'unexpected error');
  sendJson(
    res,
    503,
    { error: { code: 'UNAVAILABLE', message: 'Unexpected error.', requestId } },
    { 'retry-after': '1' },
  );
}
