/**
 * The admin API's inputs as zod schemas: query strings (always strings on the wire,
 * coerced here) and the publish body. Routes validate with them, and the OpenAPI
 * document (`openapi.ts`) is generated from the same objects.
 */
import { z } from "zod";

const limit = (max: number, def: number) =>
  z.coerce.number().int().min(1).max(max).default(def).describe(`items to return, 1–${max}`);

const boolString = z.enum(["true", "false"]).transform((v) => v === "true");

const page = {
  limit: limit(1000, 100),
  cursor: z.string().min(1).optional().describe("next_cursor of the previous page"),
  offset: z.coerce.number().int().min(0).optional().describe("items to skip (instead of cursor)"),
};

export const clientsQuery = z.strictObject({
  ...page,
  prefix: z.string().optional().describe("only client ids starting with this"),
  username: z.string().optional().describe("only clients authenticated as this user"),
});

export const sessionsQuery = z.strictObject({
  ...page,
  prefix: z.string().optional().describe("only client ids starting with this"),
  connected: boolString.optional().describe("true: sessions with a connected client; false: offline sessions"),
});

export const subscriptionsQuery = z.strictObject({
  ...page,
  client_id: z.string().optional().describe("only this client's subscriptions"),
  topic: z.string().min(1).optional().describe("only subscriptions whose filter matches this topic name"),
  filter: z.string().min(1).optional().describe("only subscriptions with exactly this filter"),
});

export const retainedQuery = z.strictObject({
  ...page,
  prefix: z.string().optional().describe("only topics starting with this"),
});

export const historyQuery = z.strictObject({
  topic: z.string().min(1).optional().describe("topic filter (+ and # allowed); default every topic"),
  from_offset: z.coerce.number().int().min(1).optional().describe(
    "first log offset to read (next_offset of the previous page)",
  ),
  since: z.iso.datetime({ offset: true }).optional().describe("only messages received at or after this ISO 8601 time"),
  limit: limit(1000, 100),
});

export const topTopicsQuery = z.strictObject({ limit: limit(100, 10) });

export const logsQuery = z.strictObject({
  limit: limit(200, 50),
  level: z.enum(["warn", "error"]).optional().describe("only this level"),
});

export const publishBody = z.strictObject({
  topic: z.string().min(1).describe("topic name (no wildcards)"),
  payload: z.string().default("").describe("message body, as text or base64 (see encoding)"),
  encoding: z.enum(["utf8", "base64"]).default("utf8").describe("how payload is written"),
  qos: z.union([z.literal(0), z.literal(1), z.literal(2)]).default(0),
  retain: z.boolean().default(false),
  properties: z.strictObject({
    content_type: z.string().optional(),
    response_topic: z.string().min(1).optional(),
    correlation_data: z.string().optional().describe("UTF-8 text"),
    payload_format_indicator: z.boolean().optional().describe("true: the payload is UTF-8 text"),
    message_expiry_interval: z.number().int().min(1).max(0xffffffff).optional().describe("seconds"),
    user_properties: z.record(z.string(), z.union([z.string(), z.array(z.string())])).optional(),
  }).optional().describe("MQTT 5 properties passed to subscribers"),
});

export type PublishBody = z.output<typeof publishBody>;
