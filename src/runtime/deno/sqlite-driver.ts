import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import {
  runTransaction,
  type SqliteDatabase,
  type SqliteDriver,
  type SqliteStatement,
  type SqlRow,
  type SqlValue,
} from "../../store/sqlite/driver.ts";
import { backgroundFsync } from "../background-fsync.ts";
import { threadWriteCounter } from "../thread-io.ts";

/**
 * The SQLite driver over `node:sqlite` (DatabaseSync), which Deno provides. Only
 * typechecked so far: Deno is not part of the test run yet.
 */
export const nodeSqliteDriver: SqliteDriver = {
  name: "node:sqlite",

  open(path: string): SqliteDatabase {
    const db = new DatabaseSync(path, { open: true });
    const exec = (sql: string) => {
      db.exec(sql);
    };
    return {
      exec,
      prepare(sql: string): SqliteStatement {
        const statement = db.prepare(sql);
        const bind = (params: SqlValue[]) => params as SQLInputValue[];
        return {
          run: (...params) => ({ changes: Number(statement.run(...bind(params)).changes) }),
          all: (...params) => statement.all(...bind(params)) as SqlRow[],
          get: (...params) => statement.get(...bind(params)) as SqlRow | undefined,
        };
      },
      transaction: (fn) => runTransaction(exec, fn),
      close() {
        db.close();
      },
    };
  },

  writeCounter: threadWriteCounter,

  backgroundSync: backgroundFsync,

  resultCode(error: unknown): number | undefined {
    // node:sqlite throws Error{ code: "ERR_SQLITE_ERROR", errcode, errstr }, where
    // errcode is the extended result code; the low byte is the primary code.
    if (!(error instanceof Error)) return undefined;
    const errcode = (error as Error & { errcode?: unknown }).errcode;
    if (typeof errcode === "number") return errcode & 0xff;
    // Should a runtime's node:sqlite omit errcode, SQLite's fixed messages
    // (sqlite3_errstr) still identify the codes the store reacts to.
    if ((error as Error & { code?: unknown }).code !== "ERR_SQLITE_ERROR") return undefined;
    for (const [text, code] of FIXED_MESSAGES) if (error.message.includes(text)) return code;
    return undefined;
  },
};

const FIXED_MESSAGES: ReadonlyArray<readonly [string, number]> = [
  ["database or disk is full", 13],
  ["file is not a database", 26],
  ["database disk image is malformed", 11],
  ["database is locked", 5],
  ["database table is locked", 6],
  ["disk I/O error", 10],
];
