/** Payload bytes in JSON: UTF-8 text when they are valid UTF-8, base64 otherwise. */

const utf8 = new TextDecoder("utf-8", { fatal: true });

export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Decodes standard base64; undefined when `text` is not base64. */
export function fromBase64(text: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) return undefined;
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export interface PayloadView {
  payload: string;
  encoding: "utf8" | "base64";
  payload_bytes: number;
}

export function payloadView(bytes: Uint8Array): PayloadView {
  try {
    return { payload: utf8.decode(bytes), encoding: "utf8", payload_bytes: bytes.byteLength };
  } catch {
    return { payload: toBase64(bytes), encoding: "base64", payload_bytes: bytes.byteLength };
  }
}
