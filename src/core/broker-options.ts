import type { AclRule } from "../auth/acl.ts";
import { noLimits, type SecurityLimits } from "../auth/limits.ts";

/**
 * Everything the kernel needs to know, already validated and defaulted by the config
 * layer (src/config/schema.ts is where defaults and their docs live).
 */
export interface BrokerOptions {
  /** Largest packet Ferry accepts, in bytes (also announced as Maximum Packet Size). */
  maxPacketSize: number;
  maxTopicLength: number;
  maxTopicLevels: number;
  /** Receive Maximum Ferry announces: QoS>0 publishes a client may have unacknowledged. */
  receiveMaximum: number;
  /** Cap on QoS>0 messages in flight to one client, whatever its Receive Maximum. */
  maxInflight: number;
  /** Messages queued per session beyond the in-flight window; more are dropped and counted. */
  maxQueuedMessages: number;
  /** Queue QoS 0 messages for offline persistent sessions (Mosquitto's queue_qos0_messages). */
  queueQos0: boolean;
  /**
   * `immediate`: a QoS 0/1 message goes to connected subscribers as soon as it is routed,
   * while its PUBACK still waits for the commit. `after_commit`: subscribers only ever see
   * durable messages. QoS 2 waits in both (its duplicate detection must be durable first).
   */
  liveDelivery: "immediate" | "after_commit";
  /** Topic Alias Maximum Ferry announces for client→broker aliases; 0 disables. */
  topicAliasMaximum: number;
  /**
   * Longest keep alive allowed, in seconds. A v5 client asking for more (or for 0) is
   * told this value as Server Keep Alive. 3.1.1 has no way to say so, and clamping a
   * 3.1.1 client's keep alive would disconnect clients that follow their own, so it is
   * left alone.
   */
  serverKeepAlive: number | undefined;
  /** Largest Session Expiry Interval granted, in seconds. */
  maxSessionExpiry: number;
  maxConnections: number;
  /** Bytes a connection may have waiting to be written before QoS 0 messages to it are dropped. */
  maxBufferedBytes: number;
  /** A connection that has not sent CONNECT within this many milliseconds is closed. */
  connectTimeoutMs: number;
  /** Publish $SYS topics every this many seconds; 0 disables. */
  sysInterval: number;
  retainAvailable: boolean;
  aclDefault: "allow" | "deny";
  aclRules: AclRule[];
  /** v5 reason code for ACL denials: 0x87 Not authorized, or 0x80 Unspecified error. */
  aclDenyCode: 0x87 | 0x80;
  /** Allow clients without a username (the config layer resolves its loopback-dependent default). */
  allowAnonymous: boolean;
  /** Take a verified TLS client certificate's Common Name as the username. */
  useIdentityAsUsername: boolean;
  /** Payload bytes queued per session beyond the in-flight window; more are dropped and counted. */
  maxQueuedBytes: number;
  /** Per-address connection limits, bans and the publish rate (src/auth/limits.ts). */
  limits: SecurityLimits;
  version: string;
}

export const defaultBrokerOptions: BrokerOptions = {
  maxPacketSize: 1024 * 1024,
  maxTopicLength: 65_535,
  maxTopicLevels: 128,
  receiveMaximum: 1024,
  maxInflight: 64,
  maxQueuedMessages: 10_000,
  queueQos0: false,
  liveDelivery: "immediate",
  topicAliasMaximum: 10,
  serverKeepAlive: undefined,
  maxSessionExpiry: 0xffffffff,
  maxConnections: 100_000,
  maxBufferedBytes: 8 * 1024 * 1024,
  connectTimeoutMs: 10_000,
  sysInterval: 10,
  retainAvailable: true,
  aclDefault: "allow",
  aclRules: [],
  aclDenyCode: 0x87,
  allowAnonymous: true,
  useIdentityAsUsername: false,
  maxQueuedBytes: 64 * 1024 * 1024,
  limits: noLimits,
  version: "0.0.0",
};
