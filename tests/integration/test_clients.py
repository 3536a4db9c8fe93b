"""Real POP3 clients against the server under test: curl, fetchmail, mpop,
and node-pop3 (Node.js; over plain POP3 and implicit TLS). Delivered
messages are compared with the seeded ones.

node-pop3 is pinned in node/package.json and node/package-lock.json and
installed there with `npm ci` when node/node_modules lacks it; without
node and npm, or when the install fails, its tests fail (they do not skip)."""

import json
import os
import re
import shutil
import subprocess
import unittest

from certs import CertFactory
from harness import (AGAINST_DOVECOT, HERE, HIDE_KEYWORD, SPECIAL_USER, Pop3TestCase, main,
                     make_tempdir, parse_scan_listing)

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


NODE_DIR = os.path.join(HERE, "node")


def node_pop3_ready():
    """node, with node-pop3 installed in NODE_DIR as package-lock.json pins
    it (npm ci when it is missing or another version). Returns the node
    binary; raises AssertionError, saying what is wrong, when it cannot."""
    node = shutil.which("node")
    if not node:
        raise AssertionError("node is not installed (scripts/install-deps.sh installs nodejs "
                             "and npm): the node-pop3 tests need it")
    with open(os.path.join(NODE_DIR, "package-lock.json")) as f:
        pinned = json.load(f)["packages"]["node_modules/node-pop3"]["version"]
    installed = os.path.join(NODE_DIR, "node_modules", "node-pop3", "package.json")
    try:
        with open(installed) as f:
            if json.load(f)["version"] == pinned:
                return node
    except (OSError, ValueError, KeyError):
        pass
    npm = shutil.which("npm")
    if not npm:
        raise AssertionError("npm is not installed (scripts/install-deps.sh installs it): "
                             "cannot install node-pop3 %s into %s" % (pinned, NODE_DIR))
    try:
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts",
                            "--engine-strict=false", "--loglevel=error"],
                           cwd=NODE_DIR, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=300)
    except subprocess.TimeoutExpired:
        raise AssertionError("npm ci in %s took more than 300 s" % NODE_DIR) from None
    if r.returncode != 0 or not os.path.exists(installed):
        raise AssertionError("npm ci in %s failed (exit %d):\n%s%s"
                             % (NODE_DIR, r.returncode, r.stdout.decode("utf-8", "replace"),
                                r.stderr.decode("utf-8", "replace")[-5000:]))
    return node


def node_pop3_expected(raw):
    """What node-pop3's RETR returns for a stored message that ends in CRLF:
    the bytes between the status line and the final "\r\n.\r\n", still
    dot-stuffed (it does not undo that), as text."""
    assert raw.endswith(b"\r\n")
    return re.sub(rb"(?m)^\.", b"..", raw)[:-2].decode("utf-8")


def listing(body):
    """A LIST or UIDL body as node-pop3 returns it: [["1", "123"], ...]."""
    return [line.split(" ") for line in body.decode("ascii").split("\r\n") if line]


# Besides SEEDS: messages of one fetch that are written beside the status
# line rather than copied into it (4 KiB and more), one ending in a "." line.
NODE_SEEDS = SEEDS + [
    b"From: frank@example.com\r\nSubject: medium\r\nMessage-ID: <6@example.com>\r\n\r\n"
    + b"".join(b"%04d a line of a medium-sized message\r\n" % i for i in range(600)),
    b"From: grace@example.com\r\nSubject: dots at the end\r\nMessage-ID: <7@example.com>\r\n\r\n"
    + b"x" * 70 * 100 + b"\r\n..\r\n.\r\n",
]


class NodePop3Test(ClientTestCase):
    """node-pop3 (npm) over plain POP3 and over implicit TLS. It finds the
    end of a message only when "\r\n.\r\n" ends one read: a final "." that
    came in a TLS record of its own left the message's last CRLF in what it
    returned."""

    @classmethod
    def setUpClass(cls):
        need("openssl")
        cls.certs = CertFactory()
        try:
            cert = cls.certs.server("localhost")
            cls.ca = cert.ca_cert
            # Dovecot's own POP3 on port 995 is the reference.
            cls.dovecot_options = dict(ssl_cert=cert.fullchain, ssl_key=cert.key)
            cls.popbridge_options = dict(
                listeners=[{"tls": "implicit"}],
                tls={"certificate": cert.fullchain, "key": cert.key})
            super().setUpClass()
        except BaseException:
            cls.certs.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.certs.cleanup()

    def setUp(self):
        super().setUp()
        for raw in NODE_SEEDS[len(SEEDS):]:
            self.dovecot.seed(self.user, raw)
        self.node = node_pop3_ready()

    def implicit_port(self):
        if AGAINST_DOVECOT:
            return self.dovecot.pop3s_port
        return self.popbridge.ports["implicit"]

    def fetch(self, port, tls):
        options = {"port": port, "tls": tls, "ca": self.ca, "user": self.user,
                   "password": self.password}
        r = self.run_client([self.node, os.path.join(NODE_DIR, "fetch.mjs"),
                             json.dumps(options)])
        return json.loads(r.stdout)

    def check(self, port, tls):
        got = self.fetch(port, tls)
        ref = self.reference_session(self.user)
        _, list_body = ref.multi("LIST")
        _, uidl_body = ref.multi("UIDL")
        ref.quit()
        self.assertEqual(got["list"], listing(list_body))
        self.assertEqual(got["uidl"], listing(uidl_body))
        self.assertEqual(len(got["messages"]), len(NODE_SEEDS))
        wrong = []
        for n, (message, raw) in enumerate(zip(got["messages"], NODE_SEEDS), 1):
            expected = node_pop3_expected(raw)
            if message != expected:
                wrong.append("message %d: %d characters, expected %d; ends %r, expected %r"
                             % (n, len(message), len(expected), message[-20:], expected[-20:]))
        self.assertEqual(wrong, [])
        state, _ = self.dovecot.imap_state(self.user)
        self.assertEqual(len(state), len(NODE_SEEDS))
        for _, _, flags in state:
            self.assertNotIn("\\Seen", flags)
            self.assertNotIn(HIDE_KEYWORD, flags)

    def test_retr_plain(self):
        self.check(self.pop3_port, False)

    def test_retr_implicit_tls(self):
        self.check(self.implicit_port(), True)

    def test_dovecot_implicit_tls_is_the_reference(self):
        """The expectation itself: what node-pop3 gets from Dovecot's POP3 on
        port 995."""
        self.check(self.dovecot.pop3s_port, True)


if __name__ == "__main__":
    main()
