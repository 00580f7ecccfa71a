import { configSchema, type FerryConfig } from "./schema.ts";
import type { BrokerOptions } from "../core/broker-options.ts";
import { securityProblems } from "./security-options.ts";

export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
  }
}

/**
 * Parse a config file's text (JSON; // and /* *\/ comments allowed) and validate it.
 * Throws ConfigError listing every problem as `key.path: what is wrong`.
 */
export function parseConfig(text: string, source = "config"): FerryConfig {
  let raw: unknown;
  try {
    raw = text.trim() === "" ? {} : JSON.parse(stripJsonComments(text));
  } catch (err) {
    throw new ConfigError([`${source}: not valid JSON: ${(err as Error).message}`]);
  }
  return validateConfig(raw);
}

export function validateConfig(raw: unknown): FerryConfig {
  const result = configSchema.safeParse(raw);
  if (result.success) {
    const problems = securityProblems(result.data);
    if (problems.length > 0) throw new ConfigError(problems);
    return result.data;
  }
  throw new ConfigError(result.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`));
}

/** Remove comments outside strings so an example config can explain every key. */
export function stripJsonComments(text: string): string {
  let out = "";
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      out += c;
      if (c === "\\") out += text[++i] ?? "";
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') {
      inString = true;
      out += c;
    } else if (c === "/" && text[i + 1] === "/") {
      while (i < text.length && text[i] !== "\n") i++;
      out += "\n";
    } else if (c === "/" && text[i + 1] === "*") {
      i += 2;
      while (i < text.length && !(text[i] === "*" && text[i + 1] === "/")) i++;
      i++;
    } else out += c;
  }
  return out;
}

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
    sysInterval: m.sys_interval,
    retainAvailable: m.retain_available,
    aclDenyCode: config.acl.deny_reason === "unspecified" ? 0x80 : 0x87,
    maxQueuedBytes: m.max_queued_bytes,
    version,
  };
}
