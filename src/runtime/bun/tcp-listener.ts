import type { Socket, TCPSocketListener } from "bun";
import type { Connection, ConnectionHandler } from "../../core/connection.ts";

/** How long a closing connection keeps reading and discarding after its FIN, before it closes. */
const LINGER_MS = 100;
/** What the linger reads and drops at most (see onData): a few acknowledgements, not a flood. */
const LINGER_READ_MAX = 64 * 1024;

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

/** Writes at most this long are copied together once MANY_WRITES are waiting, TAIL_SIZE bytes at a time. */
const SMALL_WRITE = 512;
const MANY_WRITES = 64;
const TAIL_SIZE = 16 * 1024;

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
 * BunSocketConnection's states, as bits of one field (one slot per connection instead of
 * six); the bits above them hold the peer's port.
 */
const SCHEDULED = 1; // a flush is queued for the end of this turn
const BLOCKED = 2; // a partial write: waiting for Bun's drain
const PAUSED = 4;
const CLOSING = 8;
const CLOSED = 16;
const LINGERING = 32; // the linger timer runs (see #endSoon)
const CLOSE_PAUSED = 64; // paused by close() itself, not by the core (see close)
const PORT_SHIFT = 7;

/**
 * The writes waiting behind a connection's first one: made when a second write waits, and
 * kept while the connection lives (a busy socket reuses it every turn).
 */
class WaitingWrites {
  /** The writes, oldest first; entries before `head` are sent. */
  readonly items: Uint8Array[] = [];
  head = 0;
  /**
   * Small writes copied together behind `items` once it holds many entries (see write),
   * and how much of it is used; it becomes an entry of `items` when full or flushed.
   */
  tail: Uint8Array | undefined;
  tailLength = 0;

  /** The small writes gathered so far become one entry. */
  closeTail(): void {
    this.items.push(this.tail!.subarray(0, this.tailLength));
    this.tail = undefined;
    this.tailLength = 0;
  }
}

/**
 * A Bun TCP socket as a core Connection. Writes made in one event-loop turn are coalesced
 * into one syscall; a partial write parks the rest until Bun reports `drain`, and later
 * writes queue behind it so bytes never reorder. `pause()` stops Bun reading the socket
 * (the peer meets TCP backpressure), and while paused every flush tells the handler
 * (`onDrain`). The socket's `data` is this object; it holds the handler. Kept small (80
 * bytes, eight slots): an idle connection holds no array and no timer, and its states and
 * the peer's port are one number.
 */
export class BunSocketConnection implements Connection {
  /** Who gets what arrives; set right after `accept`. */
  handler: ConnectionHandler | undefined;
  /** The first write waiting to go out, and the ones after it (made once there are two). */
  #first: Uint8Array | undefined;
  #more: WaitingWrites | undefined;
  #pendingBytes = 0;
  /** State bits, and the peer's port above them (read at accept: once the socket closed Bun no longer says). */
  #state: number;
  /** The close guard or the linger timer, only while closing. */
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly socket: Socket<unknown>, readonly remoteIp: string) {
    this.#state = (socket.remotePort & 0xffff) << PORT_SHIFT;
  }

  get transport(): string {
    return "tcp";
  }

  /** "IP:PORT" ("[IPv6]:PORT"), as logs show a client (Bun's socket.remoteAddress is the IP alone). */
  get remoteAddress(): string {
    // Made when asked (logs, refusals), not kept: one string less per idle connection.
    const ip = this.remoteIp;
    const port = this.#state >>> PORT_SHIFT;
    return port ? (ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`) : ip;
  }

  write(bytes: Uint8Array): void {
    const state = this.#state;
    if ((state & (CLOSED | CLOSING)) !== 0) return;
    const n = bytes.byteLength;
    if (this.#first === undefined) this.#first = bytes;
    else {
      const more = this.#more ??= new WaitingWrites();
      if (n <= SMALL_WRITE && (more.tail !== undefined || more.items.length - more.head >= MANY_WRITES)) {
        // Many small writes waiting (a client that does not read, its acks piling up):
        // their bytes are copied together, so what waits costs its size rather than an
        // entry and a reference per packet.
        if (more.tail !== undefined && more.tailLength + n > TAIL_SIZE) more.closeTail();
        more.tail ??= new Uint8Array(TAIL_SIZE);
        more.tail.set(bytes, more.tailLength);
        more.tailLength += n;
      } else {
        if (more.tail !== undefined) more.closeTail();
        more.items.push(bytes);
      }
    }
    this.#pendingBytes += n;
    if ((state & (SCHEDULED | BLOCKED)) === 0) {
      this.#state = state | SCHEDULED;
      scheduleFlush(this);
    }
  }

  bufferedBytes(): number {
    return (this.#state & LINGERING) !== 0 ? 0 : this.#pendingBytes;
  }

  /**
   * Bytes from the peer. Once the connection is closing nothing listens: during the linger
   * (see #endSoon) at most LINGER_READ_MAX bytes are read and dropped, then reading stops;
   * past that a peer that is still sending gets the reset it asked for. Counted in
   * #pendingBytes, which has nothing left to count once the linger starts.
   */
  onData(data: Uint8Array): void {
    const state = this.#state;
    if ((state & (CLOSING | CLOSED)) === 0) {
      this.handler?.onData(data);
      return;
    }
    if ((state & LINGERING) === 0) return;
    this.#pendingBytes += data.byteLength;
    if (this.#pendingBytes > LINGER_READ_MAX && (state & PAUSED) === 0) {
      this.#state |= PAUSED;
      this.socket.pause();
    }
  }

  /**
   * Write what is pending: one send of everything when it fits the shared scratch buffer
   * (the common case), else blocks of up to SCRATCH_MAX until the kernel takes no more,
   * so that a large backlog is never joined into one buffer of its own.
   */
  flush(): void {
    this.#state &= ~(SCHEDULED | BLOCKED);
    // Lingering, nothing is owed (see #endSoon): #pendingBytes counts bytes read, not owed.
    if ((this.#state & (CLOSED | LINGERING)) !== 0) return;
    const waiting = this.#more;
    if (waiting?.tail !== undefined) waiting.closeTail();
    const more = waiting?.items;
    while (this.#pendingBytes > 0) {
      let data: Uint8Array;
      let shared = false;
      // Entries of `more` (from waiting.head) joined behind #first in this block.
      let joined = 0;
      if (more === undefined || waiting!.head === more.length || this.#first!.byteLength >= SCRATCH_MAX) {
        data = this.#first!;
      } else {
        let n = this.#first!.byteLength;
        let i = waiting!.head;
        while (i < more.length && n + more[i]!.byteLength <= SCRATCH_MAX) n += more[i++]!.byteLength;
        if (scratch.byteLength < n) {
          scratch = new Uint8Array(Math.min(SCRATCH_MAX, Math.max(n, scratch.byteLength * 2)));
        }
        scratch.set(this.#first!, 0);
        let at = this.#first!.byteLength;
        for (let j = waiting!.head; j < i; j++) {
          scratch.set(more[j]!, at);
          at += more[j]!.byteLength;
          more[j] = undefined as unknown as Uint8Array; // sent (or about to be kept below): free it
        }
        joined = i - waiting!.head;
        // A view (no backing store of its own) of just the joined bytes.
        data = scratch.subarray(0, n);
        shared = true;
      }
      const n = this.socket.write(data);
      const written = n < 0 ? 0 : n;
      this.#pendingBytes -= written;
      if (waiting !== undefined) waiting.head += joined;
      if (written < data.byteLength) {
        // The scratch buffer is the next flush's: what is left is copied out of it.
        this.#first = shared ? data.slice(written) : data.subarray(written);
        this.#state |= BLOCKED; // wait for drain
        if ((this.#state & PAUSED) !== 0 && written > 0) this.handler?.onDrain?.();
        return;
      }
      // The block went out: the next entry (if any) leads.
      if (more !== undefined && waiting!.head < more.length) {
        this.#first = more[waiting!.head]!;
        more[waiting!.head++] = undefined as unknown as Uint8Array;
      } else this.#first = undefined;
      if (more !== undefined && waiting!.head === more.length) {
        // The array is reused rather than replaced: one less allocation per busy socket per turn.
        more.length = 0;
        waiting!.head = 0;
      }
    }
    if ((this.#state & CLOSING) !== 0) this.#endSoon();
    else if ((this.#state & PAUSED) !== 0) this.handler?.onDrain?.();
  }

  pause(): void {
    if ((this.#state & (CLOSED | PAUSED)) !== 0) return;
    this.#state |= PAUSED;
    this.socket.pause();
  }

  resume(): void {
    if ((this.#state & (CLOSED | PAUSED)) !== PAUSED) return;
    this.#state &= ~PAUSED;
    this.socket.resume();
  }

  close(): void {
    if ((this.#state & (CLOSING | CLOSED)) !== 0) return;
    this.#state |= CLOSING;
    if (this.#pendingBytes === 0) {
      this.#endSoon();
      return;
    }
    if ((this.#state & (BLOCKED | SCHEDULED)) === 0) this.flush();
    // A peer that never reads must not keep the socket forever. Only armed while bytes are
    // still owed: a pending timer keeps the socket reachable, and a connection storm would
    // otherwise pin every closed socket for the full 5 s.
    if ((this.#state & (CLOSED | LINGERING)) === 0 && this.#pendingBytes > 0) {
      this.#timer = setTimeout(() => this.#end(), 5000);
      this.#timer.unref?.();
      // Nothing it sends now is read by anyone: stop reading it until our bytes are out
      // (#endSoon reads again for the linger). A peer flooding a closed connection that
      // does not read its own input would otherwise be read, and its bytes made garbage,
      // at full speed for those 5 s (a PINGREQ flood cut off for a malformed packet grew
      // RSS by 70 MB that way).
      if ((this.#state & PAUSED) === 0) {
        this.pause();
        this.#state |= CLOSE_PAUSED;
      }
    }
  }

  abort(): void {
    if ((this.#state & CLOSED) !== 0) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#state |= CLOSED;
    this.#first = undefined;
    this.#more = undefined;
    this.#pendingBytes = 0;
    this.socket.terminate();
  }

  /**
   * Send FIN now, so the peer sees the end at once, and close after a short linger. Closing
   * at once while the peer is still sending (acks for packets it has not yet read past)
   * makes the kernel answer with RST, and the peer then loses our last packets, the
   * DISCONNECT with its reason code among them. Meanwhile its input is discarded (the core
   * has stopped listening). Replaces the close guard.
   */
  #endSoon(): void {
    if ((this.#state & (CLOSED | LINGERING)) !== 0) return;
    this.#state |= LINGERING;
    // Read (and drop, up to LINGER_READ_MAX: see onData) what the peer still sends during
    // the linger, so that the close does not meet unread bytes and answer with RST, if
    // close() was what stopped reading it. A connection the core had paused stays paused:
    // that peer sent more than Ferry would hold. Nothing is owed any more (the linger starts
    // only once everything went out), so #pendingBytes counts what the linger reads.
    this.#pendingBytes = 0;
    if ((this.#state & CLOSE_PAUSED) !== 0) {
      this.#state &= ~(PAUSED | CLOSE_PAUSED);
      this.socket.resume();
    }
    this.socket.shutdown();
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#end(), LINGER_MS);
    this.#timer.unref?.();
  }

  #end(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if ((this.#state & CLOSED) !== 0) return;
    this.#state |= CLOSED;
    this.#first = undefined;
    this.#more = undefined;
    this.#pendingBytes = 0;
    this.socket.end();
  }

  markClosed(): void {
    this.#state |= CLOSED;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

export interface TcpListener {
  readonly host: string;
  readonly port: number;
  stop(): void;
}

/** Listen for MQTT over TCP and hand each connection to `accept`. */
export function listenTcp(host: string, port: number, accept: (conn: Connection) => ConnectionHandler): TcpListener {
  const server: TCPSocketListener<BunSocketConnection> = Bun.listen<BunSocketConnection>({
    hostname: host,
    port,
    socket: {
      open(socket) {
        const conn = new BunSocketConnection(socket, `${socket.remoteAddress}`);
        socket.data = conn;
        conn.handler = accept(conn);
      },
      data(socket, data) {
        socket.data.onData(data);
      },
      drain(socket) {
        socket.data.flush();
      },
      close(socket) {
        socket.data?.markClosed();
        socket.data?.handler?.onClose();
      },
      error(socket) {
        socket.data?.markClosed();
        socket.data?.handler?.onClose();
      },
    },
  });
  return { host: server.hostname, port: server.port, stop: () => server.stop(true) };
}
