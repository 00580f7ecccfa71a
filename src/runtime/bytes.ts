/** One buffer holding `parts` in order; `total` is the sum of their lengths. */
export function concat(parts: readonly Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}

/** Copy `parts` one after another to the start of `out`, which must have room for them all. */
export function concatInto(parts: readonly Uint8Array[], out: Uint8Array): void {
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
}

/**
 * Collects the writes a connection gets in one tick and hands them to `send` as one
 * buffer in a microtask: a fan-out of many small packets becomes one frame or syscall.
 * Shared by the WebSocket adapters, whose sockets buffer under backpressure themselves.
 */
export class WriteCoalescer {
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #scheduled = false;

  constructor(private readonly send: (data: Uint8Array) => void) {}

  push(bytes: Uint8Array): void {
    this.#pending.push(bytes);
    this.#pendingBytes += bytes.byteLength;
    if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  /** Bytes accepted but not yet handed to `send`. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  flush(): void {
    this.#scheduled = false;
    if (this.#pendingBytes === 0) return;
    const data = this.#pending.length === 1 ? this.#pending[0]! : concat(this.#pending, this.#pendingBytes);
    this.#pending = [];
    this.#pendingBytes = 0;
    this.send(data);
  }

  /** Forget what is pending (the connection is gone). */
  clear(): void {
    this.#pending = [];
    this.#pendingBytes = 0;
  }
}
