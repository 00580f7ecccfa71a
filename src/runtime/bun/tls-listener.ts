import type { Socket, TCPSocketListener, TLSOptions } from "bun";
import type { ClientCertificate } from "../../core/connection.ts";
import type { Accept, TlsListener, TlsMaterial } from "../listener.ts";
import { BunSocketConnection } from "./tcp-listener.ts";

/** A TLS socket: the TCP connection's write path, plus what the client certificate says. */
class BunTlsConnection extends BunSocketConnection {
  override get transport(): string {
    return "tls";
  }

  constructor(private readonly tlsSocket: Socket<BunTlsConnection>, remoteIp: string, private readonly asked: boolean) {
    super(tlsSocket as Socket<unknown>, remoteIp);
  }

  clientCertificate(): ClientCertificate | undefined {
    if (!this.asked) return undefined;
    return certificateOf(this.tlsSocket);
  }
}

/** What `socket` was shown as a client certificate; undefined when none. */
export function certificateOf(
  socket: { authorized: boolean; getPeerCertificate(): unknown },
): ClientCertificate | undefined {
  let cert: { subject?: { CN?: string | string[] } } | null | undefined;
  try {
    cert = socket.getPeerCertificate() as typeof cert;
  } catch {
    return undefined;
  }
  if (!cert?.subject) return undefined;
  const cn = cert.subject.CN;
  // Several CNs would make the identity ambiguous: then there is none.
  return { verified: socket.authorized === true, commonName: typeof cn === "string" && cn !== "" ? cn : undefined };
}

/**
 * Bun's TLS options for `m`. BoringSSL offers TLS 1.2 and 1.3 only, so older clients fail
 * the handshake; `ciphers` restricts the TLS 1.2 suites (BoringSSL's own default includes
 * plain-RSA key exchange and CBC with SHA-1). Throws `tls.ciphers: …` when BoringSSL
 * accepts none of the names (an unknown name among known ones is skipped, as OpenSSL does).
 */
export function bunTlsOptions(m: TlsMaterial): TLSOptions {
  const asked = m.ca !== undefined;
  return {
    cert: m.cert,
    key: m.key,
    ...(m.ciphers !== undefined ? { ciphers: m.ciphers } : {}),
    ...(asked ? { ca: m.ca, requestCert: true, rejectUnauthorized: m.requireClientCert } : {}),
  };
}

/** Name the config key when BoringSSL refuses the cipher list. */
export function explainTlsError(err: unknown): unknown {
  if (err instanceof Error && /cipher/i.test(err.message) && !err.message.startsWith("tls.ciphers")) {
    return new Error(`tls.ciphers: ${err.message} (no suite in the list is known to BoringSSL)`);
  }
  return err;
}

/**
 * MQTT over TLS with `Bun.listen`. Bun cannot swap a listener's certificate in place
 * (neither `listener.reload` nor `server.reload` takes `tls`, checked on Bun 1.4.4), so a
 * reload binds a second listener on the same port with SO_REUSEPORT and the new
 * certificate, then stops the first from accepting; its open connections carry on.
 * SO_REUSEPORT lets only processes of the same user share the port on Linux.
 */
export function listenTls(host: string, port: number, accept: Accept, tls: TlsMaterial): TlsListener {
  /** Listeners still holding connections: the current one, and earlier ones until they drain. */
  const generations = new Map<TCPSocketListener<BunTlsConnection>, { open: number; retired: boolean }>();
  const bind = (p: number, m: TlsMaterial): TCPSocketListener<BunTlsConnection> => {
    const asked = m.ca !== undefined;
    const gen = { open: 0, retired: false };
    // Filled in once Bun.listen returns; the close callback below may run only after that.
    const self: { listener?: TCPSocketListener<BunTlsConnection> } = {};
    const gone = () => {
      if (--gen.open === 0 && gen.retired && self.listener) generations.delete(self.listener);
    };
    const options = {
      hostname: host,
      port: p,
      reusePort: true,
      tls: bunTlsOptions(m),
      socket: {
        open(socket: Socket<BunTlsConnection>) {
          gen.open++;
          const conn = new BunTlsConnection(socket, `${socket.remoteAddress}`, asked);
          socket.data = conn;
          conn.handler = accept(conn);
        },
        data(socket: Socket<BunTlsConnection>, data: Uint8Array) {
          socket.data.onData(data);
        },
        drain(socket: Socket<BunTlsConnection>) {
          socket.data.flush();
        },
        close(socket: Socket<BunTlsConnection>) {
          if (!socket.data) return;
          socket.data.markClosed();
          socket.data.handler?.onClose();
          gone();
        },
        error(socket: Socket<BunTlsConnection>) {
          socket.data?.markClosed();
          socket.data?.handler?.onClose();
        },
      },
    };
    // `reusePort` works for Bun.listen but is missing from its option types.
    let listener: TCPSocketListener<BunTlsConnection>;
    try {
      listener = Bun.listen<BunTlsConnection>(options as Bun.TCPSocketListenOptions<BunTlsConnection>);
    } catch (err) {
      throw explainTlsError(err);
    }
    self.listener = listener;
    generations.set(listener, gen);
    return listener;
  };
  let current = bind(port, tls);
  const boundPort = current.port;
  return {
    host: current.hostname,
    port: boundPort,
    reload(m: TlsMaterial) {
      const next = bind(boundPort, m); // throws on a bad certificate or key; the old one stays
      const old = current;
      current = next;
      old.stop(false);
      const gen = generations.get(old);
      if (gen) {
        gen.retired = true;
        if (gen.open === 0) generations.delete(old);
      }
    },
    stop() {
      for (const l of generations.keys()) l.stop(true);
      generations.clear();
    },
  };
}
