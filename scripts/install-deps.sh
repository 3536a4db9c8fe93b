#!/usr/bin/env bash
# Installs everything a fresh Debian 12 needs to build popbridge and run all
# of its tests: compiler and libraries, Dovecot (the IMAP upstream and the
# POP3 reference the integration tests start privately), the real POP3
# clients the tests drive (curl, fetchmail, mpop), HAProxy (the PROXY
# protocol tests put it in front of popbridge), and clang with libFuzzer
# (scripts/fuzz.sh).
#
# Idempotent: when every package is already installed it does nothing.
# Set POPBRIDGE_FORCE_APT=1 to run apt-get anyway.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libuv1-dev libssl-dev libetpan-dev libtomlplusplus-dev libgtest-dev libsasl2-modules
  dovecot-imapd dovecot-pop3d
  python3 curl fetchmail mpop haproxy
  openssl ca-certificates procps
  clang libclang-rt-14-dev
)

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
  echo "install-deps.sh: all ${#PACKAGES[@]} packages already installed"
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
