/**
 * mqtt-packet's parser builds every packet it emits as an instance of this class
 * (node_modules/mqtt-packet/packet.js, not covered by the package's own typings).
 * The hand-written decoder in fast-path.ts builds its packets from the same class so
 * that they are indistinguishable from mqtt-packet's: same prototype, same fields in
 * the same order, and so the same object shape for the engine's inline caches.
 */
declare module "mqtt-packet/packet.js" {
  export default class MqttPacketObject {
    cmd: string | null;
    retain: boolean;
    qos: number;
    dup: boolean;
    length: number;
    topic: string | null;
    payload: Buffer | null;
    messageId?: number;
    reasonCode?: number;
  }
}
