import { topicMatches } from "../mqtt/topic.ts";

/** One access rule; the first rule that matches decides. */
export interface AclRule {
  /** Which operation the rule covers; "subscribe" also covers receiving messages. */
  action: "publish" | "subscribe" | "all";
  /** Topic filter the rule applies to; `%u` and `%c` stand for username and client id. */
  topic: string;
  permission: "allow" | "deny";
  /** Only for this username (exact), if set. */
  username?: string;
  /** Only for this client id (exact), if set. */
  clientId?: string;
  /** Only for clients without a username (Mosquitto acl_file lines before any `user`). */
  anonymous?: boolean;
}

export interface AclSubject {
  username: string | undefined;
  clientId: string;
}

export type AclAction = "publish" | "subscribe";

/** Topics remembered per client for delivery checks; cleared when full. */
const READ_CACHE_SIZE = 1024;

/**
 * Evaluates ACL rules in order; the first rule that applies decides, else `fallback`.
 *
 * - A publish is checked against its topic name: the first rule whose filter matches it.
 * - A subscription is checked against its filter: the first rule whose filter *covers* it
 *   (matches every topic the subscription could match) decides. When none covers it but an
 *   allow rule overlaps it, the subscription is granted and each message is checked on the
 *   way out (`allowsRead`), as Mosquitto does: `#` under "allow sensors/#" receives only
 *   sensors/…; under "deny secret/#" it receives everything but secret/….
 * - `%u`/`%c` are replaced by the username and client id. A rule with `%u` does not apply to
 *   a client without a username, and neither applies when the value contains `+` or `#`,
 *   which would turn the rule into a wildcard (the Mosquitto CVE-2017-7650 bypass).
 */
export class Acl {
  #rules: AclRule[];
  #fallback: "allow" | "deny";
  #readChecks = false;
  #generation = 0;
  #readCache = new WeakMap<AclSubject, { generation: number; topics: Map<string, boolean> }>();

  constructor(rules: AclRule[], fallback: "allow" | "deny") {
    this.#rules = rules;
    this.#fallback = fallback;
    this.replace(rules, fallback);
  }

  /** Swap in new rules (config or acl_file reload); takes effect for the next check. */
  replace(rules: AclRule[], fallback: "allow" | "deny"): void {
    this.#rules = rules;
    this.#fallback = fallback;
    this.#readChecks = fallback === "deny" || rules.some((r) => r.action !== "publish");
    this.#generation++;
  }

  get enabled(): boolean {
    return this.#rules.length > 0 || this.#fallback === "deny";
  }

  get rules(): readonly AclRule[] {
    return this.#rules;
  }

  get fallback(): "allow" | "deny" {
    return this.#fallback;
  }

  /** May `subject` publish to topic name `topic`, or subscribe to filter `topic`? */
  allows(subject: AclSubject, action: AclAction, topic: string): boolean {
    if (action === "publish") return this.#firstMatch(subject, "publish", topic);
    let overlapsAllow = false;
    for (const rule of this.#rules) {
      const pattern = applicablePattern(rule, subject, "subscribe");
      if (pattern === undefined) continue;
      if (filterCovers(pattern, topic)) return rule.permission === "allow";
      if (rule.permission === "allow" && !overlapsAllow) overlapsAllow = filtersIntersect(pattern, topic);
    }
    return overlapsAllow || this.#fallback === "allow";
  }

  /** May `subject` receive a message on `topic`? Checked for every delivery; cached per client. */
  allowsRead(subject: AclSubject, topic: string): boolean {
    if (!this.#readChecks) return true;
    let cache = this.#readCache.get(subject);
    if (!cache || cache.generation !== this.#generation) {
      cache = { generation: this.#generation, topics: new Map() };
      this.#readCache.set(subject, cache);
    }
    const known = cache.topics.get(topic);
    if (known !== undefined) return known;
    const allowed = this.#firstMatch(subject, "subscribe", topic);
    if (cache.topics.size >= READ_CACHE_SIZE) cache.topics.clear();
    cache.topics.set(topic, allowed);
    return allowed;
  }

  #firstMatch(subject: AclSubject, action: AclAction, topic: string): boolean {
    for (const rule of this.#rules) {
      const pattern = applicablePattern(rule, subject, action);
      if (pattern !== undefined && topicMatches(pattern, topic)) return rule.permission === "allow";
    }
    return this.#fallback === "allow";
  }
}

/** The rule's filter with placeholders filled in, or undefined when the rule does not apply. */
function applicablePattern(rule: AclRule, subject: AclSubject, action: AclAction): string | undefined {
  if (rule.action !== "all" && rule.action !== action) return undefined;
  if (rule.anonymous && subject.username !== undefined) return undefined;
  if (rule.username !== undefined && rule.username !== subject.username) return undefined;
  if (rule.clientId !== undefined && rule.clientId !== subject.clientId) return undefined;
  let pattern = rule.topic;
  if (pattern.includes("%u")) {
    const u = subject.username;
    if (u === undefined || u === "" || hasWildcard(u)) return undefined;
    pattern = pattern.replaceAll("%u", u);
  }
  if (pattern.includes("%c")) {
    if (subject.clientId === "" || hasWildcard(subject.clientId)) return undefined;
    pattern = pattern.replaceAll("%c", subject.clientId);
  }
  return pattern;
}

function hasWildcard(s: string): boolean {
  return s.includes("+") || s.includes("#");
}

/** Does filter `rule` match every topic that filter `filter` matches? */
export function filterCovers(rule: string, filter: string): boolean {
  const r = rule.split("/");
  const f = filter.split("/");
  // A leading wildcard never matches a $ topic [MQTT-4.7.2-1].
  if (f[0]!.startsWith("$") && (r[0] === "+" || r[0] === "#")) return false;
  for (let i = 0; i < r.length; i++) {
    const rl = r[i]!;
    if (rl === "#") return true;
    if (i >= f.length) return false;
    const fl = f[i]!;
    if (fl === "#") return false;
    if (rl === "+") continue;
    if (fl === "+" || fl !== rl) return false;
  }
  return r.length === f.length;
}

/** Is there a topic that both filters match? */
export function filtersIntersect(a: string, b: string): boolean {
  const x = a.split("/");
  const y = b.split("/");
  const wild = (l: string) => l === "+" || l === "#";
  if ((wild(x[0]!) && y[0]!.startsWith("$")) || (wild(y[0]!) && x[0]!.startsWith("$"))) return false;
  for (let i = 0;; i++) {
    const xl = x[i];
    const yl = y[i];
    if (xl === "#" || yl === "#") return true;
    if (xl === undefined || yl === undefined) return xl === yl;
    if (xl === "+" || yl === "+" || xl === yl) continue;
    return false;
  }
}
