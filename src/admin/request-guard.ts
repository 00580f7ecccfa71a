/**
 * Refuse requests a browser can be tricked into sending: the admin API's default listener
 * (127.0.0.1:8080, no token) is reachable from any web page open on the gateway, or on a
 * laptop with `ssh -L` to it.
 *
 * - **DNS rebinding**: a page on `evil.example` whose name is made to resolve to 127.0.0.1
 *   talks to the API as its own origin. Its requests carry `Host: evil.example`, so the
 *   `Host` name must be one of the listener's own: an IP literal (a rebinding attack
 *   always uses a DNS name), `localhost`, the machine's own names when the API listens on
 *   the network, and `admin.allowed_hosts`. The port is not compared: `ssh -L 9000:…:8080`
 *   and reverse proxies change it, and a rebinding attack is caught by the name alone.
 * - **Cross-site requests**: a page on another origin may send a `POST` it cannot read
 *   the answer of (a form, or `fetch` with `mode: "no-cors"`) with a `text/plain` body.
 *   A browser names the page in `Origin`, which must be this API's own origin (its host
 *   and port equal to `Host`) or a name in `admin.allowed_hosts` (a reverse proxy in
 *   front); and a request that changes something must send `Content-Type:
 *   application/json` when it sends a content type or a body at all — a type no form or
 *   no-cors request can send.
 */
import type { MiddlewareHandler } from "hono";

export interface RequestGuardOptions {
  /** Extra host names the API answers to (`admin.allowed_hosts`); "*" turns the host check off. */
  allowedHosts: readonly string[];
  /** The machine's own names (hostname, hostname.local), accepted when the API listens off loopback. */
  ownNames: readonly string[];
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/** `host` without port and brackets, lower case; undefined when it cannot be a host. */
export function hostName(host: string): string | undefined {
  const h = host.trim().toLowerCase();
  if (h === "") return undefined;
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    return end > 1 ? h.slice(1, end) : undefined;
  }
  const colons = h.split(":").length - 1;
  if (colons > 1) return h; // a bare IPv6 address
  return colons === 1 ? h.slice(0, h.indexOf(":")) : h;
}

function isIpLiteral(name: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(name) || (name.includes(":") && /^[0-9a-f:.]+$/.test(name));
}

/** Whether a request naming `name` (from Host or Origin) is addressed to this API. */
export function hostAllowed(name: string, options: RequestGuardOptions): boolean {
  if (options.allowedHosts.includes("*")) return true;
  const n = name.toLowerCase().replace(/\.$/, ""); // "localhost." is localhost too
  if (n === "localhost" || isIpLiteral(n)) return true;
  return options.ownNames.includes(n) || options.allowedHosts.some((h) => h.toLowerCase() === n);
}

/** Same origin as the request (`Host`), or a name the operator listed. "null" and non-HTTP origins never pass. */
function originAllowed(origin: string, host: string, options: RequestGuardOptions): boolean {
  let u: URL;
  try {
    u = new URL(origin);
  } catch {
    return false; // "null": sandboxed frames, file:// pages
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") return false;
  try {
    if (u.host === new URL(`http://${host}`).host) return true; // both normalised the same way
  } catch {
    // a Host that is no URL authority; only allowed_hosts can vouch for the origin
  }
  const name = hostName(u.host);
  return name !== undefined && options.allowedHosts.some((h) => h !== "*" && h.toLowerCase() === name);
}

function refuse(status: 403 | 415, code: string, message: string): Response {
  return new Response(JSON.stringify({ error: { code, message } }), {
    status,
    headers: { "Content-Type": "application/json", "Cache-Control": "no-store" },
  });
}

export function requestGuard(options: RequestGuardOptions): MiddlewareHandler {
  return async (c, next) => {
    const host = hostName(c.req.header("Host") ?? new URL(c.req.url).host);
    if (host === undefined || !hostAllowed(host, options)) {
      return refuse(
        403,
        "host_not_allowed",
        `Host ${
          JSON.stringify(host ?? "")
        } is not a name of this admin API (a DNS rebinding attack looks like this); add it to admin.allowed_hosts if it is yours`,
      );
    }
    const origin = c.req.header("Origin");
    if (origin !== undefined && !originAllowed(origin, c.req.header("Host") ?? new URL(c.req.url).host, options)) {
      return refuse(
        403,
        "origin_not_allowed",
        `requests from pages on ${
          JSON.stringify(origin)
        } are refused (cross-site request); a reverse proxy's name goes in admin.allowed_hosts`,
      );
    }
    if (!SAFE_METHODS.has(c.req.method)) {
      const type = c.req.header("Content-Type");
      const length = c.req.header("Content-Length");
      // Over a socket the headers say whether a body follows; a Request built in process may have neither.
      const hasBody = length !== undefined
        ? length !== "0"
        : c.req.header("Transfer-Encoding") !== undefined || c.req.raw.body !== null;
      if ((type !== undefined || hasBody) && !isJson(type)) {
        return refuse(
          415,
          "unsupported_media_type",
          `a ${c.req.method} with a body must send Content-Type: application/json (got ${type ?? "none"})`,
        );
      }
    }
    await next();
  };
}

function isJson(type: string | undefined): boolean {
  return type !== undefined && type.split(";")[0]!.trim().toLowerCase() === "application/json";
}
