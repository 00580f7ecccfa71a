/** Counters the broker keeps; $SYS topics, logs and (later) /metrics read them. */
export class BrokerMetrics {
  readonly startedAt: number;
  connectionsTotal = 0;
  connectionsRefused = 0;
  messagesReceived: [number, number, number] = [0, 0, 0];
  messagesSent: [number, number, number] = [0, 0, 0];
  bytesReceived = 0;
  bytesSent = 0;
  /** Connections closed because of a malformed packet or protocol violation. */
  protocolErrors = 0;
  /** Messages dropped because a session queue was full. */
  droppedQueueFull = 0;
  /** QoS 0 messages dropped because the subscriber was not reading. */
  droppedSlowConsumer = 0;
  /** Messages dropped because their Message Expiry Interval passed. */
  droppedExpired = 0;
  /** Outgoing messages dropped because they exceed the client's Maximum Packet Size. */
  droppedTooLarge = 0;
  /** Publishes refused because storage is full. */
  refusedStorageFull = 0;
  keepaliveTimeouts = 0;
  /** Messages not queued for a session because its queue already held `maxQueuedBytes`. */
  droppedQueueBytes = 0;
  /** QoS>0 publishes whose PUBACK/PUBREC waited for room in an online subscriber's full queue. */
  publishesHeld = 0;
  /** Times an online subscriber with a full queue made no progress for `stalledSubscriberMs`. */
  subscribersStalled = 0;
  /** Times a connection's reading was paused because its output was over `maxOutputBytes`. */
  pausedReading = 0;
  /** Connections closed because, paused, their output made no progress for `sendTimeoutMs`. */
  disconnectedNotReading = 0;
  /** Connections closed because a packet was not complete within `packetTimeoutMs` of its first byte. */
  disconnectedPacketTimeout = 0;
  /** Connections closed before CONNACK because they held more than the pre-auth byte budget. */
  refusedPreAuthBytes = 0;
  /** Messages the memory budget dropped: additions to offline or stalled sessions' queues, QoS 0 queued or refused. */
  droppedMemory = 0;
  /** CONNECTs refused because the memory budget was past its high level (0x97, 3.1.1 code 3). */
  refusedMemoryConnections = 0;
  /** QoS 1/2 publishes refused because the memory budget was at its limit (v5 0x97; 3.1.1 closed). */
  refusedMemoryPublishes = 0;
  /** Times a publishing connection was slowed by the memory budget (acks held, reading paused). */
  throttledPublishers = 0;
  /** Times a publisher's reading was paused because slow consumers dropped its QoS 0 messages (InboundFlow). */
  pacedPublishers = 0;

  // ---- security (src/auth) ----
  /** CONNECTs refused with a wrong password or an unknown username (0x86 / 4). */
  authBadCredentials = 0;
  /** CONNECTs refused as not authorized: anonymous when not allowed, no way to authenticate (0x87 / 5). */
  authNotAuthorized = 0;
  /** CONNECTs refused because password checks were saturated (0x89). */
  authBusy = 0;
  /** Publishes refused by the ACL (v5 0x87; 3.1.1 acknowledged and dropped). */
  aclDeniedPublish = 0;
  /** Subscriptions refused by the ACL (0x87 / 0x80 in SUBACK). */
  aclDeniedSubscribe = 0;
  /** Messages not delivered to a subscriber the ACL does not let read their topic. */
  aclDeniedDelivery = 0;
  /** Connections refused because their address opened too many per second (0x9F). */
  refusedConnectionRate = 0;
  /** Connections refused because their address already had too many open (0x97). */
  refusedConnectionsPerIp = 0;
  /** CONNECTs refused because the client id or address is banned (0x8A). */
  refusedBanned = 0;
  /** Bans issued for flapping client ids. */
  bansFlapping = 0;
  /** Bans issued for addresses with too many failed logins. */
  bansAuthFailures = 0;
  /** Clients disconnected for publishing faster than `maxPublishRate` (0x96). */
  disconnectedMessageRate = 0;

  constructor(now: number) {
    this.startedAt = now;
  }
}
