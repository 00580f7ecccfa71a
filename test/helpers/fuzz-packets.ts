/**
 * The packet generator of the fuzz tests (test/fuzz.test.ts) and the long fuzz run
 * (scripts/fuzz.ts): a seeded PRNG, protocol-shaped packets from mqtt-packet for v3.1,
 * 3.1.1 and 5.0, and structure-aware corruptions of them.
 */
import mqttPacket, { type Packet } from "mqtt-packet";
import net from "node:net";

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export function prng(s: number) {
  let a = s >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    next,
    int,
    chance: (p: number) => next() < p,
    pick: <T>(xs: readonly T[]): T => xs[int(xs.length)]!,
    bytes: (n: number) => Uint8Array.from({ length: n }, () => int(256)),
  };
}
export type Rng = ReturnType<typeof prng>;

export const TOPICS = [
  "a",
  "a/b",
  "a/b/c",
  "fz/t",
  "$SYS/x",
  "",
  "a/+",
  "#",
  "a/#/b",
  "+/+",
  "$share/g/a",
  "\u00e9/\u4e2d",
  "x".repeat(300),
];
export const FILTERS = [
  "#",
  "a/#",
  "+/b",
  "fz/+",
  "$share/g/a/#",
  "$share//a",
  "$share/g",
  "a/#/b",
  "a+",
  "",
  "$SYS/#",
  "a/b/c",
];
export const IDS = ["", "fz-a", "fz-b", "fz-c", "fz-d", "\u0000bad"];

export function userProps(r: Rng): Record<string, string | string[]> | undefined {
  return r.chance(0.2) ? { k: r.chance(0.5) ? "v" : ["v1", "v2"] } : undefined;
}

/** A packet as mqtt-packet would generate it; protocol-valid in shape, arbitrary in content. */
export function packet(r: Rng, version: 3 | 4 | 5, connectOnly = false): Packet {
  const v5 = version === 5;
  const props = <T extends object>(p: T): T | undefined => (v5 && r.chance(0.6) ? p : undefined);
  const kind = connectOnly ? "connect" : r.pick(
    [
      "connect",
      "publish",
      "publish",
      "publish",
      "subscribe",
      "subscribe",
      "unsubscribe",
      "puback",
      "pubrec",
      "pubrel",
      "pubcomp",
      "pingreq",
      "disconnect",
      "auth",
      "connack",
      "suback",
      "pingresp",
    ] as const,
  );
  const messageId = 1 + r.int(65535);
  const qos = r.int(3) as 0 | 1 | 2;
  switch (kind) {
    case "connect": {
      const p: mqttPacket.IConnectPacket = {
        cmd: "connect",
        protocolId: version === 3 ? "MQIsdp" : "MQTT",
        protocolVersion: version,
        clientId: r.pick(IDS),
        clean: r.chance(0.7),
        keepalive: r.pick([0, 1, 60, 65535]),
      };
      if (r.chance(0.3)) {
        p.will = { topic: r.pick(TOPICS), payload: Buffer.from(r.bytes(r.int(40))), qos, retain: r.chance(0.3) };
        const wp = props({
          willDelayInterval: r.int(3),
          messageExpiryInterval: r.int(100),
          userProperties: userProps(r),
        });
        if (wp) p.will.properties = wp;
      }
      if (r.chance(0.2)) p.username = "u";
      if (p.username && r.chance(0.5)) p.password = Buffer.from("p");
      const cp = props({
        sessionExpiryInterval: r.pick([0, 1, 3600, 0xffffffff]),
        receiveMaximum: r.pick([1, 5, 65535]),
        maximumPacketSize: r.pick([64, 1000, 1_000_000]),
        topicAliasMaximum: r.int(20),
        requestProblemInformation: r.chance(0.5),
        userProperties: userProps(r),
        ...(r.chance(0.05) ? { authenticationMethod: "SCRAM" } : {}),
      });
      if (cp) p.properties = cp;
      return p;
    }
    case "publish": {
      const p: mqttPacket.IPublishPacket = {
        cmd: "publish",
        topic: r.pick(TOPICS),
        payload: Buffer.from(r.bytes(r.int(r.chance(0.1) ? 5000 : 64))),
        qos,
        retain: r.chance(0.2),
        dup: qos > 0 && r.chance(0.2),
      };
      if (qos > 0) p.messageId = messageId;
      const pp = props({
        topicAlias: r.int(12),
        messageExpiryInterval: r.int(5),
        payloadFormatIndicator: r.chance(0.5),
        contentType: "text/plain",
        responseTopic: r.pick(TOPICS),
        correlationData: Buffer.from(r.bytes(4)),
        userProperties: userProps(r),
        ...(r.chance(0.1) ? { subscriptionIdentifier: 1 + r.int(100) } : {}),
      });
      if (pp) {
        // Drop some keys so not every publish carries every property.
        for (const k of Object.keys(pp)) if (r.chance(0.5)) delete (pp as Record<string, unknown>)[k];
        p.properties = pp;
      }
      return p;
    }
    case "subscribe": {
      const subscriptions = Array.from({ length: 1 + r.int(4) }, () => {
        const s: mqttPacket.ISubscription = { topic: r.pick(FILTERS), qos: r.int(3) as 0 | 1 | 2 };
        if (v5) {
          s.nl = r.chance(0.3);
          s.rap = r.chance(0.3);
          s.rh = r.int(3) as 0 | 1 | 2;
        }
        return s;
      });
      const p: mqttPacket.ISubscribePacket = { cmd: "subscribe", messageId, subscriptions };
      const sp = props({ subscriptionIdentifier: r.int(300), userProperties: userProps(r) });
      if (sp) p.properties = sp;
      return p;
    }
    case "unsubscribe":
      return { cmd: "unsubscribe", messageId, unsubscriptions: [r.pick(FILTERS), r.pick(FILTERS)] };
    case "puback":
    case "pubrec":
    case "pubrel":
    case "pubcomp": {
      const p = { cmd: kind, messageId: 1 + r.int(20) } as mqttPacket.IPubackPacket;
      if (v5 && r.chance(0.5)) p.reasonCode = r.pick([0, 0x10, 0x80, 0x92]);
      return p as Packet;
    }
    case "disconnect": {
      const p: mqttPacket.IDisconnectPacket = { cmd: "disconnect" };
      if (v5) {
        p.reasonCode = r.pick([0, 4, 0x80]);
        const dp = props({ sessionExpiryInterval: r.int(10) });
        if (dp) p.properties = dp;
      }
      return p;
    }
    case "auth":
      return { cmd: "auth", reasonCode: r.pick([0, 0x18, 0x19]), properties: { authenticationMethod: "X" } };
    case "connack":
      return { cmd: "connack", sessionPresent: false, returnCode: 0, reasonCode: 0 };
    case "suback":
      return { cmd: "suback", messageId, granted: [0] };
    case "pingreq":
    case "pingresp":
      return { cmd: kind };
  }
}

export function encode(r: Rng, version: 3 | 4 | 5, connectOnly = false): Uint8Array {
  try {
    return mqttPacket.generate(packet(r, version, connectOnly), { protocolVersion: version });
  } catch {
    // Some random combinations are refused by the encoder; send noise instead.
    return r.bytes(1 + r.int(32));
  }
}

/** One of several structure-aware corruptions, or none. */
export function mutate(r: Rng, input: Uint8Array): Uint8Array {
  const b = Array.from(input);
  switch (r.int(7)) {
    case 1: // flip a few bits
      for (let i = 0, n = 1 + r.int(3); i < n; i++) b[r.int(b.length)]! ^= 1 << r.int(8);
      return Uint8Array.from(b);
    case 2: // overwrite a byte
      b[r.int(b.length)] = r.int(256);
      return Uint8Array.from(b);
    case 3: // truncate
      return Uint8Array.from(b.slice(0, r.int(b.length)));
    case 4: // insert random bytes
      b.splice(r.int(b.length + 1), 0, ...r.bytes(1 + r.int(8)));
      return Uint8Array.from(b);
    case 5: // corrupt the Remaining Length
      b[1] = r.pick([0x00, 0x7f, 0x80, 0xff, r.int(256)]);
      return Uint8Array.from(b);
    case 6: // change the packet type, keep the rest
      b[0] = (r.int(16) << 4) | (b[0]! & 0x0f);
      return Uint8Array.from(b);
    default: // drop a slice from the middle
      {
        const at = r.int(b.length);
        b.splice(at, 1 + r.int(Math.max(1, b.length - at)));
      }
      return Uint8Array.from(b);
  }
}

/**
 * Send one connection's worth of fuzz bytes over TCP in random chunks (so packets
 * straddle reads and several share one); resolve once the broker closed the connection
 * or went quiet for 25 ms, or after 1 s at most.
 */
export function sendOverTcp(port: number, all: Uint8Array, r: Rng): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.setNoDelay(true);
    let quiet: ReturnType<typeof setTimeout> | undefined;
    const done = () => {
      clearTimeout(quiet);
      clearTimeout(cap);
      s.destroy();
      resolve();
    };
    const cap = setTimeout(done, 1000);
    const settle = () => {
      clearTimeout(quiet);
      quiet = setTimeout(done, 25);
    };
    s.on("error", done);
    s.on("close", done);
    s.on("data", settle);
    s.on("connect", () => {
      for (let at = 0; at < all.length;) {
        const n = r.chance(0.5) ? all.length - at : 1 + r.int(64);
        s.write(all.subarray(at, at + n));
        at += n;
      }
      settle();
    });
  });
}
