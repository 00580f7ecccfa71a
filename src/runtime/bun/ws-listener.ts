import type { ServerWebSocket } from "bun";
import type { Connection, ConnectionHandler } from "../../core/connection.ts";
import { concat } from "./tcp-listener.ts";

interface WsData {
  remote: string;
  conn?: WsConnection;
  handler?: ConnectionHandler;
}

/** MQTT over WebSocket [MQTT-6.0.0-1..4]: binary frames, subprotocol "mqtt", path /mqtt. */
class WsConnection implements Connection {
  readonly transport = "ws";
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #scheduled = false;
  #closed = false;

  constructor(private readonly ws: ServerWebSocket<WsData>, readonly remoteAddress: string) {}

  write(bytes: Uint8Array): void {
    if (this.#closed) return;
    this.#pending.push(bytes);
    this.#pendingBytes += bytes.byteLength;
    if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  #flush(): void {
    this.#scheduled = false;
    if (this.#closed || this.#pendingBytes === 0) return;
    const data = this.#pending.length === 1 ? this.#pending[0]! : concat(this.#pending, this.#pendingBytes);
    this.#pending = [];
    this.#pendingBytes = 0;
    this.ws.sendBinary(data); // Bun buffers under backpressure; bufferedBytes() reports it
  }

  bufferedBytes(): number {
    return this.#pendingBytes + (this.#closed ? 0 : this.ws.getBufferedAmount());
  }

  close(): void {
    if (this.#closed) return;
    this.#flush();
    this.#closed = true;
    this.ws.close();
  }

  markClosed(): void {
    this.#closed = true;
  }
}

export interface WsListener {
  readonly host: string;
  readonly port: number;
  stop(): void;
}

export function listenWebSocket(
  host: string,
  port: number,
  accept: (conn: Connection) => ConnectionHandler,
  maxPacketSize: number,
): WsListener {
  const server = Bun.serve<WsData>({
    hostname: host,
    port,
    fetch(req, srv) {
      const url = new URL(req.url);
      if (url.pathname !== "/mqtt") return new Response("not found", { status: 404 });
      const asked = (req.headers.get("sec-websocket-protocol") ?? "").split(",").map((s) => s.trim());
      const proto = asked.find((p) => p === "mqtt" || p === "mqttv3.1");
      const headers: Record<string, string> = proto ? { "Sec-WebSocket-Protocol": proto } : {};
      const remote = srv.requestIP(req);
      const ok = srv.upgrade(req, { headers, data: { remote: remote ? `${remote.address}:${remote.port}` : "ws" } });
      return ok ? undefined : new Response("websocket upgrade expected", { status: 426 });
    },
    websocket: {
      maxPayloadLength: maxPacketSize + 8,
      open(ws) {
        const conn = new WsConnection(ws, ws.data.remote);
        ws.data.conn = conn;
        ws.data.handler = accept(conn);
      },
      message(ws, message) {
        // Text frames are not MQTT [MQTT-6.0.0-1]: close.
        if (typeof message === "string") {
          ws.close(1003, "binary frames only");
          return;
        }
        ws.data.handler?.onData(message);
      },
      close(ws) {
        ws.data.conn?.markClosed();
        ws.data.handler?.onClose();
      },
    },
  });
  return { host: server.hostname ?? host, port: server.port ?? port, stop: () => server.stop(true) };
}
