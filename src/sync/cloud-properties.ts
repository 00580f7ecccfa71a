/**
 * The MQTT 5 properties a forwarded message carries to the cloud: the publisher's own
 * (content type, response topic, correlation data, user properties, expiry), and
 * Ferry's user properties (README, Uplink):
 * - `ferry-edge-id`, `ferry-log-id`, `ferry-offset`: the dedup key. An offset is the
 *   message's place in this gateway's durable log, so it is the same at every re-send
 *   and across restarts; the log id changes only when the log starts afresh (a new
 *   database file, or memory storage restarted), so a key never names two messages.
 * - `ferry-received-at`: when Ferry received it (ISO 8601, the gateway's clock), and
 *   `ferry-clock`: whether that clock was synchronised then ("synced", "unsynced",
 *   "unknown").
 * - `ferry-replay`: "true" on a message logged before the current cloud connection
 *   came up (it waited through an outage or a restart, or is a re-send), so consumers
 *   keep it from overwriting a live reading. Absent on live messages.
 * MQTT 3.1.1 has no properties: none of this reaches a 3.1.1 cloud.
 */
import type { Message } from "../store/store.ts";
import type { CloudPublish } from "./cloud-client.ts";

export type ClockState = "synced" | "unsynced" | "unknown";

export interface FerryStamp {
  edgeId: string;
  logId: string;
  replay: boolean;
  clock: ClockState;
}

export class PropertyStamper {
  #isoAt = -1;
  #iso = "";

  properties(m: Message, now: number, s: FerryStamp): CloudPublish["properties"] {
    const mp = m.properties;
    const user: Record<string, string | string[]> = mp?.userProperties ? { ...mp.userProperties } : {};
    if (m.receivedAt !== this.#isoAt) {
      this.#isoAt = m.receivedAt;
      this.#iso = new Date(m.receivedAt).toISOString();
    }
    user["ferry-received-at"] = this.#iso;
    user["ferry-clock"] = s.clock;
    user["ferry-edge-id"] = s.edgeId;
    user["ferry-log-id"] = s.logId;
    user["ferry-offset"] = String(m.offset);
    if (s.replay) user["ferry-replay"] = "true";
    else delete user["ferry-replay"]; // a publisher cannot fake the marker
    const out: NonNullable<CloudPublish["properties"]> = { userProperties: user };
    if (mp) {
      if (mp.payloadFormatIndicator !== undefined) out.payloadFormatIndicator = mp.payloadFormatIndicator;
      if (mp.contentType !== undefined) out.contentType = mp.contentType;
      if (mp.responseTopic !== undefined) out.responseTopic = mp.responseTopic;
      if (mp.correlationData !== undefined) out.correlationData = Buffer.from(mp.correlationData);
    }
    if (m.expiresAt !== undefined) out.messageExpiryInterval = Math.max(1, Math.ceil((m.expiresAt - now) / 1000));
    return out;
  }
}
