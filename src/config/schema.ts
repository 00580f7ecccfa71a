import { z } from "zod";

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
const qos = z.union([z.literal(0), z.literal(1), z.literal(2)]);

const forwardRule = z.object({
  filter: z.string().min(1).describe("local topic filter to forward"),
  topic: z.string().min(1).default("${topic}")
    .describe("remote topic template: ${topic}, ${edge_id}, ${clientid} (publisher)"),
  strip: z.string().default("").describe("prefix removed from the local topic before ${topic} is filled in"),
  qos: qos.default(1).describe("QoS towards the cloud"),
  retain: z.boolean().default(false).describe("keep the publisher's RETAIN flag"),
}).strict();

const downlinkRule = z.object({
  filter: z.string().min(1).describe("remote topic filter to subscribe to; ${edge_id} allowed"),
  topic: z.string().min(1).default("${topic}").describe("local topic template: ${topic}, ${edge_id}"),
  strip: z.string().default("").describe("prefix removed from the remote topic before ${topic} is filled in"),
  qos: qos.default(1),
}).strict();

const uplink = z.object({
  name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/).describe("unique name; used in $SYS topics and metrics"),
  url: z.string().regex(/^(mqtt|mqtts|ws|wss):\/\/[^\s]+$/).describe("cloud broker: mqtt://, mqtts://, ws:// or wss://"),
  client_id: z.string().optional().describe("client id at the cloud; default ferry-<edge_id>-<name>"),
  username: z.string().optional(),
  password: z.string().optional().describe("password (prefer password_file)"),
  password_file: z.string().optional().describe("file holding the password; re-read at every connect"),
  tls: z.object({
    ca: z.string().optional().describe("CA certificate file (PEM)"),
    cert: z.string().optional().describe("client certificate file for mTLS (PEM)"),
    key: z.string().optional().describe("client key file for mTLS (PEM)"),
    reject_unauthorized: z.boolean().default(true),
  }).strict().prefault({}).describe("certificate files are re-read at every connect"),
  protocol_version: z.union([z.literal(4), z.literal(5)]).default(5).describe("4 = MQTT 3.1.1, 5 = MQTT 5.0"),
  keepalive: z.number().int().min(0).max(65535).default(30),
  clean_start: z.boolean().default(false).describe("false keeps a persistent session at the cloud"),
  session_expiry: z.number().int().min(0).default(86_400).describe("v5 session expiry at the cloud, seconds"),
  forward: z.array(forwardRule).default([]).describe("local → cloud rules"),
  downlink: z.array(downlinkRule).default([]).describe("cloud → local rules"),
  max_inflight: z.number().int().min(1).max(65535).default(100).describe("unacknowledged messages towards the cloud"),
  rate: z.object({
    messages_per_second: z.number().min(0).default(0).describe("0 = unlimited"),
    bytes_per_second: z.number().min(0).default(0).describe("0 = unlimited"),
  }).strict().prefault({}),
  buffer: z.object({
    max_messages: z.number().int().min(0).default(0)
      .describe("log entries the link may fall behind; beyond it the oldest are skipped and counted (0 = bounded by storage only)"),
    ttl_seconds: z.number().int().min(0).default(0).describe("messages older than this are skipped and counted; 0 = no limit"),
  }).strict().prefault({}),
  backoff: z.object({
    min_ms: z.number().int().min(10).default(500),
    max_ms: z.number().int().min(10).default(30_000),
    jitter: z.number().min(0).max(1).default(0.3).describe("fraction of each delay that is random"),
  }).strict().prefault({}),
  ordering: z.enum(["strict", "live-first"]).default("strict")
    .describe("strict: backlog first, in log order; live-first: new messages go out at once, the backlog drains behind"),
  ack_timeout_seconds: z.number().int().min(1).default(30)
    .describe("connected but no acknowledgement for this long: reconnect"),
}).strict();

export const configSchema = z.object({
  listeners: z.object({
    host: z.string().default("0.0.0.0").describe("address the MQTT and WebSocket listeners bind to"),
    mqtt_port: port.default(1883).describe("MQTT over TCP; 0 picks a free port"),
    ws_port: port.nullable().default(null).describe("MQTT over WebSocket (path /mqtt); null disables, 0 picks a free port"),
  }).strict().prefault({}),
  data_dir: z.string().default("./data").describe("where the SQLite database lives"),
  edge_id: z.string().regex(/^[^/+#\s]{1,128}$/).default("edge")
    .describe("this gateway's name at the cloud; ${edge_id} in uplink topic templates"),
  uplinks: z.array(uplink).default([]).describe("cloud brokers to forward to (see Uplink)"),
  log_level: z.enum(["debug", "info", "warn", "error", "silent"]).default("info").describe("log lines at this level and above go to stderr"),
  mqtt: z.object({
    max_packet_size: z.number().int().min(64).max(268_435_460).default(1_048_576)
      .describe("largest packet accepted, in bytes; announced as Maximum Packet Size"),
    max_topic_length: z.number().int().min(1).max(65_535).default(65_535).describe("bytes in a topic name or filter"),
    max_topic_levels: z.number().int().min(1).max(65_535).default(128).describe("levels in a topic name or filter"),
    receive_maximum: z.number().int().min(1).max(65_535).default(1024)
      .describe("unacknowledged QoS>0 publishes a client may send; more gets DISCONNECT 0x93"),
    max_inflight: z.number().int().min(1).max(65_535).default(64)
      .describe("QoS>0 messages in flight to one client (also capped by its Receive Maximum)"),
    max_queued_messages: z.number().int().min(1).default(10_000)
      .describe("messages queued per session beyond the in-flight window; more are dropped and counted"),
    queue_qos0_messages: z.boolean().default(false).describe("queue QoS 0 messages for offline persistent sessions"),
    topic_alias_maximum: z.number().int().min(0).max(65_535).default(10)
      .describe("topic aliases a client may use towards Ferry; 0 disables"),
    server_keep_alive: z.number().int().min(1).max(65_535).nullable().default(null)
      .describe("longest keep alive allowed: a v5 client asking for more, or for none, gets this as Server Keep Alive (like Mosquitto's max_keepalive)"),
    max_session_expiry: z.number().int().min(0).max(0xffffffff).default(0xffffffff)
      .describe("largest Session Expiry Interval granted, in seconds"),
    max_connections: z.number().int().min(1).default(100_000).describe("connected clients at most; more are refused (v5 0x97, 3.1.1 code 3)"),
    max_buffered_bytes: z.number().int().min(1024).default(8 * 1024 * 1024)
      .describe("bytes waiting to be written to one client before QoS 0 messages to it are dropped"),
    connect_timeout_ms: z.number().int().min(100).default(10_000)
      .describe("a connection that has not sent CONNECT within this many milliseconds is closed"),
    retain_available: z.boolean().default(true).describe("false refuses retained publishes (0x9A) and says so in CONNACK"),
    sys_interval: z.number().int().min(0).default(10).describe("seconds between $SYS updates; 0 disables"),
  }).strict().prefault({}),
  auth: z.object({
    allow_anonymous: z.boolean().default(true).describe("accept clients that send no username"),
  }).strict().prefault({}),
  acl: z.object({
    default: z.enum(["allow", "deny"]).default("allow").describe("decision when no rule matches"),
    rules: z.array(aclRule).default([]).describe("checked in order; the first match decides"),
    deny_reason: z.enum(["not_authorized", "unspecified"]).default("not_authorized")
      .describe("v5 reason code for a denied publish or subscription: 0x87, or 0x80 for clients that only know 0x80"),
  }).strict().prefault({}),
  storage: z.object({
    durability: z.enum(["commit", "periodic", "memory"]).default("commit")
      .describe("commit: ack after the SQLite commit is durable; periodic: flush every flush_interval_ms; memory: nothing on disk"),
    flush_interval_ms: z.number().int().min(10).default(1000).describe("periodic mode: how often to flush"),
    max_bytes: z.number().int().min(0).default(1024 * 1024 * 1024)
      .describe("database size bound: beyond it the oldest messages no session owes are dropped (even uplink backlog, counted); 0 = no bound"),
    message_ttl_seconds: z.number().int().min(0).default(86_400)
      .describe("history kept for messages no session owes and every uplink has sent; 0 keeps them until max_bytes"),
  }).strict().prefault({}),
}).strict();

export type FerryConfig = z.infer<typeof configSchema>;
export type UplinkConfig = z.infer<typeof uplink>;
export type ForwardRule = z.infer<typeof forwardRule>;
export type DownlinkRule = z.infer<typeof downlinkRule>;
