"""Real POP3 clients against the server under test: curl, fetchmail, mpop.
Delivered messages are compared with the seeded ones."""

import os
import re
import shutil
import subprocess
import unittest

from harness import (HIDE_KEYWORD, SPECIAL_USER, Pop3TestCase, main, make_tempdir,
                     parse_scan_listing)

CLIENT_TIMEOUT = 120

SEEDS = [
    b"From: Alice <alice@example.com>\r\nTo: bob@example.com\r\nSubject: plain\r\n"
    b"Message-ID: <1@example.com>\r\n\r\nHello Bob.\r\n",
    b"From: carol@example.com\r\nSubject: awkward lines\r\nMessage-ID: <2@example.com>\r\n\r\n"
    b".a line starting with a dot\r\n.\r\n..\r\nFrom the start of a line\r\n"
    b">From already quoted\r\nend\r\n",
    "From: dave@example.com\r\nSubject: =?UTF-8?Q?caf=C3=A9?=\r\nMessage-ID: <3@example.com>\r\n"
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Grüße aus Köln ☕\r\n".encode("utf-8"),
    b"From: erin@example.com\r\nSubject: bigger\r\nMessage-ID: <4@example.com>\r\n\r\n"
    + b"".join(b"line %05d of a longer message, long enough to span many packets\r\n" % i
               for i in range(20000)),
]


def to_lf(data):
    return data.replace(b"\r\n", b"\n")


def strip_received(msg):
    """Drop a leading Received: header (with its continuation lines) that a
    client added on delivery."""
    return re.sub(rb"\AReceived:[^\n]*\n(?:[ \t][^\n]*\n)*", b"", msg)


def parse_mboxrd(data):
    """Split an mbox (mboxrd quoting, as mpop writes it) into messages."""
    msgs = []
    for chunk in re.split(rb"(?:\A|\n\n)From [^\n]*\n", data):
        if not chunk and not msgs:
            continue
        msgs.append(re.sub(rb"(?m)^>(>*From )", rb"\1", chunk))
    if msgs and msgs[-1].endswith(b"\n\n"):
        msgs[-1] = msgs[-1][:-1]
    # Every message but the last lost the final newline to the separator.
    return [m if i == len(msgs) - 1 else m + b"\n" for i, m in enumerate(msgs)]


def need(binary):
    path = shutil.which(binary)
    if not path:
        raise unittest.SkipTest("%s is not installed (scripts/install-deps.sh installs it)" % binary)
    return path


class ClientTestCase(Pop3TestCase):

    def setUp(self):
        super().setUp()
        self.work = make_tempdir("popbridge-client-")
        self.addCleanup(shutil.rmtree, self.work, True)
        self.user, self.password = self.dovecot.new_user()
        for raw in SEEDS:
            self.dovecot.seed(self.user, raw)

    def run_client(self, argv, ok_codes=(0,), **kw):
        env = dict(os.environ, HOME=self.work, LC_ALL="C.UTF-8")
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                           timeout=CLIENT_TIMEOUT, **kw)
        if r.returncode not in ok_codes:
            self.fail("%s exited %d\nstdout:\n%s\nstderr:\n%s"
                      % (argv[0], r.returncode, r.stdout.decode("utf-8", "replace")[-5000:],
                         r.stderr.decode("utf-8", "replace")[-5000:]))
        return r

    def assertFlagsUntouched(self):
        state, _ = self.dovecot.imap_state(self.user)
        self.assertEqual(len(state), len(SEEDS))
        for _, _, flags in state:
            self.assertNotIn("\\Seen", flags)
            self.assertNotIn(HIDE_KEYWORD, flags)


class CurlTest(ClientTestCase):

    def curl(self, path, *extra, user=None, password=None):
        need("curl")
        cred = "%s:%s" % (user or self.user, password or self.password)
        return self.run_client(["curl", "-sS", "--max-time", "60", "-u", cred]
                               + list(extra) + ["pop3://127.0.0.1:%d/%s" % (self.pop3_port, path)])

    def test_list(self):
        out = self.curl("").stdout
        state, _ = self.dovecot.imap_state(self.user)
        self.assertEqual(out, b"".join(b"%d %d\r\n" % (n, size)
                                       for n, (_, size, _) in enumerate(state, 1)))

    def test_retr(self):
        for n, raw in enumerate(SEEDS, 1):
            self.assertEqual(self.curl(str(n)).stdout, raw, "message %d" % n)
        self.assertFlagsUntouched()

    def test_uidl(self):
        out = self.curl("", "-X", "UIDL").stdout
        ref = self.reference_session(self.user)
        _, body = ref.multi("UIDL")
        ref.quit()
        self.assertEqual(out, body)

    def test_dele(self):
        self.curl("2", "-X", "DELE", "-I")
        state, _ = self.dovecot.imap_state(self.user)
        self.assertEqual([HIDE_KEYWORD in f for _, _, f in state], [False, True, False, False])
        self.assertEqual(parse_scan_listing(self.curl("").stdout).keys(), {1, 2, 3})
        self.assertEqual(self.curl("2").stdout, SEEDS[2])

    def test_special_password(self):
        self.dovecot.seed(SPECIAL_USER[0], b"Subject: s\r\n\r\nspecial\r\n")
        out = self.curl("1", user=SPECIAL_USER[0], password=SPECIAL_USER[1]).stdout
        self.assertEqual(out, b"Subject: s\r\n\r\nspecial\r\n")

    def test_wrong_password(self):
        need("curl")
        r = self.run_client(["curl", "-sS", "--max-time", "60", "-u", self.user + ":wrong",
                             "pop3://127.0.0.1:%d/1" % self.pop3_port], ok_codes=(67,))
        self.assertEqual(r.stdout, b"")


class FetchmailTest(ClientTestCase):

    def setUp(self):
        super().setUp()
        need("fetchmail")
        self.out = os.path.join(self.work, "delivered")
        os.mkdir(self.out)
        self.mda = os.path.join(self.work, "mda.sh")
        with open(self.mda, "w") as f:
            f.write('#!/bin/sh\nn=$(ls "%s" | wc -l)\ncat > "%s/$(printf %%04d "$n").eml"\n'
                    % (self.out, self.out))
        os.chmod(self.mda, 0o755)

    def rcfile(self, user, password):
        # fetchmail has no escape for a double quote inside "..."; in '...'
        # only the backslash needs escaping.
        esc = password.replace("\\", "\\\\").replace("'", "\\'")
        path = os.path.join(self.work, "fetchmailrc")
        with open(path, "w", encoding="utf-8") as f:
            f.write('set no syslog\n'
                    'poll 127.0.0.1 service %d proto pop3 uidl auth password timeout 60\n'
                    '  user "%s" there with password \'%s\' is "root" here\n'
                    '  keep sslproto \'\' no rewrite mda "%s"\n'
                    % (self.pop3_port, user, esc, self.mda))
        os.chmod(path, 0o600)
        return path

    def fetch(self, user=None, password=None, expect=0):
        rc = self.rcfile(user or self.user, password or self.password)
        return self.run_client(
            ["fetchmail", "-f", rc, "-i", os.path.join(self.work, "fetchids"),
             "--keep", "--uidl", "--nodetach", "-v"], ok_codes=(expect,))

    def delivered(self):
        out = []
        for name in sorted(os.listdir(self.out)):
            with open(os.path.join(self.out, name), "rb") as f:
                out.append(strip_received(f.read()))
        return out

    def test_fetch_keep_uidl(self):
        self.fetch()
        self.assertEqual(self.delivered(), [to_lf(m) for m in SEEDS])
        self.assertFlagsUntouched()
        # Nothing new: fetchmail's exit 1 means "no mail".
        self.fetch(expect=1)
        self.assertEqual(len(self.delivered()), len(SEEDS))
        # A new message: only that one is fetched.
        new = b"Subject: fifth\r\nMessage-ID: <5@example.com>\r\n\r\nnew mail\r\n"
        self.dovecot.seed(self.user, new)
        self.fetch()
        self.assertEqual(self.delivered()[len(SEEDS):], [to_lf(new)])

    def test_special_password(self):
        self.dovecot.seed(SPECIAL_USER[0], b"Subject: s\r\n\r\nspecial\r\n")
        self.fetch(*SPECIAL_USER)
        self.assertEqual(self.delivered()[-1], b"Subject: s\n\nspecial\n")


class MpopTest(ClientTestCase):

    def mpop(self):
        need("mpop")
        conf = os.path.join(self.work, "mpoprc")
        if not os.path.exists(conf):
            with open(conf, "w") as f:
                f.write("# all settings are on the command line\n")
            os.chmod(conf, 0o600)
        self.mbox = os.path.join(self.work, "mbox")
        return self.run_client(
            ["mpop", "-C", conf, "--host=127.0.0.1", "--port=%d" % self.pop3_port,
             "--auth=user", "--tls=off", "--user=" + self.user,
             "--passwordeval=echo '%s'" % self.password, "--keep=on",
             "--only-new=on", "--received-header=off", "--timeout=60",
             "--uidls-file=" + os.path.join(self.work, "uidls"),
             "--delivery=mbox," + self.mbox, "--debug"])

    def delivered(self):
        if not os.path.exists(self.mbox):
            return []
        with open(self.mbox, "rb") as f:
            return parse_mboxrd(f.read())

    def test_fetch_keep_into_mbox(self):
        self.mpop()
        self.assertEqual(self.delivered(), [to_lf(m) for m in SEEDS])
        self.assertFlagsUntouched()
        # Nothing new the second time.
        self.mpop()
        self.assertEqual(len(self.delivered()), len(SEEDS))
        new = b"Subject: fifth\r\nMessage-ID: <5@example.com>\r\n\r\nnew mail\r\n"
        self.dovecot.seed(self.user, new)
        self.mpop()
        self.assertEqual(self.delivered()[len(SEEDS):], [to_lf(new)])


if __name__ == "__main__":
    main()
