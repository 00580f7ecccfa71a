/**
 * A listener that cannot bind, explained: which listener, which address and port, why in
 * words, and the option that changes it. Bun says "Failed to listen at 127.0.0.1" for a
 * busy MQTT port and "Is port 8080 in use?" for a busy HTTP one; neither names the option.
 */

export interface ListenerSpec {
  /** "MQTT over TCP", "the admin API and dashboard", … */
  what: string;
  host: string;
  port: number;
  /** How to choose another port: "listeners.mqtt_port or --mqtt-port". */
  portOption: string;
  /** How to choose another address: "listeners.host or --host". */
  hostOption: string;
}

export class ListenError extends Error {
  override name = "ListenError";
}

/** Run `bind`; a failure becomes a ListenError naming the listener, address, port and option. */
export async function listenOrExplain<T>(spec: ListenerSpec, bind: () => T | Promise<T>): Promise<T> {
  try {
    return await bind();
  } catch (err) {
    throw new ListenError(explain(spec, err), { cause: err });
  }
}

export function explain(spec: ListenerSpec, err: unknown): string {
  const e = err as { code?: string; name?: string; message?: string };
  const code = e.code ?? "";
  const name = e.name ?? "";
  const address = spec.host.includes(":") ? `[${spec.host}]:${spec.port}` : `${spec.host}:${spec.port}`;
  const head = `cannot listen for ${spec.what} on ${address}`;
  if (code === "EADDRINUSE" || name === "AddrInUse") {
    return `${head}: address already in use (is another broker or Ferry already running? \`ss -ltnp 'sport = :${spec.port}'\` shows who); choose another port with ${spec.portOption}`;
  }
  if (code === "EADDRNOTAVAIL" || name === "AddrNotAvailable") {
    return `${head}: no network interface has this address; set ${spec.hostOption} to one of this machine's addresses, or 0.0.0.0 for all`;
  }
  if (code === "EACCES" || code === "EPERM" || name === "PermissionDenied") {
    return `${head}: permission denied (ports below 1024 need CAP_NET_BIND_SERVICE); choose a port above 1023 with ${spec.portOption}`;
  }
  return `${head}: ${e.message ?? String(err)}`;
}
