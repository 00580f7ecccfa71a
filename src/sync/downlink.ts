/**
 * Cloud → edge: which downlink rule takes a cloud message, and the local message it
 * becomes. The message carries the link's origin, so that link never forwards it back
 * to the cloud it came from (loop prevention).
 */
import type { DownlinkRule } from "../config/schema.ts";
import { topicMatches } from "../mqtt/topic.ts";
import type { Message, MessageProperties } from "../store/store.ts";
import type { CloudIncoming } from "./cloud-client.ts";
import { renderFilter, renderTopic } from "./topic-template.ts";

/** The first rule whose (rendered) filter matches the cloud topic. */
export function downlinkRuleFor(
  rules: readonly DownlinkRule[],
  topic: string,
  edgeId: string,
): DownlinkRule | undefined {
  return rules.find((r) => topicMatches(renderFilter(r.filter, edgeId), topic));
}

/** The local topic a cloud message is published on. */
export function downlinkTopic(rule: DownlinkRule, topic: string, edgeId: string): string {
  return renderTopic(rule.topic, rule.strip, { topic, edgeId });
}

/** The local message for a cloud message: QoS capped by the rule, v5 properties carried over. */
export function downlinkMessage(
  rule: DownlinkRule,
  m: CloudIncoming,
  topic: string,
  origin: string,
  now: number,
): Message {
  const message: Message = {
    offset: 0,
    topic,
    payload: new Uint8Array(m.payload),
    qos: Math.min(m.qos, rule.qos) as 0 | 1 | 2,
    retain: m.retain,
    receivedAt: now,
    origin,
  };
  const p = m.properties ?? {};
  const props: MessageProperties = {};
  if (typeof p.contentType === "string") props.contentType = p.contentType;
  if (typeof p.responseTopic === "string") props.responseTopic = p.responseTopic;
  if (p.correlationData instanceof Uint8Array) props.correlationData = new Uint8Array(p.correlationData);
  if (typeof p.payloadFormatIndicator === "boolean") props.payloadFormatIndicator = p.payloadFormatIndicator;
  if (p.userProperties && typeof p.userProperties === "object") {
    props.userProperties = p.userProperties as Record<string, string | string[]>;
  }
  if (Object.keys(props).length > 0) message.properties = props;
  if (typeof p.messageExpiryInterval === "number") message.expiresAt = now + p.messageExpiryInterval * 1000;
  return message;
}
