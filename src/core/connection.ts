/**
 * What a runtime adapter hands the core for each accepted client: bytes out, a way to
 * close, and facts about the peer. The core never opens sockets itself.
 */
export interface Connection {
  /** "1.2.3.4:5678" or similar, for logs and limits. */
  readonly remoteAddress: string;
  /** The peer's IP address alone, for per-address limits; derived from remoteAddress when absent. */
  readonly remoteIp?: string;
  /** Transport name for logs and metrics: "tcp", "ws", "tls", "memory". */
  readonly transport: string;
  /** Queue bytes for sending. Adapters coalesce writes made in the same tick. */
  write(bytes: Uint8Array): void;
  /** Bytes accepted by `write` but not yet handed to the OS. */
  bufferedBytes(): number;
  /**
   * Stop handing incoming bytes to the handler, so a peer that sends too much meets
   * transport backpressure (TCP) instead of unbounded buffering; `resume()` undoes it.
   * Bytes already read may still arrive. For flow control (nothing pauses yet).
   */
  pause(): void;
  resume(): void;
  /** Flush what is queued, then close. */
  close(): void;
  /** TLS connections that asked for a client certificate: what the client presented. */
  clientCertificate?(): ClientCertificate | undefined;
}

/** A client certificate as the TLS layer saw it. */
export interface ClientCertificate {
  /** Whether it chains to the configured CA (tls.ca) and is valid now. */
  verified: boolean;
  /** The subject's Common Name, when there is exactly one. */
  commonName: string | undefined;
}

/** What the core gives back: the adapter calls these as events happen. */
export interface ConnectionHandler {
  onData(bytes: Uint8Array): void;
  /** The peer went away or the socket failed. Called once. */
  onClose(): void;
}
