/**
 * The byte-level check of an MQTT UTF-8 Encoded String (spec 1.5.4). mqtt-packet decodes
 * strings with Buffer#toString, which turns ill-formed bytes into U+FFFD and so hides
 * them; the bytes themselves are the only place where ill-formed UTF-8 can be told from a
 * genuine U+FFFD.
 */

/**
 * Why the bytes `buf[start..end)` are not an acceptable MQTT string, or undefined:
 * ill-formed UTF-8, overlong forms and code points above U+10FFFF included [MQTT-1.5.4-1],
 * an encoded surrogate U+D800..U+DFFF [MQTT-1.5.4-1], or U+0000 [MQTT-1.5.4-2].
 * U+FEFF is an ordinary character here, never stripped [MQTT-1.5.4-3]. Control characters
 * and non-characters such as U+FFFF are a SHOULD NOT (spec 1.5.4) and are accepted.
 */
export function utf8Problem(buf: Uint8Array, start: number, end: number): string | undefined {
  let i = start;
  while (i < end) {
    const b = buf[i]!;
    if (b < 0x80) {
      if (b === 0) return "U+0000 in a string";
      i++;
      continue;
    }
    // The second byte's range depends on the first (RFC 3629 section 4), which rules out
    // overlong forms, surrogates and code points beyond U+10FFFF in one comparison.
    let need: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0;
      else if (b === 0xed) hi = 0x9f; // 0xED 0xA0..0xBF would be a surrogate
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90;
      else if (b === 0xf4) hi = 0x8f;
    } else return "ill-formed UTF-8 in a string";
    if (i + need >= end) return "ill-formed UTF-8 in a string"; // truncated sequence
    const second = buf[i + 1]!;
    if (second < lo || second > hi) {
      return b === 0xed && second >= 0xa0 && second <= 0xbf
        ? "a surrogate in a string"
        : "ill-formed UTF-8 in a string";
    }
    for (let k = 2; k <= need; k++) {
      const c = buf[i + k]!;
      if (c < 0x80 || c > 0xbf) return "ill-formed UTF-8 in a string";
    }
    i += need + 1;
  }
  return undefined;
}
