import type { Connection } from "./connection.ts";
import type { Outbound } from "./session.ts";

/** Where a connection is in its life; only "connected" ones receive messages. */
export type PeerState = "awaiting-connect" | "connecting" | "connected" | "closed";

/**
 * What sessions, the router and the outbound flow need from the connection a session is
 * attached to. `ClientConnection` is the one implementation; keeping the kernel's message
 * path on this interface keeps it from reaching into the protocol state machine.
 */
export interface Peer {
  readonly state: PeerState;
  readonly version: 3 | 4 | 5;
  readonly isV5: boolean;
  readonly conn: Connection;
  /** How many QoS>0 messages may be in flight to it: its Receive Maximum, capped by ours. */
  readonly inflightWindow: number;
  /** Output waiting for it (adapter and held for a commit): deliveries wait while over `maxOutputBytes`. */
  outputBytes(): number;
  /** Send an application message; false when it was dropped instead (too large, expired, denied). */
  sendPublish(o: Outbound, dup: boolean): boolean;
  sendPubrel(packetId: number): void;
  sendPubrelNotFound(packetId: number): void;
  /** Hold all output to it until `commit` settles (see ClientConnection.holdOutputUntil). */
  holdOutputUntil(commit: Promise<void>): void;
  /** A new connection with the same client id takes its session [MQTT-3.1.4-3]. */
  takeover(): void;
}
