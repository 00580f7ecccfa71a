/**
 * Exponential backoff with jitter for reconnects: min·2^attempt capped at max, with
 * `jitter` of each delay random so that a fleet of gateways that lost the same cloud
 * does not reconnect in lockstep.
 */
export class Backoff {
  #attempt = 0;

  constructor(
    private readonly minMs: number,
    private readonly maxMs: number,
    private readonly jitter: number,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const base = Math.min(this.maxMs, this.minMs * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    const spread = base * this.jitter;
    return Math.round(base - spread + this.random() * spread);
  }

  reset(): void {
    this.#attempt = 0;
  }

  get attempts(): number {
    return this.#attempt;
  }
}
