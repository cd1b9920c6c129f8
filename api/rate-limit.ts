import { apiError } from './errors.js';

/**
 * A token bucket per key (a principal's token id): `burst` requests at once, refilled at
 * `perMinute`. Keys whose bucket is full again are forgotten, so memory follows active callers.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private sweeps = 0;

  constructor(
    private readonly o: { perMinute: number; burst: number },
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes one request for the key: 0 when allowed, else the seconds until one is (for Retry-After). */
  take(key: string): number {
    const t = this.now();
    const rate = this.o.perMinute / 60_000;
    const b = this.buckets.get(key) ?? { tokens: this.o.burst, at: t };
    b.tokens = Math.min(this.o.burst, b.tokens + (t - b.at) * rate);
    b.at = t;
    if (++this.sweeps >= 1000) this.sweep(t);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      this.buckets.set(key, b);
      return 0;
    }
    this.buckets.set(key, b);
    return Math.max(1, Math.ceil((1 - b.tokens) / rate / 1000));
  }

  private sweep(t: number): void {
    this.sweeps = 0;
    const rate = this.o.perMinute / 60_000;
    for (const [k, b] of this.buckets) if (b.tokens + (t - b.at) * rate >= this.o.burst) this.buckets.delete(k);
  }
}

/** What a limited caller is told: code RATE_LIMITED, and when to come back. */
export function rateLimited(what: string, retryAfterSeconds: number, perMinute: number) {
  return apiError('RATE_LIMITED', `too many ${what} for this token (at most ${perMinute} a minute); try again in ${retryAfterSeconds} s`, {
    retryAfterSeconds,
  });
}
