/**
 * The security part of the config: defaults that depend on other keys, and checks that
 * span keys. Kept next to the schema so that every default is decided in the config layer.
 */
import type { AclRule } from "../auth/acl.ts";
import type { SecurityLimits } from "../auth/limits.ts";
import { type FerryConfig, isLoopbackHost } from "./schema.ts";

/**
 * `auth.allow_anonymous`, resolved: as configured, or — when null — true only when every
 * listener binds to a loopback address (they all bind to `listeners.host`) AND no way of
 * authenticating is configured. So a broker reachable from the network never starts open
 * by accident, and — as in Mosquitto 2 — configuring a password file (or certificate
 * identities) turns anonymous access off unless it is asked for: a TLS terminator or any
 * other local proxy would otherwise turn every remote client into an anonymous loopback one.
 */
export function resolveAllowAnonymous(config: FerryConfig): boolean {
  return config.auth.allow_anonymous ?? (isLoopbackHost(config.listeners.host) && !authConfigured(config));
}

/** Whether clients can prove who they are: a password file, or certificate CNs as usernames. */
export function authConfigured(config: FerryConfig): boolean {
  return config.auth.password_file !== null || config.tls.use_identity_as_username;
}

/** `acl.default`, resolved: as configured, or — when null — deny once any rule or acl_file exists. */
export function resolveAclDefault(config: FerryConfig): "allow" | "deny" {
  return config.acl.default ?? (config.acl.rules.length > 0 || config.acl.acl_file !== null ? "deny" : "allow");
}

/** The ACL rules written in the config itself (`acl.rules`); an acl_file adds to them. */
export function aclRulesFrom(config: FerryConfig): AclRule[] {
  return config.acl.rules.map((r) => ({
    action: r.action,
    topic: r.topic,
    permission: r.permission,
    ...(r.username !== undefined ? { username: r.username } : {}),
    ...(r.client_id !== undefined ? { clientId: r.client_id } : {}),
  }));
}

export function limitsFrom(config: FerryConfig): SecurityLimits {
  const l = config.limits;
  return {
    exemptLoopback: l.exempt_loopback,
    connectionRatePerIp: l.connection_rate_per_ip,
    maxConnectionsPerIp: l.max_connections_per_ip,
    maxPublishRate: l.max_publish_rate,
    flapping: {
      max: l.flapping.max_connects,
      windowSeconds: l.flapping.window_seconds,
      banSeconds: l.flapping.ban_seconds,
    },
    authFailures: {
      max: l.auth_failures.max,
      windowSeconds: l.auth_failures.window_seconds,
      banSeconds: l.auth_failures.ban_seconds,
    },
  };
}

/** Problems that involve more than one key, as `key: what is wrong`. */
export function securityProblems(config: FerryConfig): string[] {
  const problems: string[] = [];
  const { tls, listeners } = config;
  const tlsOn = listeners.tls_port !== null || listeners.wss_port !== null;
  if (tlsOn) {
    if (tls.cert === null) problems.push("tls.cert: required when listeners.tls_port or listeners.wss_port is set");
    if (tls.key === null) problems.push("tls.key: required when listeners.tls_port or listeners.wss_port is set");
  }
  if (tls.require_client_cert && tls.ca === null) {
    problems.push("tls.ca: required when tls.require_client_cert is true");
  }
  if (tls.use_identity_as_username && tls.ca === null) {
    problems.push("tls.ca: required when tls.use_identity_as_username is true");
  }
  return problems;
}
