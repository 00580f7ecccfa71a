/**
 * Token buckets for messages/s and bytes/s. A rate of 0 means unlimited. The bucket
 * holds one second of allowance, so short bursts pass and the average holds.
 */
export class RateLimiter {
  #msgTokens: number;
  #byteTokens: number;
  #last: number;

  constructor(
    private readonly msgsPerSec: number,
    private readonly bytesPerSec: number,
    private readonly now: () => number,
  ) {
    this.#msgTokens = msgsPerSec;
    this.#byteTokens = bytesPerSec;
    this.#last = now();
  }

  #refill(): void {
    const t = this.now();
    const dt = (t - this.#last) / 1000;
    this.#last = t;
    if (this.msgsPerSec > 0) this.#msgTokens = Math.min(this.msgsPerSec, this.#msgTokens + dt * this.msgsPerSec);
    if (this.bytesPerSec > 0) this.#byteTokens = Math.min(this.bytesPerSec, this.#byteTokens + dt * this.bytesPerSec);
  }

  /**
   * Take allowance for one message of `bytes`; returns 0 when granted, else the
   * milliseconds to wait before asking again. A message larger than a whole second's
   * byte allowance is let through once the bucket is full, so it cannot block forever.
   */
  take(bytes: number): number {
    this.#refill();
    let wait = 0;
    if (this.msgsPerSec > 0 && this.#msgTokens < 1) {
      wait = Math.max(wait, ((1 - this.#msgTokens) / this.msgsPerSec) * 1000);
    }
    const need = Math.min(bytes, this.bytesPerSec);
    if (this.bytesPerSec > 0 && this.#byteTokens < need) {
      wait = Math.max(wait, ((need - this.#byteTokens) / this.bytesPerSec) * 1000);
    }
    if (wait > 0) return Math.ceil(wait);
    if (this.msgsPerSec > 0) this.#msgTokens -= 1;
    if (this.bytesPerSec > 0) this.#byteTokens -= need;
    return 0;
  }
}
