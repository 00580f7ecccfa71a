import * as z from "./mini-zod.ts";
import { DEFAULT_TLS_CIPHERS } from "./tls-ciphers.ts";

export { DEFAULT_TLS_CIPHERS };

/**
 * The configuration file's schema: the one place where defaults, limits and their
 * documentation live. The README's configuration reference is generated from it
 * (`bun scripts/config-doc.ts`).
 */
const aclRule = z.object({
  action: z.enum(["publish", "subscribe", "all"]).describe("operation the rule covers"),
  topic: z.string().min(1).describe("topic filter; %u = username, %c = client id"),
  permission: z.enum(["allow", "deny"]),
  username: z.string().optional().describe("only for this username"),
  client_id: z.string().optional().describe("only for this client id"),
}).strict();

const port = z.number().int().min(0).max(65535);

/**
 * Hosts only this machine can reach — 127.0.0.0/8, ::1, localhost (with or without
 * brackets). Elsewhere the admin API needs a token and anonymous MQTT is off by default.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h) || /^::ffff:127\./.test(h);
}
const qos = z.union([z.literal(0), z.literal(1), z.literal(2)]);

const forwardRule = z.object({
  filter: z.string().min(1).describe("local topic filter to forward"),
  topic: z.string().min(1).default("${topic}")
    .describe("remote topic template: ${topic}, ${edge_id}, ${clientid} (publisher)"),
  strip: z.string().default("").describe(
    "prefix removed from the local topic before ${topic} is filled in; ${edge_id} allowed",
  ),
  qos: qos.default(1).describe("QoS towards the cloud"),
  retain: z.boolean().default(false).describe("keep the publisher's RETAIN flag"),
}).strict();

const downlinkRule = z.object({
  filter: z.string().min(1).describe("remote topic filter to subscribe to; ${edge_id} allowed"),
  topic: z.string().min(1).default("${topic}")
    // $ topics are the broker's own ($SYS): a cloud command must never write there.
    .refine((t) => !/^\$(?!\{)/.test(t), "a downlink cannot publish to a $ topic")
    .describe("local topic template: ${topic}, ${edge_id}; never a $ topic"),
  strip: z.string().default("").describe(
    "prefix removed from the remote topic before ${topic} is filled in; ${edge_id} allowed",
  ),
  qos: qos.default(1).describe("QoS of the subscription at the cloud, and the most a command gets locally"),
}).strict();

const cloudUrl = z.string().regex(
  /^(mqtt|mqtts|ws|wss):\/\/[^\s]+$/,
  "must be a URL mqtt://HOST[:PORT], mqtts://, ws:// or wss://, e.g. mqtts://cloud.example:8883",
)
  // The URL is logged and shown by the admin API: credentials belong in username/password_file.
  .refine(
    (u) => !/^[a-z]+:\/\/[^/]*@/.test(u),
    "no user:password@ in the URL (it is logged); use username and password_file",
  );

const uplink = z.object({
  name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1 to 64 letters, digits, '_' or '-'").describe(
    "unique name; used in $SYS topics and metrics",
  ),
  url: cloudUrl.optional().describe("cloud broker: mqtt://, mqtts://, ws:// or wss:// (or use urls)"),
  urls: z.array(cloudUrl).min(1).optional()
    .describe("several endpoints of one cloud (cluster nodes), tried in order; with url, url comes first"),
  endpoint_policy: z.enum(["primary-first", "round-robin"]).default("primary-first")
    .describe(
      "primary-first: each new connection starts at the first endpoint; round-robin: each goes to the next one",
    ),
  client_id: z.string().optional().describe("client id at the cloud; default ferry-<edge_id>-<name>"),
  username: z.string().optional().describe("username at the cloud"),
  password: z.string().optional().describe("password (prefer password_file)"),
  password_file: z.string().optional().describe("file holding the password; re-read at every connect"),
  tls: z.object({
    ca: z.string().optional().describe("CA certificate file (PEM)"),
    cert: z.string().optional().describe("client certificate file for mTLS (PEM)"),
    key: z.string().optional().describe("client key file for mTLS (PEM)"),
    reject_unauthorized: z.boolean().default(true).describe("false accepts any server certificate (testing only)"),
  }).strict().prefault({}).describe("certificate files are re-read at every connect"),
  protocol_version: z.union([z.literal(4), z.literal(5)]).default(5).describe("4 = MQTT 3.1.1, 5 = MQTT 5.0"),
  keepalive: z.number().int().min(0).max(65535).default(30).describe("seconds between PINGREQs when idle; 0 = none"),
  clean_start: z.boolean().default(false).describe("false keeps a persistent session at the cloud"),
  session_expiry: z.number().int().min(0).default(86_400).describe("v5 session expiry at the cloud, seconds"),
  forward: z.array(forwardRule).default([]).describe("local → cloud rules"),
  downlink: z.array(downlinkRule).default([]).describe("cloud → local rules"),
  downlink_acl: z.object({
    username: z.string().optional().describe("username the local ACL sees (%u); unset: none"),
    client_id: z.string().optional().describe("client id the local ACL sees (%c); default ferry-uplink-<name>"),
  }).strict().optional()
    .describe("check cloud commands against the local ACL's publish rules as this identity; unset: not checked"),
  max_inflight: z.number().int().min(1).max(65535).default(100).describe("unacknowledged messages towards the cloud"),
  rate: z.object({
    messages_per_second: z.number().min(0).default(0).describe("0 = unlimited"),
    bytes_per_second: z.number().min(0).default(0).describe("0 = unlimited"),
  }).strict().prefault({}),
  buffer: z.object({
    max_messages: z.number().int().min(0).default(0)
      .describe(
        "log entries the link may fall behind; beyond it the oldest are skipped and counted (0 = bounded by storage only)",
      ),
    ttl_seconds: z.number().int().min(0).default(0).describe(
      "messages older than this are skipped and counted; 0 = no limit",
    ),
  }).strict().prefault({}),
  backoff: z.object({
    min_ms: z.number().int().min(10).default(500).describe("first reconnect delay; doubles after each failed attempt"),
    max_ms: z.number().int().min(10).default(30_000).describe("longest reconnect delay"),
    jitter: z.number().min(0).max(1).default(0.3).describe("fraction of each delay that is random"),
  }).strict().prefault({}),
  ordering: z.enum(["strict", "live-first"]).default("strict")
    .describe(
      "strict: everything in log order, backlog first; live-first: new messages go out before the backlog, which drains behind them (order between the two is given up)",
    ),
  stamp: z.enum(["full", "dedup", "none"]).default("full")
    .describe(
      "Ferry's MQTT 5 User Properties on each forwarded message: full (dedup key, replay marker, capture time, clock state), dedup (dedup key and replay marker only), none (as a bridge: the publisher's own properties only)",
    ),
  envelope: z.enum(["none", "json"]).default("none")
    .describe(
      "json: each payload is wrapped in a JSON object with Ferry's dedup key, capture time and replay marker (for MQTT 3.1.1 clouds, which have no properties)",
    ),
  ack_timeout_seconds: z.number().int().min(1).default(30)
    .describe(
      "messages in flight and no acknowledgement of any for this long: drop the connection and try the next endpoint",
    ),
}).strict().refine((u) => u.url !== undefined || u.urls !== undefined, {
  message: "an uplink needs url or urls",
  path: ["url"],
});

export const configSchema = z.object({
  listeners: z.object({
    host: z.string().default("127.0.0.1")
      .describe(
        "address the listeners bind to; the default serves this machine only (like Mosquitto 2's local-only mode) — set 0.0.0.0 and auth.password_file to serve the network",
      ),
    mqtt_port: port.default(1883).describe("MQTT over TCP; 0 picks a free port"),
    ws_port: port.nullable().default(null).describe(
      "MQTT over WebSocket (path /mqtt); null disables, 0 picks a free port",
    ),
    tls_port: port.nullable().default(null)
      .describe("MQTT over TLS (mqtts, usually 8883); needs tls.cert and tls.key; null disables, 0 picks a free port"),
    wss_port: port.nullable().default(null)
      .describe(
        "MQTT over secure WebSocket (wss, path /mqtt); needs tls.cert and tls.key; null disables, 0 picks a free port",
      ),
  }).strict().prefault({}),
  tls: z.object({
    cert: z.string().nullable().default(null).describe("server certificate chain file (PEM) for tls_port and wss_port"),
    key: z.string().nullable().default(null).describe("server private key file (PEM)"),
    ca: z.string().nullable().default(null)
      .describe("CA certificates (PEM) client certificates are verified against; set, clients are asked for one"),
    require_client_cert: z.boolean().default(false)
      .describe("refuse TLS clients without a certificate that tls.ca verifies (mutual TLS)"),
    use_identity_as_username: z.boolean().default(false)
      .describe(
        "a verified client certificate's subject CN becomes the username, with no password needed (TLS port only)",
      ),
    reload_check_seconds: z.number().int().min(0).default(60)
      .describe(
        "how often the certificate files are checked for changes, then used for new connections; 0 = only on SIGHUP",
      ),
    ciphers: z.string().regex(/^[A-Za-z0-9_+!@=.:-]+$/, "an OpenSSL cipher list: names separated by ':'")
      .default(DEFAULT_TLS_CIPHERS)
      .describe(
        "TLS 1.2 cipher suites (OpenSSL names, ':'-separated, like Mosquitto's ciphers); the default offers only forward-secret AEAD suites. TLS 1.3 suites are fixed. Bun only",
      ),
  }).strict().prefault({}),
  data_dir: z.string().default("./data").describe("where the SQLite database lives"),
  edge_id: z.string().regex(/^[^/+#\s]{1,128}$/, "must be 1 to 128 characters without '/', '+', '#' or spaces")
    .default("edge")
    .describe("this gateway's name at the cloud; ${edge_id} in uplink topic templates"),
  uplinks: z.array(uplink).default([]).describe("cloud brokers to forward to (see Uplink)"),
  log_level: z.enum(["debug", "info", "warn", "error", "silent"]).default("info").describe(
    "log lines at this level and above go to stderr",
  ),
  log: z.object({
    format: z.enum(["text", "json"]).default("text")
      .describe("text: `TIME LEVEL message` lines; json: one {time, level, msg} object per line"),
    syslog_prefix: z.enum(["auto", "always", "never"]).default("auto")
      .describe(
        "syslog priority prefixes (<3> error … <7> debug) instead of timestamps; auto = when stderr is the systemd journal (JOURNAL_STREAM)",
      ),
  }).strict().prefault({}),
  mqtt: z.object({
    max_packet_size: z.number().int().min(64).max(268_435_460).default(1_048_576)
      .describe("largest packet accepted, in bytes; announced as Maximum Packet Size"),
    max_topic_length: z.number().int().min(1).max(65_535).default(65_535).describe("bytes in a topic name or filter"),
    max_topic_levels: z.number().int().min(1).max(65_535).default(128).describe("levels in a topic name or filter"),
    receive_maximum: z.number().int().min(1).max(65_535).default(1024)
      .describe(
        "unacknowledged QoS>0 publishes a v5 client may send; more gets DISCONNECT 0x93 (3.1.1 clients are never told it)",
      ),
    max_inflight: z.number().int().min(1).max(65_535).default(64)
      .describe(
        "QoS>0 PUBLISHes awaiting PUBACK/PUBREC per client (also capped by its Receive Maximum); a v5 client's QoS 2 messages past PUBREC count only against its Receive Maximum, up to 4 times this in all",
      ),
    max_queued_bytes: z.number().int().min(1024).default(64 * 1024 * 1024)
      .describe(
        "payload bytes queued per session; past it, as for max_queued_messages: dropped and counted (offline or stalled session) or publishers held (online)",
      ),
    max_queued_messages: z.number().int().min(1).default(10_000)
      .describe(
        "messages queued per session beyond the in-flight window; for an offline or stalled session more are dropped and counted, an online one holds its publishers' acks instead",
      ),
    stalled_subscriber_ms: z.number().int().min(0).default(5000)
      .describe(
        "publishers wait (PUBACK/PUBREC held) for an online subscriber whose queue is full; one that takes no message for this long is stalled and its bounds drop messages as for an offline session; 0: never wait (acknowledge and drop, as Mosquitto)",
      ),
    queue_qos0_messages: z.boolean().default(false).describe("queue QoS 0 messages for offline persistent sessions"),
    topic_alias_maximum: z.number().int().min(0).max(65_535).default(10)
      .describe("topic aliases a client may use towards Ferry; 0 disables"),
    server_keep_alive: z.number().int().min(1).max(65_535).nullable().default(null)
      .describe(
        "longest keep alive allowed: a v5 client asking for more, or for none, gets this as Server Keep Alive (like Mosquitto's max_keepalive)",
      ),
    max_session_expiry: z.number().int().min(0).max(0xffffffff).default(0xffffffff)
      .describe("largest Session Expiry Interval granted, in seconds"),
    max_connections: z.number().int().min(1).default(100_000).describe(
      "connected clients at most; more are refused (v5 0x97, 3.1.1 code 3)",
    ),
    max_buffered_bytes: z.number().int().min(1024).default(8 * 1024 * 1024)
      .describe(
        "bytes waiting to be written to one client before QoS 0 messages to it are dropped (counted as slow_consumer); limits.max_output_bytes caps it",
      ),
    connect_timeout_ms: z.number().int().min(100).default(10_000)
      .describe("a connection that has not sent CONNECT within this many milliseconds is closed"),
    retain_available: z.boolean().default(true).describe(
      "false refuses retained publishes (0x9A) and says so in CONNACK",
    ),
    sys_interval: z.number().int().min(0).default(10).describe("seconds between $SYS updates; 0 disables"),
  }).strict().prefault({}),
  auth: z.object({
    allow_anonymous: z.boolean().nullable().default(null)
      .describe(
        "accept clients that send no username; null = true only when listeners.host is a loopback address and neither auth.password_file nor tls.use_identity_as_username is set",
      ),
    password_file: z.string().nullable().default(null)
      .describe(
        "users and salted PBKDF2-SHA512 hashes (`ferry passwd`, Mosquitto's format); set, every username must match",
      ),
    reload_check_seconds: z.number().int().min(0).default(10)
      .describe("how often password_file and acl.acl_file are checked for changes; 0 = only on SIGHUP"),
    use_username_as_clientid: z.boolean().default(false)
      .describe(
        "the username (or certificate CN) replaces the client id a client sends, as Mosquitto's option; clients without one are refused (0x87, 3.1.1 code 5)",
      ),
    bind_client_ids: z.boolean().default(false)
      .describe(
        "a client id whose session belongs to one username cannot be taken by another (or by an anonymous client) while the session lasts: 0x87, 3.1.1 code 5",
      ),
  }).strict().prefault({}),
  acl: z.object({
    default: z.enum(["allow", "deny"]).nullable().default(null)
      .describe("decision when no rule matches; null = deny when acl.rules or acl.acl_file is set, allow otherwise"),
    rules: z.array(aclRule).default([]).describe("checked in order; the first match decides"),
    acl_file: z.string().nullable().default(null)
      .describe("a Mosquitto acl_file (topic/user/pattern lines), checked after acl.rules"),
    deny_reason: z.enum(["not_authorized", "unspecified"]).default("not_authorized")
      .describe("v5 reason code for a denied publish or subscription: 0x87, or 0x80 for clients that only know 0x80"),
  }).strict().prefault({}),
  admin: z.object({
    host: z.string().default("127.0.0.1")
      .describe("address the admin API, /metrics and dashboard bind to; anything but loopback requires admin.token"),
    port: port.nullable().default(8080).describe("admin HTTP port; 0 picks a free port, null disables the admin API"),
    token: z.string().min(16).optional()
      .describe("bearer token (16+ characters) every admin route but /healthz and the dashboard page requires"),
    generate_token: z.boolean().nullable().default(null)
      .describe(
        "without admin.token, make a random one on first start in <data_dir>/admin-token (0600) and require it; null = when auth.password_file or tls.use_identity_as_username is set, so the API is never more open than MQTT",
      ),
    allowed_hosts: z.array(z.string().regex(/^(\*|[A-Za-z0-9.-]+)$/, "a host name without port, or *")).default([])
      .describe(
        "host names (besides IP addresses, localhost and, off loopback, the machine's hostname) requests may name in Host or Origin; others are refused (DNS rebinding); * accepts any Host",
      ),
    history_interval_seconds: z.number().int().min(1).max(600).default(10)
      .describe("how often the dashboard's last-hour charts get a point (kept in memory, one hour of them)"),
  }).strict().superRefine((a, ctx) => {
    if (a.port !== null && a.token === undefined && !isLoopbackHost(a.host)) {
      ctx.addIssue({
        code: "custom",
        path: ["token"],
        message: `required when the admin API listens on ${a.host}, which is not a loopback address`,
      });
    }
  }).prefault({}),
  limits: z.object({
    exempt_loopback: z.boolean().default(false)
      .describe(
        "clients on 127.0.0.0/8 or ::1 skip the limits and bans below; off by default, since behind a local proxy or TLS terminator every client is on loopback",
      ),
    connection_rate_per_ip: z.number().int().min(0).default(20)
      .describe("new connections per second from one IP address; more are refused (v5 CONNACK 0x9F); 0 = no limit"),
    max_connections_per_ip: z.number().int().min(0).default(500)
      .describe("open connections from one IP address; more are refused (v5 0x97, 3.1.1 code 3); 0 = no limit"),
    max_publish_rate: z.number().int().min(0).default(0)
      .describe("PUBLISH packets per second from one client; more gets DISCONNECT 0x96 (3.1.1: a close); 0 = no limit"),
    max_output_bytes: z.number().int().min(4096).default(1024 * 1024)
      .describe(
        "bytes waiting to be written to one client above which Ferry stops reading from it (it reads again below half); applies to every client, loopback too",
      ),
    send_timeout: z.number().int().min(0).default(60)
      .describe(
        "seconds a client Ferry stopped reading from may go without reading any of its output before it is closed; 0 = never",
      ),
    packet_timeout: z.number().int().min(0).default(60)
      .describe("seconds a packet may take to arrive once its first byte has; slower closes the connection; 0 = never"),
    max_preauth_bytes: z.number().int().min(0).default(32 * 1024 * 1024)
      .describe(
        "bytes of incomplete packets all connections without a CONNACK may hold together; more closes the connection that went over, and with less than 4 KiB left new connections are closed unread; 0 = no limit",
      ),
    max_preauth_bytes_per_ip: z.number().int().min(0).default(4 * 1024 * 1024)
      .describe("the same for the connections from one IP address (loopback too); 0 = no limit"),
    max_memory: z.number().int().min(0)
      .refine((n) => n === 0 || n >= 8 * 1024 * 1024, "at least 8388608 (8 MiB), or 0 for no budget")
      .default(128 * 1024 * 1024)
      .describe(
        "memory budget for what Ferry holds for clients (output, unread input, queued, in-flight and retained messages, connections, sessions, subscriptions): at 3/4 new connections are refused and offline-queue additions dropped, at 7/8 publishers are slowed, at the budget publishes are refused (see MQTT behaviour, Memory budget); 0 = counted, not enforced",
      ),
    flapping: z.object({
      max_connects: z.number().int().min(0).default(30)
        .describe(
          "connects of one client id allowed per window; one more bans the id (CONNACK 0x8A, 3.1.1 code 5); 0 = off",
        ),
      window_seconds: z.number().int().min(1).default(60).describe("the sliding window connects are counted in"),
      ban_seconds: z.number().int().min(1).default(120).describe("how long a flapping client id is refused"),
    }).strict().prefault({}),
    auth_failures: z.object({
      max: z.number().int().min(0).default(10)
        .describe("failed logins from one IP address allowed per window; one more bans the address (0x8A); 0 = off"),
      window_seconds: z.number().int().min(1).default(60).describe("the sliding window failures are counted in"),
      ban_seconds: z.number().int().min(1).default(300).describe(
        "how long the address is refused, right password or not",
      ),
    }).strict().prefault({}),
  }).strict().prefault({}),
  storage: z.object({
    durability: z.enum(["commit", "periodic", "memory"]).default("commit")
      .describe(
        "commit: ack after the SQLite commit is durable; periodic: flush every flush_interval_ms; memory: nothing on disk",
      ),
    flush_interval_ms: z.number().int().min(10).default(1000).describe("periodic mode: how often to flush"),
    commit_window_ms: z.number().int().min(0).max(1000).default(100).describe(
      "commit mode: how long a message waits for others to share its transaction and fsync (fewer flash writes at low rates; each ack waits up to this much longer); a commit starts sooner once 32 changes wait. 0 = the next event-loop turn",
    ),
    live_delivery: z.enum(["immediate", "after_commit"]).default("immediate")
      .describe(
        "immediate: QoS 0/1 messages reach connected subscribers before their commit (the PUBACK still waits for it); after_commit: subscribers see only durable messages. QoS 2 always waits",
      ),
    writer_thread: z.boolean().default(false)
      .describe(
        "run SQLite's statements on a thread of its own too (about 5 MB more RSS; lower delivery latency above ~10,000 msg/s). Off, they run on the event loop and only the fsyncs run off it",
      ),
    max_bytes: z.number().int().min(0).default(1024 * 1024 * 1024)
      .describe(
        "database size bound: beyond it the oldest messages no session owes are dropped (even uplink backlog, counted); 0 = no bound",
      ),
    message_ttl_seconds: z.number().int().min(0).default(86_400)
      .describe("history kept for messages no session owes and every uplink has sent; 0 keeps them until max_bytes"),
  }).strict().prefault({}),
}).strict();

export type FerryConfig = z.infer<typeof configSchema>;
export type UplinkConfig = z.infer<typeof uplink>;
export type ForwardRule = z.infer<typeof forwardRule>;
export type DownlinkRule = z.infer<typeof downlinkRule>;
