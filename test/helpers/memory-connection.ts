/**
 * An in-memory connection pair implementing the kernel's `Connection`: what one end
 * writes the other end's handler receives (on a later microtask, as from a socket),
 * `pause()` holds incoming bytes until `resume()` (which hands them over one write at a
 * time, and stops when the handler pauses again), and `close()` ends both sides. What
 * one end wrote counts as its `bufferedBytes()` until the other end's handler took it,
 * and a paused end hears `onDrain` when the other end takes some, as from an adapter.
 * Kernel tests hand one end to `broker.accept` and drive the other; no socket, no port.
 */
import type { Connection, ConnectionHandler } from "../../src/core/connection.ts";

export class MemoryConnection implements Connection {
  readonly transport = "memory";
  handler: ConnectionHandler | undefined;
  peer!: MemoryConnection;
  closed = false;
  #paused = false;
  #inbox: Uint8Array[] = [];
  /** Bytes written here and not yet handed to the peer's handler. */
  #inFlight = 0;

  constructor(readonly remoteAddress: string, readonly remoteIp: string | undefined) {}

  write(bytes: Uint8Array): void {
    if (this.closed) return;
    // A copy: the writer may reuse its buffer, as adapters allow.
    const copy = bytes.slice();
    this.#inFlight += copy.byteLength;
    queueMicrotask(() => {
      this.#inFlight -= copy.byteLength;
      this.peer.#receive(copy);
    });
  }

  bufferedBytes(): number {
    return this.#inFlight + this.peer.#inboxBytes();
  }

  /** Stop handing incoming bytes to the handler (they wait here), as a socket that is not read. */
  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    let delivered = false;
    // One write at a time, as a socket hands over one read at a time: a handler that pauses
    // again leaves the rest here.
    while (!this.#paused && this.#inbox.length > 0 && !this.#ended) {
      this.handler?.onData(this.#inbox.shift()!);
      delivered = true;
    }
    if (delivered) this.peer.#drained();
  }

  /** The written bytes were taken by the other end. */
  #drained(): void {
    if (this.#paused && !this.closed) this.handler?.onDrain?.();
  }

  /** Flush what is queued, then close both ends; each handler hears `onClose` once. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    queueMicrotask(() => {
      this.peer.#end();
      this.#end();
    });
  }

  #receive(bytes: Uint8Array): void {
    if (this.#ended) return;
    if (this.#paused) this.#inbox.push(bytes);
    else {
      this.handler?.onData(bytes);
      this.peer.#drained();
    }
  }

  #ended = false;

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.closed = true;
    this.handler?.onClose();
  }

  #inboxBytes(): number {
    let n = 0;
    for (const b of this.#inbox) n += b.byteLength;
    return n;
  }
}

/** Two connected ends: `server` goes to `broker.accept`, `client` to the test's peer. */
export function memoryConnectionPair(
  clientAddress = "127.0.0.1:40000",
): { server: MemoryConnection; client: MemoryConnection } {
  const ip = clientAddress.slice(0, clientAddress.lastIndexOf(":"));
  const server = new MemoryConnection(clientAddress, ip);
  const client = new MemoryConnection("memory:broker", undefined);
  server.peer = client;
  client.peer = server;
  return { server, client };
}
