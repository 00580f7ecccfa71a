/**
 * A Will is a publish like any other: its topic is checked against the publish ACL at
 * CONNECT (refused with 0x87 / 3.1.1 return code 5, as Mosquitto does) and again when it
 * is published, since the rules may have changed in between.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { IConnectPacket } from "mqtt-packet";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { barrier, connect, eventually } from "./helpers/clients.ts";
import { writePasswordFile } from "./helpers/password-file.ts";
import { rawConnect } from "./helpers/raw-client.ts";

setDefaultTimeout(20_000);

let broker: TestBroker;
let dir: string;
let aclFile: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "ferry-will-acl-"));
  aclFile = join(dir, "acl");
  // alice may publish under alice/ only; the watcher may read everything.
  writeFileSync(aclFile, "user alice\ntopic readwrite alice/#\nuser watcher\ntopic read #\ntopic read $SYS/#\n");
  const passwordFile = await writePasswordFile({ alice: "a", watcher: "w" }, dir);
  broker = await startBroker({
    auth: { password_file: passwordFile, reload_check_seconds: 0 },
    acl: { acl_file: aclFile },
  });
});
afterAll(() => broker.stop());

function connectWithWill(version: 4 | 5, will: IConnectPacket["will"], clientId: string) {
  return rawConnect(broker.port, version, { clientId, username: "alice", password: Buffer.from("a"), will });
}

const willOn = (topic: string) => ({ topic, payload: Buffer.from("alarm!"), qos: 1 as const, retain: true });

describe("Will topic and the publish ACL", () => {
  test("a Will on a topic the user may not publish to is refused at CONNECT: v5 0x87, 3.1.1 return code 5", async () => {
    const before = broker.server.broker.metrics.aclDeniedPublish;
    for (const topic of ["telemetry/alarm", "$SYS/broker/version"]) {
      const v5 = await connectWithWill(5, willOn(topic), "will-v5");
      expect(`${topic} ${v5.code}`).toBe(`${topic} ${0x87}`);
      await v5.raw.waitClosed();
      const v4 = await connectWithWill(4, willOn(topic), "will-v4");
      expect(`${topic} ${v4.code}`).toBe(`${topic} 5`);
      await v4.raw.waitClosed();
    }
    expect(broker.server.broker.metrics.aclDeniedPublish - before).toBe(4);
    // Nothing was retained or delivered on the way.
    expect(broker.server.broker.retained.get("telemetry/alarm")).toBeUndefined();
  });

  test("a Will on an allowed topic is accepted and published on an abnormal disconnect", async () => {
    const watcher = await connect(broker.url, { username: "watcher", password: "w" });
    await watcher.client.subscribeAsync("alice/#", { qos: 1 });
    const { raw, code } = await connectWithWill(5, willOn("alice/status"), "will-ok");
    expect(code).toBe(0);
    raw.close(); // no DISCONNECT: the Will goes out
    const got = await watcher.waitFor(1);
    expect(got[0]!.topic).toBe("alice/status");
    await watcher.end();
  });

  test("a Will the rules stopped allowing after CONNECT is not published when the client drops", async () => {
    const watcher = await connect(broker.url, { username: "watcher", password: "w" });
    await watcher.client.subscribeAsync("alice/late", { qos: 1 }); // not alice/#: the Will above is retained
    const { raw, code } = await connectWithWill(4, willOn("alice/late"), "will-late");
    expect(code).toBe(0);
    // The operator narrows alice's rights while she is connected.
    writeFileSync(aclFile, "user alice\ntopic readwrite alice/inbox/#\nuser watcher\ntopic read #\n");
    await broker.server.reload();
    const before = broker.server.broker.metrics.aclDeniedPublish;
    raw.close();
    await eventually(() => broker.server.broker.metrics.aclDeniedPublish > before, 3000, "the Will to be refused");
    await barrier(watcher);
    expect(watcher.messages).toEqual([]);
    expect(broker.server.broker.retained.get("alice/late")).toBeUndefined();
    await watcher.end();
  });
});
