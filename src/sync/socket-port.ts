/**
 * The port through which Ferry's own cloud client (cloud-socket-client.ts) gets a TCP or
 * TLS connection: src/sync stays free of runtime APIs, and each runtime provides it
 * (src/runtime/bun/cloud-socket.ts, src/runtime/deno/cloud-socket.ts), wired in
 * src/runtime/start-server.ts.
 */

export interface SocketTlsOptions {
  /** PEM; absent: the runtime's trusted CAs. */
  ca?: Uint8Array | undefined;
  /** Client certificate and key (PEM), for mutual TLS. */
  cert?: Uint8Array | undefined;
  key?: Uint8Array | undefined;
  /** false: accept any certificate (testing only). */
  rejectUnauthorized: boolean;
  /** The name the certificate must be for (and SNI, unless it is an IP address). */
  serverName: string;
}

export interface SocketOptions {
  host: string;
  port: number;
  /** Present: TLS over the connection. */
  tls?: SocketTlsOptions | undefined;
}

/** An open connection. */
export interface CloudSocket {
  /**
   * Queue bytes. Writes made in one task (or event-loop turn) go to the OS together, in
   * order; what the OS does not take waits (bufferedBytes) until it drains.
   */
  write(bytes: Uint8Array): void;
  /** Bytes accepted by `write` and not yet taken by the OS. */
  bufferedBytes(): number;
  /**
   * Read nothing for about `ms` (what the peer sends meanwhile waits in the kernel), then
   * read again: what arrived in between comes in one read. No-op while a hold is on.
   */
  holdReads(ms: number): void;
  /** Send what is queued, then close. */
  close(): void;
}

export interface CloudSocketHandler {
  /** Bytes read; the chunk may be reused once this returns. */
  onData(bytes: Uint8Array): void;
  /** Bytes that waited went to the OS (called after a write the OS took only part of). */
  onDrain(): void;
  /** The connection ended; `error` when it failed (a TLS alert, a reset). Called once. */
  onClose(error?: Error): void;
}

/**
 * Open a connection; rejects with an Error whose message says why (Node's wording where
 * there is one, e.g. `connect ECONNREFUSED 127.0.0.1:1883`, or the TLS verification
 * error). Returns undefined when this runtime cannot make such a connection (then the
 * MQTT.js client is used).
 */
export type ConnectSocket = (o: SocketOptions, h: CloudSocketHandler) => Promise<CloudSocket> | undefined;
