#!/usr/bin/env python3
"""popbridge demo: a private Dovecot with user demo/demo and a few messages,
popbridge on 127.0.0.1:1110 in front of it. Runs until Ctrl-C.

Reuses the integration tests' fixtures (tests/integration/harness.py).
Usage: demo.py --popbridge BUILD/proxy/popbridge [--port 1110]
"""

import argparse
import email.header
import email.utils
import os
import signal
import socket
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import harness  # noqa: E402

DEMO_USER = ("demo", "demo")


def demo_messages():
    now = time.time()
    msgs = []
    texts = [
        ("Welcome to popbridge",
         "This message lives on an IMAP server.\n\n"
         "Your POP3 client downloaded it through popbridge; it is still on the\n"
         "IMAP server, where IMAP clients keep seeing it.\n"),
        ("Scanner test page",
         "A POP3-only device (scanner, old phone, ticket system) can read this\n"
         "mailbox although the mail moved to IMAP.\n"),
        ("Deleting",
         "Delete this message in your POP3 client: popbridge does not expunge\n"
         "it. At QUIT it gets the IMAP keyword $POP3Deleted and disappears\n"
         "from later POP3 sessions, while it stays on the IMAP server.\n"),
        ("Grüße – 8-bit and UTF-8",
         "Non-ASCII text arrives byte for byte: Grüße, naïve café, ☕.\n"),
    ]
    for i, (subject, body) in enumerate(texts):
        date = email.utils.formatdate(now - (len(texts) - i) * 3600, localtime=True)
        subj = subject if subject.isascii() else email.header.Header(subject, "utf-8").encode()
        raw = ("From: popbridge demo <demo@example.com>\n"
               "To: demo@example.com\n"
               "Subject: %s\n"
               "Date: %s\n"
               "Message-ID: <demo-%d@example.com>\n"
               "MIME-Version: 1.0\n"
               "Content-Type: text/plain; charset=utf-8\n"
               "Content-Transfer-Encoding: 8bit\n\n%s" % (subj, date, i + 1, body))
        msgs.append(raw.replace("\n", "\r\n").encode("utf-8"))
    return msgs


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--popbridge", required=True, help="path to the popbridge binary")
    ap.add_argument("--port", type=int, default=1110, help="POP3 port for popbridge (1110)")
    args = ap.parse_args()
    os.environ["POPBRIDGE_BIN"] = os.path.abspath(args.popbridge)

    if not port_free(args.port):
        sys.exit("demo: 127.0.0.1:%d is already in use (another demo running?); "
                 "pick another with --port" % args.port)

    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    dovecot = harness.Dovecot(pool_size=0)
    dovecot.add_user(*DEMO_USER)
    bridge = None
    try:
        dovecot.start()
        for raw in demo_messages():
            dovecot.seed(DEMO_USER[0], raw)
        bridge = harness.Popbridge(dovecot.imap_port, port=args.port, log_level="info",
                                   idle_timeout="10m", auth_failure_delay=None).start()
        user, password = DEMO_USER
        print("""
popbridge demo is running.

  popbridge (POP3):     127.0.0.1:{port}    user {user}, password {password}
  Dovecot (IMAP):       127.0.0.1:{imap}   (the upstream; same user)
  Dovecot's own POP3:   127.0.0.1:{pop3}   (for comparison)
  popbridge config:     {config}

Try it:
  curl -u {user}:{password} pop3://127.0.0.1:{port}/          # LIST
  curl -u {user}:{password} pop3://127.0.0.1:{port}/1         # RETR 1
  curl -u {user}:{password} -X UIDL pop3://127.0.0.1:{port}/  # UIDL
  curl -u {user}:{password} -X 'DELE' -I pop3://127.0.0.1:{port}/3   # DELE 3, then QUIT
  python3 -c 'import imaplib; m=imaplib.IMAP4("127.0.0.1",{imap}); m.login("{user}","{password}"); m.select(); print(m.fetch("1:*","(FLAGS)"))'

Thunderbird (or any POP3 client): account type POP3, server 127.0.0.1,
port {port}, connection security None, authentication "Normal password",
user name {user}, password {password}.

popbridge's log follows. Ctrl-C stops popbridge and Dovecot.
""".format(port=args.port, user=user, password=password, imap=dovecot.imap_port,
           pop3=dovecot.pop3_port, config=bridge.config_path), flush=True)
        log = open(bridge.log_path, "rb")
        while not stop["now"]:
            chunk = log.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            how = bridge.crashed()
            if how:
                print("demo: popbridge stopped on its own: %s" % how, file=sys.stderr)
                return 1
            time.sleep(0.3)
        print("\ndemo: stopping popbridge and Dovecot", flush=True)
        return 0
    finally:
        if bridge is not None:
            bridge.cleanup(check=False)
        dovecot.cleanup()


if __name__ == "__main__":
    sys.exit(main())
