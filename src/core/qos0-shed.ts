import type { Broker } from "./broker.ts";

/** More matching subscriptions than this go the full way (see qos0Refusals). */
const MAX_MATCHES = 16;

/** `qos0Refusals`: routing has to decide (see there). */
export const TAKEN = -1;
/**
 * `qos0Refusals`: every subscriber takes the message or drops it now, while it is delivered:
 * nothing keeps it past this call (no queue, no retained copy, no log, no shared group).
 */
export const LIVE = -2;

/**
 * Whether a QoS 0 PUBLISH without RETAIN from `from` to `topic` can be dropped before it
 * becomes a message (issue 13: a message nobody can take should cost as little as possible).
 * Returns how many subscribers drop it as slow consumers, 0 when no subscriber and nothing
 * else wants it; LIVE when some connected subscriber takes it and every one decides now, as
 * it is delivered; TAKEN when the full path must decide.
 *
 * It is the decision OutboundFlow.deliver makes for a QoS 0 delivery to a connected session
 * with nothing queued (past `mqtt.max_buffered_bytes` of output, or the output bound if
 * lower, the message is dropped and counted as slow_consumer), made for every subscriber
 * before the Message, its routing arrays, its delivery objects and its step in the
 * publisher's ordered flow exist: with one subscriber that never reads, a flood allocated
 * all of them per message to drop it, and that garbage, not what Ferry held, made the peak
 * RSS (BENCHMARKS.md). Anything else goes the full way and gets the same verdict there: a
 * shared subscription (a member is chosen per message), a session with a queue (the message
 * would wait behind it), one not connected yet, one an offline QoS 0 queue would keep, and
 * a log reader (the uplink) that wants the topic.
 */
export function qos0Refusals(broker: Broker, from: string, topic: string): number {
  if (broker.logs(topic)) return TAKEN;
  const matches = broker.router.matches(topic);
  // Many subscribers: the full path (its per-session marks) is the cheaper way to count them.
  if (matches.length > MAX_MATCHES) return TAKEN;
  const bound = Math.min(broker.options.maxBufferedBytes, broker.options.maxOutputBytes);
  const queueOffline = broker.options.queueQos0;
  let refused = 0;
  let taken = false;
  for (let i = 0; i < matches.length; i++) {
    const sub = matches[i]!;
    const s = sub.session;
    if (sub.group !== undefined) return TAKEN;
    // [MQTT-3.8.3-3] No Local: not a target.
    if (sub.noLocal && s.clientId === from) continue;
    const c = s.client;
    if (c === undefined) {
      // Offline: QoS 0 is kept only in a persistent session's queue when mqtt.queue_qos0 says so.
      if (queueOffline && s.persistent) return TAKEN;
      continue;
    }
    if (c.state !== "connected" || s.queuedCount > 0) return TAKEN;
    if (c.outputBytes() <= bound) {
      taken = true;
      continue;
    }
    // Overlapping subscriptions of one session are one delivery, so one drop.
    let seen = false;
    for (let j = 0; j < i && !seen; j++) seen = matches[j]!.session === s;
    if (!seen) refused++;
  }
  return taken ? LIVE : refused;
}
