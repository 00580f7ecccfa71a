/** What an uplink reports: $SYS/broker/uplink/<name>/, the admin API and /metrics (README, Uplink). */
import type { EndpointStatus } from "./endpoints.ts";

export type LinkState = "stopped" | "connecting" | "connected" | "backoff" | "paused";

export interface LinkStatus {
  name: string;
  /** The endpoint in use (connected) or being tried. */
  url: string;
  endpoints: EndpointStatus[];
  state: LinkState;
  /** Every log offset up to here is forwarded (or skipped as not matching). */
  cursor: number;
  /** Log entries behind the cursor: an upper bound on the messages still to forward. */
  backlogEntries: number;
  /** Age of the oldest message after the cursor that is still to be forwarded, in ms (0 if none). */
  oldestPendingMs: number;
  inflight: number;
  /** Messages in flight at most now: max_inflight, or less if the cloud's Receive Maximum is lower. */
  window: number;
  sent: number;
  acknowledged: number;
  /** Messages acknowledged per second, averaged over the last status interval. */
  drainRate: number;
  droppedTtl: number;
  droppedRefused: number;
  /** Skipped by buffer.max_messages; persisted, so it survives restarts. */
  droppedBuffer: number;
  /** Skipped because the rendered remote topic is not a valid topic name. */
  droppedInvalid: number;
  /** Times the cloud answered 0x96/0x97 and the link held back instead of disconnecting. */
  quotaBackoffs: number;
  downlinkReceived: number;
  /** Cloud commands refused because their local topic was invalid (or a $ topic). */
  downlinkRefused: number;
  /** Connections that ended after being established. */
  reconnects: number;
  /** Connection attempts (each endpoint tried counts). */
  connectAttempts: number;
  lastError: string | undefined;
  connectedSince: number | undefined;
}
