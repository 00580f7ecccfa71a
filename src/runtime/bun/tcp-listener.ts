import type { Socket, TCPSocketListener } from "bun";
import type { Connection, ConnectionHandler } from "../../core/connection.ts";
import { concatInto } from "../bytes.ts";

interface SocketData {
  conn: BunSocketConnection;
  handler: ConnectionHandler;
}

/** How long a closing connection keeps reading and discarding after its FIN, before it closes. */
const LINGER_MS = 100;

/** Connections with writes waiting for the end of this event-loop turn, in first-write order. */
let dirty: BunSocketConnection[] = [];
let flushScheduled = false;

function flushDirty(): void {
  flushScheduled = false;
  const list = dirty;
  dirty = [];
  for (const c of list) c.flush();
}

/**
 * Where a flush joins several pending writes before its one send: shared, because
 * `socket.write` is unbuffered (the kernel or the TLS layer has copied what it accepted
 * when it returns) and flushes run one at a time; an unsent rest is copied out. Saves a
 * fresh buffer per socket per turn. Joins above SCRATCH_MAX get a buffer of their own.
 */
let scratch = new Uint8Array(4096);
const SCRATCH_MAX = 256 * 1024;

/**
 * Flush once per event-loop turn rather than per microtask: the core answers each
 * PUBLISH in its own promise callback, and a microtask flush ran between them, so every
 * PUBACK and every forwarded PUBLISH cost a send of its own (measured: 2 sends per
 * message at 10,000 msg/s). An immediate runs after the I/O callbacks of the current
 * poll, so the writes those callbacks cause go out together, one send per socket.
 */
function scheduleFlush(c: BunSocketConnection): void {
  dirty.push(c);
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flushDirty);
  }
}

/**
 * A Bun TCP socket as a core Connection. Writes made in one event-loop turn are coalesced
 * into one syscall; a partial write parks the rest until Bun reports `drain`, and later
 * writes queue behind it so bytes never reorder.
 */

export class BunSocketConnection implements Connection {
  readonly transport: string = "tcp";
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #scheduled = false;
  #blocked = false;
  #closing = false;
  #closed = false;
  #closeGuard: ReturnType<typeof setTimeout> | undefined;
  #linger: ReturnType<typeof setTimeout> | undefined;

  /** "IP:PORT" ("[IPv6]:PORT"), as logs show a client (Bun's socket.remoteAddress is the IP alone). */
  readonly remoteAddress: string;

  constructor(private readonly socket: Socket<SocketData>, readonly remoteIp: string) {
    const port = socket.remotePort;
    this.remoteAddress = port ? (remoteIp.includes(":") ? `[${remoteIp}]:${port}` : `${remoteIp}:${port}`) : remoteIp;
  }

  write(bytes: Uint8Array): void {
    if (this.#closed || this.#closing) return;
    this.#pending.push(bytes);
    this.#pendingBytes += bytes.byteLength;
    if (!this.#scheduled && !this.#blocked) {
      this.#scheduled = true;
      scheduleFlush(this);
    }
  }

  bufferedBytes(): number {
    return this.#pendingBytes;
  }

  flush(): void {
    this.#scheduled = false;
    if (this.#closed) return;
    this.#blocked = false;
    const total = this.#pendingBytes;
    if (total > 0) {
      const pending = this.#pending;
      let data: Uint8Array;
      let shared = false;
      if (pending.length === 1) data = pending[0]!;
      else if (total <= SCRATCH_MAX) {
        if (scratch.byteLength < total) {
          scratch = new Uint8Array(Math.min(SCRATCH_MAX, Math.max(total, scratch.byteLength * 2)));
        }
        concatInto(pending, scratch);
        // A view (no backing store of its own) of just the joined bytes.
        data = scratch.subarray(0, total);
        shared = true;
      } else {
        data = new Uint8Array(total);
        concatInto(pending, data);
      }
      const n = this.socket.write(data);
      const written = n < 0 ? 0 : n;
      // The array is reused rather than replaced: one less allocation per socket per turn.
      pending.length = 0;
      if (written < total) {
        // The scratch buffer is the next flush's: what is left is copied out of it.
        const rest = shared ? data.slice(written, total) : data.subarray(written, total);
        pending.push(rest);
        this.#pendingBytes = rest.byteLength;
        this.#blocked = true; // wait for drain
        return;
      }
      this.#pendingBytes = 0;
    }
    if (this.#closing) this.#endSoon();
  }

  pause(): void {
    if (!this.#closed) this.socket.pause();
  }

  resume(): void {
    if (!this.#closed) this.socket.resume();
  }

  close(): void {
    if (this.#closing || this.#closed) return;
    this.#closing = true;
    if (this.#pendingBytes === 0) {
      this.#endSoon();
      return;
    }
    if (!this.#blocked && !this.#scheduled) this.flush();
    // A peer that never reads must not keep the socket forever. Only armed while bytes are
    // still owed: a pending timer keeps the socket reachable, and a connection storm would
    // otherwise pin every closed socket for the full 5 s.
    if (!this.#closed && this.#pendingBytes > 0) {
      this.#closeGuard = setTimeout(() => this.#end(), 5000);
      this.#closeGuard.unref?.();
    }
  }

  /**
   * Send FIN now, so the peer sees the end at once, and close after a short linger. Closing
   * at once while the peer is still sending (acks for packets it has not yet read past)
   * makes the kernel answer with RST, and the peer then loses our last packets, the
   * DISCONNECT with its reason code among them. Meanwhile its input is discarded (the core
   * has stopped listening).
   */
  #endSoon(): void {
    if (this.#closed || this.#linger !== undefined) return;
    this.socket.shutdown();
    this.#linger = setTimeout(() => this.#end(), LINGER_MS);
    this.#linger.unref?.();
  }

  #end(): void {
    clearTimeout(this.#closeGuard);
    clearTimeout(this.#linger);
    if (this.#closed) return;
    this.#closed = true;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.socket.end();
  }

  markClosed(): void {
    this.#closed = true;
    clearTimeout(this.#closeGuard);
    clearTimeout(this.#linger);
  }
}

export interface TcpListener {
  readonly host: string;
  readonly port: number;
  stop(): void;
}

/** Listen for MQTT over TCP and hand each connection to `accept`. */
export function listenTcp(host: string, port: number, accept: (conn: Connection) => ConnectionHandler): TcpListener {
  const server: TCPSocketListener<SocketData> = Bun.listen<SocketData>({
    hostname: host,
    port,
    socket: {
      open(socket) {
        const conn = new BunSocketConnection(socket, `${socket.remoteAddress}`);
        socket.data = { conn, handler: accept(conn) };
      },
      data(socket, data) {
        socket.data.handler.onData(data);
      },
      drain(socket) {
        socket.data.conn.flush();
      },
      close(socket) {
        socket.data?.conn.markClosed();
        socket.data?.handler.onClose();
      },
      error(socket) {
        socket.data?.conn.markClosed();
        socket.data?.handler.onClose();
      },
    },
  });
  return { host: server.hostname, port: server.port, stop: () => server.stop(true) };
}
