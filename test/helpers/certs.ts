/**
 * Certificates for TLS tests, made with the openssl command line in a temporary directory:
 * a CA, server certificates for 127.0.0.1 signed by it, client certificates signed by it,
 * and a self-signed client certificate the CA does not know.
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestCerts {
  dir: string;
  /** File paths. */
  ca: string;
  serverCert: string;
  serverKey: string;
  /** A second server certificate (CN "ferry-renewed") for reload tests. */
  renewedCert: string;
  renewedKey: string;
  /** Client certificate signed by the CA, CN as given to makeCerts. */
  clientCert: string;
  clientKey: string;
  /** Self-signed client certificate (CN "intruder"). */
  badCert: string;
  badKey: string;
  read(path: string): string;
}

function openssl(dir: string, ...args: string[]): void {
  const r = Bun.spawnSync(["openssl", ...args], { cwd: dir, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${r.stderr.toString()}`);
}

export function makeCerts(clientCn = "device-1"): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), "ferry-tls-"));
  // EC keys: quick to make, and what constrained devices tend to use.
  const key = (name: string) => openssl(dir, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name);
  key("ca.key");
  openssl(dir, "req", "-x509", "-new", "-key", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=Ferry Test CA");
  writeFileSync(join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  const signed = (name: string, cn: string, ext: boolean) => {
    key(`${name}.key`);
    openssl(dir, "req", "-new", "-key", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`);
    openssl(
      dir,
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${name}.crt`,
      "-days",
      "2",
      ...(ext ? ["-extfile", "san.ext"] : []),
    );
  };
  signed("server", "127.0.0.1", true);
  signed("renewed", "ferry-renewed", true);
  signed("client", clientCn, false);
  key("bad.key");
  openssl(dir, "req", "-x509", "-new", "-key", "bad.key", "-out", "bad.crt", "-days", "2", "-subj", "/CN=intruder");
  const p = (n: string) => join(dir, n);
  return {
    dir,
    ca: p("ca.crt"),
    serverCert: p("server.crt"),
    serverKey: p("server.key"),
    renewedCert: p("renewed.crt"),
    renewedKey: p("renewed.key"),
    clientCert: p("client.crt"),
    clientKey: p("client.key"),
    badCert: p("bad.crt"),
    badKey: p("bad.key"),
    read: (path) => readFileSync(path, "utf8"),
  };
}
