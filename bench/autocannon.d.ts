// The part of autocannon 9's API the bench uses (the package ships no types).
declare module 'autocannon' {
  interface RawRequest {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    body?: string | undefined;
  }
  interface RequestSpec extends RawRequest {
    setupRequest?: (req: RawRequest) => RawRequest;
    onResponse?: (status: number, body: string) => void;
  }
  interface Options {
    url: string;
    connections?: number;
    /** Seconds. */
    duration?: number;
    requests?: RequestSpec[];
  }
  interface Histogram {
    p50: number;
    p99: number;
    mean: number;
    max: number;
  }
  interface Result {
    requests: { total: number };
    /** Milliseconds. */
    latency: Histogram;
    /** Seconds. */
    duration: number;
    non2xx: number;
    errors: number;
    timeouts: number;
  }
  function autocannon(options: Options): Promise<Result>;
  export = autocannon;
}
