import type { Principal } from '../auth/tokens.js';
import { AuthError } from './auth.js';

/**
 * What a stream yields last when its token stopped being valid: the subscription's resolve throws
 * `error`, so the client gets an event with code UNAUTHENTICATED and then the end of the stream.
 */
export class StreamEnded {
  constructor(readonly error: Error) {}
}

/**
 * Bounds live streams: at most `perToken` open at once for one token, a stream that has sent
 * nothing for `idleMs` is ended (the client subscribes again to go on), and the token is checked
 * again every `recheckMs`: a stream whose token was revoked or expired since it opened is ended
 * (a training run's stream is never idle, so the idle limit alone would keep it open for hours).
 */
export class SubscriptionLimiter {
  private readonly open = new Map<string, number>();

  constructor(private readonly o: { perToken: number; idleMs: number; recheckMs?: number }) {}

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

  /**
   * The source with the idle limit and, given `reauthenticate` (which throws once the token is no
   * longer valid), the token re-check; the slot is released when the stream ends, however it ends.
   */
  async *wrap<T>(source: AsyncIterable<T>, release: () => void, reauthenticate?: () => Promise<void>): AsyncGenerator<T | StreamEnded> {
    const it = source[Symbol.asyncIterator]();
    let refused: (e: StreamEnded) => void = () => {};
    const revoked = new Promise<StreamEnded>((resolve) => (refused = resolve));
    let checking = false;
    const recheck = reauthenticate
      ? setInterval(() => {
          if (checking) return;
          checking = true;
          reauthenticate()
            .then(
              () => {},
              (e: unknown) => {
                // Only a refusal of the token ends the stream; a failure to check (e.g. the database busy) is tried again.
                if (e instanceof AuthError) refused(new StreamEnded(e));
              },
            )
            .finally(() => (checking = false));
        }, this.o.recheckMs ?? 1000)
      : undefined;
    try {
      for (;;) {
        let timer: NodeJS.Timeout | undefined;
        const idle = new Promise<'idle'>((resolve) => (timer = setTimeout(() => resolve('idle'), this.o.idleMs)));
        const next = await Promise.race([it.next(), idle, revoked]);
        clearTimeout(timer);
        if (next instanceof StreamEnded) {
          yield next;
          return;
        }
        if (next === 'idle' || next.done) return;
        yield next.value;
      }
    } finally {
      clearInterval(recheck);
      // release also stops the source (its polling hears the abort), so return() is not awaited.
      release();
      void it.return?.();
    }
  }
}
