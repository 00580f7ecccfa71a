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
   * Stop reading from the peer, so that one that sends faster than it reads what it is
   * sent meets transport backpressure (TCP) instead of making Ferry buffer the replies
   * without limit; `resume()` undoes it. Bytes already read may still arrive. While
   * paused the adapter tells the handler when output went out (`onDrain`). The core
   * pauses a connection whose output is over `limits.max_output_bytes`.
   */
  pause(): void;
  resume(): void;
  /** Flush what is queued, then close. */
  close(): void;
  /**
   * Close now: drop what is queued and read nothing more, not even the linger's few bytes
   * (the peer may see a reset). For a connection refused for what it sends before its
   * CONNECT is even read, whose bytes would only be read to be thrown away. Optional: the
   * core falls back to `close()`.
   */
  abort?(): void;
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
  /**
   * Output the adapter held went to the OS, some or all of it, while the connection was
   * paused: the handler may look at `bufferedBytes()` again and `resume()`. Adapters call
   * it after every flush made while paused (also one that emptied the buffer, and also
   * when no transport event reports it), and need not call it otherwise.
   */
  onDrain?(): void;
}
