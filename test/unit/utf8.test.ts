/**
 * The byte-level MQTT string check (src/mqtt/utf8.ts) against the platform's strict UTF-8
 * decoder as the oracle: acceptable exactly when the bytes are well-formed UTF-8 (no
 * overlong forms, no surrogates, nothing above U+10FFFF) and hold no U+0000. Seeded.
 */
import { expect, test } from "bun:test";
import { utf8Problem } from "../../src/mqtt/utf8.ts";
import { prng } from "../helpers/fuzz-packets.ts";

const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
function oracle(bytes: Uint8Array): boolean {
  try {
    return !strict.decode(bytes).includes("\u0000");
  } catch {
    return false;
  }
}

test("utf8Problem accepts exactly the well-formed UTF-8 strings without U+0000 [MQTT-1.5.4-1] [MQTT-1.5.4-2]", () => {
  const r = prng(0x7f8_1234);
  // Bytes biased towards lead and continuation bytes and the edges of their ranges.
  const interesting = [
    0x00,
    0x41,
    0x7f,
    0x80,
    0x8f,
    0x90,
    0x9f,
    0xa0,
    0xbf,
    0xc0,
    0xc1,
    0xc2,
    0xdf,
    0xe0,
    0xed,
    0xef,
    0xf0,
    0xf4,
    0xf5,
    0xff,
  ];
  for (let i = 0; i < 50_000; i++) {
    const n = r.int(8);
    const bytes = new Uint8Array(n);
    for (let k = 0; k < n; k++) bytes[k] = r.chance(0.7) ? r.pick(interesting) : r.int(256);
    expect(utf8Problem(bytes, 0, n) === undefined).toBe(oracle(bytes));
  }
});

test("utf8Problem: named cases, and only the given range is read", () => {
  const ok = (s: number[]) => utf8Problem(Uint8Array.from(s), 0, s.length);
  expect(ok([0xef, 0xbb, 0xbf, 0x61])).toBeUndefined(); // U+FEFF is a character [MQTT-1.5.4-3]
  expect(ok([0xef, 0xbf, 0xbf])).toBeUndefined(); // U+FFFF: a SHOULD NOT, accepted
  expect(ok([0xef, 0xbf, 0xbd])).toBeUndefined(); // a genuine U+FFFD
  expect(ok([0x01, 0x7f, 0xc2, 0x80])).toBeUndefined(); // control characters: accepted
  expect(ok([0xf0, 0x9f, 0x98, 0x80])).toBeUndefined(); // U+1F600
  expect(ok([0x61, 0x00])).toContain("U+0000");
  expect(ok([0xed, 0xa0, 0x80])).toContain("surrogate");
  expect(ok([0xed, 0xbf, 0xbf])).toContain("surrogate");
  expect(ok([0xc0, 0x80])).toContain("ill-formed"); // overlong U+0000
  expect(ok([0xf4, 0x90, 0x80, 0x80])).toContain("ill-formed"); // above U+10FFFF
  expect(ok([0xe2, 0x82])).toContain("ill-formed"); // cut short
  // A sequence cut by the end of the range is ill-formed even if the buffer goes on.
  expect(utf8Problem(Uint8Array.from([0x61, 0xe2, 0x82, 0xac]), 0, 3)).toContain("ill-formed");
  expect(utf8Problem(Uint8Array.from([0x00, 0x61, 0x00]), 1, 2)).toBeUndefined();
});
