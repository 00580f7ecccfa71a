/**
 * The part of the `Deno` namespace the Deno adapters use, typed here so that the same
 * files typecheck under `tsc` (with Bun's types, where `Deno` does not exist) and under
 * `deno check` (where it does). Only this module touches the global.
 */
export interface DenoNetAddr {
  hostname: string;
  port: number;
}

export interface DenoConn {
  readonly remoteAddr: DenoNetAddr;
  read(buffer: Uint8Array): Promise<number | null>;
  write(data: Uint8Array): Promise<number>;
  setNoDelay(noDelay?: boolean): void;
  close(): void;
}

export interface DenoListener {
  readonly addr: DenoNetAddr;
  accept(): Promise<DenoConn>;
  close(): void;
}

export interface DenoHttpServer {
  readonly addr: DenoNetAddr;
  shutdown(): Promise<void>;
}

export interface DenoServeHandlerInfo {
  remoteAddr: DenoNetAddr;
}

export interface DenoApi {
  readonly version: { deno: string };
  readonly build: { os: string; arch: string };
  readonly args: string[];
  readonly errors: { NotFound: new (...args: never[]) => Error };
  listen(options: { hostname: string; port: number; transport: "tcp" }): DenoListener;
  connect(options: { hostname: string; port: number; transport: "tcp" }): Promise<DenoConn>;
  connectTls(
    options: { hostname: string; port: number; caCerts?: string[]; cert?: string; key?: string },
  ): Promise<DenoConn & { handshake(): Promise<unknown> }>;
  listenTls(options: { hostname: string; port: number; cert: string; key: string; transport: "tcp" }): DenoListener;
  serve(
    options: { hostname: string; port: number; onListen?: (addr: DenoNetAddr) => void },
    handler: (request: Request, info: DenoServeHandlerInfo) => Response | Promise<Response>,
  ): DenoHttpServer;
  upgradeWebSocket(
    request: Request,
    options?: { protocol?: string },
  ): { socket: WebSocket; response: Response };
  readTextFile(path: string): Promise<string>;
  readFile(path: string): Promise<Uint8Array>;
  readonly env: { get(name: string): string | undefined };
  readonly pid: number;
  addSignalListener(signal: "SIGINT" | "SIGTERM" | "SIGHUP", handler: () => void): void;
  exit(code: number): never;
}

export const deno: DenoApi = (globalThis as unknown as { Deno: DenoApi }).Deno;
