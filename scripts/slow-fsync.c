/*
 * An SD card's flush latency, for benchmarks on a machine with a fast disk: an LD_PRELOAD shim
 * that makes every fsync()/fdatasync() of the process wait FSYNC_DELAY_US microseconds (default
 * 10,000) before doing the real one. The wait costs no CPU, as a card's does not; the real sync
 * still happens, so durability is unchanged. Ferry's SQLite (bun:sqlite) calls libc's fsync, so
 * the shim reaches it; a statically linked program would not be affected.
 *
 *   gcc -shared -fPIC -O2 -o /tmp/slow-fsync.so scripts/slow-fsync.c -ldl
 *   npm run bench -- --scenarios dev-fanin-q1,dev-latency \
 *       --variant "LD_PRELOAD=/tmp/slow-fsync.so FSYNC_DELAY_US=10000 $PWD/dist/ferry-linux-x64"
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

static useconds_t delay_us(void) {
  const char *s = getenv("FSYNC_DELAY_US");
  return s ? (useconds_t)atoi(s) : 10000;
}

int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  usleep(delay_us());
  return real(fd);
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  usleep(delay_us());
  return real(fd);
}
