import { RC } from "../mqtt/reason-codes.ts";
import type { ClientConnection } from "./client-connection.ts";
import type { BrokerMetrics } from "./metrics.ts";

/**
 * The broker's once-a-second sweep over its connections: keep alive [MQTT-3.1.2-22]
 * (one and a half times the interval without a packet closes the connection) and the
 * CONNECT timeout for sockets that never send one.
 */
export function sweepConnections(
  clients: Iterable<ClientConnection>,
  now: number,
  options: { readonly connectTimeoutMs: number },
  metrics: BrokerMetrics,
): void {
  for (const c of clients) {
    if (c.state === "awaiting-connect") {
      // Half-open or idle sockets that never send CONNECT must not hold a slot forever.
      if (now - c.connectedAt > options.connectTimeoutMs) c.disconnect(RC.MAXIMUM_CONNECT_TIME);
      continue;
    }
    // A connection Ferry stopped reading (InboundFlow) may have sent packets it has not seen.
    if (c.inputHeld) continue;
    if (c.state === "connected" && c.keepAlive > 0 && now - c.lastActivity > c.keepAlive * 1500) {
      metrics.keepaliveTimeouts++;
      c.disconnect(RC.KEEP_ALIVE_TIMEOUT, "keep alive timeout");
    }
  }
}
