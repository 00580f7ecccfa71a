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
  /** How many PUBLISHes may await their PUBACK/PUBREC: its Receive Maximum, capped by ours (`mqtt.max_inflight`). */
  readonly inflightWindow: number;
  /**
   * How many QoS>0 deliveries may be in flight to it in all, QoS 2 ones past PUBREC included
   * (OutboundFlow#hasRoom): at least `inflightWindow`, never more than its Receive Maximum.
   */
  readonly inflightLimit: number;
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
