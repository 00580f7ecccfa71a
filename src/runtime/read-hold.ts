/**
 * `CloudSocket.holdReads` for an adapter connection that can pause reading (Bun's and
 * Deno's alike): stop reading, and read again after `ms`, so that what the peer sends
 * meanwhile waits in the kernel and comes in one read. A hold asked for while one is on
 * is a no-op. Resuming a closed connection does nothing, so a hold that outlives its
 * connection is harmless.
 */
export function readHold(conn: { pause(): void; resume(): void }): (ms: number) => void {
  let held = false;
  const release = () => {
    held = false;
    conn.resume();
  };
  return (ms) => {
    if (held) return;
    held = true;
    conn.pause();
    setTimeout(release, ms);
  };
}
