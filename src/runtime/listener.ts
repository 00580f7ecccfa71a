import type { Connection, ConnectionHandler } from "../core/connection.ts";

/** A bound listener as the wiring sees it, whatever the runtime. */
export interface Listener {
  readonly host: string;
  readonly port: number;
  /** Stop accepting and drop the connections it still holds. */
  stop(): void;
}

/** Hands each accepted client to the broker. */
export type Accept = (conn: Connection) => ConnectionHandler;

/** Certificates for a TLS listener, already read from their files (PEM text). */
export interface TlsMaterial {
  cert: string;
  key: string;
  /** CA certificates client certificates are verified against; set, clients are asked for one. */
  ca: string | undefined;
  /** Refuse clients whose certificate `ca` does not verify (mutual TLS). */
  requireClientCert: boolean;
  /** TLS 1.2 cipher suites, an OpenSSL cipher list (`tls.ciphers`); undefined: the TLS library's own default. */
  ciphers?: string | undefined;
}

/** A TLS listener whose certificates can be replaced while it runs. */
export interface TlsListener extends Listener {
  /** Use `tls` for connections accepted from now on; open connections keep theirs. Throws on bad material. */
  reload(tls: TlsMaterial): void | Promise<void>;
}

/** What a runtime must provide to run Ferry's listeners. */
export interface ListenerFactory {
  /** MQTT over TLS 1.2+; absent on runtimes that cannot. */
  listenTls?(host: string, port: number, accept: Accept, tls: TlsMaterial): TlsListener | Promise<TlsListener>;
  /** MQTT over secure WebSocket (path /mqtt); absent on runtimes that cannot. */
  listenSecureWebSocket?(
    host: string,
    port: number,
    accept: Accept,
    maxPacketSize: number,
    tls: TlsMaterial,
  ): TlsListener | Promise<TlsListener>;
  listenTcp(host: string, port: number, accept: Accept): Listener | Promise<Listener>;
  listenWebSocket(
    host: string,
    port: number,
    accept: Accept,
    maxPacketSize: number,
  ): Listener | Promise<Listener>;
}
