/**
 * mqtt-packet's parser builds every packet it emits as an instance of this class
 * (node_modules/mqtt-packet/packet.js, not covered by the package's own typings).
 * The hand-written decoder in fast-path.ts builds its packets from the same class so
 * that they are indistinguishable from mqtt-packet's: same prototype, same fields in
 * the same order, and so the same object shape for the engine's inline caches.
 * fast-path.ts types the fields it sets itself (Deno's checker does not see this file).
 */
declare module "mqtt-packet/packet.js" {
  const MqttPacketObject: new () => object;
  export default MqttPacketObject;
}
