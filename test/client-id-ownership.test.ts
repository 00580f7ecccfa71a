/**
 * Session takeover across users: without protection any authenticated user could connect
 * with another user's client id, kick it, fire its Will and destroy its queued messages.
 * `auth.use_username_as_clientid` (Mosquitto's option) makes the username the client id;
 * `auth.bind_client_ids` refuses a client id whose session belongs to another username.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { validateConfig } from "../src/config/load.ts";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { barrier, connect } from "./helpers/clients.ts";
import { writePasswordFile } from "./helpers/password-file.ts";
import { rawConnect } from "./helpers/raw-client.ts";

setDefaultTimeout(20_000);

let passwordFile: string;
beforeAll(async () => {
  passwordFile = await writePasswordFile({ alice: "a", bob: "b" });
});

const alice = { username: "alice", password: Buffer.from("a") };
const bob = { username: "bob", password: Buffer.from("b") };

describe("auth.bind_client_ids", () => {
  let b: TestBroker;
  beforeAll(async () => {
    b = await startBroker({ auth: { password_file: passwordFile, allow_anonymous: true, bind_client_ids: true } });
  });
  afterAll(() => b.stop());

  test("another user cannot take a connected client's id: 0x87 / 5, and the owner keeps its connection and Will", async () => {
    const watcher = await connect(b.url, { username: "bob", password: "b" });
    await watcher.client.subscribeAsync("will/#");
    const owner = await connect(b.url, {
      clientId: "sensor-1",
      username: "alice",
      password: "a",
      will: { topic: "will/sensor-1", payload: Buffer.from("gone"), qos: 0, retain: false },
    });
    let kicked = false;
    owner.client.on("close", () => (kicked = true));
    const v5 = await rawConnect(b.port, 5, { clientId: "sensor-1", ...bob });
    expect(v5.code).toBe(0x87);
    await v5.raw.waitClosed();
    const v4 = await rawConnect(b.port, 4, { clientId: "sensor-1", ...bob });
    expect(v4.code).toBe(5);
    const anonymous = await rawConnect(b.port, 4, { clientId: "sensor-1" });
    expect(anonymous.code).toBe(5);
    await barrier(owner, watcher); // a taken-over connection would not answer; a Will would be here
    expect(kicked).toBe(false);
    expect(owner.client.connected).toBe(true);
    expect(watcher.messages).toEqual([]); // no Will fired
    // The owner itself may take its session over, as always.
    const again = await rawConnect(b.port, 5, { clientId: "sensor-1", ...alice });
    expect(again.code).toBe(0);
    again.raw.close();
    await Promise.all([owner.end(true), watcher.end()]);
  });

  test("an offline persistent session keeps its owner across a restart; its queue is not destroyed by another user", async () => {
    const dataDir = join(mkdtempSync(join(tmpdir(), "ferry-bind-")), "data");
    const start = () =>
      startBroker({
        data_dir: dataDir,
        storage: { durability: "commit" },
        auth: { password_file: passwordFile, bind_client_ids: true },
      });
    let s = await start();
    try {
      const owner = await connect(s.url, { clientId: "queue-1", username: "alice", password: "a", clean: false });
      await owner.client.subscribeAsync("q/#", { qos: 1 });
      await owner.end();
      const pub = await connect(s.url, { username: "bob", password: "b" });
      await pub.client.publishAsync("q/1", "kept", { qos: 1 });
      await pub.end();
      await s.stop();
      s = await start();
      const thief = await rawConnect(s.port, 4, { clientId: "queue-1", clean: true, ...bob });
      expect(thief.code).toBe(5);
      thief.raw.close();
      const back = await connect(s.url, { clientId: "queue-1", username: "alice", password: "a", clean: false });
      expect((await back.waitFor(1))[0]!.payload).toBe("kept");
      await back.end();
    } finally {
      await s.stop();
    }
  });

  test("off (the default outside the appliance config), another user takes the session over as before", async () => {
    expect(validateConfig({}).auth.bind_client_ids).toBe(false);
    const open = await startBroker({ auth: { password_file: passwordFile } });
    try {
      const first = await rawConnect(open.port, 5, { clientId: "shared", ...alice });
      expect(first.code).toBe(0);
      const second = await rawConnect(open.port, 5, { clientId: "shared", ...bob });
      expect(second.code).toBe(0);
      await first.raw.waitClosed();
      second.raw.close();
    } finally {
      await open.stop();
    }
  });
});

describe("auth.use_username_as_clientid", () => {
  let b: TestBroker;
  beforeAll(async () => {
    b = await startBroker({
      auth: { password_file: passwordFile, allow_anonymous: true, use_username_as_clientid: true },
    });
  });
  afterAll(() => b.stop());

  test("the username replaces the client id sent, so a user can only ever hold its own session", async () => {
    const one = await rawConnect(b.port, 5, { clientId: "bob", ...alice });
    expect(one.code).toBe(0);
    const ids = [...b.server.broker.clients].map((c) => c.clientId);
    expect(ids).toContain("alice");
    expect(ids).not.toContain("bob");
    // Bob, claiming alice's id, gets his own session and does not kick her.
    const two = await rawConnect(b.port, 4, { clientId: "alice", ...bob });
    expect(two.code).toBe(0);
    await one.raw.roundTrip(); // a taken-over connection would not answer
    expect(one.raw.closed).toBe(false);
    expect([...b.server.broker.clients].map((c) => c.clientId).sort()).toEqual(["alice", "bob"]);
    one.raw.close();
    two.raw.close();
  });

  test("an empty client id gets the username as its Assigned Client Identifier [MQTT-3.2.2-16]", async () => {
    const c = await rawConnect(b.port, 5, { clientId: "", ...alice });
    expect(c.code).toBe(0);
    expect(c.ack.properties?.assignedClientIdentifier).toBe("alice");
    c.raw.close();
  });

  test("a client without a username is refused: v5 0x87, 3.1.1 return code 5 (as Mosquitto)", async () => {
    expect((await rawConnect(b.port, 5, { clientId: "anon" })).code).toBe(0x87);
    expect((await rawConnect(b.port, 4, { clientId: "anon" })).code).toBe(5);
  });
});
