#!/usr/bin/env bash
# Installs everything a fresh Debian 12 needs to build popbridge, run the
# demo and run all of its tests: compiler and libraries (GoogleTest and
# GoogleMock for the unit tests, zlib for the benchmark's load generator),
# Dovecot (the IMAP upstream and the POP3 reference the integration tests
# start privately), the real POP3 clients the tests drive (curl, fetchmail,
# mpop, and Node.js with npm for the npm package node-pop3), HAProxy (the
# PROXY protocol tests put it in front of popbridge), and clang with
# libFuzzer (scripts/fuzz.sh).
#
# Idempotent: when every package is already installed it does nothing.
# Set POPBRIDGE_FORCE_APT=1 to run apt-get anyway.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libuv1-dev libssl-dev libetpan-dev libtomlplusplus-dev libsasl2-modules zlib1g-dev
  libgtest-dev libgmock-dev
  dovecot-imapd dovecot-pop3d
  python3 curl fetchmail mpop haproxy
  openssl ca-certificates procps
  clang libclang-rt-14-dev
)

# Node.js and npm: Debian's (nodejs 18), unless a working node and npm are
# already on PATH. A Node.js from elsewhere (e.g. NodeSource's) bundles its
# own npm and conflicts with Debian's npm package, which then cannot be
# installed; any working pair will do.
if node --version >/dev/null 2>&1 && npm --version >/dev/null 2>&1; then
  node_note=" (node $(node --version) and npm from PATH)"
else
  PACKAGES+=(nodejs npm)
  node_note=
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "install-deps.sh: not root and no sudo: cannot install packages" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ] && [ -z "${POPBRIDGE_FORCE_APT:-}" ]; then
  echo "install-deps.sh: all ${#PACKAGES[@]} packages already installed$node_note"
  exit 0
fi
echo "install-deps.sh: installing ${missing[*]:-${PACKAGES[*]}}"

# Installing dovecot-core would start a system-wide Dovecot on ports 143,
# 110, 993 and 995. The tests never use it (each starts its own on free
# ports), but a service start can fail in containers and fail the install:
# keep services from starting during this install with a temporary
# policy-rc.d, unless the machine already has one.
POLICY=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# Temporary, from popbridge scripts/install-deps.sh\nexit 101\n' \
    | "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod 755 "$POLICY"
  made_policy=1
fi
cleanup() {
  if [ -n "$made_policy" ]; then
    "${SUDO[@]}" rm -f "$POLICY"
  fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  "${PACKAGES[@]}"

# Some hosts start services regardless (systemd without policy-rc.d
# support). A system Dovecot does not disturb the tests, which use their own
# ports; leave it as the administrator configured it.
echo "install-deps.sh: done"
