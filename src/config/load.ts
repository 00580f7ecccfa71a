import { configSchema, type FerryConfig } from "./schema.ts";
import type { BrokerOptions } from "../core/broker-options.ts";
import { securityProblems } from "./security-options.ts";
import { type ConfigProblem, ConfigSource, formatPath } from "./config-source.ts";
import { fileProblems, type ReadFile } from "./file-checks.ts";
import { problemsFromIssues } from "./schema-issues.ts";
import { topicProblems } from "./topic-checks.ts";

export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
  }
}

/**
 * Parse a config file's text (JSONC: // and /* *\/ comments and trailing commas allowed) and
 * validate it. Throws ConfigError listing every problem as `file:line:col key: what is wrong`.
 * Checks only the text; `loadConfig` also checks the files it names.
 */
export function parseConfig(text: string, source = "config"): FerryConfig {
  const { config, problems, src } = parseSource(text, source);
  if (problems.length > 0) throw new ConfigError(src.formatAll(problems));
  return config!;
}

/**
 * `parseConfig` and then the files the config names (password, ACL, certificates, uplink
 * secrets): exist, readable, parse. The one validation `check-config` and `serve` share.
 */
export async function loadConfig(text: string, source: string, readFile: ReadFile): Promise<FerryConfig> {
  const { config, problems, src } = parseSource(text, source);
  if (config !== undefined) problems.push(...await fileProblems(config, readFile));
  if (problems.length > 0) throw new ConfigError(src.formatAll(problems));
  return config!;
}

/** An already parsed value (tests, defaults): problems as `key: what is wrong`, without positions. */
export function validateConfig(raw: unknown): FerryConfig {
  const result = checkValue(raw);
  if (result.problems.length > 0) {
    throw new ConfigError(result.problems.map((p) => `${formatPath(p.path) || "(root)"}: ${p.message}`));
  }
  return result.config!;
}

/** Syntax, schema and cross-key problems; `config` is set when the schema accepted the value. */
function parseSource(
  text: string,
  source: string,
): { config?: FerryConfig; problems: ConfigProblem[]; src: ConfigSource } {
  const src = new ConfigSource(text, source);
  if (src.syntaxProblems.length > 0) throw new ConfigError(src.syntaxProblems);
  return { ...checkValue(src.value), src };
}

function checkValue(raw: unknown): { config?: FerryConfig; problems: ConfigProblem[] } {
  const result = configSchema.safeParse(raw);
  if (!result.success) return { problems: problemsFromIssues(result.error.issues, configSchema, raw) };
  const problems: ConfigProblem[] = securityProblems(result.data).map((line) => {
    // "tls.cert: required when ..." — the key is the part before the first ": ".
    const at = line.indexOf(": ");
    return { path: line.slice(0, at).split("."), message: line.slice(at + 2) };
  });
  problems.push(...topicProblems(result.data));
  return { config: result.data, problems };
}

/** How long a delivery's bookkeeping writes may wait to share a commit (src/core/write-behind.ts). */
const WRITE_BEHIND_MS = 5;

/** The kernel's view of the configuration. */
export function brokerOptionsFrom(config: FerryConfig, version: string): BrokerOptions {
  const m = config.mqtt;
  return {
    maxPacketSize: m.max_packet_size,
    maxTopicLength: m.max_topic_length,
    maxTopicLevels: m.max_topic_levels,
    receiveMaximum: m.receive_maximum,
    maxInflight: m.max_inflight,
    maxQueuedMessages: m.max_queued_messages,
    queueQos0: m.queue_qos0_messages,
    liveDelivery: config.storage.live_delivery,
    topicAliasMaximum: m.topic_alias_maximum,
    serverKeepAlive: m.server_keep_alive ?? undefined,
    maxSessionExpiry: m.max_session_expiry,
    maxConnections: m.max_connections,
    maxBufferedBytes: m.max_buffered_bytes,
    connectTimeoutMs: m.connect_timeout_ms,
    maxOutputBytes: config.limits.max_output_bytes,
    sendTimeoutMs: config.limits.send_timeout * 1000,
    packetTimeoutMs: config.limits.packet_timeout * 1000,
    maxPreAuthBytes: config.limits.max_preauth_bytes,
    maxPreAuthBytesPerIp: config.limits.max_preauth_bytes_per_ip,
    maxMemory: config.limits.max_memory,
    sysInterval: m.sys_interval,
    retainAvailable: m.retain_available,
    aclDenyCode: config.acl.deny_reason === "unspecified" ? 0x80 : 0x87,
    maxQueuedBytes: m.max_queued_bytes,
    stalledSubscriberMs: m.stalled_subscriber_ms,
    // Only where commits wait for an fsync; a few ms is many round trips on a LAN (WriteBehind).
    writeBehindMs: config.storage.durability === "commit" ? WRITE_BEHIND_MS : 0,
    version,
  };
}
