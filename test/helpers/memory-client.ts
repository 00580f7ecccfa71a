/**
 * A raw MQTT peer over an in-memory connection (see memory-connection.ts): the same
 * interface as `RawClient` (helpers/raw-client.ts; both are a PacketPeer), without a socket.
 */
import type { MemoryConnection } from "./memory-connection.ts";
import { PacketPeer } from "./packet-peer.ts";

export class MemoryClient extends PacketPeer {
  constructor(readonly conn: MemoryConnection, version: 3 | 4 | 5) {
    super(version);
    conn.handler = {
      onData: (bytes) => this.onBytes(bytes),
      onClose: () => this.onClosed(),
    };
  }

  protected write(bytes: Uint8Array): void {
    this.conn.write(bytes);
  }

  pause(): void {
    this.conn.pause();
  }

  resume(): void {
    this.conn.resume();
  }

  close(): void {
    this.conn.close();
  }
}
