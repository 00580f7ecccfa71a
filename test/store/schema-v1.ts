import { Database } from "bun:sqlite";

/**
 * Builds a store file as the first release wrote it (schema version 1, before the
 * cursors table), so migration tests open a real old file rather than one made by
 * today's code. The DDL is a frozen copy of migration 0 → 1 in
 * src/store/sqlite/schema.ts: do not edit it when the schema changes.
 */
const V1_SCHEMA = `
  CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
  ) WITHOUT ROWID;
  INSERT INTO meta (key, value) VALUES ('next_offset', 1);

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
  CREATE INDEX deliveries_by_offset ON deliveries (offset);
  CREATE INDEX deliveries_by_packet ON deliveries (client_id, packet_id) WHERE packet_id IS NOT NULL;

  CREATE TABLE qos2_in (
    client_id TEXT NOT NULL,
    packet_id INTEGER NOT NULL,
    PRIMARY KEY (client_id, packet_id)
  ) WITHOUT ROWID;
`;

/** Creates a version 1 Ferry store at `path` (WAL mode, as v1 left it) and lets `fill` write rows into it. */
export function createV1Store(path: string, fill: (db: Database) => void = () => {}): void {
  const db = new Database(path, { create: true });
  try {
    db.exec("PRAGMA journal_mode = WAL");
    db.transaction(() => {
      db.exec(V1_SCHEMA);
      db.exec("PRAGMA application_id = 1179800153"); // 0x46525259, "FRRY"
      db.exec("PRAGMA user_version = 1");
    })();
    db.transaction(() => fill(db))();
  } finally {
    db.close(true); // finalizes fill's prepared statements, so the file is released now
  }
}

/**
 * The migrations to version 3 as released (frozen copies of 1 → 2 and 2 → 3 in
 * src/store/sqlite/schema.ts): sessions still carry their subscriptions in the record.
 */
const V1_TO_V3 = `
  CREATE TABLE cursors (
    name TEXT PRIMARY KEY,
    offset INTEGER NOT NULL
  ) WITHOUT ROWID;
  DROP INDEX deliveries_by_packet;
`;

/** Creates a version 3 Ferry store at `path` and lets `fill` write rows into it. */
export function createV3Store(path: string, fill: (db: Database) => void = () => {}): void {
  createV1Store(path);
  const db = new Database(path);
  try {
    db.transaction(() => {
      db.exec(V1_TO_V3);
      db.exec("PRAGMA user_version = 3");
    })();
    db.transaction(() => fill(db))();
  } finally {
    db.close(true);
  }
}
