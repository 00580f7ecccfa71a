/**
 * What the kernel asks of authentication, connection limits and the ACL. src/auth
 * implements these ports and the runtime hands them in through `BrokerDeps`; each call
 * answers with a verdict and the connection acts on it. The kernel never imports
 * src/auth, and src/auth never holds or drives a connection.
 */
import type { ClientCertificate } from "./connection.ts";

/** Who is asking: the facts a policy decides on (a `ClientConnection` is one). */
export interface AccessSubject {
  readonly clientId: string;
  readonly username: string | undefined;
  readonly remoteAddress: string;
  readonly remoteIp: string | undefined;
}

/**
 * The verdict of `admit` when a connection is refused: the reason code, and how long a
 * CONNECT may take to arrive and learn it in a CONNACK (0: close at once).
 */
export interface Refusal {
  code: number;
  graceMs: number;
}

/** What a CONNECT offers to prove who it is. */
export interface Credentials {
  username: string | undefined;
  password: Uint8Array | undefined;
  /** The TLS client certificate, on TLS listeners that asked for one. */
  certificate: ClientCertificate | undefined;
}

/**
 * The verdict of `authenticate`: the username the client acts as (and the client id, when
 * policy replaces the one it sent: `auth.use_username_as_clientid`), or a refusal.
 */
export type AuthVerdict =
  | { ok: true; username: string | undefined; clientId?: string | undefined }
  | { ok: false; code: number; reason: string };

export interface AuthPort {
  /** A new connection, before any packet: admitted (undefined) or refused. */
  admit(subject: AccessSubject): Refusal | undefined;
  /** The connection is gone (called once for every admitted or refused connection). */
  release(subject: AccessSubject): void;
  /** The CONNECT's credentials, bans included; runs before the session is touched. */
  authenticate(subject: AccessSubject, credentials: Credentials): Promise<AuthVerdict>;
  /** Count one PUBLISH; false when it is over the publish rate. Called per message: keep it cheap. */
  takePublish(subject: AccessSubject): boolean;
  /**
   * May `subject`, authenticated, take over the session of its client id, which `owner`
   * opened (a username; null: an anonymous client; undefined: not known)? A refusal is
   * sent as the CONNACK; the session and its connection are left alone.
   */
  claim(subject: AccessSubject, owner: string | null | undefined): { code: number; reason: string } | undefined;
}

export type AclAction = "publish" | "subscribe";

export interface AclPort {
  /** May `subject` publish to topic name `topic`, or subscribe to filter `topic`? */
  allows(subject: AccessSubject, action: AclAction, topic: string): boolean;
  /** May `subject` receive a message on `topic`? Called per delivery: keep it cheap. */
  allowsRead(subject: AccessSubject, topic: string): boolean;
}

/**
 * Everyone in, everything allowed, usernames taken as sent: the ports a broker gets when
 * none are wired (kernel tests). The server always wires src/auth's.
 */
export const openAccess: AuthPort & AclPort = {
  admit: () => undefined,
  release: () => {},
  authenticate: (_subject, credentials) => Promise.resolve({ ok: true, username: credentials.username }),
  takePublish: () => true,
  claim: () => undefined,
  allows: () => true,
  allowsRead: () => true,
};
