/**
 * Everything the kernel needs to know, already validated and defaulted by the config
 * layer: src/config/schema.ts is the one place where defaults and their docs live, and
 * `brokerOptionsFrom` (src/config/load.ts) maps a config to these. Authentication,
 * limits and ACL rules are not here: they come in as ports (BrokerDeps.auth / .acl).
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
  /** Bytes a connection may have waiting to be written before QoS 0 messages to it are dropped (capped by maxOutputBytes). */
  maxBufferedBytes: number;
  /** A connection that has not sent CONNECT within this many milliseconds is closed. */
  connectTimeoutMs: number;
  /**
   * Output waiting for one client, in bytes, above which Ferry stops reading from it; it
   * reads again once the output is below half of it (`limits.max_output_bytes`).
   */
  maxOutputBytes: number;
  /** A paused connection whose output makes no progress for this long is closed; 0 = never. */
  sendTimeoutMs: number;
  /** A packet not complete this long after its first byte arrived closes the connection; 0 = never. */
  packetTimeoutMs: number;
  /** Bytes all connections without a CONNACK may hold (partial packets); 0 = no limit. */
  maxPreAuthBytes: number;
  /** The same per IP address; 0 = no limit. */
  maxPreAuthBytesPerIp: number;
  /**
   * The memory budget, in bytes (`limits.max_memory`): what Ferry holds for clients (output,
   * unread input, queued, in-flight and retained message bodies, connections, sessions and
   * subscriptions) is counted against it; 0 counts without enforcing (see MemoryBudget).
   */
  maxMemory: number;
  /** Publish $SYS topics every this many seconds; 0 disables. */
  sysInterval: number;
  retainAvailable: boolean;
  /** v5 reason code for ACL denials: 0x87 Not authorized, or 0x80 Unspecified error. */
  aclDenyCode: 0x87 | 0x80;
  /** Payload bytes queued per session beyond the in-flight window; more are dropped and counted. */
  maxQueuedBytes: number;
  /**
   * How long publishers wait (their acks held) for an online subscriber with a full queue
   * that takes no message at all, before it counts as stalled; 0: never wait (PublisherFlow).
   */
  stalledSubscriberMs: number;
  /**
   * How long writes nothing waits for may wait to share the next commit (WriteBehind); 0
   * writes them at once. Not a config key: set for `commit` durability only.
   */
  writeBehindMs: number;
  version: string;
}
