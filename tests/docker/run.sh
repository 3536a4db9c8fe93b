#!/bin/bash
# A private Docker engine for popbridge's container tests, and the tests.
#
#   tests/docker/run.sh              start engine, make base image, run test_docker.py, stop
#                                    the engine (if this started it)
#   tests/docker/run.sh start        start the engine (prints the DOCKER_HOST to use)
#   tests/docker/run.sh base-image   make debian:bookworm-slim with debootstrap, unless present
#   tests/docker/run.sh stop         stop the engine this script started (by its PID)
#   tests/docker/run.sh env          print "export DOCKER_HOST=..."
#   tests/docker/run.sh clean        stop the engine and delete its state (images: several GB with vfs)
#
# The engine suits machines without a registry and without iptables: vfs
# storage, no bridge, containers run with --network=host (or none). All its
# state lives under $POPBRIDGE_DOCKER_DIR (default /tmp/popbridge-docker);
# it never touches a system-wide dockerd. Needs root, dockerd, docker (CLI)
# and debootstrap (apt-get install docker.io debootstrap).
#
# Environment:
#   POPBRIDGE_DOCKER_DIR   engine state (data-root, exec-root, socket, logs)
#   DEBIAN_MIRROR          mirror for debootstrap (default http://deb.debian.org/debian)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${POPBRIDGE_DOCKER_DIR:-/tmp/popbridge-docker}
SOCK=$DIR/docker.sock
PIDFILE=$DIR/dockerd.pid
LOG=$DIR/dockerd.log
BASE_IMAGE=debian:bookworm-slim
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export DOCKER_HOST=unix://$SOCK

die() { echo "run.sh: $*" >&2; exit 1; }

engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start() {
  command -v dockerd >/dev/null || die "dockerd not found (apt-get install docker.io)"
  command -v docker >/dev/null || die "docker CLI not found (apt-get install docker.io)"
  [ "$(id -u)" = 0 ] || die "dockerd needs root"
  if engine_up; then
    echo "engine already running at $DOCKER_HOST"
    return 0
  fi
  mkdir -p "$DIR/data" "$DIR/exec"
  # A stale PID file from a crashed run would make dockerd refuse to start.
  if [ -f "$PIDFILE" ] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then rm -f "$PIDFILE"; fi
  # Not --containerd: dockerd starts and stops its own containerd below exec-root.
  setsid dockerd \
    --storage-driver=vfs \
    --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --bridge=none --userland-proxy=false \
    --data-root "$DIR/data" --exec-root "$DIR/exec" \
    --pidfile "$PIDFILE" -H "$DOCKER_HOST" \
    </dev/null >>"$LOG" 2>&1 &
  local pid=$!
  for _ in $(seq 1 120); do
    if engine_up; then
      echo "engine $(docker version --format '{{.Server.Version}}') running, PID $pid, at $DOCKER_HOST"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$LOG" >&2; die "dockerd exited (log: $LOG)"; }
    sleep 0.5
  done
  tail -n 30 "$LOG" >&2
  kill "$pid" 2>/dev/null || true
  die "dockerd did not answer within 60s (log: $LOG)"
}

stop() {
  [ -f "$PIDFILE" ] || { echo "no engine PID file at $PIDFILE"; return 0; }
  local pid
  pid=$(cat "$PIDFILE")
  if kill -0 "$pid" 2>/dev/null; then
    # Containers first, so the engine does not wait on them.
    if engine_up; then
      local ids
      ids=$(docker ps -q)
      [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    fi
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "dockerd $pid still running after 30s, sending SIGKILL" >&2
      kill -KILL "$pid" || true
    fi
  fi
  rm -f "$PIDFILE"
  # dockerd leaves its network namespace bind-mounted.
  if mountpoint -q "$DIR/exec/netns/default" 2>/dev/null; then umount "$DIR/exec/netns/default" || true; fi
  echo "engine stopped"
}

# Everything below $DIR: images, build cache, logs (vfs copies every layer,
# so this is several GB after a full run).
clean() {
  stop
  if grep -q " $DIR/" /proc/mounts; then die "something is still mounted below $DIR"; fi
  rm -rf "$DIR"
  echo "removed $DIR"
}

base_image() {
  engine_up || die "no engine at $DOCKER_HOST (run.sh start)"
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "$BASE_IMAGE present"
    return 0
  fi
  command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
  local rootfs=$DIR/rootfs
  rm -rf "$rootfs"
  echo "debootstrap --variant=minbase bookworm from $MIRROR ..."
  local t0=$SECONDS
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$DIR/debootstrap.log" >&2; die "debootstrap failed (log: $DIR/debootstrap.log)"; }
  # Like the official slim image: the bookworm-updates and security suites
  # too, and no package caches.
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security} bookworm-security main
EOF
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
  tar -C "$rootfs" -c . | docker import \
    -c 'CMD ["bash"]' -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  echo "$BASE_IMAGE made in $((SECONDS - t0))s"
}

case "${1:-test}" in
  start) start ;;
  stop) stop ;;
  base-image) base_image ;;
  env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
  clean) clean ;;
  test)
    t0=$SECONDS
    if engine_up; then
      echo "using the engine already running at $DOCKER_HOST"
    else
      start
      trap 'stop' EXIT
    fi
    base_image
    python3 "$HERE/test_docker.py" -v
    echo "run.sh: done in $((SECONDS - t0))s"
    ;;
  *) die "unknown command $1 (start, stop, base-image, env, clean, test)" ;;
esac
