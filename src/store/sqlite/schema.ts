import type { SqliteDatabase } from "./driver.ts";

/**
 * The Ferry store schema and its migrations, versioned by `PRAGMA user_version`.
 * `PRAGMA application_id` marks a file as Ferry's, so that a SQLite file written by
 * anything else (which may well have its own user_version) is recognised and left
 * alone instead of being "migrated".
 */

/** "FRRY" in ASCII. */
export const APPLICATION_ID = 0x46525259;

/**
 * MIGRATIONS[n] takes the schema from version n to n + 1. Append only: a released
 * migration is never edited, since stores in the field already ran it.
 */
const MIGRATIONS: readonly string[] = [
  /* 0 → 1: the initial schema. */ `
  -- Log high-water mark: the store writes it before trimming, so offsets are never
  -- reused even when every message has been trimmed.
  CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
  ) WITHOUT ROWID;
  INSERT INTO meta (key, value) VALUES ('next_offset', 1);

  -- The log. offset is the rowid, so appends go to the right edge of the b-tree
  -- and trimming the oldest empties whole pages.
  CREATE TABLE messages (
    offset INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    expires_at INTEGER,
    props TEXT,
    origin TEXT NOT NULL
  );

  -- Retained messages carry their own copy, so they outlive the log's trimming.
  CREATE TABLE retained (
    topic TEXT PRIMARY KEY,
    offset INTEGER NOT NULL,
    payload BLOB,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    expires_at INTEGER,
    props TEXT,
    origin TEXT NOT NULL
  );

  CREATE TABLE sessions (
    client_id TEXT PRIMARY KEY,
    record TEXT NOT NULL
  );

  -- phase: 0 queued, 1 sent, 2 pubrel. Clustered by (client_id, offset): recovery
  -- reads each session's queue in delivery order without sorting.
  CREATE TABLE deliveries (
    client_id TEXT NOT NULL,
    offset INTEGER NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    sub_ids TEXT,
    packet_id INTEGER,
    phase INTEGER NOT NULL,
    PRIMARY KEY (client_id, offset)
  ) WITHOUT ROWID;
  -- "Is this message still referenced?" when trimming the log.
  CREATE INDEX deliveries_by_offset ON deliveries (offset);
  -- PUBACK / PUBREC / PUBCOMP name a delivery by packet id.
  CREATE INDEX deliveries_by_packet ON deliveries (client_id, packet_id) WHERE packet_id IS NOT NULL;

  CREATE TABLE qos2_in (
    client_id TEXT NOT NULL,
    packet_id INTEGER NOT NULL,
    PRIMARY KEY (client_id, packet_id)
  ) WITHOUT ROWID;
  `,

  /* 1 → 2: log readers' cursors (the uplink). */ `
  -- A reader has finished with every offset <= its cursor. Age trimming keeps the
  -- messages above the lowest cursor; the size quota may still drop them.
  CREATE TABLE cursors (
    name TEXT PRIMARY KEY,
    offset INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,

  /* 2 → 3: deliveries are named by (client_id, offset) only. */ `
  -- Nothing looks a delivery up by packet id any more: acks resolve their packet id to
  -- an offset in memory. The index only cost a write per message sent.
  DROP INDEX deliveries_by_packet;
  `,

  /* 3 → 4: one row per subscription. */ `
  -- A SUBSCRIBE writes the subscription it changes, not the session's whole record: with
  -- every subscription in the record, a session's 20,000th SUBSCRIBE rewrote 20,000 of
  -- them (issue 13). The session's record keeps its own fields only.
  CREATE TABLE subscriptions (
    client_id TEXT NOT NULL,
    filter TEXT NOT NULL,
    qos INTEGER NOT NULL,
    no_local INTEGER NOT NULL,
    retain_as_published INTEGER NOT NULL,
    retain_handling INTEGER NOT NULL,
    subscription_id INTEGER,
    PRIMARY KEY (client_id, filter)
  ) WITHOUT ROWID;
  INSERT OR REPLACE INTO subscriptions
    (client_id, filter, qos, no_local, retain_as_published, retain_handling, subscription_id)
    SELECT s.client_id,
           json_extract(j.value, '$.filter'),
           json_extract(j.value, '$.qos'),
           coalesce(json_extract(j.value, '$.noLocal'), 0),
           coalesce(json_extract(j.value, '$.retainAsPublished'), 0),
           coalesce(json_extract(j.value, '$.retainHandling'), 0),
           json_extract(j.value, '$.subscriptionId')
      FROM sessions s, json_each(s.record, '$.subscriptions') j;
  UPDATE sessions SET record = json_remove(record, '$.subscriptions');
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * Reads the file's identity without writing anything and returns its schema version
 * (0 for an empty database). Throws when the file belongs to something else or to a
 * newer Ferry: such a file must not be touched.
 */
export function inspectSchema(db: SqliteDatabase, path: string): number {
  const applicationId = Number(db.prepare("PRAGMA application_id").get()?.application_id ?? 0);
  const version = Number(db.prepare("PRAGMA user_version").get()?.user_version ?? 0);
  const tables = db
    .prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'")
    .all()
    .map((row) => String(row.name));

  if (applicationId === 0 && version === 0 && tables.length === 0) return 0;
  if (applicationId !== APPLICATION_ID || version === 0) {
    const what = tables.length > 0 ? `tables ${tables.slice(0, 5).join(", ")}` : "no tables";
    throw new Error(
      `${path} is a SQLite database that Ferry did not create (application_id ${applicationId}, ` +
        `user_version ${version}, ${what}); refusing to use it. Point the store at a new file.`,
    );
  }
  if (version > SCHEMA_VERSION) {
    throw new Error(
      `${path} has store schema version ${version}, newer than this Ferry understands ` +
        `(${SCHEMA_VERSION}); it was written by a newer release. Refusing to open it.`,
    );
  }
  return version;
}

/** Brings the schema from `from` to SCHEMA_VERSION, each step in its own transaction. */
export function migrate(db: SqliteDatabase, from: number): void {
  for (let version = from; version < SCHEMA_VERSION; version++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[version]!);
      // Both pragmas live in the file header and commit with the transaction, so a
      // crash mid-migration leaves the previous version intact.
      if (version === 0) db.exec(`PRAGMA application_id = ${APPLICATION_ID}`);
      db.exec(`PRAGMA user_version = ${version + 1}`);
    });
  }
}
