import { RC } from "../mqtt/reason-codes.ts";
import type { ClientConnection } from "./client-connection.ts";
import type { BrokerMetrics } from "./metrics.ts";

/**
 * The broker's once-a-second sweep over its connections: keep alive [MQTT-3.1.2-22]
 * (one and a half times the interval without a packet closes the connection), the
 * CONNECT timeout for sockets that never send one, the deadline for a packet to complete
 * once started (`limits.packet_timeout`), and the one for a client that does not read
 * (`limits.send_timeout`: paused, and its output makes no progress).
 */
export function sweepConnections(
  clients: Iterable<ClientConnection>,
  now: number,
  options: { readonly connectTimeoutMs: number; readonly sendTimeoutMs: number; readonly packetTimeoutMs: number },
  metrics: BrokerMetrics,
): void {
  for (const c of clients) {
    if (c.pausedAt !== 0) {
      // Not read from, so neither the packet deadline nor keep alive can blame it for
      // silence; but a client that reads none of its output must not hold it forever.
      if (options.sendTimeoutMs > 0 && now - c.progressAt > options.sendTimeoutMs) {
        metrics.disconnectedNotReading++;
        c.disconnect(RC.QUOTA_EXCEEDED, "not reading: output stalled");
        continue;
      }
    } else if (
      options.packetTimeoutMs > 0 && !c.inputHeld && !c.memoryHeld && c.partialSince !== 0 &&
      now - c.partialSince > options.packetTimeoutMs
    ) {
      // A packet trickling in (a byte every few seconds keeps keep alive happy) must not
      // keep the connection, and the bytes it holds, forever.
      metrics.disconnectedPacketTimeout++;
      c.disconnect(RC.QUOTA_EXCEEDED, "packet not completed in time");
      continue;
    }
    if (c.state === "awaiting-connect") {
      // Half-open or idle sockets that never send CONNECT must not hold a slot forever.
      if (now - c.connectedAt > options.connectTimeoutMs) c.disconnect(RC.MAXIMUM_CONNECT_TIME);
      continue;
    }
    // A connection Ferry stopped reading (InboundFlow, the memory budget) may have sent packets it has not seen.
    if (c.inputHeld || c.memoryHeld) continue;
    if (c.state === "connected" && c.keepAlive > 0 && now - c.lastActivity > c.keepAlive * 1500) {
      metrics.keepaliveTimeouts++;
      c.disconnect(RC.KEEP_ALIVE_TIMEOUT, "keep alive timeout");
    }
  }
}
