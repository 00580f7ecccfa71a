/**
 * A stand-in for systemd's notify socket: a unix datagram socket the test listens on (with
 * python3, since neither Bun nor Node can receive unix datagrams), collecting each datagram
 * a service sends to $NOTIFY_SOCKET. "@name" listens in the abstract namespace.
 */
import type { Subprocess } from "bun";

const LISTENER = `
import socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0" + path[1:] if path.startswith("@") else path)
print("bound", flush=True)
while True:
    print(repr(s.recv(65536).decode()), flush=True)
`;

export interface NotifySocket {
  readonly path: string;
  /** Every datagram so far, in order. */
  messages(): string[];
  /** Resolves once a datagram (from the `from`th on) satisfies `match`; rejects after `ms`. */
  waitFor(match: (message: string) => boolean, ms?: number, from?: number): Promise<string>;
  close(): Promise<void>;
}

export const python3 = Bun.which("python3");

export async function listenNotifySocket(path: string): Promise<NotifySocket> {
  if (!python3) throw new Error("python3 is needed to listen on a unix datagram socket");
  const proc: Subprocess<"ignore", "pipe", "pipe"> = Bun.spawn([python3, "-c", LISTENER, path], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const messages: string[] = [];
  /** Called after each datagram (waitFor's checks). */
  const listeners = new Set<() => void>();
  let bound: () => void;
  const isBound = new Promise<void>((resolve) => (bound = resolve));
  void (async () => {
    const decoder = new TextDecoder();
    let buffered = "";
    const reader = proc.stdout.getReader();
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      buffered += decoder.decode(r.value, { stream: true });
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line === "bound") bound!();
        // Python's repr of a str: single-quoted, with \\n and \\' escapes.
        else {
          messages.push(line.slice(1, -1).replace(/\\n/g, "\n").replace(/\\'/g, "'"));
          for (const l of listeners) l();
        }
      }
    }
  })();
  const guard = setTimeout(() => proc.kill("SIGKILL"), 10_000);
  await Promise.race([
    isBound,
    proc.exited.then(async () => {
      throw new Error(`notify listener exited: ${await new Response(proc.stderr).text()}`);
    }),
  ]);
  clearTimeout(guard);
  return {
    path,
    messages: () => [...messages],
    waitFor(match, ms = 10_000, from = 0) {
      return new Promise<string>((resolve, reject) => {
        const check = () => {
          const found = messages.slice(from).find(match);
          if (found === undefined) return;
          done();
          resolve(found);
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no such notification; got ${JSON.stringify(messages)}`));
        }, ms);
        const done = () => {
          clearTimeout(timer);
          listeners.delete(check);
        };
        listeners.add(check);
        check();
      });
    },
    async close() {
      proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}
