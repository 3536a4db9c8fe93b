#!/bin/bash
# First start: a private CA and certificates for "imap" and "popbridge" in
# /certs, the demo user and its mailbox. Every start: listeners from the
# environment. Then runs the command (dovecot -F).
set -euo pipefail

certs=/certs
mkdir -p "$certs"
if [ ! -s "$certs/popbridge.pem" ]; then
  echo "demo: making a private CA and TLS certificates in $certs"
  work=$(mktemp -d)
  cd "$work"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=popbridge demo CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout ca.key -out ca.pem 2>/dev/null
  leaf() {  # leaf NAME SUBJECT_ALT_NAMES
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$1.key" -out "$1.csr" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
      "$2" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
      -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  }
  extra=${CERT_NAMES:+,$CERT_NAMES}
  leaf imap "DNS:imap,DNS:localhost,IP:127.0.0.1$extra"
  leaf popbridge "DNS:popbridge,DNS:localhost,IP:127.0.0.1$extra"
  chmod 0644 ca.pem imap.pem popbridge.pem
  chmod 0600 imap.key
  chgrp "$POPBRIDGE_GID" popbridge.key
  chmod 0640 popbridge.key
  # popbridge.pem last: its presence means "all done".
  mv ca.pem imap.pem imap.key popbridge.key "$certs/"
  mv popbridge.pem "$certs/"
  cd /
  rm -rf "$work"  # the CA key goes with it
fi

printf '%s:{PLAIN}%s\n' "$DEMO_USER" "$DEMO_PASSWORD" >/etc/dovecot/users
chmod 0640 /etc/dovecot/users
chgrp dovecot /etc/dovecot/users

maildir=/srv/mail/$DEMO_USER/Maildir
if [ ! -d "$maildir" ]; then
  echo "demo: filling the mailbox of $DEMO_USER"
  mkdir -p "$maildir"/{new,cur,tmp}
  n=0
  for message in /usr/share/popbridge-demo/mail/*.eml; do
    n=$((n + 1))
    cp "$message" "$maildir/new/$((1700000000 + n)).M${n}P1.demo"
  done
  chown -R vmail:vmail "/srv/mail/$DEMO_USER"
  chmod -R go-rwx "/srv/mail/$DEMO_USER"
fi

cat >/etc/dovecot/local.conf <<CONF
listen = $LISTEN
service imap-login {
  inet_listener imap {
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = $IMAPS_PORT
    ssl = yes
  }
}
CONF

exec "$@"
