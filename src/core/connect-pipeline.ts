/**
 * CONNECT as an ordered pipeline of small named steps (the shape of aedes'
 * `connectActions`). Each step reads and fills one `ConnectAttempt`, and either lets the
 * next one run (undefined), refuses the CONNECT with a reason code, or says the attempt
 * is over (`STOP`: it answered already, or the connection closed). The last steps wait for
 * authentication and the session store, so the pipeline may resume asynchronously;
 * packets that arrive meanwhile wait in the connection (spec 3.1.4).
 */
import { logField } from "./client-log.ts";
import type { ConnectPacket, ProtocolVersion } from "../mqtt/packets.ts";
import { MqttError, RC } from "../mqtt/reason-codes.ts";
import { topicNameProblem } from "../mqtt/topic.ts";
import { StoreFullError } from "../store/store.ts";
import type { Broker } from "./broker.ts";
import type { ClientConnection } from "./client-connection.ts";
import { toBytes } from "./message-properties.ts";
import type { Session } from "./session.ts";
import { willFromConnect } from "./will.ts";

/** A CONNECT refused: the reason code for the CONNACK and a line for the log. */
export interface ConnectRefusal {
  code: number;
  why: string;
}

/** The attempt is over without a refusal to send (answered already, or the connection closed). */
export const STOP = "stop";

export type StepResult = ConnectRefusal | typeof STOP | undefined;

/** What one CONNECT carries from step to step. */
export class ConnectAttempt {
  clean: boolean;
  /** The client sent no id and got one from Ferry [MQTT-3.1.3-6]. */
  assigned = false;
  /** Server Keep Alive to announce, when Ferry overrides the client's. */
  serverKeepAlive: number | undefined = undefined;
  /** Session Expiry Interval granted, in seconds. */
  expiry = 0;
  session: Session | undefined = undefined;
  present = false;

  readonly props: NonNullable<ConnectPacket["properties"]>;

  constructor(readonly c: ClientConnection, readonly broker: Broker, readonly p: ConnectPacket) {
    this.clean = p.clean ?? true;
    c.cleanStart = this.clean;
    this.props = p.properties ?? {};
  }
}

export interface ConnectStep {
  readonly name: string;
  run(a: ConnectAttempt): StepResult | Promise<StepResult>;
}

/** Over a per-address limit at accept (AuthPort.admit): the CONNECT learns why, then the close. */
const refusedAtAccept: ConnectStep = {
  name: "refused-at-accept",
  run({ c }) {
    if (c.refusal === undefined) return undefined;
    c.sendConnack(c.refusal, false, {});
    c.shutdown(true);
    return STOP;
  },
};

/** v5: the client's Receive Maximum, Maximum Packet Size, Topic Alias Maximum and problem-info wish. */
const clientLimits: ConnectStep = {
  name: "client-limits",
  run({ c, props }) {
    if (!c.isV5) return undefined;
    if (props.receiveMaximum === 0) throw new MqttError(RC.PROTOCOL_ERROR, "Receive Maximum of 0"); // spec 3.1.2.11.3
    if (props.maximumPacketSize === 0) throw new MqttError(RC.PROTOCOL_ERROR, "Maximum Packet Size of 0");
    if (props.authenticationMethod !== undefined) {
      // Ferry implements no enhanced authentication method (spec 4.12).
      return { code: RC.BAD_AUTHENTICATION_METHOD, why: "unsupported authentication method" };
    }
    c.clientReceiveMaximum = props.receiveMaximum ?? 65535;
    c.clientMaxPacketSize = props.maximumPacketSize ?? Number.POSITIVE_INFINITY;
    c.clientTopicAliasMaximum = props.topicAliasMaximum ?? 0;
    c.requestProblemInfo = props.requestProblemInformation ?? true;
    return undefined;
  },
};

const clientId: ConnectStep = {
  name: "client-id",
  run(a) {
    const { c, p } = a;
    let id = p.clientId ?? "";
    // MQTT 3.1 allows 1 to 23 characters and answers anything else with return code 2.
    if (c.version === 3 && (id.length === 0 || id.length > 23)) {
      return { code: RC.CLIENT_IDENTIFIER_NOT_VALID, why: "MQTT 3.1 client id must have 1 to 23 characters" };
    }
    if (id.length === 0) {
      // [MQTT-3.1.3-8] 3.1.1: an empty id with CleanSession=0 is rejected.
      if (!c.isV5 && !a.clean) {
        return { code: RC.CLIENT_IDENTIFIER_NOT_VALID, why: "empty client id without clean session" };
      }
      id = a.broker.assignClientId(); // [MQTT-3.1.3-6]
      a.assigned = true;
    }
    // The codec refused U+0000 and ill-formed bytes as malformed [MQTT-1.5.4-1]; a U+FFFD is a character.
    if (id.includes("\u0000")) return { code: RC.CLIENT_IDENTIFIER_NOT_VALID, why: "client id contains U+0000" };
    c.clientId = id;
    c.username = p.username;
    return undefined;
  },
};

/**
 * `mqtt.max_connections` and the memory budget's high level; a client taking over its own
 * session replaces a connection, so needs no free slot.
 */
const capacity: ConnectStep = {
  name: "capacity",
  run({ c, broker }) {
    const replacing = broker.sessions.get(c.clientId)?.client !== undefined;
    if (!replacing && broker.connectedCount >= broker.options.maxConnections) {
      return { code: RC.QUOTA_EXCEEDED, why: "too many connections" };
    }
    // The memory budget past its high level: new clients are the first thing refused.
    if (!replacing && broker.budget.overHigh) {
      broker.metrics.refusedMemoryConnections++;
      return { code: RC.QUOTA_EXCEEDED, why: "memory budget (limits.max_memory) nearly used" };
    }
    return undefined;
  },
};

/** The Will's form: a valid topic name, and retain only where retained messages are available. */
const will: ConnectStep = {
  name: "will",
  run({ broker, p }) {
    if (!p.will) return undefined;
    const opts = broker.options;
    const problem = topicNameProblem(p.will.topic, opts);
    if (problem) return { code: RC.TOPIC_NAME_INVALID, why: `will topic: ${problem}` };
    if (p.will.retain && !opts.retainAvailable) return { code: RC.RETAIN_NOT_SUPPORTED, why: "retain not available" };
    return undefined;
  },
};

/**
 * The Will is a publish by this client: its topic must pass the publish ACL, asked once the
 * username and client id are final (%u, %c). Refused like Mosquitto: v5 0x87, 3.1.1 return
 * code 5 — the client learns at once instead of losing its Will silently later. Checked
 * again when the Will is published (WillHandler), since the rules may change meanwhile.
 */
const willAcl: ConnectStep = {
  name: "will-acl",
  run({ c, broker, p }) {
    if (!p.will) return undefined;
    if (!broker.acl.allows(c, "publish", p.will.topic)) {
      broker.metrics.aclDeniedPublish++;
      return { code: RC.NOT_AUTHORIZED, why: `will topic ${p.will.topic} not authorized` };
    }
    c.will = willFromConnect(p.will, c, broker.clock.now());
    c.countWill();
    return undefined;
  },
};

/**
 * Another username's session is not this client's to take over (`auth.bind_client_ids`,
 * decided by AuthPort.claim): refused before the session is touched, so the owner keeps its
 * connection, its Will stays unsent and its queue intact.
 */
const sessionOwner: ConnectStep = {
  name: "session-owner",
  run({ c, broker }) {
    const s = broker.sessions.get(c.clientId);
    if (!s) return undefined;
    const refused = broker.auth.claim(c, s.owner);
    return refused === undefined ? undefined : { code: refused.code, why: refused.reason };
  },
};

/**
 * Keep alive: a v5 client gets Ferry's limit as Server Keep Alive when it asks for more
 * (or none), and must then use it [MQTT-3.2.2-21].
 */
const keepAlive: ConnectStep = {
  name: "keep-alive",
  run(a) {
    const { c } = a;
    c.keepAlive = a.p.keepalive ?? 0;
    const maxKa = a.broker.options.serverKeepAlive;
    if (c.isV5 && maxKa !== undefined && (c.keepAlive === 0 || c.keepAlive > maxKa)) {
      a.serverKeepAlive = maxKa;
      c.keepAlive = maxKa;
    }
    return undefined;
  },
};

const sessionExpiry: ConnectStep = {
  name: "session-expiry",
  run(a) {
    const max = a.broker.options.maxSessionExpiry;
    if (a.c.isV5) a.expiry = Math.min(a.props.sessionExpiryInterval ?? 0, max);
    // 3.1.1 has no expiry of its own: a persistent session lasts max_session_expiry (by
    // default forever), like Mosquitto's persistent_client_expiration.
    else a.expiry = a.clean ? 0 : max;
    return undefined;
  },
};

/**
 * Authenticate before the session is touched, so a refused client cannot take over a
 * session. Asynchronous (password hashes are slow by design).
 */
const authenticate: ConnectStep = {
  name: "authenticate",
  run({ c, broker, p }) {
    c.state = "connecting";
    return broker.auth.authenticate(c, {
      username: p.username,
      password: p.password === undefined ? undefined : toBytes(p.password),
      certificate: c.conn.clientCertificate?.(),
    }).then((auth): StepResult => {
      if (!auth.ok) {
        return {
          code: auth.code,
          why: p.username === undefined ? auth.reason : `${auth.reason} (user '${logField(p.username)}')`,
        };
      }
      c.username = auth.username; // a certificate's CN may stand in for the username sent
      // auth.use_username_as_clientid: the username is the client id, whatever was sent. An
      // empty id still gets it back as Assigned Client Identifier [MQTT-3.2.2-16]; a sent one
      // is not contradicted in CONNACK (as Mosquitto).
      if (auth.clientId !== undefined) c.clientId = auth.clientId;
      return undefined;
    });
  },
};

const openSession: ConnectStep = {
  name: "open-session",
  run(a) {
    const { c } = a;
    return a.broker.registry.open(c, c.clientId, c.version as ProtocolVersion, a.clean, a.expiry, c.username ?? null)
      .then(
        ({ session, present }): StepResult => {
          a.session = session;
          a.present = present;
          return undefined;
        },
      );
  },
};

const connack: ConnectStep = {
  name: "connack",
  run(a) {
    const { c, broker } = a;
    const opts = broker.options;
    c.session = a.session;
    c.state = "connected";
    broker.noteConnected(c);
    const connackProps: Record<string, unknown> = {};
    if (c.isV5) {
      if (a.assigned) connackProps.assignedClientIdentifier = c.clientId;
      if (a.expiry !== (a.props.sessionExpiryInterval ?? 0)) connackProps.sessionExpiryInterval = a.expiry;
      connackProps.receiveMaximum = opts.receiveMaximum;
      connackProps.maximumPacketSize = opts.maxPacketSize;
      connackProps.topicAliasMaximum = opts.topicAliasMaximum;
      if (a.serverKeepAlive !== undefined) connackProps.serverKeepAlive = a.serverKeepAlive;
      if (!opts.retainAvailable) connackProps.retainAvailable = false;
      connackProps.wildcardSubscriptionAvailable = true;
      connackProps.subscriptionIdentifiersAvailable = true;
      connackProps.sharedSubscriptionAvailable = true;
    }
    // [MQTT-3.2.2-2] Session Present reflects a resumed session; always 0 with clean start.
    if (!c.sendConnack(RC.SUCCESS, a.present, connackProps)) {
      // Larger than the client's Maximum Packet Size even without optional properties [MQTT-3.1.2-24].
      c.will = undefined;
      a.broker.metrics.connectionsRefused++;
      a.broker.logger.info(`refused ${logField(c.clientId)}: CONNACK larger than its Maximum Packet Size`);
      c.sendConnack(RC.PACKET_TOO_LARGE, false, {});
      c.shutdown(false);
      return STOP;
    }
    return undefined;
  },
};

/** Re-send what was in flight, drain the queue, then the packets that came right behind CONNECT. */
const online: ConnectStep = {
  name: "online",
  run({ c, broker, session }) {
    broker.outbound.online(session!, c);
    c.handleEarly();
    return undefined;
  },
};

/** The steps, in order. */
export const connectSteps: readonly ConnectStep[] = [
  refusedAtAccept,
  clientLimits,
  clientId,
  capacity,
  will,
  keepAlive,
  sessionExpiry,
  authenticate,
  willAcl,
  sessionOwner,
  openSession,
  connack,
  online,
];

/** Handle a CONNECT on `c`. Protocol errors of the synchronous steps throw, as any packet's do. */
export function runConnect(c: ClientConnection, broker: Broker, p: ConnectPacket): void {
  c.version = (p.protocolVersion ?? 4) as ProtocolVersion;
  runFrom(new ConnectAttempt(c, broker, p), 0);
}

function runFrom(a: ConnectAttempt, first: number): void {
  for (let i = first; i < connectSteps.length; i++) {
    const result = connectSteps[i]!.run(a);
    if (result === undefined) continue;
    if (result instanceof Promise) {
      result.then(
        (r) => {
          // Gone while waiting (closed, taken over, or the broker stopped).
          if (a.c.state === "closed") return;
          if (r === undefined) runFrom(a, i + 1);
          else if (r !== STOP) refuse(a, r);
        },
        (err: unknown) => {
          if (a.c.state === "closed") return;
          a.broker.logger.error(`session setup for ${a.c.clientId} failed: ${String(err)}`);
          refuse(a, {
            code: err instanceof StoreFullError ? RC.QUOTA_EXCEEDED : RC.SERVER_UNAVAILABLE,
            why: "storage error",
          });
        },
      );
      return;
    }
    if (result !== STOP) refuse(a, result);
    return;
  }
}

function refuse(a: ConnectAttempt, r: ConnectRefusal): void {
  a.broker.metrics.connectionsRefused++;
  a.broker.logger.info(
    `refused ${logField(a.p.clientId || "(no id)")} from ${logField(a.c.conn.remoteAddress)}: ${r.why}`,
  );
  a.c.sendConnack(r.code, false, {});
  a.c.shutdown(true);
}
