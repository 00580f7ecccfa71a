import { statSync } from "node:fs";
import { parseAclFile } from "../auth/acl-file.ts";
import { PasswordFile } from "../auth/password-file.ts";
import { weakness } from "../auth/password-hash.ts";
import { aclRulesFrom, authConfigured, resolveAclDefault, resolveAllowAnonymous } from "../config/security-options.ts";
import type { FerryConfig } from "../config/schema.ts";
import type { Logger } from "../core/logger.ts";
import type { Access } from "./access-from-config.ts";
import type { Accept, ListenerFactory, TlsListener, TlsMaterial } from "./listener.ts";
import { listenOrExplain } from "./listen-error.ts";

/** What the security wiring needs from a runtime. */
export interface SecurityAdapters extends ListenerFactory {
  readFile(path: string): Promise<Uint8Array>;
}

/**
 * The security files of a running server — password file, ACL file, certificates — and the
 * TLS listeners that use them. Files are read before anything listens (a bad file stops
 * the start), re-read on `reload()` (SIGHUP) and, when their contents change, by a
 * periodic check; a bad file at reload is logged and the previous one stays in force.
 * Nothing read from these files is ever logged: problems name the file and the line.
 * It owns the auth and ACL objects it loads files into (built by `accessFromConfig` and
 * handed to the broker as ports); the broker never constructs or changes them.
 */
export class SecurityWiring {
  tls: TlsListener | undefined;
  wss: TlsListener | undefined;
  #seen = new Map<string, string>();
  #timers: Array<ReturnType<typeof setInterval>> = [];
  #reloading: Promise<void> | undefined;

  private constructor(
    private readonly adapters: SecurityAdapters,
    private readonly config: FerryConfig,
    private readonly access: Access,
    private readonly log: Logger,
  ) {}

  /** Read the password and ACL files into `access`; throws Error naming the problems. */
  static async load(
    adapters: SecurityAdapters,
    config: FerryConfig,
    access: Access,
    log: Logger,
  ): Promise<SecurityWiring> {
    const w = new SecurityWiring(adapters, config, access, log);
    await w.#loadAuthFiles(true);
    const anonymous = resolveAllowAnonymous(config);
    const viaCert = config.tls.use_identity_as_username && config.listeners.tls_port !== null;
    if (!anonymous && config.auth.password_file === null && !viaCert) {
      log.warn("auth: anonymous access is off and there is no auth.password_file: every client will be refused");
    }
    if (anonymous && config.auth.allow_anonymous === null) {
      log.info(
        `auth: anonymous access allowed because ${config.listeners.host} is a loopback address and no authentication is configured`,
      );
    } else if (!anonymous && config.auth.allow_anonymous === null) {
      const why = authConfigured(config)
        ? "authentication is configured"
        : `${config.listeners.host} is not a loopback address`;
      log.info(`auth: anonymous access refused because ${why} (auth.allow_anonymous)`);
    }
    return w;
  }

  /** Start the TLS and secure WebSocket listeners the config asks for. */
  async listen(accept: Accept): Promise<void> {
    const { listeners, mqtt } = this.config;
    if (listeners.tls_port === null && listeners.wss_port === null) return;
    const { material } = (await this.#readTls(true))!;
    if (listeners.tls_port !== null) {
      if (!this.adapters.listenTls) throw new Error("this runtime has no TLS listener (listeners.tls_port)");
      const port = listeners.tls_port;
      this.tls = await listenOrExplain(
        {
          what: "MQTT over TLS",
          host: listeners.host,
          port,
          portOption: "listeners.tls_port",
          hostOption: "listeners.host",
        },
        () => this.adapters.listenTls!(listeners.host, port, accept, material), // checked above
      );
    }
    if (listeners.wss_port !== null) {
      if (!this.adapters.listenSecureWebSocket) {
        throw new Error("this runtime has no secure WebSocket listener (listeners.wss_port)");
      }
      try {
        const port = listeners.wss_port;
        this.wss = await listenOrExplain(
          {
            what: "MQTT over secure WebSocket",
            host: listeners.host,
            port,
            portOption: "listeners.wss_port",
            hostOption: "listeners.host",
          },
          () => this.adapters.listenSecureWebSocket!(listeners.host, port, accept, mqtt.max_packet_size, material),
        );
      } catch (err) {
        this.tls?.stop();
        this.tls = undefined;
        throw err;
      }
    }
  }

  /** Check the files now and then; `reload()` is what SIGHUP calls. */
  watch(): void {
    const every = (seconds: number, fn: () => Promise<void>) => {
      if (seconds <= 0) return;
      const t = setInterval(() => void fn().catch(() => {}), seconds * 1000);
      (t as { unref?: () => void }).unref?.();
      this.#timers.push(t);
    };
    every(this.config.auth.reload_check_seconds, () => this.#loadAuthFiles(false, true));
    if (this.tls || this.wss) every(this.config.tls.reload_check_seconds, () => this.#reloadTls(true));
  }

  /** Re-read every security file and apply what is valid (SIGHUP). */
  reload(): Promise<void> {
    // One at a time: a SIGHUP during a periodic check waits for it.
    const run = async () => {
      await this.#loadAuthFiles(false);
      await this.#reloadTls(false);
    };
    const p = (this.#reloading ?? Promise.resolve()).then(run, run);
    this.#reloading = p;
    return p;
  }

  stop(): void {
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    this.tls?.stop();
    this.wss?.stop();
  }

  // ---- files ------------------------------------------------------------------------

  /** Read `path`; with `onlyIfChanged`, undefined when its contents are what was seen last. */
  async #read(path: string, onlyIfChanged: boolean): Promise<string | undefined> {
    const bytes = await this.adapters.readFile(path);
    const text = new TextDecoder().decode(bytes);
    const digest = await fingerprint(bytes);
    if (onlyIfChanged && this.#seen.get(path) === digest) return undefined;
    this.#seen.set(path, digest);
    return text;
  }

  async #loadAuthFiles(starting: boolean, onlyIfChanged = false): Promise<void> {
    const { auth, acl } = this.config;
    try {
      if (auth.password_file !== null) {
        const text = await this.#read(auth.password_file, onlyIfChanged);
        if (text !== undefined) this.#applyPasswords(auth.password_file, text, starting);
      }
      if (acl.acl_file !== null) {
        const text = await this.#read(acl.acl_file, onlyIfChanged);
        if (text !== undefined) this.#applyAcl(acl.acl_file, text, starting);
      }
    } catch (err) {
      if (starting) throw err;
      // Keep what is in force; the next check or SIGHUP tries again.
      this.#seen.clear();
      this.log.error(`auth: reload failed, keeping the previous files: ${(err as Error).message}`);
    }
  }

  #applyPasswords(path: string, text: string, starting: boolean): void {
    const { file, problems } = PasswordFile.parse(text);
    if (problems.length > 0) throw new Error(`${path}: ${problems.join("; ")}`);
    const mode = modeOf(path);
    if (mode !== undefined && mode & 0o004) {
      // As Mosquitto 2 does: a warning, not a refusal, so an upgrade does not lock everyone out.
      this.log.warn(
        `auth: ${path} is readable by every user (mode 0${
          (mode & 0o777).toString(8)
        }): anyone on this machine can copy the hashes and guess passwords offline; chmod o-rwx ${path}`,
      );
    }
    const users = file.users();
    for (const [user, hash] of users) {
      const weak = weakness(hash);
      if (weak) this.log.warn(`auth: user '${user}' in ${path} has ${weak}; set it again with 'ferry passwd'`);
    }
    this.access.security.authenticator.setUsers(users);
    this.log.info(`auth: ${starting ? "loaded" : "reloaded"} ${users.size} users from ${path}`);
  }

  #applyAcl(path: string, text: string, starting: boolean): void {
    const { rules, problems } = parseAclFile(text);
    if (problems.length > 0) throw new Error(`${path}: ${problems.join("; ")}`);
    this.access.acl.replace([...aclRulesFrom(this.config), ...rules], resolveAclDefault(this.config));
    this.log.info(`acl: ${starting ? "loaded" : "reloaded"} ${rules.length} rules from ${path}`);
  }

  async #readTls(starting: boolean, onlyIfChanged = false): Promise<{ material: TlsMaterial; id: string } | undefined> {
    const { tls } = this.config;
    // All three are read every time, so that a changed key is seen together with its certificate.
    const cert = await this.#read(tls.cert!, false);
    const key = await this.#read(tls.key!, false);
    const ca = tls.ca === null ? undefined : await this.#read(tls.ca, false);
    const id = await fingerprint(new TextEncoder().encode(`${cert}\u0000${key}\u0000${ca ?? ""}`));
    if (onlyIfChanged && this.#seen.get("\u0000tls") === id) return undefined;
    if (starting) this.#seen.set("\u0000tls", id);
    return {
      material: { cert: cert!, key: key!, ca, requireClientCert: tls.require_client_cert, ciphers: tls.ciphers },
      id,
    };
  }

  async #reloadTls(onlyIfChanged: boolean): Promise<void> {
    if (!this.tls && !this.wss) return;
    try {
      const read = await this.#readTls(false, onlyIfChanged);
      if (!read) return;
      await this.tls?.reload(read.material);
      await this.wss?.reload(read.material);
      this.#seen.set("\u0000tls", read.id);
      this.log.info("tls: certificates reloaded; new connections use them");
    } catch (err) {
      // A half-written file or a key that does not fit the certificate: keep the old pair.
      this.log.error(`tls: reload failed, keeping the previous certificates: ${redactPem((err as Error).message)}`);
    }
  }
}

/** The file's permission bits, or undefined where they cannot be read. */
function modeOf(path: string): number | undefined {
  try {
    return statSync(path).mode & 0o7777;
  } catch {
    return undefined;
  }
}

async function fingerprint(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as BufferSource));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** TLS libraries can quote key material in errors; never let it reach a log. */
export function redactPem(text: string): string {
  return text.replace(/-----BEGIN [^-]+-----[\s\S]*?(-----END [^-]+-----|$)/g, "[PEM redacted]");
}
