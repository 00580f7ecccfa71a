/**
 * How broker state looks in the admin API's JSON: snake_case fields, ISO times,
 * payloads as text or base64. Read-only projections; nothing here changes state.
 */
import type { ClientConnection } from "../core/client-connection.ts";
import type { ActiveSubscription, Outbound, Session } from "../core/session.ts";
import type { Message } from "../store/store.ts";
import { payloadView } from "./encoding.ts";

const NEVER_EXPIRES = 0xffffffff;
/** Queued messages listed in a session's detail; the count is always exact. */
export const QUEUED_SHOWN = 100;

export const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());

export function protocolName(v: number): string {
  return v === 5 ? "5.0" : v === 4 ? "3.1.1" : "3.1";
}

export function clientView(c: ClientConnection) {
  const s = c.session;
  return {
    client_id: c.clientId,
    username: c.username ?? null,
    protocol: protocolName(c.version),
    state: c.state,
    remote_address: c.conn.remoteAddress,
    transport: c.conn.transport,
    keep_alive: c.keepAlive,
    connected_at: iso(c.connectedAt),
    last_activity: iso(c.lastActivity),
    session: s
      ? {
        expiry_interval: s.expiryInterval,
        subscriptions: s.subscriptions.size,
        queued: s.queuedCount,
        inflight: s.inflight.size,
      }
      : null,
  };
}

export function clientDetailView(c: ClientConnection) {
  return {
    ...clientView(c),
    receive_maximum: c.clientReceiveMaximum,
    maximum_packet_size: Number.isFinite(c.clientMaxPacketSize) ? c.clientMaxPacketSize : null,
    topic_alias_maximum: c.clientTopicAliasMaximum,
    inflight_window: c.inflightWindow,
    will_topic: c.will?.message.topic ?? null,
    subscriptions: c.session
      ? [...c.session.subscriptions.values()].map((sub) => subscriptionView(c.clientId, sub))
      : [],
  };
}

export function sessionView(s: Session) {
  const expiresAt = s.client || s.expiryInterval >= NEVER_EXPIRES || s.disconnectedAt === undefined
    ? undefined
    : s.disconnectedAt + s.expiryInterval * 1000;
  return {
    client_id: s.clientId,
    connected: s.client !== undefined && s.client.state !== "closed",
    protocol: protocolName(s.protocolVersion),
    persistent: s.persistent,
    expiry_interval: s.expiryInterval,
    disconnected_at: iso(s.disconnectedAt),
    expires_at: iso(expiresAt),
    subscriptions: s.subscriptions.size,
    queued: s.queuedCount,
    inflight: s.inflight.size,
  };
}

function outboundView(o: Outbound) {
  return {
    offset: o.message.offset,
    topic: o.message.topic,
    qos: o.qos,
    retain: o.retain,
    payload_bytes: o.message.payload.byteLength,
    received_at: iso(o.message.receivedAt),
  };
}

/**
 * A session in detail. `queued` is its first queued deliveries with their messages
 * (`queuedShown`): bodies that wait in the store are read for the view, not kept.
 */
export function sessionDetailView(s: Session, queued: Outbound[]) {
  return {
    ...sessionView(s),
    subscription_list: [...s.subscriptions.values()].map((sub) => subscriptionView(s.clientId, sub)),
    queued_messages: queued.map(outboundView),
    inflight_messages: [...s.inflight.values()].map((o) => ({
      packet_id: o.packetId,
      phase: o.phase,
      ...outboundView(o),
    })),
    qos2_incoming: [...s.qos2Incoming],
  };
}

export function subscriptionView(clientId: string, sub: ActiveSubscription) {
  return {
    client_id: clientId,
    filter: sub.filter,
    share_group: sub.group ?? null,
    qos: sub.qos,
    no_local: sub.noLocal,
    retain_as_published: sub.retainAsPublished,
    retain_handling: sub.retainHandling,
    subscription_id: sub.subscriptionId ?? null,
  };
}

export function messageView(m: Message) {
  const p = m.properties;
  return {
    offset: m.offset,
    topic: m.topic,
    ...payloadView(m.payload),
    qos: m.qos,
    retain: m.retain,
    received_at: iso(m.receivedAt),
    expires_at: iso(m.expiresAt),
    origin: m.origin,
    properties: p
      ? {
        ...(p.contentType !== undefined ? { content_type: p.contentType } : {}),
        ...(p.responseTopic !== undefined ? { response_topic: p.responseTopic } : {}),
        ...(p.correlationData !== undefined ? { correlation_data: payloadView(p.correlationData).payload } : {}),
        ...(p.payloadFormatIndicator !== undefined ? { payload_format_indicator: p.payloadFormatIndicator } : {}),
        ...(p.userProperties !== undefined ? { user_properties: p.userProperties } : {}),
      }
      : null,
  };
}
