/**
 * sd_notify(3) for Bun, with no native addon: one datagram to the AF_UNIX socket named by
 * $NOTIFY_SOCKET, sent through libc's socket(2)/sendto(2) called with `bun:ffi`.
 *
 * Why FFI: the notify socket is SOCK_DGRAM, and Bun has no unix datagram socket —
 * `Bun.connect({ unix })` is SOCK_STREAM (refused by a datagram socket), `Bun.udpSocket`
 * and `node:dgram` speak only UDP over IP. Spawning `systemd-notify` would work only with
 * `NotifyAccess=all` (the message comes from another PID) and races the helper's exit.
 * FFI needs nothing beyond the C library every glibc Linux has, and works in the compiled
 * executable (`bun build --compile` keeps `bun:ffi`); the library is opened on the first
 * message only, so a broker that is not under systemd never loads it.
 */
import type { Notifier } from "../sd-notify.ts";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
/** sizeof(sockaddr_un.sun_path) on Linux. */
const SUN_PATH_MAX = 108;

interface Libc {
  clock_gettime(clock: number, timespec: BigInt64Array): number;
  socket(domain: number, type: number, protocol: number): number;
  sendto(fd: number, buf: Uint8Array, len: number, flags: number, addr: Uint8Array, addrlen: number): number | bigint;
  close(fd: number): number;
}

let libc: Libc | undefined;

async function openLibc(): Promise<Libc> {
  if (libc) return libc;
  const { dlopen, FFIType } = await import("bun:ffi");
  const lib = dlopen(process.arch === "arm64" || process.arch === "x64" ? "libc.so.6" : "libc.so", {
    socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    sendto: {
      args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i32, FFIType.ptr, FFIType.u32],
      returns: FFIType.i64,
    },
    close: { args: [FFIType.i32], returns: FFIType.i32 },
    clock_gettime: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  });
  libc = lib.symbols as unknown as Libc;
  return libc;
}

/** `sockaddr_un` for `path`; "@name" is Linux's abstract namespace (a leading NUL byte). */
export function sockaddrUn(path: string): Uint8Array {
  const name = new TextEncoder().encode(path);
  const abstract = name[0] === 0x40; // '@'
  if (name.length > SUN_PATH_MAX - (abstract ? 0 : 1)) throw new Error(`NOTIFY_SOCKET path too long: ${path}`);
  // Path sockets carry their terminating NUL; abstract names are exactly their bytes.
  const addr = new Uint8Array(2 + name.length + (abstract ? 0 : 1));
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(name, 2);
  if (abstract) addr[2] = 0;
  return addr;
}

const CLOCK_MONOTONIC = 1;

/**
 * CLOCK_MONOTONIC in microseconds, as MONOTONIC_USEC must be (systemd compares it with its
 * own clock). Not process.hrtime: Bun's counts from the process start.
 */
export async function monotonicUsec(): Promise<bigint> {
  const c = await openLibc();
  const ts = new BigInt64Array(2); // struct timespec { tv_sec; tv_nsec } on 64-bit Linux
  if (c.clock_gettime(CLOCK_MONOTONIC, ts) !== 0) throw new Error("clock_gettime(CLOCK_MONOTONIC) failed");
  return ts[0]! * 1_000_000n + ts[1]! / 1000n;
}

/** A notifier for $NOTIFY_SOCKET `socketPath`. */
export function bunNotifier(socketPath: string): Notifier {
  const addr = sockaddrUn(socketPath);
  return async (state: string) => {
    const c = await openLibc();
    const fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new Error("sd_notify: socket(AF_UNIX, SOCK_DGRAM) failed");
    try {
      const bytes = new TextEncoder().encode(state);
      const sent = Number(c.sendto(fd, bytes, bytes.length, 0, addr, addr.length));
      if (sent !== bytes.length) throw new Error(`sd_notify: sendto ${socketPath} failed`);
    } finally {
      c.close(fd);
    }
  };
}
