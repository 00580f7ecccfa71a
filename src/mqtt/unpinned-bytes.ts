/**
 * `bytes` itself when it makes up at least half of the memory it is a view of, else a
 * copy: a payload of a few bytes queued for a slow or offline subscriber must not keep a
 * whole socket read (64 KiB and more) alive. A Buffer either way, as mqtt-packet's are.
 */
export function unpinnedBytes(bytes: Buffer, backing: number): Buffer {
  if (bytes.byteLength * 2 >= backing) return bytes;
  const copy = Buffer.allocUnsafeSlow(bytes.byteLength);
  copy.set(bytes);
  return copy;
}
