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

  constructor(now: number) {
    this.startedAt = now;
  }
}
