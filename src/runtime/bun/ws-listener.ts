import type { Server, ServerWebSocket } from "bun";
import type { Connection, ConnectionHandler } from "../../core/connection.ts";
import type { TlsListener, TlsMaterial } from "../listener.ts";
import { WriteCoalescer } from "../bytes.ts";
import { bunTlsOptions, explainTlsError } from "./tls-listener.ts";

/** Unread bytes above which a closing connection is cut off rather than closed gracefully (see close). */
const TERMINATE_ABOVE = 64 * 1024;

interface WsData {
  remote: string;
  ip: string | undefined;
  conn?: WsConnection;
}

/**
 * MQTT over WebSocket [MQTT-6.0.0-1..4]: binary frames, subprotocol "mqtt", path /mqtt.
 * Bun buffers under backpressure itself (`bufferedBytes()` reports it) and says when it
 * has written it (`drain`); `pause()` stops Bun reading the socket.
 */
class WsConnection implements Connection {
  #closed = false;
  #paused = false;
  #out = new WriteCoalescer((data) => {
    if (this.#closed) return;
    this.ws.sendBinary(data);
    // Sent at once or buffered by Bun: either way the handler may look again (Bun's
    // drain event comes only after backpressure).
    if (this.#paused) this.handler?.onDrain?.();
  });
  handler: ConnectionHandler | undefined;

  constructor(
    private readonly ws: ServerWebSocket<WsData>,
    readonly remoteAddress: string,
    readonly remoteIp: string | undefined,
    readonly transport: "ws" | "wss",
  ) {}

  write(bytes: Uint8Array): void {
    if (!this.#closed) this.#out.push(bytes);
  }

  bufferedBytes(): number {
    return this.#out.pendingBytes + (this.#closed ? 0 : this.ws.getBufferedAmount());
  }

  pause(): void {
    if (this.#closed || this.#paused) return;
    this.#paused = true;
    this.ws.pause();
  }

  resume(): void {
    if (this.#closed || !this.#paused) return;
    this.#paused = false;
    this.ws.resume();
  }

  /** Bun wrote what backpressure held back. */
  drained(): void {
    if (this.#paused && !this.#closed) this.handler?.onDrain?.();
  }

  close(): void {
    if (this.#closed) return;
    this.#out.flush();
    this.#closed = true;
    // Over 64 KiB still wait for a client that does not read: it would not read the close
    // frame behind them soon either, and Bun goes on reading (and dropping) what a closing
    // socket receives, at the client's speed. Cut it off instead (a client flooding into a
    // connection just closed was read at 170-550 MB/s). A client that merely lags a little
    // still gets the close handshake, after its last packets.
    if (this.ws.getBufferedAmount() > TERMINATE_ABOVE) this.ws.terminate();
    else this.ws.close();
  }

  abort(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#out.clear();
    this.ws.terminate();
  }

  markClosed(): void {
    this.#closed = true;
    this.#out.clear();
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
  const server = Bun.serve<WsData>(serveOptions(host, port, accept, maxPacketSize, undefined));
  return { host: server.hostname ?? host, port: server.port ?? port, stop: () => server.stop(true) };
}

/**
 * MQTT over secure WebSocket. A certificate reload binds a second server on the same port
 * with SO_REUSEPORT and stops the first from accepting (Bun 1.4.4's `server.reload` ignores
 * `tls`); its open WebSockets carry on. Client certificates are verified when `tls.ca` is
 * set, but Bun.serve does not expose them, so no CN-as-username here.
 */
export function listenSecureWebSocket(
  host: string,
  port: number,
  accept: (conn: Connection) => ConnectionHandler,
  maxPacketSize: number,
  tls: TlsMaterial,
): TlsListener {
  const servers: Server<WsData>[] = [];
  const serve = (p: number, m: TlsMaterial): Server<WsData> => {
    try {
      return Bun.serve<WsData>(serveOptions(host, p, accept, maxPacketSize, m));
    } catch (err) {
      throw explainTlsError(err);
    }
  };
  let current = serve(port, tls);
  servers.push(current);
  const boundPort = current.port ?? port;
  return {
    host: current.hostname ?? host,
    port: boundPort,
    reload(m: TlsMaterial) {
      const next = serve(boundPort, m);
      current.stop(false);
      // A retired server is kept only while it still holds WebSockets.
      for (let i = servers.length - 1; i >= 0; i--) if (servers[i]!.pendingWebSockets === 0) servers.splice(i, 1);
      current = next;
      servers.push(next);
    },
    stop() {
      for (const s of servers) s.stop(true);
      servers.length = 0;
    },
  };
}

function serveOptions(
  host: string,
  port: number,
  accept: (conn: Connection) => ConnectionHandler,
  maxPacketSize: number,
  tls: TlsMaterial | undefined,
): Bun.Serve.Options<WsData> {
  const transport = tls ? "wss" : "ws";
  return {
    hostname: host,
    port,
    ...(tls ? { tls: bunTlsOptions(tls), reusePort: true } : {}),
    fetch(req, srv) {
      const url = new URL(req.url);
      if (url.pathname !== "/mqtt") return new Response("not found", { status: 404 });
      const asked = (req.headers.get("sec-websocket-protocol") ?? "").split(",").map((s) => s.trim());
      const proto = asked.find((p) => p === "mqtt" || p === "mqttv3.1");
      const headers: Record<string, string> = proto ? { "Sec-WebSocket-Protocol": proto } : {};
      const remote = srv.requestIP(req);
      const ok = srv.upgrade(req, {
        headers,
        data: { remote: remote ? `${remote.address}:${remote.port}` : transport, ip: remote?.address },
      });
      return ok ? undefined : new Response("websocket upgrade expected", { status: 426 });
    },
    websocket: {
      maxPayloadLength: maxPacketSize + 8,
      // Past this much buffered output Bun would drop what is sent, silently; a dropped
      // PUBLISH or acknowledgement breaks the protocol, so the connection is closed
      // instead. Ferry keeps well below it: it stops reading a client over
      // limits.max_output_bytes, and drops QoS 0 over mqtt.max_buffered_bytes.
      backpressureLimit: Math.max(16 * 1024 * 1024, 2 * maxPacketSize),
      closeOnBackpressureLimit: true,
      open(ws) {
        const conn = new WsConnection(ws, ws.data.remote, ws.data.ip, transport);
        ws.data.conn = conn;
        conn.handler = accept(conn);
      },
      message(ws, message) {
        // Text frames are not MQTT [MQTT-6.0.0-1]: close.
        if (typeof message === "string") {
          ws.close(1003, "binary frames only");
          return;
        }
        ws.data.conn?.handler?.onData(message);
      },
      drain(ws) {
        ws.data.conn?.drained();
      },
      close(ws) {
        ws.data.conn?.markClosed();
        ws.data.conn?.handler?.onClose();
      },
    },
  };
}
