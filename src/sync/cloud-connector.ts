/**
 * Which client connects an uplink: Ferry's own (cloud-socket-client.ts) for mqtt:// and
 * mqtts:// when the runtime provides a socket port, MQTT.js (cloud-client.ts, loaded on
 * first use) for ws:// and wss://, and for everything when there is no port.
 */
import type { CloudClient, CloudConnectOptions, CloudHandlers } from "./cloud-client.ts";
import { connectCloud } from "./cloud-client.ts";
import { connectOverSocket } from "./cloud-socket-client.ts";
import type { ConnectSocket } from "./socket-port.ts";

export type ConnectCloud = (o: CloudConnectOptions, h: CloudHandlers) => Promise<CloudClient>;

export function cloudConnector(connectSocket: ConnectSocket | undefined): ConnectCloud {
  if (connectSocket === undefined) return connectCloud;
  return (o, h) => connectOverSocket(o, h, { connectSocket }) ?? connectCloud(o, h);
}
