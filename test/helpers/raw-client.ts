/**
 * A bare TCP MQTT peer for tests that must send exactly the bytes they mean: protocol
 * violations, malformed packets, and flows the `mqtt` client hides.
 */
import type mqttPacket from "mqtt-packet";
import net from "node:net";
import { PacketPeer } from "./packet-peer.ts";

export class RawClient extends PacketPeer {
  #socket: net.Socket;

  private constructor(socket: net.Socket, version: 3 | 4 | 5) {
    super(version);
    this.#socket = socket;
    socket.on("data", (d: Buffer) => this.onBytes(d));
    socket.on("close", () => this.onClosed());
    socket.on("error", () => {});
  }

  static open(port: number, version: 3 | 4 | 5 = 4): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, "127.0.0.1", () => resolve(new RawClient(s, version)));
      s.once("error", reject);
    });
  }

  /** Open and complete a CONNECT/CONNACK exchange. */
  static async connected(
    port: number,
    version: 4 | 5,
    connect: Partial<mqttPacket.IConnectPacket> = {},
  ): Promise<RawClient> {
    const { raw, ack } = await rawConnect(port, version, connect);
    if ((ack.reasonCode ?? ack.returnCode ?? 0) !== 0) throw new Error(`connack ${ack.reasonCode ?? ack.returnCode}`);
    return raw;
  }

  protected write(bytes: Uint8Array): void {
    this.#socket.write(bytes);
  }

  /** Stop reading from the socket (bytes stay in the kernel), as a client busy sending does. */
  pause(): void {
    this.#socket.pause();
  }

  resume(): void {
    this.#socket.resume();
  }

  close(): void {
    this.#socket.destroy();
  }
}

/** A CONNECT packet of protocol `version` with defaults for what `connect` leaves out. */
export function connectPacket(version: 4 | 5, connect: Partial<mqttPacket.IConnectPacket> = {}): mqttPacket.Packet {
  return {
    cmd: "connect",
    protocolId: "MQTT",
    protocolVersion: version,
    clientId: "",
    clean: true,
    keepalive: 60,
    ...connect,
  };
}

/**
 * Open a connection, send CONNECT (protocol `version`, fields from `connect`), and return
 * the CONNACK whatever its code; `code` is its v5 reason code or 3.1.1 return code.
 */
export async function rawConnect(
  port: number,
  version: 4 | 5,
  connect: Partial<mqttPacket.IConnectPacket> = {},
): Promise<{ raw: RawClient; ack: mqttPacket.IConnackPacket; code: number | undefined }> {
  const raw = await RawClient.open(port, version);
  raw.send(connectPacket(version, connect), version);
  const ack = await raw.next("connack");
  return { raw, ack, code: ack.reasonCode ?? ack.returnCode };
}
