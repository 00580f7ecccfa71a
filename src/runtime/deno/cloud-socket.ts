/**
 * The uplink's connections out (src/sync/socket-port.ts) with `Deno.connect` and
 * `Deno.connectTls` (rustls): the same write path as accepted connections
 * (DenoTcpConnection: a tick's writes in one `write`, later ones queued behind it).
 */
import type { CloudSocket, CloudSocketHandler, SocketOptions } from "../../sync/socket-port.ts";
import { deno, type DenoConn } from "./deno-api.ts";
import { DenoTcpConnection } from "./tcp-listener.ts";
import { readHold } from "../read-hold.ts";

/** Deno's error names, as Node's codes (`connect ECONNREFUSED 127.0.0.1:1883`), which logs and tests know. */
const NODE_CODES: Record<string, string> = {
  ConnectionRefused: "ECONNREFUSED",
  ConnectionReset: "ECONNRESET",
  TimedOut: "ETIMEDOUT",
  AddrNotAvailable: "EADDRNOTAVAIL",
};

function connectFailure(err: unknown, o: SocketOptions): Error {
  const e = err instanceof Error ? err : new Error(String(err));
  const code = NODE_CODES[e.name];
  return code === undefined ? e : Object.assign(new Error(`connect ${code} ${o.host}:${o.port}`), { code });
}

/**
 * `conn`, telling the handler after each write the OS took (DenoTcpConnection reports
 * drains only while paused; the cloud client needs them to release QoS 0 PUBLISHes that
 * waited behind a full socket). After a timer, so the connection has counted the write.
 */
function reportingWrites(conn: DenoConn, h: CloudSocketHandler): DenoConn {
  return {
    get remoteAddr() {
      return conn.remoteAddr;
    },
    read: (b) => conn.read(b),
    write: async (d) => {
      const n = await conn.write(d);
      setTimeout(() => h.onDrain(), 0);
      return n;
    },
    setNoDelay: (on) => conn.setNoDelay(on),
    close: () => conn.close(),
  };
}

/**
 * Undefined for `tls.reject_unauthorized: false`: Deno's TLS always verifies the
 * certificate, so such an uplink goes through MQTT.js (node:tls), which can skip it.
 */
export function connectCloudSocket(o: SocketOptions, h: CloudSocketHandler): Promise<CloudSocket> | undefined {
  const tls = o.tls;
  if (tls && !tls.rejectUnauthorized) return undefined;
  return (async () => {
    let conn: DenoConn;
    try {
      if (tls) {
        const text = (b: Uint8Array | undefined) => (b === undefined ? undefined : new TextDecoder().decode(b));
        const ca = text(tls.ca);
        const cert = text(tls.cert);
        const key = text(tls.key);
        const t = await deno.connectTls({
          hostname: o.host,
          port: o.port,
          ...(ca !== undefined ? { caCerts: [ca] } : {}),
          ...(cert !== undefined && key !== undefined ? { cert, key } : {}),
        });
        try {
          await t.handshake(); // a certificate the cloud or Ferry refuses fails here, not at the first read
        } catch (err) {
          t.close();
          throw err;
        }
        conn = t;
      } else conn = await deno.connect({ hostname: o.host, port: o.port, transport: "tcp" });
    } catch (err) {
      throw connectFailure(err, o);
    }
    try {
      conn.setNoDelay(true);
    } catch {
      // not every platform supports it
    }
    const c = new DenoTcpConnection(reportingWrites(conn, h));
    void c.readLoop({ onData: (b) => h.onData(b), onClose: () => h.onClose() });
    return {
      write: (bytes) => c.write(bytes),
      bufferedBytes: () => c.bufferedBytes(),
      holdReads: readHold(c), // the read loop waits before its next read
      close: () => c.close(),
    };
  })();
}
