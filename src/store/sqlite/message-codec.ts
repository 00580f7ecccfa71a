import type { DeliveryRecord, Message, MessageProperties, QoS } from "../store.ts";
import type { SqlRow, SqlValue } from "./driver.ts";

/**
 * Converts between `Message`/`DeliveryRecord` and table rows. Columns hold the fields
 * the store queries or that are large (payload); the rarely used MQTT 5 properties
 * travel as one JSON text, with correlationData as base64 because JSON has no bytes.
 */

/** The message columns, in the order `messageParams` binds them. */
export const MESSAGE_COLUMNS = "offset, topic, payload, qos, retain, received_at, expires_at, props, origin";

export function messageParams(message: Message): SqlValue[] {
  return [
    message.offset,
    message.topic,
    message.payload,
    message.qos,
    message.retain ? 1 : 0,
    message.receivedAt,
    message.expiresAt ?? null,
    message.properties === undefined ? null : encodeProperties(message.properties),
    message.origin,
  ];
}

export function rowToMessage(row: SqlRow): Message {
  const message: Message = {
    offset: Number(row.offset),
    topic: String(row.topic),
    // A NULL can only come from a driver that binds an empty Uint8Array as NULL;
    // payloads are never absent, so NULL means zero bytes.
    payload: row.payload instanceof Uint8Array ? row.payload : new Uint8Array(0),
    qos: Number(row.qos) as QoS,
    retain: row.retain === 1 || row.retain === 1n,
    receivedAt: Number(row.received_at),
    origin: String(row.origin),
  };
  if (row.expires_at !== null && row.expires_at !== undefined) message.expiresAt = Number(row.expires_at);
  if (typeof row.props === "string") message.properties = decodeProperties(row.props);
  return message;
}

function encodeProperties(properties: MessageProperties): string {
  const { correlationData, ...rest } = properties;
  return JSON.stringify(
    correlationData === undefined ? rest : { ...rest, correlationData: toBase64(correlationData) },
  );
}

function decodeProperties(text: string): MessageProperties {
  const parsed = JSON.parse(text) as Omit<MessageProperties, "correlationData"> & { correlationData?: string };
  const { correlationData, ...rest } = parsed;
  return correlationData === undefined ? rest : { ...rest, correlationData: fromBase64(correlationData) };
}

const PHASES = ["queued", "sent", "pubrel"] as const;

export function phaseCode(phase: DeliveryRecord["phase"]): number {
  return PHASES.indexOf(phase);
}

/** Reads a delivery from columns client_id, offset, d_qos, d_retain, sub_ids, packet_id, phase. */
export function rowToDelivery(row: SqlRow): DeliveryRecord {
  const delivery: DeliveryRecord = {
    clientId: String(row.client_id),
    offset: Number(row.offset),
    qos: Number(row.d_qos) as QoS,
    retain: row.d_retain === 1 || row.d_retain === 1n,
    phase: PHASES[Number(row.phase)] ?? "queued",
  };
  if (typeof row.sub_ids === "string") delivery.subscriptionIds = JSON.parse(row.sub_ids) as number[];
  if (row.packet_id !== null && row.packet_id !== undefined) delivery.packetId = Number(row.packet_id);
  return delivery;
}

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]!);
  return btoa(binary);
}

function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
