/**
 * Interoperability with Eclipse Mosquitto's command-line clients (libmosquitto): what
 * mosquitto_pub sends through Ferry reaches mosquitto_sub, for MQTT 3.1 (MQIsdp), 3.1.1
 * and 5.0, at every QoS, and retained messages reach later subscribers. The clients are
 * spawned asynchronously: the broker runs in this process and must keep running.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { eventually } from "./helpers/clients.ts";

const haveClients = Bun.which("mosquitto_pub") !== null && Bun.which("mosquitto_sub") !== null;
const skipReason = haveClients
  ? ""
  : " (skipped: mosquitto_pub/mosquitto_sub not on PATH; apt install mosquitto-clients)";
if (!haveClients) console.warn(`mosquitto-clients.test.ts:${skipReason}`);

type Version = "mqttv31" | "mqttv311" | "mqttv5";
/** The protocol level each -V option puts in CONNECT (3 is MQTT 3.1, protocol name MQIsdp). */
const LEVEL: Record<Version, number> = { mqttv31: 3, mqttv311: 4, mqttv5: 5 };

let broker: TestBroker;
const children = new Set<Subprocess>();
beforeAll(async () => {
  if (haveClients) broker = await startBroker();
});
afterAll(async () => {
  for (const p of children) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
  await broker?.stop();
});

function spawn(cmd: string[]): Subprocess<"ignore", "pipe", "pipe"> {
  const proc = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  children.add(proc);
  return proc;
}

/** mosquitto_pub/sub arguments for this broker, protocol `version`, `topic` at `qos`. */
function target(version: Version, topic: string, qos: number): string[] {
  return ["-h", "127.0.0.1", "-p", String(broker.port), "-V", version, "-t", topic, "-q", String(qos)];
}

interface Subscriber {
  /** The protocol level the broker saw in its CONNECT (unset when not waited for). */
  level: number | undefined;
  /** Resolves when mosquitto_sub exits: its exit code and the messages it printed. */
  finished: Promise<
    { code: number; messages: Array<{ topic: string; qos: number; retain: boolean; payload: string }> }
  >;
}

/**
 * Start mosquitto_sub and resolve once the broker holds its subscription, so a publish
 * that follows cannot race the SUBSCRIBE. (Its own output is block-buffered into the
 * pipe until it exits, so the broker's state is what can be watched.)
 */
async function subscribe(
  version: Version,
  topic: string,
  qos: number,
  count: number,
  waitReady = true,
): Promise<Subscriber> {
  const proc = spawn([
    "mosquitto_sub",
    ...target(version, topic, qos),
    "-C",
    String(count),
    "-W",
    "15",
    "-F",
    "MSG|%t|%q|%r|%p",
  ]);
  const finished = (async () => {
    const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
    const code = await proc.exited;
    if (code !== 0) console.error(`mosquitto_sub exited ${code}: ${err}`);
    const messages = out.split("\n").filter((l) => l.startsWith("MSG|")).map((l) => {
      const [, t, q, r, ...p] = l.split("|");
      return { topic: t!, qos: Number(q), retain: r === "1", payload: p.join("|") };
    });
    return { code, messages };
  })();
  if (!waitReady) return { level: undefined, finished };
  const holder = () =>
    [...broker.server.broker.sessions.values()].find((s) =>
      s.subscriptions.has(topic) && s.client?.state === "connected"
    );
  await eventually(
    () => holder() !== undefined || proc.exitCode !== null,
    10_000,
    `mosquitto_sub to subscribe to ${topic}`,
  );
  if (proc.exitCode !== null) throw new Error(`mosquitto_sub exited ${proc.exitCode} before subscribing`);
  return { level: holder()!.client!.version, finished };
}

async function publish(
  version: Version,
  topic: string,
  qos: number,
  message: string,
  ...extra: string[]
): Promise<void> {
  const proc = spawn([
    "mosquitto_pub",
    ...target(version, topic, qos),
    "-m",
    message,
    ...extra,
  ]);
  const code = await proc.exited;
  if (code !== 0) throw new Error(`mosquitto_pub exited ${code}: ${await new Response(proc.stderr).text()}`);
}

for (const version of ["mqttv311", "mqttv5", "mqttv31"] as const) {
  describe(`mosquitto clients, -V ${version}`, () => {
    for (const qos of [0, 1, 2]) {
      test.skipIf(!haveClients)(
        `mosquitto_sub receives what mosquitto_pub publishes at QoS ${qos}${skipReason}`,
        async () => {
          const topic = `mosq/${version}/q${qos}`;
          const sub = await subscribe(version, topic, qos, 1);
          // The broker sees the protocol level the option asks for (3 = MQTT 3.1, "MQIsdp").
          expect(sub.level).toBe(LEVEL[version]);
          await publish(version, topic, qos, `hello ${version} q${qos} with | and spaces`);
          const { code, messages } = await sub.finished;
          expect(code).toBe(0);
          expect(messages).toEqual([{
            topic,
            qos,
            retain: false,
            payload: `hello ${version} q${qos} with | and spaces`,
          }]);
        },
      );
    }

    test.skipIf(!haveClients)(
      `a retained message (-r) is delivered to a later mosquitto_sub with RETAIN set [MQTT-3.3.1-9]${skipReason}`,
      async () => {
        const topic = `mosq/${version}/retained`;
        await publish(version, topic, 1, "last known value", "-r");
        // It gets the retained message at once and exits: no waiting for it to be ready.
        const sub = await subscribe(version, topic, 1, 1, false);
        const { code, messages } = await sub.finished;
        expect(code).toBe(0);
        expect(messages).toEqual([{ topic, qos: 1, retain: true, payload: "last known value" }]);
        // Clear it: an empty retained message removes the topic's retained message [MQTT-3.3.1-6].
        await publish(version, topic, 1, "", "-r");
        expect(broker.server.broker.retained.size).toBe(0);
      },
    );
  });
}

describe("mosquitto clients across protocol versions", () => {
  test.skipIf(!haveClients)(
    `an MQTT 3.1 publisher reaches an MQTT 5 subscriber, and the reverse${skipReason}`,
    async () => {
      const v5sub = await subscribe("mqttv5", "mosq/mixed/to-v5", 2, 1);
      const v31sub = await subscribe("mqttv31", "mosq/mixed/to-v31", 2, 1);
      await publish("mqttv31", "mosq/mixed/to-v5", 2, "from 3.1");
      await publish("mqttv5", "mosq/mixed/to-v31", 1, "from 5");
      const a = await v5sub.finished;
      const b = await v31sub.finished;
      expect(a.messages).toEqual([{ topic: "mosq/mixed/to-v5", qos: 2, retain: false, payload: "from 3.1" }]);
      expect(b.messages).toEqual([{ topic: "mosq/mixed/to-v31", qos: 1, retain: false, payload: "from 5" }]);
    },
  );

  test.skipIf(!haveClients)(
    `mosquitto_sub on a wildcard receives many mosquitto_pub lines in order (-l)${skipReason}`,
    async () => {
      const sub = await subscribe("mqttv5", "mosq/lines/#", 1, 50);
      const lines = Array.from({ length: 50 }, (_, i) => `line ${i}`);
      const proc = Bun.spawn(
        [
          "mosquitto_pub",
          "-h",
          "127.0.0.1",
          "-p",
          String(broker.port),
          "-V",
          "mqttv311",
          "-t",
          "mosq/lines/a",
          "-q",
          "1",
          "-l",
        ],
        { stdin: new Blob([`${lines.join("\n")}\n`]), stdout: "pipe", stderr: "pipe" },
      );
      children.add(proc);
      expect(await proc.exited).toBe(0);
      const { code, messages } = await sub.finished;
      expect(code).toBe(0);
      expect(messages.map((m) => m.payload)).toEqual(lines);
    },
  );
});
