/** Topic name and filter rules (MQTT 5.0 section 4.7), shared by every handler. */

export interface TopicLimits {
  maxTopicLength: number;
  maxTopicLevels: number;
}

/** Why a topic name may not be published to, or undefined if it is fine. */
export function topicNameProblem(topic: string, limits: TopicLimits): string | undefined {
  if (topic.length === 0) return "topic name is empty"; // [MQTT-4.7.3-1]
  if (topic.includes("+") || topic.includes("#")) return "topic name contains a wildcard"; // [MQTT-3.3.2-2]
  return commonProblem(topic, limits);
}

/** Why a filter may not be subscribed to, or undefined if it is fine. */
export function topicFilterProblem(filter: string, limits: TopicLimits): string | undefined {
  if (filter.length === 0) return "topic filter is empty"; // [MQTT-4.7.3-1]
  // Level by level without split("/"): a persistent session may send thousands of
  // SUBSCRIBEs at once, and each array of levels was garbage.
  for (let start = 0; start <= filter.length;) {
    let end = filter.indexOf("/", start);
    if (end < 0) end = filter.length;
    let hash = false;
    let plus = false;
    for (let i = start; i < end; i++) {
      const c = filter.charCodeAt(i);
      if (c === 35) hash = true; // '#'
      else if (c === 43) plus = true; // '+'
    }
    const single = end - start === 1;
    if (hash && (!single || end !== filter.length)) return "'#' must be alone in the last level"; // [MQTT-4.7.1-1]
    if (plus && !single) return "'+' must occupy a whole level"; // [MQTT-4.7.1-2]
    start = end + 1;
  }
  return commonProblem(filter, limits);
}

function commonProblem(topic: string, limits: TopicLimits): string | undefined {
  if (topic.includes("\u0000")) return "topic contains U+0000"; // [MQTT-4.7.3-2]
  // Topics from the wire had their bytes checked by the codec (src/mqtt/utf8.ts), so a
  // U+FFFD in one is a genuine character; a string made here (admin API, uplink templates)
  // can still hold a lone surrogate, which has no UTF-8 form [MQTT-1.5.4-1].
  const length = utf8Length(topic);
  if (length === -1) return "topic is not well-formed UTF-8 (a lone surrogate)";
  if (length > limits.maxTopicLength) return `topic longer than ${limits.maxTopicLength} bytes`;
  let levels = 1;
  for (let i = 0; i < topic.length; i++) if (topic.charCodeAt(i) === 47) levels++;
  if (levels > limits.maxTopicLevels) return `topic deeper than ${limits.maxTopicLevels} levels`;
  return undefined;
}

/** The UTF-8 length of `s` in bytes, or -1 when it holds a lone surrogate. */
function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdfff) {
      const low = s.charCodeAt(i + 1); // NaN past the end
      if (c > 0xdbff || !(low >= 0xdc00 && low <= 0xdfff)) return -1;
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

export interface ParsedFilter {
  /** The filter without any $share/group/ prefix. */
  filter: string;
  /** Share group name for a shared subscription. */
  group?: string;
}

/** Split `$share/group/filter` [MQTT-4.8.2-1]; returns a string describing the problem if malformed. */
export function parseSubscriptionFilter(full: string): ParsedFilter | string {
  if (!full.startsWith("$share/")) return { filter: full };
  const rest = full.slice(7);
  const slash = rest.indexOf("/");
  if (slash <= 0) return "shared subscription needs $share/{group}/{filter}";
  const group = rest.slice(0, slash);
  if (group.includes("+") || group.includes("#")) return "share name must not contain wildcards"; // [MQTT-4.8.2-2]
  const filter = rest.slice(slash + 1);
  if (filter.length === 0) return "shared subscription has an empty filter";
  return { filter, group };
}

/** Does `filter` match `topic`? Used where a tree is overkill (ACL rules, retained scan). */
export function topicMatches(filter: string, topic: string): boolean {
  // [MQTT-4.7.2-1] a filter starting with a wildcard does not match a $-topic.
  if (topic.startsWith("$") && (filter.startsWith("+") || filter.startsWith("#"))) return false;
  const f = filter.split("/");
  const t = topic.split("/");
  for (let i = 0; i < f.length; i++) {
    const fl = f[i]!;
    if (fl === "#") return true;
    if (i >= t.length) return false;
    if (fl !== "+" && fl !== t[i]) return false;
  }
  return f.length === t.length;
}
