import type { Connection, ConnectionHandler } from "../../core/connection.ts";
import type { Accept, Listener } from "../listener.ts";
import { WriteCoalescer } from "../bytes.ts";
import { deno } from "./deno-api.ts";

/** How often a paused connection looks whether Deno has written its output (it has no drain event). */
const DRAIN_POLL_MS = 50;

/** MQTT over WebSocket [MQTT-6.0.0-1..4] on a Deno WebSocket: binary frames only. */
class DenoWsConnection implements Connection {
  readonly transport = "ws";
  #closed = false;
  #out = new WriteCoalescer((data) => {
    if (this.#closed) return;
    try {
      this.socket.send(data); // buffered by Deno under backpressure; bufferedAmount reports it
    } catch {
      this.#closed = true;
    }
  });

  handler: ConnectionHandler | undefined;
  /** Messages that arrived while paused, in order, and their size. */
  #held: Uint8Array[] | undefined;
  #heldBytes = 0;
  #poll: ReturnType<typeof setInterval> | undefined;

  /** @param maxHeld bytes a paused connection may receive before it is closed (see pause) */
  constructor(
    private readonly socket: WebSocket,
    readonly remoteAddress: string,
    /** The per-address limits' key (see DenoTcpConnection.remoteIp). */
    readonly remoteIp: string,
    private readonly maxHeld: number,
  ) {}

  /** A binary frame arrived. */
  receive(bytes: Uint8Array): void {
    if (this.#held) {
      this.#held.push(bytes);
      this.#heldBytes += bytes.byteLength;
      // Nothing stops the peer sending: past this it is closed rather than buffered.
      if (this.#heldBytes > this.maxHeld) {
        console.error(`ferry: closing WebSocket ${this.remoteAddress}: it sent ${this.#heldBytes} bytes while paused`);
        this.close();
      }
    } else this.handler?.onData(bytes);
  }

  /**
   * Deno's WebSocket cannot stop reading its socket, so a paused connection holds the
   * frames that still arrive here, up to `maxHeld` bytes, and hands them over on
   * `resume()`. Deno reports no drain either: while paused, its buffered amount is
   * looked at every DRAIN_POLL_MS.
   */
  pause(): void {
    if (this.#held || this.#closed) return;
    this.#held = [];
    this.#heldBytes = 0;
    this.#poll = setInterval(() => {
      if (this.#closed) clearInterval(this.#poll);
      else this.handler?.onDrain?.();
    }, DRAIN_POLL_MS);
  }

  resume(): void {
    clearInterval(this.#poll);
    this.#poll = undefined;
    const held = this.#held;
    this.#held = undefined;
    this.#heldBytes = 0;
    // A handler may pause again meanwhile: `receive` then keeps the rest, in order.
    for (const bytes of held ?? []) this.receive(bytes);
  }

  write(bytes: Uint8Array): void {
    if (!this.#closed) this.#out.push(bytes);
  }

  bufferedBytes(): number {
    return this.#out.pendingBytes + (this.#closed ? 0 : this.socket.bufferedAmount);
  }

  close(): void {
    if (this.#closed) return;
    this.#out.flush();
    this.#closed = true;
    try {
      this.socket.close();
    } catch {
      // already closing
    }
  }

  markClosed(): void {
    this.#closed = true;
    this.#out.clear();
    clearInterval(this.#poll);
    this.#held = undefined;
  }
}

/**
 * MQTT over WebSocket on path /mqtt with `Deno.serve` and `Deno.upgradeWebSocket`.
 * Deno offers no per-frame size limit; a packet larger than `maxPacketSize` is still
 * refused by the broker from its fixed header.
 */
export async function listenWebSocket(
  host: string,
  port: number,
  accept: Accept,
  maxPacketSize: number,
): Promise<Listener> {
  const open = new Set<DenoWsConnection>();
  let bound!: (addr: { hostname: string; port: number }) => void;
  const listening = new Promise<{ hostname: string; port: number }>((resolve) => (bound = resolve));
  const server = deno.serve(
    { hostname: host, port, onListen: (addr) => bound(addr) },
    (req, info) => {
      if (new URL(req.url).pathname !== "/mqtt") return new Response("not found", { status: 404 });
      if ((req.headers.get("upgrade") ?? "").toLowerCase() !== "websocket") {
        return new Response("websocket upgrade expected", { status: 426 });
      }
      const asked = (req.headers.get("sec-websocket-protocol") ?? "").split(",").map((s) => s.trim());
      const protocol = asked.find((p) => p === "mqtt" || p === "mqttv3.1");
      // Read before upgrading: afterwards the request is closed and remoteAddr throws.
      const ip = info.remoteAddr.hostname;
      const remote = `${ip}:${info.remoteAddr.port}`;
      const { socket, response } = deno.upgradeWebSocket(req, protocol ? { protocol } : {});
      socket.binaryType = "arraybuffer";
      const conn = new DenoWsConnection(
        socket,
        remote,
        ip,
        Math.max(maxPacketSize, 1024 * 1024) + 64 * 1024,
      );
      socket.onopen = () => {
        open.add(conn);
        conn.handler = accept(conn);
      };
      socket.onmessage = (event: MessageEvent) => {
        // Text frames are not MQTT [MQTT-6.0.0-1]: close.
        if (typeof event.data === "string") {
          socket.close(1003, "binary frames only");
          return;
        }
        conn.receive(new Uint8Array(event.data as ArrayBuffer));
      };
      socket.onclose = () => {
        open.delete(conn);
        conn.markClosed();
        const h = conn.handler;
        conn.handler = undefined;
        h?.onClose();
      };
      return response;
    },
  );
  const addr = await listening;
  return {
    host: addr.hostname,
    port: addr.port,
    stop() {
      for (const c of open) c.close();
      void server.shutdown().catch(() => {});
    },
  };
}
