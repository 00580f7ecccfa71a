/**
 * What Ferry holds in memory on behalf of its connections, as byte counts a memory budget
 * (issue 13 part 4) can sum cheaply, and the pre-authentication budget enforced on them:
 *
 * - output: bytes written to a client and not yet taken by the OS (the adapter's buffer)
 *   plus output held back until a commit settles. Each connection reports its own
 *   (`ClientConnection.outputBytes()`); over `limits.max_output_bytes` the connection is
 *   paused (see ClientConnection). Summed on demand over the connections.
 * - partial: the bytes of packets not complete yet (PacketReader), per connection.
 * - pre-auth: partial packets of connections that have no CONNACK yet, and the packets
 *   held behind their CONNECT; kept as running totals, per address and overall, because
 *   they are checked on every read of such a connection.
 */

/**
 * Room a new connection needs in the pre-auth budget (of its address, and in all) to be
 * read at all: a CONNECT with credentials and a Will fits in less. With less left, the
 * budget is held by connections that sent large partial packets, and a new connection
 * would only be read (a socket read is up to 512 KiB in Bun) and then closed over the
 * budget: its bytes are garbage the moment they are read.
 */
export const PREAUTH_ROOM = 4096;

/** A connection as these counts see it (ClientConnection). */
export interface ByteHolder {
  /** Output waiting to be written to it. */
  outputBytes(): number;
  /** Bytes held for its incomplete packet. */
  partialBytes(): number;
}

export interface PreAuthLimits {
  /** Bytes all connections without a CONNACK may hold together; 0 = no limit. */
  readonly maxPreAuthBytes: number;
  /** The same for the connections from one IP address; 0 = no limit. */
  readonly maxPreAuthBytesPerIp: number;
}

export class ConnectionBytes {
  /** Bytes held for connections without a CONNACK, all addresses together. */
  preAuthBytes = 0;
  /** Connections whose reading is paused because their output is over its bound. */
  pausedConnections = 0;
  #preAuthByIp = new Map<string, number>();

  constructor(private readonly limits: PreAuthLimits, private readonly holders: Iterable<ByteHolder>) {}

  /**
   * Change what `ip` holds before CONNACK by `delta` bytes. False when the address or the
   * total is over its budget afterwards: the caller then closes the connection, which
   * gives the bytes back with a negative `delta`.
   */
  addPreAuth(ip: string, delta: number): boolean {
    if (delta === 0) return true;
    this.preAuthBytes += delta;
    const mine = (this.#preAuthByIp.get(ip) ?? 0) + delta;
    if (mine <= 0) this.#preAuthByIp.delete(ip);
    else this.#preAuthByIp.set(ip, mine);
    if (delta < 0) return true;
    const { maxPreAuthBytes, maxPreAuthBytesPerIp } = this.limits;
    return (maxPreAuthBytes === 0 || this.preAuthBytes <= maxPreAuthBytes) &&
      (maxPreAuthBytesPerIp === 0 || mine <= maxPreAuthBytesPerIp);
  }

  /** Whether a new connection from `ip` finds PREAUTH_ROOM left in both budgets. */
  hasPreAuthRoom(ip: string): boolean {
    const { maxPreAuthBytes, maxPreAuthBytesPerIp } = this.limits;
    return (maxPreAuthBytes === 0 || maxPreAuthBytes - this.preAuthBytes >= PREAUTH_ROOM) &&
      (maxPreAuthBytesPerIp === 0 || maxPreAuthBytesPerIp - this.preAuthBytesOf(ip) >= PREAUTH_ROOM);
  }

  /** Pre-auth bytes of one address. */
  preAuthBytesOf(ip: string): number {
    return this.#preAuthByIp.get(ip) ?? 0;
  }

  /** Output waiting for every connection; walks the connections. */
  outputBytes(): number {
    let n = 0;
    for (const h of this.holders) n += h.outputBytes();
    return n;
  }

  /** Bytes of incomplete packets over every connection; walks the connections. */
  partialBytes(): number {
    let n = 0;
    for (const h of this.holders) n += h.partialBytes();
    return n;
  }
}
