/**
 * What a runtime adapter hands the core for each accepted client: bytes out, a way to
 * close, and facts about the peer. The core never opens sockets itself.
 */
export interface Connection {
  /** "1.2.3.4:5678" or similar, for logs and limits. */
  readonly remoteAddress: string;
  /** Transport name for logs and metrics: "tcp", "ws", "tls", "memory". */
  readonly transport: string;
  /** Queue bytes for sending. Adapters coalesce writes made in the same tick. */
  write(bytes: Uint8Array): void;
  /** Bytes accepted by `write` but not yet handed to the OS. */
  bufferedBytes(): number;
  /** Flush what is queued, then close. */
  close(): void;
}

/** What the core gives back: the adapter calls these as events happen. */
export interface ConnectionHandler {
  onData(bytes: Uint8Array): void;
  /** The peer went away or the socket failed. Called once. */
  onClose(): void;
}
