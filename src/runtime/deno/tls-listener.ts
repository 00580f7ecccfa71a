import { DEFAULT_TLS_CIPHERS } from "../../config/tls-ciphers.ts";
import type { ConnectionHandler } from "../../core/connection.ts";
import type { Accept, TlsListener, TlsMaterial } from "../listener.ts";
import { deno, type DenoConn, type DenoListener } from "./deno-api.ts";
import { DenoTcpConnection } from "./tcp-listener.ts";

class DenoTlsConnection extends DenoTcpConnection {
  override readonly transport: string = "tls";
}

function refuseClientCerts(m: TlsMaterial): void {
  // Deno.listenTls cannot ask for a client certificate; starting without the check would
  // silently drop a security requirement.
  if (m.ca !== undefined) {
    throw new Error("tls.ca: client certificates (mutual TLS) need Bun; Deno.listenTls cannot request them");
  }
  // rustls offers only forward-secret AEAD suites, which is what the default asks for; a
  // different list (say, legacy suites for an old device) cannot be honoured.
  if (m.ciphers !== undefined && m.ciphers !== DEFAULT_TLS_CIPHERS) {
    throw new Error(
      "tls.ciphers: Deno's TLS (rustls) cannot be given a cipher list; it offers only forward-secret AEAD suites (the default). Remove tls.ciphers or run on Bun",
    );
  }
}

/**
 * MQTT over TLS with `Deno.listenTls` (TLS 1.2 and 1.3, rustls). No client certificates. A
 * reload first proves the new pair on a throwaway listener, then closes the old listener
 * and binds the same port again (Deno's reusePort is unstable), so for a few milliseconds
 * new connections are refused; connections already accepted carry on.
 */
export function listenTls(host: string, port: number, accept: Accept, tls: TlsMaterial): TlsListener {
  refuseClientCerts(tls);
  const open = new Set<DenoTcpConnection>();
  const retired = new WeakSet<DenoListener>();
  let stopped = false;
  const serve = (listener: DenoListener) => {
    void (async () => {
      for (;;) {
        let conn: DenoConn;
        try {
          conn = await listener.accept();
        } catch (err) {
          if (stopped || retired.has(listener)) return;
          console.error(`ferry: TLS accept failed: ${(err as Error).message}`);
          await new Promise((resolve) => setTimeout(resolve, 100));
          continue;
        }
        const connection = new DenoTlsConnection(conn);
        open.add(connection);
        let handler: ConnectionHandler;
        try {
          handler = accept(connection);
        } catch {
          open.delete(connection);
          connection.close();
          continue;
        }
        void connection.readLoop(handler).finally(() => open.delete(connection));
      }
    })();
  };
  const bind = (p: number, m: TlsMaterial) =>
    deno.listenTls({ hostname: host, port: p, cert: m.cert, key: m.key, transport: "tcp" });
  let current = bind(port, tls);
  serve(current);
  const boundPort = current.addr.port;
  return {
    host: current.addr.hostname,
    port: boundPort,
    async reload(m: TlsMaterial) {
      refuseClientCerts(m);
      bind(0, m).close(); // throws on a bad pair while the old listener still serves
      retired.add(current);
      current.close();
      // The port is free only once the closed listener's pending accept has settled.
      for (let attempt = 0;; attempt++) {
        try {
          current = bind(boundPort, m);
          break;
        } catch (err) {
          if (attempt >= 100) throw err;
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      }
      serve(current);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      current.close();
      for (const c of open) c.close();
    },
  };
}
