#!/bin/bash
# Healthy when the certificates exist and IMAP answers "* OK" on $IMAP_PORT.
[ -s /certs/popbridge.pem ] || { echo "no certificates yet"; exit 1; }
exec 3<>"/dev/tcp/127.0.0.1/${IMAP_PORT:-143}" || exit 1
IFS= read -r -t 5 greeting <&3 || { echo "no IMAP greeting"; exit 1; }
printf 'x LOGOUT\r\n' >&3
[[ $greeting == "* OK"* ]] || { echo "unexpected greeting: $greeting"; exit 1; }
