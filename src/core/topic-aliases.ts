import { MqttError, RC } from "../mqtt/reason-codes.ts";

/**
 * A connection's topic aliases (MQTT 5, spec 3.3.2.3.4): those the client set for its
 * publishes, and those Ferry assigned for what it sends, up to the client's maximum.
 */
export class TopicAliases {
  /** Client → broker. */
  #in = new Map<number, string>();
  /** Broker → client. */
  #out = new Map<string, number>();

  /** The topic an incoming PUBLISH means, binding or resolving its alias; throws on a bad one. */
  resolveIncoming(alias: number, topic: string, max: number): string {
    // [MQTT-3.3.2-9] alias must be 1..Topic Alias Maximum we announced.
    if (alias === 0 || alias > max) throw new MqttError(RC.TOPIC_ALIAS_INVALID, `topic alias ${alias} out of range`);
    if (topic.length === 0) {
      const known = this.#in.get(alias);
      if (known === undefined) throw new MqttError(RC.PROTOCOL_ERROR, `unknown topic alias ${alias}`);
      return known;
    }
    this.#in.set(alias, topic); // a non-empty topic (re)binds the alias (spec 3.3.2.3.4)
    return topic;
  }

  /** Outbound alias for `topic`, assigning one while the client's `max` slots remain. */
  outgoing(topic: string, max: number): { alias: number; known: boolean } | undefined {
    if (max === 0) return undefined;
    const known = this.#out.get(topic);
    if (known !== undefined) return { alias: known, known: true };
    if (this.#out.size >= max) return undefined;
    const alias = this.#out.size + 1;
    this.#out.set(topic, alias);
    return { alias, known: false };
  }
}
