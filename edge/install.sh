#!/bin/sh
# Install Ferry on a Linux gateway (a Raspberry Pi, an industrial PC):
#
#   /usr/local/bin/ferry                     the single executable
#   /etc/ferry/ferry.jsonc                   the config (kept if it exists)
#   /etc/ferry/ferry.example.jsonc           every key, documented (always refreshed)
#   /var/lib/ferry/                          the data directory (owned by user ferry)
#   /etc/systemd/system/ferry.service        the unit, enabled and (re)started
#
# Running it again upgrades in place and changes nothing else (idempotent).
#
# Usage: install.sh [--binary FILE] [--root DIR] [--dry-run] [--no-start]
#        install.sh --uninstall [--purge] [--root DIR] [--dry-run]
#
#   --binary FILE  the executable to install; default: ferry-linux-<arch> or ferry next to
#                  this script, else ../dist/ferry-linux-<arch> (after `npm run build`)
#   --root DIR     install under DIR instead of / (also: DESTDIR=DIR). Then no user is
#                  created, nothing is chowned and systemctl is not run: for packaging and tests
#   --dry-run      print what would be done, change nothing
#   --no-start     install and enable the unit, but do not (re)start it
#   --uninstall    stop and disable the service, remove the binary and the unit;
#                  the config, the data and the user stay
#   --purge        with --uninstall: also remove /etc/ferry, /var/lib/ferry and the user
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=${DESTDIR:-/}
binary=""
dry_run=0
uninstall=0
purge=0
start=1

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=${2:?--binary needs a FILE}; shift 2 ;;
    --binary=*) binary=${1#*=}; shift ;;
    --root) root=${2:?--root needs a DIR}; shift 2 ;;
    --root=*) root=${1#*=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    --no-start) start=0; shift ;;
    --uninstall) uninstall=1; shift ;;
    --purge) purge=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$purge" = 1 ] && [ "$uninstall" = 0 ]; then
  echo "install.sh: --purge only goes with --uninstall" >&2
  exit 2
fi

root=${root%/}
live=0                       # installing into the running system: users, ownership, systemd
[ -z "$root" ] && live=1
bindir="$root/usr/local/bin"
confdir="$root/etc/ferry"
datadir="$root/var/lib/ferry"
unitdir="$root/etc/systemd/system"
user=ferry

say() {
  if [ "$dry_run" = 1 ]; then echo "install.sh (dry run): $*"; else echo "install.sh: $*"; fi
}
run() {
  if [ "$dry_run" = 1 ]; then
    echo "would run: $*"
  else
    "$@"
  fi
}
have_systemd() { [ "$live" = 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

if [ "$live" = 1 ] && [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo), or use --root DIR / --dry-run" >&2
  exit 1
fi

# ---------------------------------------------------------------------------- uninstall
if [ "$uninstall" = 1 ]; then
  if have_systemd; then
    if [ -f "$unitdir/ferry.service" ]; then
      run systemctl disable --now ferry.service || true
    fi
  else
    say "not the live system or no systemd: not stopping or disabling the unit"
  fi
  run rm -f "$unitdir/ferry.service" "$bindir/ferry"
  have_systemd && run systemctl daemon-reload
  if [ "$purge" = 1 ]; then
    run rm -rf "$confdir" "$datadir"
    if [ "$live" = 1 ] && id "$user" >/dev/null 2>&1; then
      run userdel "$user"
    fi
    if [ "$live" = 1 ]; then say "removed Ferry, its config, its data and the user $user"
    else say "removed Ferry, its config and its data"; fi
  else
    say "removed the binary and the unit; kept $confdir and $datadir (--purge removes them)"
  fi
  exit 0
fi

# ------------------------------------------------------------------------------ install
case "$(uname -m)" in
  x86_64|amd64) arch=linux-x64 ;;
  aarch64|arm64) arch=linux-arm64 ;;
  armv6l|armv7l)
    echo "install.sh: 32-bit ARM is not supported (Bun runs on 64-bit only);" \
      "install a 64-bit OS (Raspberry Pi OS 64-bit) on a Pi 3, 4 or 5" >&2
    exit 1 ;;
  *) echo "install.sh: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac

if [ -z "$binary" ]; then
  for candidate in "$here/ferry-$arch" "$here/ferry" "$here/../dist/ferry-$arch"; do
    if [ -f "$candidate" ]; then binary=$candidate; break; fi
  done
fi
if [ -z "$binary" ] || [ ! -f "$binary" ]; then
  echo "install.sh: no Ferry executable for $arch; build one (npm run build) or pass --binary FILE" >&2
  exit 1
fi
for f in ferry.service ferry.example.jsonc; do
  [ -f "$here/$f" ] || { echo "install.sh: $here/$f is missing" >&2; exit 1; }
done

# The user the service runs as: a system account without a shell or a home of its own.
if [ "$live" = 1 ]; then
  if id "$user" >/dev/null 2>&1; then
    say "user $user exists"
  else
    run useradd --system --user-group --home-dir /var/lib/ferry --no-create-home \
      --shell /usr/sbin/nologin --comment "Ferry MQTT broker" "$user"
  fi
else
  say "installing under $root: not creating the user $user"
fi

run mkdir -p "$bindir" "$confdir" "$datadir" "$unitdir"

# The binary: copied next to the old one and renamed over it, so a running ferry keeps
# its (old) file and the swap is atomic.
if [ -f "$bindir/ferry" ] && cmp -s "$binary" "$bindir/ferry"; then
  say "$bindir/ferry is up to date"
  binary_changed=0
else
  run cp "$binary" "$bindir/.ferry.new"
  run chmod 0755 "$bindir/.ferry.new"
  run mv -f "$bindir/.ferry.new" "$bindir/ferry"
  say "installed $bindir/ferry"
  binary_changed=1
fi

run cp "$here/ferry.example.jsonc" "$confdir/ferry.example.jsonc"
run chmod 0644 "$confdir/ferry.example.jsonc"
if [ -f "$confdir/ferry.jsonc" ]; then
  say "keeping $confdir/ferry.jsonc"
else
  run cp "$here/ferry.example.jsonc" "$confdir/ferry.jsonc"
  run chmod 0640 "$confdir/ferry.jsonc"
  say "installed $confdir/ferry.jsonc (edit it, then: systemctl restart ferry)"
fi
# The example config requires passwords (it listens on the network): start with an empty
# password file, so nobody gets in until users are added.
if [ -f "$confdir/passwd" ]; then
  say "keeping $confdir/passwd"
else
  run touch "$confdir/passwd"
  run chmod 0640 "$confdir/passwd"
  say "created an empty $confdir/passwd; add users with: ferry passwd $confdir/passwd USER"
fi
run chmod 0750 "$datadir"
if [ "$live" = 1 ]; then
  run chown root:"$user" "$confdir/passwd"
  run chown root:"$user" "$confdir/ferry.jsonc"
  run chown "$user":"$user" "$datadir"
fi

unit_changed=1
if [ -f "$unitdir/ferry.service" ] && cmp -s "$here/ferry.service" "$unitdir/ferry.service"; then
  unit_changed=0
else
  run cp "$here/ferry.service" "$unitdir/ferry.service"
  run chmod 0644 "$unitdir/ferry.service"
fi

# A config that does not validate must not replace a running broker.
if [ "$dry_run" = 0 ]; then
  if "$bindir/ferry" version >/dev/null 2>&1; then
    # As the service user when there is one, so a file it cannot read fails here, not at start.
    as_user=""
    if [ "$live" = 1 ] && command -v runuser >/dev/null 2>&1; then as_user="runuser -u $user --"; fi
    # Into another root (packaging), the files the config names are looked for under it.
    root_arg=""
    if [ -n "$root" ]; then root_arg="--root $root"; fi
    $as_user "$bindir/ferry" check-config $root_arg "$confdir/ferry.jsonc" || {
      echo "install.sh: $confdir/ferry.jsonc has problems (above); fix it and run install.sh again" >&2
      exit 2
    }
  else
    say "cannot run $bindir/ferry on this machine; config not checked"
  fi
fi

if have_systemd; then
  [ "$unit_changed" = 1 ] && run systemctl daemon-reload
  run systemctl enable ferry.service
  if [ "$start" = 1 ]; then
    if systemctl is-active --quiet ferry.service; then
      if [ "$binary_changed" = 1 ] || [ "$unit_changed" = 1 ]; then run systemctl restart ferry.service; fi
    else
      run systemctl start ferry.service
    fi
    say "ferry is running: systemctl status ferry · journalctl -u ferry -f"
  fi
else
  say "not the live system or no systemd: unit installed but not enabled or started"
fi
