/**
 * The first `n` bytes of a CONNECT that claims to be `total` bytes long (its fixed header,
 * with a 3-byte Remaining Length, and the start of its variable header): all a reader sees
 * before the packet is complete. Shared by the Bun and the Deno tests of the pre-auth budget;
 * imports nothing, so both runtimes load it.
 */
export function partialConnect(total: number, n: number): Uint8Array {
  const head = [0x10];
  let rem = total - 4;
  for (let i = 0; i < 3; i++) {
    head.push((rem & 0x7f) | (i < 2 ? 0x80 : 0));
    rem >>= 7;
  }
  const out = new Uint8Array(n);
  out.set([...head, 0, 4, 77, 81, 84, 84, 4, 2, 0, 0]);
  return out;
}
