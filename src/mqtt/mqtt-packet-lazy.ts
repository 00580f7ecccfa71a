/**
 * mqtt-packet's parser and generator, loaded when first needed instead of at start. Its
 * generator builds a table of 65,536 two-byte Buffers when it loads (3.3 MB of heap), and
 * its parser brings a stream library along; an idle broker needs neither, a broker whose
 * clients speak MQTT 3.1.1 never needs the generator (fast-path.ts encodes everything
 * Ferry sends them), and the parser is needed only for the packets the fast path leaves
 * to it (CONNECT, SUBSCRIBE, v5 properties).
 */
import { createRequire } from "node:module";
import type { Packet } from "mqtt-packet";

/**
 * Bun has `require` in ES modules, and its bundler turns `require("…")` into a module that
 * runs when the call is first made; Deno has none in ES modules and gets the same module
 * from createRequire. Declared here (module scope) so that both type checkers accept it.
 */
declare const require: ((id: string) => unknown) | undefined;

/** mqtt-packet's parser as PacketReader uses it (src/mqtt/codec.ts types the rest). */
export interface MqttPacketParser {
  on(event: "packet", fn: (p: Packet) => void): void;
  on(event: "error", fn: (e: Error) => void): void;
}

type ParserFactory = (options: { protocolVersion: number }) => MqttPacketParser;
type Generate = (packet: Packet, options: { protocolVersion: number }) => Buffer;

let parserFactory: ParserFactory | undefined;
let generateFn: Generate | undefined;

/** A new mqtt-packet parser (mqtt-packet's `parser(options)`). */
export function newMqttPacketParser(options: { protocolVersion: number }): MqttPacketParser {
  parserFactory ??= typeof require === "function"
    ? (require("mqtt-packet/parser.js") as { parser: ParserFactory }).parser
    : (createRequire(import.meta.url)("mqtt-packet/parser.js") as { parser: ParserFactory }).parser;
  return parserFactory(options);
}

/** mqtt-packet's `generate(packet, options)`. */
export function mqttPacketGenerate(packet: Packet, options: { protocolVersion: number }): Buffer {
  generateFn ??= typeof require === "function"
    ? require("mqtt-packet/generate.js") as Generate
    : createRequire(import.meta.url)("mqtt-packet/generate.js") as Generate;
  return generateFn(packet, options);
}
