import type { Connection, ConnectionHandler } from "../../core/connection.ts";
import type { Accept, Listener } from "../listener.ts";
import { concat } from "../bytes.ts";
import { deno, type DenoConn } from "./deno-api.ts";

/**
 * Reads start small and grow while they fill the buffer: an idle MQTT client sends a few
 * bytes a minute, and each connection always has a read pending on its buffer (with 10,000
 * idle clients, 1 KiB instead of 4 KiB saves 30 MB).
 */
const MIN_READ = 1024;
const MAX_READ = 64 * 1024;

/**
 * A `Deno.Conn` as a core Connection. Writes made in one tick are coalesced into one
 * `conn.write`; while a write is under way later bytes queue behind it, so bytes never
 * reorder and `bufferedBytes()` counts everything not yet taken by the OS. `pause()`
 * stops the read loop before its next read (the peer meets TCP backpressure); while
 * paused, every write the OS took is reported to the handler (`onDrain`).
 */
export class DenoTcpConnection implements Connection {
  readonly transport: string = "tcp";
  readonly remoteAddress: string;
  /** The per-address limits' key: without it they would key on "host:port", a key per connection. */
  readonly remoteIp: string;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #inFlightBytes = 0;
  #writing = false;
  #scheduled = false;
  #closing = false;
  #closed = false;
  #closeGuard: ReturnType<typeof setTimeout> | undefined;
  /** Set while paused: the read loop waits for it before its next read. */
  #resumed: Promise<void> | undefined;
  #resume: (() => void) | undefined;
  #handler: ConnectionHandler | undefined;

  constructor(private readonly conn: DenoConn) {
    this.remoteAddress = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
    this.remoteIp = conn.remoteAddr.hostname;
  }

  write(bytes: Uint8Array): void {
    if (this.#closed || this.#closing) return;
    this.#pending.push(bytes);
    this.#pendingBytes += bytes.byteLength;
    this.#schedule();
  }

  bufferedBytes(): number {
    return this.#pendingBytes + this.#inFlightBytes;
  }

  /** The read loop stops reading (the peer meets TCP backpressure) until `resume()`. */
  pause(): void {
    if (this.#resumed || this.#closed) return;
    this.#resumed = new Promise<void>((resolve) => (this.#resume = resolve));
  }

  resume(): void {
    const wake = this.#resume;
    this.#resumed = undefined;
    this.#resume = undefined;
    wake?.();
  }

  close(): void {
    if (this.#closing || this.#closed) return;
    this.#closing = true;
    if (this.bufferedBytes() === 0) {
      this.#end();
      return;
    }
    this.#schedule();
    // A peer that never reads must not keep the socket forever.
    this.#closeGuard = setTimeout(() => this.#end(), 5000);
    // Nobody reads what it sends from now on: stop the read loop rather than read it, at the
    // peer's speed, into garbage while our last bytes wait (markClosed wakes the loop to end).
    this.pause();
  }

  abort(): void {
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#end();
  }

  /** The read loop saw the end of the stream or an error. */
  markClosed(): void {
    clearTimeout(this.#closeGuard);
    this.#closed = true;
    this.resume();
    this.#pending = [];
    this.#pendingBytes = 0;
  }

  #schedule(): void {
    if (this.#scheduled || this.#writing) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#pendingBytes > 0 && !this.#closed) {
        const data = this.#pending.length === 1 ? this.#pending[0]! : concat(this.#pending, this.#pendingBytes);
        this.#pending = [];
        this.#pendingBytes = 0;
        this.#inFlightBytes = data.byteLength;
        let offset = 0;
        while (offset < data.byteLength) {
          offset += await this.conn.write(data.subarray(offset));
          this.#inFlightBytes = data.byteLength - offset;
          if (this.#resumed && !this.#closed) this.#handler?.onDrain?.();
        }
      }
    } catch {
      // The peer is gone; the read loop reports the close.
      this.#end();
    } finally {
      this.#writing = false;
      this.#inFlightBytes = 0;
    }
    if (this.#closing) this.#end();
  }

  #end(): void {
    clearTimeout(this.#closeGuard);
    if (this.#closed) return;
    this.markClosed();
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }

  /** Feed the handler until the peer goes away; then tell it, once. */
  async readLoop(handler: ConnectionHandler): Promise<void> {
    this.#handler = handler;
    let buffer = new Uint8Array(MIN_READ);
    try {
      for (;;) {
        if (this.#resumed) await this.#resumed;
        const n = await this.conn.read(buffer);
        if (n === null) break;
        // The handler may keep the bytes (partial packets), and the buffer is reused.
        handler.onData(buffer.slice(0, n));
        if (n === buffer.byteLength && buffer.byteLength < MAX_READ) {
          buffer = new Uint8Array(buffer.byteLength * 2);
        } else if (n < MIN_READ && buffer.byteLength > MIN_READ) buffer = new Uint8Array(MIN_READ);
      }
    } catch {
      // reset by peer, or closed by us
    } finally {
      const wasOpen = !this.#closed;
      this.markClosed();
      if (wasOpen) {
        try {
          this.conn.close();
        } catch {
          // already closed
        }
      }
      handler.onClose();
    }
  }
}

/** Listen for MQTT over TCP with `Deno.listen` and hand each connection to `accept`. */
export function listenTcp(host: string, port: number, accept: Accept): Listener {
  const listener = deno.listen({ hostname: host, port, transport: "tcp" });
  const open = new Set<DenoTcpConnection>();
  let stopped = false;
  void (async () => {
    for (;;) {
      let conn: DenoConn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (stopped) return;
        // EMFILE and friends: wait a little instead of spinning; the listener stays up.
        console.error(`ferry: accept failed: ${(err as Error).message}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      try {
        conn.setNoDelay(true);
      } catch {
        // not every platform supports it
      }
      const connection = new DenoTcpConnection(conn);
      open.add(connection);
      let handler: ConnectionHandler;
      try {
        handler = accept(connection);
      } catch (err) {
        open.delete(connection);
        console.error(`ferry: accept failed: ${(err as Error).message}`);
        connection.close();
        continue;
      }
      void connection.readLoop(handler).finally(() => open.delete(connection));
    }
  })();
  return {
    host: listener.addr.hostname,
    port: listener.addr.port,
    stop() {
      if (stopped) return;
      stopped = true;
      listener.close();
      for (const c of open) c.close();
    },
  };
}
