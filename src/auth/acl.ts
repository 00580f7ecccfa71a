import { topicMatches } from "../core/topic.ts";

/** One access rule; the first rule that matches decides. */
export interface AclRule {
  /** Which operation the rule covers. */
  action: "publish" | "subscribe" | "all";
  /** Topic filter the rule applies to; `%u` and `%c` stand for username and client id. */
  topic: string;
  permission: "allow" | "deny";
  /** Only for this username (exact), if set. */
  username?: string;
  /** Only for this client id (exact), if set. */
  clientId?: string;
}

export interface AclSubject {
  username: string | undefined;
  clientId: string;
}

/**
 * Evaluates ACL rules in order. A rule's topic is compared against a publish topic by
 * matching, and against a subscription filter by equality or by matching (so a rule on
 * `a/#` also covers a subscription to `a/b`).
 */
export class Acl {
  constructor(private readonly rules: AclRule[], private readonly fallback: "allow" | "deny") {}

  get enabled(): boolean {
    return this.rules.length > 0 || this.fallback === "deny";
  }

  allows(subject: AclSubject, action: "publish" | "subscribe", topic: string): boolean {
    for (const rule of this.rules) {
      if (rule.action !== "all" && rule.action !== action) continue;
      if (rule.username !== undefined && rule.username !== subject.username) continue;
      if (rule.clientId !== undefined && rule.clientId !== subject.clientId) continue;
      const pattern = rule.topic.replaceAll("%u", subject.username ?? "").replaceAll("%c", subject.clientId);
      if (pattern === topic || topicMatches(pattern, topic)) return rule.permission === "allow";
    }
    return this.fallback === "allow";
  }
}
