import { Database, type SQLQueryBindings } from "bun:sqlite";
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

/** The SQLite driver over `bun:sqlite`; the only module that imports it. */
export const bunSqliteDriver: SqliteDriver = {
  name: "bun:sqlite",

  open(path: string): SqliteDatabase {
    // strict: unknown named parameters throw instead of binding NULL silently.
    const db = new Database(path, { create: true, readwrite: true, strict: true });
    // bun:sqlite closes lazily while prepared statements are alive (sqlite3_close_v2),
    // which would keep the file and its exclusive lock open until GC. Track them and
    // finalize them in close(), so close() really releases the file.
    const statements: Array<{ finalize(): void }> = [];
    const exec = (sql: string) => {
      db.exec(sql);
    };
    return {
      exec,
      prepare(sql: string): SqliteStatement {
        const statement = db.prepare(sql);
        statements.push(statement);
        const bind = (params: SqlValue[]) => params as SQLQueryBindings[];
        return {
          run: (...params) => ({ changes: statement.run(...bind(params)).changes }),
          all: (...params) => statement.all(...bind(params)) as SqlRow[],
          // bun returns null for "no row"; the interface says undefined.
          get: (...params) => (statement.get(...bind(params)) as SqlRow | null) ?? undefined,
        };
      },
      transaction: (fn) => runTransaction(exec, fn),
      close() {
        for (const statement of statements) statement.finalize();
        statements.length = 0;
        db.close(true);
      },
    };
  },

  writeCounter: threadWriteCounter,

  backgroundSync: backgroundFsync,

  resultCode(error: unknown): number | undefined {
    // bun:sqlite throws SQLiteError with `errno` = the extended result code
    // (e.g. 1555 SQLITE_CONSTRAINT_PRIMARYKEY); the low byte is the primary code.
    if (error instanceof Error && error.name === "SQLiteError") {
      const errno = (error as Error & { errno?: unknown }).errno;
      if (typeof errno === "number") return errno & 0xff;
    }
    return undefined;
  },
};
