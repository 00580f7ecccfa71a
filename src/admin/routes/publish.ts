/**
 * POST /api/v1/publish: a message from the operator, routed like any client's publish
 * (`broker.injectMessage`): logged when QoS>0, retained when asked, delivered to
 * subscribers. Responds once it is durable and handed to subscribers.
 */
import { Hono } from "hono";
import { topicNameProblem } from "../../mqtt/topic.ts";
import type { Message, MessageProperties } from "../../store/store.ts";
import { StoreFullError } from "../../store/store.ts";
import type { AdminContext } from "../deps.ts";
import { fromBase64 } from "../encoding.ts";
import { ApiError, badRequest } from "../errors.ts";
import { type PublishBody, publishBody } from "../schemas.ts";
import { parseJson } from "../validate.ts";

/** `origin` of messages published through the admin API (never a valid client's No Local match). */
export const ADMIN_ORIGIN = "$admin";

const enc = new TextEncoder();

function properties(p: NonNullable<PublishBody["properties"]>): MessageProperties | undefined {
  const out: MessageProperties = {};
  if (p.content_type !== undefined) out.contentType = p.content_type;
  if (p.response_topic !== undefined) out.responseTopic = p.response_topic;
  if (p.correlation_data !== undefined) out.correlationData = enc.encode(p.correlation_data);
  if (p.payload_format_indicator !== undefined) out.payloadFormatIndicator = p.payload_format_indicator;
  if (p.user_properties !== undefined) out.userProperties = p.user_properties;
  return Object.keys(out).length > 0 ? out : undefined;
}

export function publishRoutes(ctx: AdminContext): Hono {
  const broker = ctx.broker;
  return new Hono().post("/", async (c) => {
    const body = await parseJson(c, publishBody);
    const problem = topicNameProblem(body.topic, broker.options);
    if (problem) throw badRequest(`topic: ${problem}`);
    if (body.properties?.response_topic !== undefined) {
      const p = topicNameProblem(body.properties.response_topic, broker.options);
      if (p) throw badRequest(`properties.response_topic: ${p}`);
    }
    if (body.retain && !broker.options.retainAvailable) {
      throw badRequest("retain: retained messages are disabled (mqtt.retain_available)");
    }
    let payload: Uint8Array;
    if (body.encoding === "base64") {
      const bytes = fromBase64(body.payload);
      if (!bytes) throw badRequest("payload: not valid base64");
      payload = bytes;
    } else payload = enc.encode(body.payload);
    if (payload.byteLength > broker.options.maxPacketSize) {
      throw new ApiError(
        413,
        "too_large",
        `payload: ${payload.byteLength} bytes exceeds mqtt.max_packet_size (${broker.options.maxPacketSize})`,
      );
    }
    const now = broker.clock.now();
    const message: Message = {
      offset: 0,
      topic: body.topic,
      payload,
      qos: body.qos,
      retain: body.retain,
      receivedAt: now,
      origin: ADMIN_ORIGIN,
    };
    const props = body.properties ? properties(body.properties) : undefined;
    if (props) message.properties = props;
    const expiry = body.properties?.message_expiry_interval;
    if (expiry !== undefined) message.expiresAt = now + expiry * 1000;
    try {
      await broker.injectMessage(message);
    } catch (err) {
      if (err instanceof StoreFullError) {
        throw new ApiError(507, "storage_full", "storage is full; the message was not accepted");
      }
      throw err;
    }
    return c.json({
      topic: message.topic,
      qos: message.qos,
      retain: message.retain,
      payload_bytes: payload.byteLength,
      /** Log offset, when the message was logged (QoS>0, or wanted by an uplink). */
      offset: message.offset > 0 ? message.offset : null,
    });
  });
}
