/**
 * Local → cloud forward rules: which rule takes a logged message (the first one whose
 * filter matches, in configuration order), and the remote topic it is published on.
 * Messages from the link's own downlink never match (loop prevention), nor copies of
 * retained messages the broker logged for a session (they were forwarded when they
 * were published).
 */
import type { ForwardRule } from "../config/schema.ts";
import { topicNameProblem } from "../mqtt/topic.ts";
import { TopicTree } from "../core/topic-tree.ts";
import { type Message, RETAINED_COPY_ORIGIN } from "../store/store.ts";
import { renderTopic } from "./topic-template.ts";

/** Topic → rule and topic → remote topic caches are cleared beyond this many entries. */
const CACHE_MAX = 10_000;
/** What any MQTT broker accepts as a topic name: at most 65,535 bytes [MQTT-1.5.4]; levels are not limited. */
const REMOTE_LIMITS = { maxTopicLength: 65_535, maxTopicLevels: Number.POSITIVE_INFINITY };

/**
 * A remote topic, or why the rendered one cannot be published. `utf8`: its bytes, remembered
 * on the cached object by the encoder (stamped-publish.ts) the first time it is sent.
 */
export type RemoteTopic = { topic: string; problem?: undefined; utf8?: Uint8Array } | {
  topic: string;
  problem: string;
  utf8?: Uint8Array;
};

export class ForwardRules {
  #list: readonly ForwardRule[];
  #tree = new TopicTree<ForwardRule>();
  #ruleCache = new Map<string, ForwardRule | null>();
  #topicCache = new Map<ForwardRule, Map<string, RemoteTopic> | null>();

  constructor(rules: readonly ForwardRule[], private readonly origin: string, private readonly edgeId: string) {
    this.#list = rules;
    rules.forEach((r, i) => this.#tree.add(r.filter, String(i), r));
  }

  ruleFor(m: Message): ForwardRule | undefined {
    if (m.origin === this.origin || m.origin === RETAINED_COPY_ORIGIN) return undefined;
    return this.ruleForTopic(m.topic);
  }

  /** Whether messages on `topic` are forwarded (so must be logged whatever their QoS). */
  wants(topic: string): boolean {
    return this.ruleForTopic(topic) !== undefined;
  }

  ruleForTopic(topic: string): ForwardRule | undefined {
    const cached = this.#ruleCache.get(topic);
    if (cached !== undefined) return cached ?? undefined;
    let best: ForwardRule | undefined;
    let bestIndex = Number.POSITIVE_INFINITY;
    this.#tree.match(topic, (r) => {
      const i = this.#list.indexOf(r);
      if (i < bestIndex) {
        bestIndex = i;
        best = r;
      }
    });
    if (this.#ruleCache.size >= CACHE_MAX) this.#ruleCache.clear();
    this.#ruleCache.set(topic, best ?? null);
    return best;
  }

  /**
   * The topic `m` is published on at the cloud. Templates fill in values a client
   * chooses (`${clientid}`, and the local topic itself), so the result is checked: a
   * wildcard or NUL would make the cloud drop the connection at every re-send and
   * block everything behind it.
   */
  remoteTopic(rule: ForwardRule, m: Message): RemoteTopic {
    // Per rule: the rendered topics by local topic, or null when the template names the
    // client (then every message is rendered). Called for every forwarded message.
    let cache = this.#topicCache.get(rule);
    if (cache === undefined) {
      cache = rule.topic.includes("${clientid}") ? null : new Map();
      this.#topicCache.set(rule, cache);
    }
    if (cache === null) {
      return checked(renderTopic(rule.topic, rule.strip, { topic: m.topic, edgeId: this.edgeId, clientId: m.origin }));
    }
    let topic = cache.get(m.topic);
    if (topic === undefined) {
      if (cache.size >= CACHE_MAX) cache.clear();
      topic = checked(renderTopic(rule.topic, rule.strip, { topic: m.topic, edgeId: this.edgeId }));
      cache.set(m.topic, topic);
    }
    return topic;
  }
}

function checked(topic: string): RemoteTopic {
  const problem = topicNameProblem(topic, REMOTE_LIMITS);
  return problem === undefined ? { topic } : { topic, problem };
}
