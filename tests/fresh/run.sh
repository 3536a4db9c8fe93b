#!/bin/bash
# The README's two commands on a fresh Debian 12, as a newcomer runs them.
#
#   tests/fresh/run.sh [CTEST_ARGS...]
#
# debootstraps a minbase Debian 12 (bookworm) into a temporary directory,
# installs git in it (nothing else), clones the committed HEAD of this
# checkout into /root/popbridge and, in that chroot:
#   demo    `bash scripts/demo.sh` in the background; waits for 127.0.0.1:1110,
#           fetches message 1 with curl, then stops the demo with SIGINT (as
#           Ctrl-C would) and checks that it exits
#   bench   builds the benchmark's load generator on its own (`cmake -S bench`,
#           what .ci/run's bench/run.py does): the demo configured build/
#           without it, so this keeps its zlib covered
#   tests   `bash scripts/test.sh CTEST_ARGS...` (by default everything: the
#           ASan+UBSan pass and the release pass, 20-40 minutes on 2 cores)
# and prints a PASS or FAIL line for each. Exits non-zero if any failed.
#
# Opt-in, like tests/docker/run.sh: needs root, mount and debootstrap
# (installed with apt-get when missing) and a reachable Debian mirror, and is
# not part of scripts/test.sh. The chroot shares this machine's network: the
# demo's port 127.0.0.1:1110 must be free, and the tests pick free ports of
# 127.0.0.1 as they do anywhere.
#
# Environment:
#   DEBIAN_MIRROR       mirror for debootstrap (default: the one this machine's
#                       apt uses for bookworm, else http://deb.debian.org/debian)
#   FRESH_DIR           parent of the temporary directory (default ${TMPDIR:-/tmp})
#   KEEP_FRESH_DIR=1    keep the tree (and the logs) afterwards; mounts are
#                       always undone
#   FRESH_CACHE_DIR     reuse a debootstrapped tarball from this directory
#                       (made there on the first run); without it, every run
#                       debootstraps anew
#   FRESH_PHASES        which of "demo bench tests" to run (default all three;
#                       the clone is always made)
#   FRESH_HOST_CAS=0    do not copy this machine's /usr/local/share/ca-certificates
#                       into the chroot (copied by default: a TLS-inspecting proxy's
#                       CA is needed there as here, e.g. for npm)
#   DEMO_TIMEOUT        seconds for the demo to install, build and listen
#                       (default 3600)
#   SKIP_SANITIZERS, CI, BUILD_DIR, ASAN_BUILD_DIR
#                       passed to the chroot's scripts (see scripts/test.sh)
#
# Quick check of the packages (a few minutes plus the install and one build):
#   SKIP_SANITIZERS=1 tests/fresh/run.sh -R 'LineParser|ConfigLoader|integration.test_commands'
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DEMO_PORT=1110
PHASES=${FRESH_PHASES:-demo bench tests}
DEMO_TIMEOUT=${DEMO_TIMEOUT:-3600}
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)

die() { echo "run.sh: $*" >&2; exit 1; }
say() { echo "==== fresh: $*"; }

# The mirror this machine's apt uses for bookworm (one-line and deb822 sources).
apt_mirror() {
  local f
  {
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -r "$f" ] || continue
      awk '$1 == "deb" {
             i = 2
             if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
             if ($(i + 1) == "bookworm") print $i
           }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -r "$f" ] || continue
      awk 'BEGIN { RS = "" }
           /(^|\n)Types:[^\n]*deb([ \t]|\n|$)/ && /(^|\n)Suites:[^\n]*[ \t]bookworm([ \t]|\n|$)/ {
             if (match($0, /(^|\n)URIs:[ \t]*[^ \t\n]+/)) {
               s = substr($0, RSTART, RLENGTH); sub(/^\n?URIs:[ \t]*/, "", s); print s
             }
           }' "$f"
    done
  } | head -n 1
}

port_in_use() {  # PORT: something accepts connections on 127.0.0.1:PORT
  if command -v ss >/dev/null && [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; then
    return 0
  fi
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount)"
command -v git >/dev/null || die "git not found"
git -C "$REPO" rev-parse --verify -q HEAD >/dev/null || die "$REPO has no commit to clone"
if ! command -v debootstrap >/dev/null; then
  echo "run.sh: installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null \
    || { apt-get update -q >/dev/null || true
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null; } \
    || die "could not install debootstrap (apt-get install debootstrap)"
fi
MIRROR=${DEBIAN_MIRROR:-$(apt_mirror)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
case " $PHASES " in
  *" demo "*)
    if port_in_use "$DEMO_PORT"; then
      die "127.0.0.1:$DEMO_PORT is in use on this machine (the chroot shares its network, and the demo needs that port): stop what listens there first"
    fi
    ;;
esac

mkdir -p "${FRESH_DIR:-${TMPDIR:-/tmp}}"
WORK=$(realpath "$(mktemp -d "${FRESH_DIR:-${TMPDIR:-/tmp}}/popbridge-fresh.XXXXXX")")
ROOTFS=$WORK/rootfs
MOUNTED=()
DEMO_PID=
RESULTS=()
failed=0
t_start=$SECONDS

chroot_pids() {  # processes whose root directory is the chroot
  local p root
  for p in /proc/[0-9]*; do
    root=$(readlink "$p/root" 2>/dev/null) || continue
    [ "$root" = "$ROOTFS" ] && echo "${p#/proc/}"
  done
  return 0
}

stop_chroot_pids() {  # SIGTERM, then SIGKILL, to whatever runs in the chroot
  local pids
  pids=$(chroot_pids)
  [ -n "$pids" ] || return 0
  echo "run.sh: stopping processes left in the chroot: $(echo $pids)" >&2
  kill -TERM $pids 2>/dev/null
  for _ in $(seq 1 20); do
    pids=$(chroot_pids)
    [ -z "$pids" ] && return 0
    sleep 0.5
  done
  kill -KILL $pids 2>/dev/null
  sleep 0.5
}

cleanup() {
  local rc=$?
  set +e
  # Whatever is still running in the chroot (a demo that did not stop, a
  # Dovecot left behind) holds the mounts.
  stop_chroot_pids
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}" \
      || echo "run.sh: could not unmount ${MOUNTED[i]}" >&2
  done
  if awk -v w="$WORK/" 'index($2, w) == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
    echo "run.sh: something is still mounted below $WORK: not removing it" >&2
  elif [ -n "${KEEP_FRESH_DIR:-}" ]; then
    echo "run.sh: kept $WORK (chroot: $ROOTFS)"
  else
    rm -rf --one-file-system "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

result() {  # PASS|FAIL NAME SECONDS [DETAIL]
  local line="$1 $2 ($3s)${4:+: $4}"
  echo "$line"
  RESULTS+=("$line")
  [ "$1" = PASS ] || failed=1
}

# ---- a minbase Debian 12 ---------------------------------------------------
t0=$SECONDS
CACHE_TAR=
[ -z "${FRESH_CACHE_DIR:-}" ] || CACHE_TAR=$FRESH_CACHE_DIR/debian-bookworm-minbase-$ARCH.tar
if [ -n "$CACHE_TAR" ] && [ -f "$CACHE_TAR" ]; then
  say "unpacking $CACHE_TAR"
  minbase_from=$CACHE_TAR
  mkdir "$ROOTFS"
  tar -C "$ROOTFS" -xpf "$CACHE_TAR"
else
  say "debootstrap --variant=minbase bookworm $ROOTFS $MIRROR"
  minbase_from="debootstrap from $MIRROR"
  debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
  if [ -n "$CACHE_TAR" ]; then
    mkdir -p "$FRESH_CACHE_DIR"
    tar -C "$ROOTFS" -cf "$CACHE_TAR.tmp" . && mv "$CACHE_TAR.tmp" "$CACHE_TAR"
    echo "run.sh: saved $CACHE_TAR"
  fi
fi
# mktemp and debootstrap leave the root 0700; on an installed Debian it is
# 0755 (Dovecot's mail processes run as nobody).
chmod 755 "$ROOTFS"
# What every installed Debian has (debootstrap writes neither).
cat >"$ROOTFS/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	$(hostname 2>/dev/null || echo debian)
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
if [ ! -s "$ROOTFS/etc/resolv.conf" ] && [ -r /etc/resolv.conf ]; then
  rm -f "$ROOTFS/etc/resolv.conf"
  cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
fi
# Certificate authorities added by hand to this machine (e.g. those of a
# TLS-inspecting proxy, without which npm cannot reach its registry from
# here): the chroot uses this machine's network, so it trusts them too
# (ca-certificates, which install-deps.sh installs, adds them to the store).
# FRESH_HOST_CAS=0 leaves them out.
if [ "${FRESH_HOST_CAS:-1}" != 0 ] && [ -n "$(ls -A /usr/local/share/ca-certificates 2>/dev/null)" ]; then
  mkdir -p "$ROOTFS/usr/local/share/ca-certificates"
  cp -a /usr/local/share/ca-certificates/. "$ROOTFS/usr/local/share/ca-certificates/"
  say "trusting this machine's local CAs: $(ls /usr/local/share/ca-certificates | tr '\n' ' ')"
fi
say "Debian $(cat "$ROOTFS/etc/debian_version") minbase ready in $((SECONDS - t0))s"
t_bootstrap=$((SECONDS - t0))

# ---- mounts ----------------------------------------------------------------
mount_in() {  # TARGET MOUNT-ARGS...: mount, never propagating back to the host
  local target=$ROOTFS$1
  shift
  mkdir -p "$target"
  mount "$@" "$target"
  MOUNTED+=("$target")
  mount --make-private "$target"
}
mount_in /proc -t proc proc
mount_in /dev --bind /dev
mount_in /dev/pts --bind /dev/pts
mount_in /dev/shm -t tmpfs -o mode=1777,nosuid,nodev tmpfs
mount_in /tmp -t tmpfs -o mode=1777,nosuid,nodev tmpfs

# A root login shell's environment, nothing from this one's.
CHROOT_ENV=(env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash
  TERM="${TERM:-dumb}" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
for v in SKIP_SANITIZERS CI BUILD_DIR ASAN_BUILD_DIR; do
  [ -z "${!v+x}" ] || CHROOT_ENV+=("$v=${!v}")
done
in_chroot() { chroot "$ROOTFS" "${CHROOT_ENV[@]}" "$@"; }

# ---- git and the clone -----------------------------------------------------
t0=$SECONDS
say "apt-get install git (nothing else)"
in_chroot bash -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends git' \
  >"$WORK/git.log" 2>&1 \
  || { tail -n 30 "$WORK/git.log" >&2; die "installing git in the chroot failed (log: $WORK/git.log)"; }
# The committed HEAD of this checkout (uncommitted changes are not part of it).
branch=$(git -C "$REPO" symbolic-ref -q HEAD || true)
git -C "$REPO" bundle create "$ROOTFS/root/popbridge.bundle" HEAD $branch >"$WORK/bundle.log" 2>&1 \
  || { cat "$WORK/bundle.log" >&2; die "git bundle failed"; }
in_chroot bash -c 'cd /root && git clone -q popbridge.bundle popbridge && rm popbridge.bundle' \
  || die "git clone in the chroot failed"
commit=$(in_chroot git -C /root/popbridge log -1 --format='%h %s' | cut -c1-72)
say "cloned $commit in $((SECONDS - t0))s"
t_clone=$((SECONDS - t0))

# ---- demo: bash scripts/demo.sh --------------------------------------------
demo() {
  local t0=$SECONDS log=$WORK/demo.log up='' waited=0 out rc
  say "demo: bash scripts/demo.sh (installs the packages, builds popbridge; log: $log)"
  if port_in_use "$DEMO_PORT"; then
    result FAIL demo 0 "127.0.0.1:$DEMO_PORT was taken on this machine meanwhile"
    return
  fi
  # Not through in_chroot (a function would run in a subshell): every step
  # execs the next, so DEMO_PID ends up being demo.py itself.
  chroot "$ROOTFS" "${CHROOT_ENV[@]}" bash -c 'cd /root/popbridge && exec bash scripts/demo.sh' \
    </dev/null >"$log" 2>&1 &
  DEMO_PID=$!
  while [ $waited -lt "$DEMO_TIMEOUT" ]; do
    if ! kill -0 "$DEMO_PID" 2>/dev/null; then
      wait "$DEMO_PID" && rc=0 || rc=$?
      DEMO_PID=
      tail -n 40 "$log"
      result FAIL demo $((SECONDS - t0)) "scripts/demo.sh exited ($rc) before listening on 127.0.0.1:$DEMO_PORT"
      return
    fi
    if grep -q 'popbridge demo is running' "$log" && port_in_use "$DEMO_PORT"; then
      up=1
      break
    fi
    sleep 2
    waited=$((waited + 2))
    if [ $((waited % 120)) = 0 ]; then
      echo "  (${waited}s) $(tail -n 1 "$log" | cut -c1-150)"
    fi
  done
  if [ -z "$up" ]; then
    tail -n 40 "$log"
    result FAIL demo $((SECONDS - t0)) "not listening on 127.0.0.1:$DEMO_PORT after ${DEMO_TIMEOUT}s"
    return
  fi
  echo "  demo listening after $((SECONDS - t0))s"
  local problems=()
  out=$(in_chroot curl -sS --max-time 30 -u demo:demo "pop3://127.0.0.1:$DEMO_PORT/" 2>&1) \
    || problems+=("curl LIST failed: $out")
  grep -Eq '^1 [0-9]+' <<<"$out" || problems+=("LIST has no message 1: $(head -n 3 <<<"$out")")
  out=$(in_chroot curl -sS --max-time 30 -u demo:demo "pop3://127.0.0.1:$DEMO_PORT/1" 2>&1) \
    || problems+=("curl RETR 1 failed: $out")
  local hdr
  for hdr in From Subject Date Message-ID; do
    grep -q "^$hdr: " <<<"$out" || problems+=("message 1 has no $hdr: header")
  done
  grep -Eq $'^\r?$' <<<"$out" || problems+=("message 1 has no empty line after its header")
  echo "  message 1: $(grep -m1 '^Subject: ' <<<"$out" | tr -d '\r'), $(wc -c <<<"$out") bytes"
  # Ctrl-C: SIGINT to demo.py, which stops popbridge and Dovecot.
  local comm
  comm=$(tr '\0' ' ' <"/proc/$DEMO_PID/cmdline" 2>/dev/null || true)
  case "$comm" in *demo.py*) ;; *) problems+=("process $DEMO_PID is not demo.py: $comm") ;; esac
  kill -INT "$DEMO_PID" 2>/dev/null || true
  local stopped=
  for _ in $(seq 1 60); do
    kill -0 "$DEMO_PID" 2>/dev/null || { stopped=1; break; }
    sleep 0.5
  done
  if [ -z "$stopped" ]; then
    problems+=("still running 30s after SIGINT")
    kill -KILL "$DEMO_PID" 2>/dev/null || true
  fi
  wait "$DEMO_PID" && rc=0 || rc=$?
  DEMO_PID=
  [ "$rc" = 0 ] || problems+=("exited $rc after SIGINT")
  grep -q 'demo: stopping popbridge and Dovecot' "$log" || problems+=("no 'stopping' message after SIGINT")
  sleep 1
  if port_in_use "$DEMO_PORT"; then problems+=("127.0.0.1:$DEMO_PORT still open after the demo exited"); fi
  local left
  left=$(chroot_pids)
  if [ -n "$left" ]; then
    problems+=("processes left running: $(for p in $left; do tr '\0' ' ' <"/proc/$p/cmdline"; echo -n '; '; done)")
    stop_chroot_pids
  fi
  if [ ${#problems[@]} -gt 0 ]; then
    tail -n 40 "$log"
    local p
    for p in "${problems[@]}"; do echo "  demo: $p"; done
    result FAIL demo $((SECONDS - t0)) "${problems[0]}"
  else
    result PASS demo $((SECONDS - t0)) "listened, served message 1 to curl, stopped on SIGINT"
  fi
}

# ---- bench: the load generator on its own ----------------------------------
bench() {
  local t0=$SECONDS log=$WORK/bench.log
  say "bench: cmake -S bench (the load generator, as bench/run.py builds it)"
  if in_chroot bash -c 'cd /root/popbridge && bash scripts/install-deps.sh && cmake -S bench -B /tmp/build-loadgen && cmake --build /tmp/build-loadgen -j "$(nproc)"' \
      </dev/null >"$log" 2>&1; then
    result PASS bench $((SECONDS - t0)) "popbridge-loadgen built"
  else
    tail -n 30 "$log"
    result FAIL bench $((SECONDS - t0)) "the load generator did not build (log: $log)"
  fi
}

# ---- tests: bash scripts/test.sh -------------------------------------------
tests() {
  local t0=$SECONDS log=$WORK/tests.log rc
  say "tests: bash scripts/test.sh $* (log: $log)"
  in_chroot bash -c 'cd /root/popbridge && bash scripts/test.sh "$@"' test.sh "$@" </dev/null 2>&1 \
    | tee "$log" && rc=0 || rc=$?
  local summary
  summary=$(grep -E 'tests passed|tests failed' "$log" | tr '\n' ';' | sed 's/;$//; s/;/; /g')
  if [ "$rc" = 0 ]; then
    result PASS tests $((SECONDS - t0)) "${summary:-scripts/test.sh exited 0}"
  else
    result FAIL tests $((SECONDS - t0)) "scripts/test.sh exited $rc${summary:+: $summary}"
  fi
}

for phase in $PHASES; do
  case $phase in
    demo) demo ;;
    bench) bench ;;
    tests) tests "$@" ;;
    *) die "unknown phase $phase (demo, bench, tests)" ;;
  esac
done

echo
echo "==== fresh: $commit, Debian $(cat "$ROOTFS/etc/debian_version") minbase"
echo "minbase ${t_bootstrap}s ($minbase_from), git and clone ${t_clone}s"
for line in "${RESULTS[@]}"; do echo "$line"; done
echo "run.sh: done in $((SECONDS - t_start))s"
[ "$failed" = 0 ] && echo "PASS fresh" || echo "FAIL fresh"
exit "$failed"
