/**
 * Ferry's TLS listener under Deno (`Deno.listenTls`): started through `edge/main.ts` with
 * certificates openssl makes here, a CONNECT/CONNACK over TLS, a certificate reload on
 * SIGHUP that the next connection sees, and a config asking for client certificates
 * refused at start (Deno cannot request them). Run with `deno task test:deno`.
 */
const ROOT = new URL("../../", import.meta.url).pathname;
const PERMISSIONS = ["--allow-net", "--allow-read", "--allow-write", "--allow-env"];

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

async function openssl(dir: string, ...args: string[]): Promise<void> {
  const r = await new Deno.Command("openssl", { args, cwd: dir, stdout: "null", stderr: "piped" }).output();
  assert(r.success, `openssl ${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
}

async function makeCerts(dir: string): Promise<void> {
  await openssl(dir, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key");
  await openssl(
    dir,
    "req",
    "-x509",
    "-new",
    "-key",
    "ca.key",
    "-out",
    "ca.crt",
    "-days",
    "2",
    "-subj",
    "/CN=Deno Test CA",
  );
  await Deno.writeTextFile(`${dir}/san.ext`, "subjectAltName=IP:127.0.0.1\n");
  for (const name of ["first", "second"]) {
    await openssl(dir, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${name}.key`);
    await openssl(dir, "req", "-new", "-key", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
    await openssl(
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
      "-extfile",
      "san.ext",
    );
  }
}

function spawnFerry(config: string, dataDir: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...PERMISSIONS,
      "edge/main.ts",
      "serve",
      "--host",
      "127.0.0.1",
      "--mqtt-port",
      "0",
      "--admin-port",
      "off",
      "-c",
      config,
      "-d",
      dataDir,
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** The subject of the certificate a new TLS connection to `port` is shown. */
async function subject(port: number): Promise<string> {
  const r = await new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  return /^subject=(.*)$/m.exec(new TextDecoder().decode(r.stdout))?.[1] ?? "";
}

/** CONNECT (3.1.1, client id "d") over TLS; the CONNACK's return code. */
async function connackOverTls(port: number, ca: string): Promise<number> {
  const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [ca] });
  try {
    await conn.write(new Uint8Array([0x10, 13, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x02, 0, 60, 0, 1, 0x64]));
    const buf = new Uint8Array(4);
    const n = await conn.read(buf);
    assert(n === 4 && buf[0] === 0x20, `expected a CONNACK, got ${Array.from(buf.subarray(0, n ?? 0))}`);
    return buf[3]!;
  } finally {
    conn.close();
  }
}

Deno.test("ferry under deno: MQTT over TLS answers CONNECT, and SIGHUP puts a renewed certificate in use", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-deno-tls-" });
  await makeCerts(dir);
  await Deno.copyFile(`${dir}/first.crt`, `${dir}/live.crt`);
  await Deno.copyFile(`${dir}/first.key`, `${dir}/live.key`);
  const config = `${dir}/ferry.json`;
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      listeners: { tls_port: 0 },
      storage: { durability: "memory" },
      tls: { cert: `${dir}/live.crt`, key: `${dir}/live.key`, reload_check_seconds: 0 },
    }),
  );
  const child = spawnFerry(config, `${dir}/data`);
  const reader = child.stdout.getReader();
  let out = "";
  let err = "";
  const stderrDone = (async () => {
    for await (const chunk of child.stderr) err += new TextDecoder().decode(chunk);
  })();
  try {
    while (!/listening mqtts:\/\/127\.0\.0\.1:\d+/.test(out)) {
      const { done, value } = await reader.read();
      assert(!done, `ferry exited before listening:\n${out}\n${err}`);
      out += new TextDecoder().decode(value);
    }
    const port = Number(/listening mqtts:\/\/127\.0\.0\.1:(\d+)/.exec(out)![1]);
    const ca = await Deno.readTextFile(`${dir}/ca.crt`);
    assert((await connackOverTls(port, ca)) === 0, "CONNACK 0 over TLS");
    assert((await subject(port)).includes("first"), "the first certificate");

    await Deno.copyFile(`${dir}/second.crt`, `${dir}/live.crt`);
    await Deno.copyFile(`${dir}/second.key`, `${dir}/live.key`);
    child.kill("SIGHUP");
    const deadline = Date.now() + 10_000;
    while (!err.includes("certificates reloaded")) {
      assert(Date.now() < deadline, `no reload logged:\n${err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert((await connackOverTls(port, ca)) === 0, "CONNACK 0 over TLS after the reload");
    assert((await subject(port)).includes("second"), "the renewed certificate after SIGHUP");
    assert(!err.includes("BEGIN"), "no PEM in the log");
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await reader.cancel().catch(() => {});
    await stderrDone;
  }
});

Deno.test("ferry under deno: a config that asks for client certificates is refused at start", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-deno-mtls-" });
  await makeCerts(dir);
  const config = `${dir}/ferry.json`;
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      listeners: { tls_port: 0 },
      storage: { durability: "memory" },
      tls: { cert: `${dir}/first.crt`, key: `${dir}/first.key`, ca: `${dir}/ca.crt`, require_client_cert: true },
    }),
  );
  const r = await spawnFerry(config, `${dir}/data`).output();
  assert(r.code === 1, `exit status ${r.code}`);
  assert(new TextDecoder().decode(r.stderr).includes("client certificates"), "names the reason");
});

Deno.test("ferry under deno: a tls.ciphers list other than the default is refused at start (rustls takes none)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-deno-ciphers-" });
  await makeCerts(dir);
  const config = `${dir}/ferry.json`;
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      listeners: { tls_port: 0 },
      storage: { durability: "memory" },
      tls: { cert: `${dir}/first.crt`, key: `${dir}/first.key`, ciphers: "ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA" },
    }),
  );
  const r = await spawnFerry(config, `${dir}/data`).output();
  assert(r.code === 1, `exit status ${r.code}`);
  assert(new TextDecoder().decode(r.stderr).includes("tls.ciphers"), "names the key");
});
