/** Helpers around the `mqtt` npm client: connect, collect messages, wait for events. */
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";

export interface Received {
  topic: string;
  payload: string;
  packet: mqtt.IPublishPacket;
}

export interface TestClient {
  client: MqttClient;
  messages: Received[];
  /** Resolves once `n` messages have arrived in total (or rejects after `ms`). */
  waitFor(n: number, ms?: number): Promise<Received[]>;
  end(force?: boolean): Promise<void>;
}

export function connect(url: string, opts: IClientOptions = {}): Promise<TestClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts });
    const messages: Received[] = [];
    const waiters: Array<() => void> = [];
    client.on("message", (topic, payload, packet) => {
      messages.push({ topic, payload: payload.toString(), packet });
      for (const w of waiters.splice(0)) w();
    });
    const fail = (err: Error) => {
      client.end(true);
      reject(err);
    };
    client.once("error", fail);
    client.once("connect", () => {
      client.off("error", fail);
      client.on("error", () => {}); // later errors are asserted by tests that care
      resolve({
        client,
        messages,
        waitFor: (n, ms = 5000) => waitUntil(() => messages.length >= n, ms, waiters).then(() => messages),
        end: (force = false) => new Promise((r) => client.end(force, {}, () => r())),
      });
    });
  });
}

function waitUntil(cond: () => boolean, ms: number, waiters: Array<() => void>): Promise<void> {
  return new Promise((resolve, reject) => {
    if (cond()) return resolve();
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    const check = () => {
      if (cond()) {
        clearTimeout(timer);
        resolve();
      } else waiters.push(check);
    };
    waiters.push(check);
  });
}

/** One PINGREQ → PINGRESP round trip on `client`'s connection. */
export function pingPong(client: MqttClient, ms = 5000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off("packetreceive", onPacket);
      reject(new Error(`no PINGRESP within ${ms} ms`));
    }, ms);
    const onPacket = (packet: mqtt.Packet) => {
      if (packet.cmd !== "pingresp") return;
      clearTimeout(timer);
      client.off("packetreceive", onPacket);
      resolve();
    };
    client.on("packetreceive", onPacket);
    client.sendPing();
  });
}

/**
 * Resolve once every client has handled what the broker sent it in answer to what was
 * sent before: how a test shows that nothing (else) arrives, without sleeping. List the
 * senders first, then the receivers. The broker reads each connection's packets in order
 * and writes to each in order, and routes a message as it reads it (in memory storage),
 * so a sender's PINGRESP comes after its earlier publishes were routed, and a receiver's
 * after every message routed to it before. Each client makes two round trips: mqtt.js
 * reports a QoS 2 message only at its PUBREL, which the broker sends after the PUBREC
 * the client wrote while handling the PUBLISH.
 */
export async function barrier(...clients: Array<TestClient | MqttClient>): Promise<void> {
  for (const c of clients) {
    const client = "waitFor" in c ? c.client : c;
    await pingPong(client);
    await pingPong(client);
  }
}

/**
 * Poll `cond` until true (for state not signalled by an event: another process's output
 * or HTTP answers, counters); the one polling helper of the suite. `what` names it in the
 * timeout error (a function: the error describes the state at the timeout); `everyMs` is
 * the pause between checks, for a condition that costs something to check.
 */
export async function eventually(
  cond: () => boolean | Promise<boolean>,
  ms = 5000,
  what: string | (() => string) = "condition",
  everyMs = 10,
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(typeof what === "string" ? `timed out waiting for ${what}` : what());
    await Bun.sleep(everyMs);
  }
}

export const sleep = (ms: number) => Bun.sleep(ms);
