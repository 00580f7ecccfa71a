import type { ConnectPacket } from "../mqtt/packets.ts";
import type { Message, QoS } from "../store/store.ts";
import type { AccessSubject, AclPort } from "./auth-ports.ts";
import type { Clock } from "./clock.ts";
import type { Logger } from "./logger.ts";
import { pickMessageProperties, toBytes } from "./message-properties.ts";
import type { Session } from "./session.ts";

/** The Will Message of a connection (spec 3.1.3.2), published on abnormal disconnect. */
export interface Will {
  message: Message;
  /** Will Delay Interval in seconds. */
  delay: number;
  /**
   * Who publishes it: the client as it was authenticated. The publish ACL is asked again
   * for this subject when the Will goes out, since the rules may have changed since CONNECT.
   */
  subject: AccessSubject;
}

/** The Will a CONNECT carries, as the message `subject` will publish. */
export function willFromConnect(w: NonNullable<ConnectPacket["will"]>, subject: AccessSubject, now: number): Will {
  const clientId = subject.clientId;
  const wp = w.properties ?? {};
  const msg: Message = {
    offset: 0,
    topic: w.topic,
    payload: toBytes(w.payload),
    qos: (w.qos ?? 0) as QoS,
    retain: w.retain ?? false,
    receivedAt: now,
    origin: clientId,
  };
  const mp = pickMessageProperties(wp);
  if (mp) msg.properties = mp;
  if (wp.messageExpiryInterval !== undefined) msg.expiresAt = now + wp.messageExpiryInterval * 1000;
  // A snapshot: the connection object goes away, its identity must not change meanwhile.
  const who: AccessSubject = {
    clientId,
    username: subject.username,
    remoteAddress: subject.remoteAddress,
    remoteIp: subject.remoteIp,
  };
  return { message: msg, delay: wp.willDelayInterval ?? 0, subject: who };
}

/** How a Will gets published: routed and delivered like any message (the broker). */
export interface WillPublisher {
  /** Route, commit and deliver `message`; resolves once subscribers have it. */
  publishDurably(message: Message): Promise<void>;
}

/**
 * Wills waiting for their delay. A Will is published when its connection ends abnormally,
 * after the Will Delay Interval or when the session ends, whichever is first
 * [MQTT-3.1.3-9]; a new connection for the session before then cancels it.
 */
export class WillHandler {
  #pending = new Map<Session, Will>();

  constructor(
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly publisher: WillPublisher,
    private readonly acl: AclPort,
    /** Counts a Will the ACL refused at publication (BrokerMetrics.aclDeniedPublish). */
    private readonly onDenied: () => void,
  ) {}

  /** `s`'s connection ended abnormally with `will`. */
  arm(s: Session, will: Will): void {
    const delay = Math.min(will.delay, s.expiryInterval);
    if (delay <= 0) {
      this.#publish(will);
      return;
    }
    this.#pending.set(s, will);
    s.willTimer = this.clock.setTimeout(() => {
      if (this.#pending.get(s) === will) {
        this.#pending.delete(s);
        this.#publish(will);
      }
    }, delay * 1000);
  }

  /** A new connection resumed `s` before the Will Delay passed: the Will is not sent [MQTT-3.1.3-9]. */
  cancel(s: Session): void {
    this.clock.clearTimeout(s.willTimer);
    this.#pending.delete(s);
  }

  /** `s` ends: a Will still waiting is published now. */
  sessionEnded(s: Session): void {
    this.clock.clearTimeout(s.willTimer);
    const will = this.#pending.get(s);
    if (!will) return;
    this.#pending.delete(s);
    this.#publish(will);
  }

  #publish(will: Will): void {
    // Checked at CONNECT too (connect-pipeline's will-acl step); a reload since may have
    // taken the right away, and a Will must not outlive its author's permissions.
    if (!this.acl.allows(will.subject, "publish", will.message.topic)) {
      this.onDenied();
      this.logger.info(`Will of ${will.subject.clientId} on ${will.message.topic} not published: not authorized`);
      return;
    }
    const now = this.clock.now();
    const m: Message = { ...will.message, receivedAt: now };
    // The Will's Message Expiry Interval is its lifetime from publication, not from CONNECT
    // (spec 3.1.3.2.4), so the expiry moves with the publication time.
    if (will.message.expiresAt !== undefined) m.expiresAt = now + (will.message.expiresAt - will.message.receivedAt);
    this.publisher.publishDurably(m).catch((err: unknown) => {
      this.logger.error(`storing the Will of ${m.origin} failed: ${String(err)}`);
    });
  }
}
