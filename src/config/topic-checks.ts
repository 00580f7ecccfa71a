/**
 * Topic filters and templates in the config, checked as the broker and the uplink will use
 * them: a filter MQTT would refuse (`a/#/b`) or a placeholder nothing fills in (`${nope}`)
 * is a config error, not a rule that silently never matches.
 */
import { topicFilterProblem, type TopicLimits, topicNameProblem } from "../mqtt/topic.ts";
import type { ConfigProblem, KeyPath } from "./config-source.ts";
import type { FerryConfig } from "./schema.ts";

/** Placeholders each template key knows; anything else in `${...}` is a typo. */
const FORWARD_TOPIC = ["topic", "edge_id", "clientid"];
const DOWNLINK_TOPIC = ["topic", "edge_id"];
const EDGE_ONLY = ["edge_id"];

export function topicProblems(config: FerryConfig): ConfigProblem[] {
  const limits: TopicLimits = {
    maxTopicLength: config.mqtt.max_topic_length,
    maxTopicLevels: config.mqtt.max_topic_levels,
  };
  const out: ConfigProblem[] = [];
  config.acl.rules.forEach((rule, i) => {
    // %u and %c become the client's username and id; any value must leave a valid filter.
    const problem = aclFilterProblem(rule.topic, limits);
    if (problem) out.push({ path: ["acl", "rules", i, "topic"], message: problem });
  });
  config.uplinks.forEach((u, i) => {
    u.forward.forEach((r, j) => {
      const at = ["uplinks", i, "forward", j] as const;
      filter(out, [...at, "filter"], r.filter, [], config.edge_id, limits);
      template(out, [...at, "topic"], r.topic, FORWARD_TOPIC, limits);
      placeholders(out, [...at, "strip"], r.strip, EDGE_ONLY);
    });
    u.downlink.forEach((r, j) => {
      const at = ["uplinks", i, "downlink", j] as const;
      filter(out, [...at, "filter"], r.filter, EDGE_ONLY, config.edge_id, limits);
      template(out, [...at, "topic"], r.topic, DOWNLINK_TOPIC, limits);
      placeholders(out, [...at, "strip"], r.strip, EDGE_ONLY);
    });
  });
  return out;
}

/** Why an ACL rule's filter (with %u/%c) is not a valid filter, or undefined. Also used for acl_file lines. */
export function aclFilterProblem(topic: string, limits: TopicLimits): string | undefined {
  const problem = topicFilterProblem(topic.replaceAll("%u", "u").replaceAll("%c", "c"), limits);
  return problem ? `${problem}: '${topic}'` : undefined;
}

function filter(
  out: ConfigProblem[],
  path: KeyPath,
  value: string,
  known: readonly string[],
  edgeId: string,
  limits: TopicLimits,
): void {
  if (!placeholders(out, path, value, known)) return;
  const problem = topicFilterProblem(value.replaceAll("${edge_id}", edgeId), limits);
  if (problem) out.push({ path, message: `${problem}: '${value}'` });
}

function template(
  out: ConfigProblem[],
  path: KeyPath,
  value: string,
  known: readonly string[],
  limits: TopicLimits,
): void {
  if (!placeholders(out, path, value, known)) return;
  // Filled in with sample values, the result must be a topic one can publish to.
  const problem = topicNameProblem(value.replace(/\$\{[a-z_]+\}/g, "x"), limits);
  if (problem) out.push({ path, message: `${problem}: '${value}'` });
}

/** Adds a problem for each unknown or unclosed placeholder; true when there is none. */
function placeholders(out: ConfigProblem[], path: KeyPath, value: string, known: readonly string[]): boolean {
  let ok = true;
  for (const m of value.matchAll(/\$\{([^}]*)(\}?)/g)) {
    const name = m[1]!;
    if (m[2] === "") {
      out.push({ path, message: `placeholder '\${${name}' is not closed with '}'` });
      ok = false;
    } else if (!known.includes(name)) {
      const allowed = known.length === 0
        ? "no placeholders are filled in here"
        : `known here: ${known.map((k) => `\${${k}}`).join(", ")}`;
      out.push({ path, message: `unknown placeholder '\${${name}}' (${allowed})` });
      ok = false;
    }
  }
  return ok;
}
