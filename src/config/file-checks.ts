/**
 * Files the config names, checked before anything starts: each must exist, be readable by
 * the user running the check (`serve` runs it as itself; install.sh runs `check-config` as
 * the service user) and parse as what it is meant to be. A problem names the key, so
 * `serve` can exit 2 (which the systemd unit does not restart) instead of failing later.
 * Nothing read from these files ever appears in a problem: only the file and the line.
 */
import { parseAclFile } from "../auth/acl-file.ts";
import { PasswordFile } from "../auth/password-file.ts";
import type { ConfigProblem, KeyPath } from "./config-source.ts";
import type { FerryConfig } from "./schema.ts";
import { aclFilterProblem } from "./topic-checks.ts";

export type ReadFile = (path: string) => Promise<Uint8Array>;

type Kind = "password file" | "acl file" | "certificate" | "private key" | "CA certificates" | "secret";

export async function fileProblems(config: FerryConfig, readFile: ReadFile): Promise<ConfigProblem[]> {
  const wanted: Array<[KeyPath, string | null | undefined, Kind]> = [
    [["auth", "password_file"], config.auth.password_file, "password file"],
    [["acl", "acl_file"], config.acl.acl_file, "acl file"],
    [["tls", "cert"], config.tls.cert, "certificate"],
    [["tls", "key"], config.tls.key, "private key"],
    [["tls", "ca"], config.tls.ca, "CA certificates"],
  ];
  config.uplinks.forEach((u, i) => {
    wanted.push([["uplinks", i, "password_file"], u.password_file, "secret"]);
    wanted.push([["uplinks", i, "tls", "ca"], u.tls.ca, "CA certificates"]);
    wanted.push([["uplinks", i, "tls", "cert"], u.tls.cert, "certificate"]);
    wanted.push([["uplinks", i, "tls", "key"], u.tls.key, "private key"]);
  });
  const limits = { maxTopicLength: config.mqtt.max_topic_length, maxTopicLevels: config.mqtt.max_topic_levels };
  const out: ConfigProblem[] = [];
  const texts = new Map<string, string>();
  await Promise.all(wanted.map(async ([path, file, kind]) => {
    if (file === null || file === undefined) return;
    let bytes: Uint8Array;
    try {
      bytes = await readFile(file);
    } catch (err) {
      out.push({ path, message: `${file}: ${readFailure(err)}` });
      return;
    }
    const text = new TextDecoder().decode(bytes);
    const problems = contentProblems(kind, text, limits);
    for (const p of problems) out.push({ path, message: `${file}: ${p}` });
    if (problems.length === 0) texts.set(path.join("."), text);
  }));
  // A certificate with someone else's key parses fine and fails only at the TLS handshake.
  const pairs: Array<[KeyPath, KeyPath]> = [[["tls", "cert"], ["tls", "key"]]];
  config.uplinks.forEach((_, i) => pairs.push([["uplinks", i, "tls", "cert"], ["uplinks", i, "tls", "key"]]));
  for (const [certPath, keyPath] of pairs) {
    const cert = texts.get(certPath.join("."));
    const key = texts.get(keyPath.join("."));
    if (cert !== undefined && key !== undefined && await keyFitsCertificate(cert, key) === false) {
      out.push({ path: keyPath, message: `is not the private key of the certificate in ${certPath.join(".")}` });
    }
  }
  // Stable order whatever finished first: the order the keys were listed in.
  const rank = (p: ConfigProblem) => wanted.findIndex(([path]) => path.join(".") === p.path.join("."));
  return out.sort((a, b) => rank(a) - rank(b));
}

function contentProblems(
  kind: Kind,
  text: string,
  limits: { maxTopicLength: number; maxTopicLevels: number },
): string[] {
  switch (kind) {
    case "password file":
      return PasswordFile.parse(text).problems;
    case "acl file": {
      const { rules, problems } = parseAclFile(text);
      // Rules keep no line numbers; the filter is quoted instead (a topic is not a secret).
      for (const r of rules) {
        const problem = aclFilterProblem(r.topic, limits);
        if (problem) problems.push(problem);
      }
      return [...new Set(problems)];
    }
    case "certificate":
    case "CA certificates":
      return pemProblem(text, /^(TRUSTED )?CERTIFICATE$/, kind);
    case "private key":
      return pemProblem(text, /^((RSA|EC|ENCRYPTED) )?PRIVATE KEY$/, kind);
    case "secret":
      return text.trim() === "" ? ["is empty"] : [];
  }
}

/** A PEM file with at least one block of the expected label, each of valid base64. */
function pemProblem(text: string, label: RegExp, kind: Kind): string[] {
  const blocks = [...text.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g)];
  if (blocks.length === 0) return [`not a PEM file (no -----BEGIN ...----- block); expected ${article(kind)}`];
  if (!blocks.some((b) => label.test(b[1]!))) {
    return [`holds ${blocks.map((b) => b[1]).join(", ")}, expected ${article(kind)}`];
  }
  for (const b of blocks) {
    const body = b[2]!.replace(/^[A-Za-z-]+:.*$/gm, "").replace(/\s+/g, "");
    if (body === "" || !/^[A-Za-z0-9+/]+={0,2}$/.test(body)) return [`a ${b[1]} block is not valid base64`];
    try {
      atob(body);
    } catch {
      return [`a ${b[1]} block is not valid base64`];
    }
  }
  return [];
}

/**
 * Whether `key` belongs to the first certificate in `cert`; undefined when this runtime
 * cannot tell. node:crypto is loaded only here, when a certificate and key are configured:
 * loading it costs several MB of resident memory that a broker without TLS never needs.
 */
async function keyFitsCertificate(cert: string, key: string): Promise<boolean | undefined> {
  try {
    const { createPrivateKey, X509Certificate } = await import("node:crypto");
    return new X509Certificate(cert).checkPrivateKey(createPrivateKey(key));
  } catch {
    return undefined; // an encrypted key, or a runtime without these APIs: the TLS listener will say
  }
}

function article(kind: Kind): string {
  return kind === "CA certificates" ? "CA certificates" : `a ${kind}`;
}

function readFailure(err: unknown): string {
  const code = (err as { code?: string }).code ?? "";
  const name = (err as { name?: string }).name ?? "";
  if (code === "ENOENT" || name === "NotFound") return "no such file";
  if (code === "EACCES" || code === "EPERM" || name === "PermissionDenied") {
    return "not readable by this user (check its owner and mode; the service runs as its own user)";
  }
  if (code === "EISDIR" || /directory/i.test((err as Error).message ?? "")) return "is a directory, not a file";
  return `cannot read: ${(err as Error).message ?? String(err)}`;
}
