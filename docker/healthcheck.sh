#!/bin/bash
# Container health check: the POP3 listener answers with a "+OK" greeting.
# Pure bash (/dev/tcp), no extra packages. Usage: popbridge-healthcheck [PORT [HOST]]
# (defaults: $POPBRIDGE_HEALTH_PORT or 110, $POPBRIDGE_HEALTH_HOST or 127.0.0.1).
# The port must be a plaintext or STLS listener; the greeting needs no IMAP
# server, so this checks popbridge itself, not the upstream.
port=${1:-${POPBRIDGE_HEALTH_PORT:-110}}
host=${2:-${POPBRIDGE_HEALTH_HOST:-127.0.0.1}}
exec 3<>"/dev/tcp/$host/$port" || { echo "cannot connect to $host:$port"; exit 1; }
if ! IFS= read -r -t 5 greeting <&3; then
  echo "no greeting from $host:$port within 5s"
  exit 1
fi
printf 'QUIT\r\n' >&3
exec 3>&-
case $greeting in
  "+OK"*) exit 0 ;;
  *) echo "unexpected greeting from $host:$port: ${greeting%$'\r'}"; exit 1 ;;
esac
