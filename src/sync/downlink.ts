/**
 * Cloud → edge: which downlink rule takes a cloud message, and the local message it
 * becomes. The message carries the link's origin, so that link never forwards it back
 * to the cloud it came from (loop prevention).
 */
import type { DownlinkRule } from "../config/schema.ts";
import { topicMatches } from "../mqtt/topic.ts";
import { type Message, type MessageProperties, StoreFullError } from "../store/store.ts";
import type { CloudIncoming } from "./cloud-client.ts";
import type { DownlinkIdentity, LocalPublishPort } from "./log-port.ts";
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

/** What handling a cloud command needs from the link. */
export interface DownlinkContext {
  rules: readonly DownlinkRule[];
  edgeId: string;
  /** The link's origin: its own commands are never forwarded back. */
  origin: string;
  local: LocalPublishPort;
  /** Checked against the local ACL's publish rules when set (downlink_acl). */
  identity?: DownlinkIdentity | undefined;
  now(): number;
  /** A command was accepted for local publishing. */
  received(): void;
  /** A command could not be mapped to a valid local topic: counted and logged by the link. */
  refused(reason: string): void;
}

/** Why a rendered local topic may not receive a cloud command, or undefined. */
export function downlinkTopicProblem(topic: string, local: LocalPublishPort): string | undefined {
  // `$` topics are the broker's own ($SYS): a cloud command must never write there.
  if (topic.startsWith("$")) return "a $ topic cannot be a downlink target";
  return local.topicProblem(topic);
}

/** One message from the cloud: published locally, and acknowledged only once durable here. */
export function handleDownlink(ctx: DownlinkContext, m: CloudIncoming): void {
  const rule = downlinkRuleFor(ctx.rules, m.topic, ctx.edgeId);
  if (!rule) {
    m.ack(0);
    return;
  }
  const topic = downlinkTopic(rule, m.topic, ctx.edgeId);
  const problem = downlinkTopicProblem(topic, ctx.local);
  if (problem !== undefined) {
    ctx.refused(
      `downlink: cannot map ${JSON.stringify(m.topic)} to a valid local topic (${JSON.stringify(topic)}: ${problem})`,
    );
    m.ack(0x90); // Topic Name invalid
    return;
  }
  if (ctx.identity && !ctx.local.mayPublish(ctx.identity, topic)) {
    ctx.refused(`downlink: the local ACL does not let ${ctx.identity.clientId} publish on ${JSON.stringify(topic)}`);
    m.ack(0x87); // Not authorized
    return;
  }
  ctx.received();
  const message = downlinkMessage(rule, m, topic, ctx.origin, ctx.now());
  ctx.local.inject(message).then(
    () => m.ack(0),
    (err: unknown) => m.ack(err instanceof StoreFullError ? 0x97 : 0x80),
  );
}
