import type { Connection, ConnectionHandler } from "../../core/connection.ts";
import type { Accept, Listener } from "../listener.ts";
import { WriteCoalescer } from "../bytes.ts";
import { deno } from "./deno-api.ts";

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
  /** Messages that arrived while paused, in order. */
  #held: Uint8Array[] | undefined;

  constructor(private readonly socket: WebSocket, readonly remoteAddress: string) {}

  /** A binary frame arrived. */
  receive(bytes: Uint8Array): void {
    if (this.#held) this.#held.push(bytes);
    else this.handler?.onData(bytes);
  }

  /**
   * Deno's WebSocket cannot stop reading its socket, so a paused connection holds the
   * frames that still arrive here and hands them over on `resume()`.
   */
  pause(): void {
    this.#held ??= [];
  }

  resume(): void {
    const held = this.#held;
    this.#held = undefined;
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
  _maxPacketSize: number,
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
      const remote = `${info.remoteAddr.hostname}:${info.remoteAddr.port}`;
      const { socket, response } = deno.upgradeWebSocket(req, protocol ? { protocol } : {});
      socket.binaryType = "arraybuffer";
      const conn = new DenoWsConnection(socket, remote);
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
