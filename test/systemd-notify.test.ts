/**
 * Ferry under systemd's Type=notify protocol, against a notify socket the test listens on
 * (no real systemd here: PID 1 in the test machine is not systemd). READY=1 once it accepts,
 * WATCHDOG=1 at half of WATCHDOG_USEC, RELOADING=1 + MONOTONIC_USEC then READY=1 around a
 * SIGHUP reload, STOPPING=1 on SIGTERM — from source and, when built, from the compiled
 * executable (where the datagram goes through bun:ffi too).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serveArgs } from "./helpers/broker-process.ts";
import { listenNotifySocket, python3 } from "./helpers/notify-socket.ts";
import { connect } from "./helpers/clients.ts";

const MAIN = join(import.meta.dir, "..", "edge", "main.ts");
const BINARY = join(import.meta.dir, "..", "dist", `ferry-${process.platform}-${process.arch}`);
const tmp = mkdtempSync(join(tmpdir(), "ferry-notify-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** `serve` from `cmd` on a fresh data directory with `env` added (its readiness comes over the notify socket). */
function serve(cmd: string[], env: Record<string, string>) {
  return Bun.spawn([...cmd, ...serveArgs(mkdtempSync(join(tmp, "d-")))], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, ...env },
  });
}

const variants: Array<{ name: string; cmd: string[]; skip: string | undefined }> = [
  { name: "from source", cmd: [process.execPath, MAIN], skip: undefined },
  {
    name: "compiled executable",
    cmd: [BINARY],
    skip: existsSync(BINARY) ? undefined : `${BINARY} not built (npm run build)`,
  },
];

for (const v of variants) {
  const skip = python3 ? v.skip : "python3 missing (it listens on the notify socket)";
  describe(`sd_notify, ${v.name}${skip ? ` (skipped: ${skip})` : ""}`, () => {
    test.skipIf(skip !== undefined)(
      "READY=1 once listening, WATCHDOG=1 pings, RELOADING=1/READY=1 around SIGHUP, STOPPING=1 on SIGTERM",
      async () => {
        const socket = await listenNotifySocket(join(tmp, `notify-${v.name.replace(/\W/g, "")}.sock`));
        const proc = serve(v.cmd, { NOTIFY_SOCKET: socket.path, WATCHDOG_USEC: "300000" });
        try {
          const ready = await socket.waitFor((m) => m.startsWith("READY=1"));
          expect(ready).toMatch(/^READY=1\nSTATUS=accepting MQTT on 127\.0\.0\.1:\d+$/);
          const port = Number(/:(\d+)$/.exec(ready)![1]);
          // READY means it accepts: a client connects right away.
          const c = await connect(`mqtt://127.0.0.1:${port}`);
          await c.end();
          // Half of 300 ms: pings keep coming.
          const pings = () => socket.messages().filter((m) => m === "WATCHDOG=1").length;
          await socket.waitFor(() => pings() >= 3);
          expect(pings()).toBeGreaterThanOrEqual(3);

          const before = socket.messages().length;
          proc.kill("SIGHUP");
          const reloading = await socket.waitFor((m) => m.startsWith("RELOADING=1"));
          expect(reloading).toMatch(/^RELOADING=1\nMONOTONIC_USEC=\d+\nSTATUS=reloading$/);
          // MONOTONIC_USEC is CLOCK_MONOTONIC (systemd compares it with its own clock).
          const usec = Number(/MONOTONIC_USEC=(\d+)/.exec(reloading)![1]);
          const uptime =
            Number(Bun.spawnSync([python3!, "-c", "import time; print(time.monotonic())"]).stdout.toString()) * 1e6;
          expect(Math.abs(usec - uptime)).toBeLessThan(5e6);
          await socket.waitFor((m) => m.startsWith("READY=1"), 10_000, before);
          const after = socket.messages().slice(before).filter((m) => m !== "WATCHDOG=1");
          expect(after.map((m) => m.split("\n")[0])).toEqual(["RELOADING=1", "READY=1"]);

          proc.kill("SIGTERM");
          expect(await proc.exited).toBe(0);
          expect(socket.messages().filter((m) => m !== "WATCHDOG=1").at(-1)).toBe("STOPPING=1\nSTATUS=shutting down");
        } finally {
          if (proc.exitCode === null) proc.kill("SIGKILL");
          await socket.close();
        }
      },
      30_000,
    );

    test.skipIf(skip !== undefined)("an abstract NOTIFY_SOCKET (@name) works too", async () => {
      const socket = await listenNotifySocket(`@ferry-test-${process.pid}-${v.name.replace(/\W/g, "")}`);
      const proc = serve(v.cmd, { NOTIFY_SOCKET: socket.path });
      try {
        await socket.waitFor((m) => m.startsWith("READY=1"));
      } finally {
        proc.kill("SIGKILL");
        await proc.exited;
        await socket.close();
      }
    }, 30_000);
  });
}
