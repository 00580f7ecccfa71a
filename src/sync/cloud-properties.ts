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
 * MQTT 3.1.1 has no properties: there the same values can travel in an opt-in JSON
 * envelope around the payload (`envelope: "json"`, see `envelope`).
 *
 * An uplink's `stamp` chooses how many of them travel (`StampMode`): all six; only the
 * dedup key and the replay marker (`dedup`: about half the bytes, for metered links and
 * clouds that bill or slow down per byte); or none, as a bridge sends. The publisher's
 * own ferry-* properties are dropped in every mode, so a device can never fake them.
 */
import type { Message } from "../store/store.ts";
import type { CloudPublish } from "./cloud-client.ts";

export type ClockState = "synced" | "unsynced" | "unknown";

/** Which of Ferry's User Properties a forwarded message carries (`uplinks[].stamp`). */
export type StampMode = "full" | "dedup" | "none";

/** Ferry's property names: a publisher's own values under them never reach the cloud. */
const FERRY_KEYS = [
  "ferry-received-at",
  "ferry-clock",
  "ferry-edge-id",
  "ferry-log-id",
  "ferry-offset",
  "ferry-replay",
] as const;

export interface FerryStamp {
  edgeId: string;
  logId: string;
  replay: boolean;
  clock: ClockState;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The payload wrapped with Ferry's values, for clouds without properties:
 * `{"ferry":{"edge_id","log_id","offset","received_at","clock","replay"},"encoding":"utf8"|"base64","payload":…}`.
 * A UTF-8 payload is kept as a string, anything else base64.
 */
export function envelope(m: Message, s: FerryStamp): Uint8Array {
  let payload: string;
  let encoding: "utf8" | "base64";
  try {
    payload = strictUtf8.decode(m.payload);
    encoding = "utf8";
  } catch {
    payload = Buffer.from(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength).toString("base64");
    encoding = "base64";
  }
  const ferry = {
    edge_id: s.edgeId,
    log_id: s.logId,
    offset: m.offset,
    received_at: new Date(m.receivedAt).toISOString(),
    clock: s.clock,
    replay: s.replay,
  };
  return new TextEncoder().encode(JSON.stringify({ ferry, encoding, payload }));
}

export class PropertyStamper {
  readonly #mode: StampMode;
  #isoAt = -1;
  #iso = "";

  constructor(mode: StampMode = "full") {
    this.#mode = mode;
  }

  properties(m: Message, now: number, s: FerryStamp): CloudPublish["properties"] {
    const mp = m.properties;
    const mode = this.#mode;
    if (mode === "full" && m.receivedAt !== this.#isoAt) {
      this.#isoAt = m.receivedAt;
      this.#iso = new Date(m.receivedAt).toISOString();
    }
    let user: Record<string, string | string[]> | undefined;
    if (mp?.userProperties) {
      user = { ...mp.userProperties };
      for (const k of FERRY_KEYS) delete user[k]; // a publisher cannot fake them
      if (mode === "full") {
        user["ferry-received-at"] = this.#iso;
        user["ferry-clock"] = s.clock;
      }
      if (mode !== "none") {
        user["ferry-edge-id"] = s.edgeId;
        user["ferry-log-id"] = s.logId;
        user["ferry-offset"] = String(m.offset);
        if (s.replay) user["ferry-replay"] = "true";
      }
      if (Object.keys(user).length === 0) user = undefined;
    } else if (mode === "full") {
      // The common case (the publisher set none), once per forwarded message: one literal
      // with the same keys in the same order as above, so the same bytes on the wire.
      user = s.replay
        ? {
          "ferry-received-at": this.#iso,
          "ferry-clock": s.clock,
          "ferry-edge-id": s.edgeId,
          "ferry-log-id": s.logId,
          "ferry-offset": String(m.offset),
          "ferry-replay": "true",
        }
        : {
          "ferry-received-at": this.#iso,
          "ferry-clock": s.clock,
          "ferry-edge-id": s.edgeId,
          "ferry-log-id": s.logId,
          "ferry-offset": String(m.offset),
        };
    } else if (mode === "dedup") {
      user = s.replay
        ? {
          "ferry-edge-id": s.edgeId,
          "ferry-log-id": s.logId,
          "ferry-offset": String(m.offset),
          "ferry-replay": "true",
        }
        : { "ferry-edge-id": s.edgeId, "ferry-log-id": s.logId, "ferry-offset": String(m.offset) };
    }
    const out: NonNullable<CloudPublish["properties"]> = user === undefined ? {} : { userProperties: user };
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
