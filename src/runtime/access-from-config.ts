import { Acl } from "../auth/acl.ts";
import { Security } from "../auth/security.ts";
import { aclRulesFrom, limitsFrom, resolveAclDefault, resolveAllowAnonymous } from "../config/security-options.ts";
import type { FerryConfig } from "../config/schema.ts";
import type { Clock } from "../core/clock.ts";
import type { Logger } from "../core/logger.ts";
import type { BrokerMetrics } from "../core/metrics.ts";

/** The auth and ACL ports a broker is built with (BrokerDeps.auth / .acl). */
export interface Access {
  /** Authentication, bans, connection and publish limits: the kernel's AuthPort. */
  security: Security;
  /** The ACL: the kernel's AclPort. */
  acl: Acl;
}

/**
 * Build the auth and ACL ports a config describes, before the broker that uses them.
 * Files (password file, acl_file) are read into them by `SecurityWiring`, which owns them
 * from then on; the broker only calls them.
 */
export function accessFromConfig(config: FerryConfig, clock: Clock, logger: Logger, metrics: BrokerMetrics): Access {
  const security = new Security(
    {
      allowAnonymous: resolveAllowAnonymous(config),
      useIdentityAsUsername: config.tls.use_identity_as_username,
      useUsernameAsClientId: config.auth.use_username_as_clientid,
      bindClientIds: config.auth.bind_client_ids,
    },
    limitsFrom(config),
    clock,
    logger,
    metrics,
  );
  return { security, acl: new Acl(aclRulesFrom(config), resolveAclDefault(config)) };
}
