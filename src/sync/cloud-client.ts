/**
 * The connection to the cloud broker, over MQTT.js: it speaks MQTT 3.1.1 and 5.0 over
 * TCP, TLS and WebSocket, which is exactly the uplink's job, so Ferry does not carry a
 * second client implementation. Each connection attempt is a fresh MQTT.js client with
 * its own reconnect turned off: the link decides when to reconnect and re-sends from
 * its durable cursor, so MQTT.js's in-memory stores never hold anything that matters.
 */
import type { IClientOptions, IClientPublishOptions, MqttClient } from "mqtt";
import { nonRetainingStore, writeWholePackets } from "./mqtt-js-writes.ts";
import { describeError } from "./tls-error-hints.ts";

type Mqtt = typeof import("mqtt").default;
let mqttLoaded: Promise<Mqtt> | undefined;

/**
 * MQTT.js, imported on the first connection attempt rather than at start: many edge
 * brokers have no uplink, and loading MQTT.js and the Node stream modules it pulls in
 * costs resident memory that such a broker never uses (scripts/measure-idle.ts).
 */
function loadMqtt(): Promise<Mqtt> {
  return mqttLoaded ??= import("mqtt").then((m) => m.default);
}

export interface CloudConnectOptions {
  url: string;
  clientId: string;
  username?: string | undefined;
  password?: Uint8Array | undefined;
  protocolVersion: 4 | 5;
  keepalive: number;
  cleanStart: boolean;
  sessionExpiry: number;
  ca?: Uint8Array | undefined;
  cert?: Uint8Array | undefined;
  key?: Uint8Array | undefined;
  rejectUnauthorized: boolean;
  connectTimeoutMs: number;
  /**
   * The largest packet Ferry takes from the cloud (`mqtt.max_packet_size`): announced as
   * Maximum Packet Size in a v5 CONNECT [MQTT-3.1.2-24], enforced on read by Ferry's own
   * client, so a cloud cannot make a small gateway buffer a 256 MB packet. Absent: the spec's largest.
   */
  maxPacketSize?: number | undefined;
}

export interface CloudPublish {
  topic: string;
  payload: Uint8Array;
  qos: 0 | 1 | 2;
  retain: boolean;
  dup: boolean;
  properties?: IClientPublishOptions["properties"];
}

/** A message from the cloud; `ack` settles it (QoS>0) once Ferry has it durably. */
export interface CloudIncoming {
  topic: string;
  payload: Uint8Array;
  qos: 0 | 1 | 2;
  retain: boolean;
  properties: Record<string, unknown> | undefined;
  ack(reasonCode: number): void;
}

export interface CloudClient {
  /**
   * The cloud's Receive Maximum from CONNACK (MQTT 5): the QoS 1/2 PUBLISHes it takes
   * unacknowledged at once [MQTT-3.3.4-9]; 65,535 when it sent none (or for 3.1.1).
   */
  readonly receiveMaximum: number;
  /** `done` gets undefined on acknowledgement (or on write, for QoS 0), else the error. */
  publish(p: CloudPublish, done: (err?: Error) => void): void;
  /**
   * The same, for a PUBLISH the link encoded itself (stamped-publish.ts) with Packet
   * Identifier 0, which the client writes into `bytes` (they are the client's from then on).
   * Only clients on Ferry's codec have it.
   */
  publishEncoded?(bytes: Uint8Array, qos: 0 | 1 | 2, done: (err?: Error) => void): void;
  /**
   * Read nothing from the cloud for about `ms`, then take what came meanwhile at once (the
   * link asks while draining with a full window: see ACK_HOLD_MS in uplink-link.ts). Only
   * Ferry's own client has it.
   */
  holdReads?(ms: number): void;
  subscribe(subs: Array<{ filter: string; qos: 0 | 1 | 2 }>): Promise<number[]>;
  /** Close now, dropping anything unacknowledged (the cursor still has it). */
  close(): void;
}

/** How a connection ended, when the cloud said (DISCONNECT with a reason code, MQTT 5). */
export interface CloseDetail {
  reasonCode?: number;
  /** Server Reference: where the cloud wants the client to go (0x9C Use another server, 0x9D Server moved). */
  serverReference?: string;
}

export interface CloudHandlers {
  onMessage(m: CloudIncoming): void;
  onClose(reason: string, detail?: CloseDetail): void;
}

/** Connect once; rejects with the reason if the cloud refuses or cannot be reached. */
export async function connectCloud(o: CloudConnectOptions, h: CloudHandlers): Promise<CloudClient> {
  const mqtt = await loadMqtt();
  return await new Promise((resolve, reject) => {
    const options: IClientOptions = {
      clientId: o.clientId,
      protocolVersion: o.protocolVersion,
      keepalive: o.keepalive,
      clean: o.cleanStart,
      reconnectPeriod: 0,
      connectTimeout: o.connectTimeoutMs,
      rejectUnauthorized: o.rejectUnauthorized,
      resubscribe: false,
      queueQoSZero: false,
      // MQTT.js traces every packet through `debug`; even disabled, that costs per message.
      log: () => {},
      // By default it moves its keep-alive timer on every packet it sends (a clearInterval and
      // a setInterval per forwarded message). A PINGREQ on a busy link costs two bytes.
      reschedulePings: false,
      // Its copy of each PUBLISH for re-sending after a reconnect is never used (mqtt-js-writes.ts).
      outgoingStore: nonRetainingStore(new mqtt.Store()),
      customHandleAcks: (
        topic,
        message,
        packet: { qos: 0 | 1 | 2; retain: boolean; properties?: Record<string, unknown> },
        cb,
      ) => {
        h.onMessage({
          topic,
          payload: message,
          qos: packet.qos,
          retain: packet.retain,
          properties: packet.properties,
          ack: (code) => cb(0 as unknown as Error, code), // MQTT.js takes a reason code in the error slot
        });
      },
    };
    if (o.protocolVersion === 5) {
      options.properties = { sessionExpiryInterval: o.sessionExpiry };
      if (o.maxPacketSize !== undefined) options.properties.maximumPacketSize = o.maxPacketSize;
    }
    if (o.username !== undefined) options.username = o.username;
    if (o.password !== undefined) options.password = Buffer.from(o.password);
    if (o.ca) options.ca = Buffer.from(o.ca);
    if (o.cert) options.cert = Buffer.from(o.cert);
    if (o.key) options.key = Buffer.from(o.key);

    let client: MqttClient;
    try {
      client = mqtt.connect(o.url, options);
      writeWholePackets(client, o.protocolVersion);
    } catch (err) {
      reject(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    let connected = false;
    let closed = false;
    const closeOnce = (reason: string, detail?: CloseDetail) => {
      if (closed) return;
      closed = true;
      client.end(true);
      if (connected) h.onClose(reason, detail);
      else reject(Object.assign(new Error(reason), detail ?? {}));
    };
    client.on("message", (topic, payload, packet) => {
      // QoS 1/2 arrive through customHandleAcks; only QoS 0 is handled here.
      if (packet.qos !== 0) return;
      h.onMessage({
        topic,
        payload,
        qos: 0,
        retain: packet.retain,
        properties: packet.properties as Record<string, unknown> | undefined,
        ack: () => {},
      });
    });
    // A CONNACK refusal with 0x9C/0x9D may name another server; MQTT.js's error does not carry it.
    let refused: CloseDetail | undefined;
    client.on("packetreceive", (packet) => {
      if (packet.cmd !== "connack" || connected) return;
      const code = packet.reasonCode ?? 0;
      if (code < 0x80) return;
      refused = { reasonCode: code };
      const ref = packet.properties?.serverReference;
      if (typeof ref === "string" && ref !== "") refused.serverReference = ref;
    });
    client.on("error", (err) => closeOnce(describeError(err), refused));
    client.on("close", () => closeOnce("connection closed"));
    client.on("disconnect", (packet) => {
      const detail: CloseDetail = { reasonCode: packet.reasonCode ?? 0 };
      const ref = packet.properties?.serverReference;
      if (typeof ref === "string" && ref !== "") detail.serverReference = ref;
      closeOnce(`cloud sent DISCONNECT 0x${(packet.reasonCode ?? 0).toString(16)}`, detail);
    });
    client.once("connect", (connack) => {
      connected = true;
      const rm = connack.properties?.receiveMaximum;
      resolve({
        receiveMaximum: typeof rm === "number" && rm >= 1 ? rm : 65_535,
        publish(p, done) {
          const opts: IClientPublishOptions = { qos: p.qos, retain: p.retain, dup: p.dup };
          if (p.properties) opts.properties = p.properties;
          client.publish(
            p.topic,
            Buffer.from(p.payload.buffer, p.payload.byteOffset, p.payload.byteLength),
            opts,
            (err) => done(err ?? undefined),
          );
        },
        subscribe(subs) {
          const map: Record<string, { qos: 0 | 1 | 2; nl?: boolean }> = {};
          // No Local stops the cloud echoing Ferry's own forwarded messages back down.
          for (const s of subs) map[s.filter] = o.protocolVersion === 5 ? { qos: s.qos, nl: true } : { qos: s.qos };
          return client.subscribeAsync(map).then((granted) => granted.map((g) => g.qos));
        },
        close() {
          closed = true;
          client.end(true);
        },
      });
    });
  });
}
