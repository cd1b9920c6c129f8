import type { Principal } from '../auth/tokens.js';
import { AuthError } from './auth.js';

/**
 * Bounds live streams: at most `perToken` open at once for one token, and a stream that has sent
 * nothing for `idleMs` is ended (the client subscribes again to go on).
 */
export class SubscriptionLimiter {
  private readonly open = new Map<string, number>();

  constructor(private readonly o: { perToken: number; idleMs: number }) {}

  /** Takes a slot for the principal's token, or refuses; call the returned function once to give it back. */
  acquire(p: Principal): () => void {
    const n = this.open.get(p.tokenId) ?? 0;
    if (n >= this.o.perToken) {
      throw new AuthError('FORBIDDEN', `token "${p.name}" already has ${n} open subscriptions (at most ${this.o.perToken}); close one first`);
    }
    this.open.set(p.tokenId, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.open.get(p.tokenId) ?? 1) - 1;
      if (left <= 0) this.open.delete(p.tokenId);
      else this.open.set(p.tokenId, left);
    };
  }

  /** How many streams a token has open. */
  count(tokenId: string): number {
    return this.open.get(tokenId) ?? 0;
  }

  /** The source with the idle limit; the slot is released when the stream ends, however it ends. */
  async *wrap<T>(source: AsyncIterable<T>, release: () => void): AsyncGenerator<T> {
    const it = source[Symbol.asyncIterator]();
    try {
      for (;;) {
        let timer: NodeJS.Timeout | undefined;
        const idle = new Promise<'idle'>((resolve) => (timer = setTimeout(() => resolve('idle'), this.o.idleMs)));
        const next = await Promise.race([it.next(), idle]);
        clearTimeout(timer);
        if (next === 'idle' || next.done) return;
        yield next.value;
      }
    } finally {
      // release also stops the source (its polling hears the abort), so return() is not awaited.
      release();
      void it.return?.();
    }
  }
}
