"""Byte-exact fidelity: for awkward messages, LIST/STAT sizes, UIDL, RETR
and TOP must be identical to Dovecot's own POP3 server on the same Maildir,
and RETR must be the stored message with Dovecot's line-ending rules.

Dovecot's POP3 rules (2.3.19), the reference:
- a bare LF becomes CRLF; a bare CR is sent as it is;
- a message not ending in LF gets a CRLF before the terminating "." (so
  an empty message is sent as one empty line);
- LIST/STAT sizes are IMAP's RFC822.SIZE (bare LF counted as CRLF, the
  added final CRLF not counted);
- NUL bytes are sent as they are (Dovecot's IMAP FETCH BODY[] turns them
  into 0x80: see test_nul_byte).
"""

import base64
import hashlib
import random
import re

from harness import Pop3, Pop3TestCase, main, parse_scan_listing


def dovecot_pop3_form(raw):
    """A stored message as Dovecot's POP3 sends it (before dot-stuffing)."""
    out = re.sub(rb"(?<!\r)\n", b"\r\n", raw)
    if not out.endswith(b"\n"):
        out += b"\r\n"
    return out


def stuff(data):
    return re.sub(rb"(?m)^\.", b"..", data)


AWKWARD = [
    ("plain", b"From: a@example.com\r\nSubject: plain\r\n\r\nHello.\r\n"),
    ("leading dots", b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n"
                     b"after a dot-only line\r\n. space\r\n"),
    ("dot-only last line", b"Subject: dot end\r\n\r\nbody\r\n.\r\n"),
    ("dot, no final newline", b"Subject: dot nofinal\r\n\r\nbody\r\n."),
    ("bare LF", b"Subject: bare lf\nX-H: v\n\nline1\nline2\n.dot\n"),
    ("bare CR", b"Subject: bare cr\r\n\r\nline1\rline2\r\nx\ry\r\nend\r\n"),
    ("bare CR at end", b"Subject: cr end\r\n\r\nbody\r"),
    ("mixed endings", b"Subject: mixed\r\nX-A: 1\nX-B: 2\r\n\nbody\r\nmore\nlast\r"),
    ("no final newline", b"Subject: nofinal\r\n\r\nlast line without newline"),
    ("8-bit", "Subject: 8-bit ümlaut ☃\r\nFrom: Jörg <j@example.com>\r\n\r\n"
              "Grüße, naïve café. \u00a0\r\n".encode("utf-8")
              + b"latin-1 \xe9\xe8 and raw \xff\xfe\x80\r\n"),
    ("empty body", b"Subject: empty body\r\n\r\n"),
    ("headers only", b"Subject: headers only\r\nX-Other: x\r\n"),
    ("empty message", b""),
    ("long lines", b"Subject: long\r\nX-Long: " + b"h" * 5000 + b"\r\n\r\n"
                   + b"b" * 20000 + b"\r\n.\r\n" + b"." * 3000 + b"\r\n"),
    ("folded header", b"Subject: folded\r\n  continuation\r\n\tand tab\r\n\r\nb\r\n"),
    ("many lines", b"Subject: many\r\n\r\n" + b"".join(b"%d\r\n" % i for i in range(5000))),
    ("CRLF.CRLF inside", b"Subject: terminator\r\n\r\nbefore\r\n.\r\nafter\r\n\r\n.\r\n\r\n"),
    ("mime multipart", b"MIME-Version: 1.0\r\nSubject: mime\r\n"
                       b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
                       b"preamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\npart one\r\n"
                       b"--XX\r\nContent-Type: application/octet-stream\r\n"
                       b"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n--XX--\r\n"),
]

NUL_MESSAGE = b"Subject: nul\r\n\r\nbefore\x00after\r\n\x00\r\n"


def big_message(size=20 * 1024 * 1024):
    """A ~size-byte message with a base64 attachment, generated now."""
    rnd = random.Random(1234)
    payload = bytes(rnd.getrandbits(8) for _ in range(1 << 16))
    b64 = base64.encodebytes(payload * (size * 3 // 4 // len(payload) + 1))
    b64 = b64[:size].rsplit(b"\n", 1)[0] + b"\n"
    lines = b64.replace(b"\n", b"\r\n")
    return (b"MIME-Version: 1.0\r\nSubject: big attachment\r\n"
            b"Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n"
            b"--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            b"--B\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=\"big.bin\"\r\n\r\n"
            + lines + b"--B--\r\n")


class FidelityTest(Pop3TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.user, _ = cls.dovecot.new_user()
        cls.seeded = []
        for name, raw in AWKWARD:
            cls.dovecot.seed(cls.user, raw)
            cls.seeded.append((name, raw))
        # Collect the reference answers once.
        ref = cls._connect_login(cls.dovecot.pop3_port)
        cls.ref = cls._collect(ref, len(cls.seeded))
        ref.cmd("QUIT")
        ref.close()

    @classmethod
    def _connect_login(cls, port):
        c = Pop3(port)
        r = c.login(cls.user, cls.dovecot.users[cls.user])
        assert r.startswith(b"+OK"), r
        return c

    @staticmethod
    def _collect(c, count):
        # Multi-line answers: the body only (the status line's text is free).
        out = {"STAT": c.cmd("STAT"), "LIST": c.multi("LIST")[1], "UIDL": c.multi("UIDL")[1]}
        for n in range(1, count + 1):
            out["LIST %d" % n] = c.cmd("LIST %d" % n)
            out["UIDL %d" % n] = c.cmd("UIDL %d" % n)
            out["RETR %d" % n] = c.multi("RETR %d" % n)[1]
            for lines in (0, 1, 10):
                out["TOP %d %d" % (n, lines)] = c.multi("TOP %d %d" % (n, lines))[1]
        return out

    def assertSameBytes(self, got, expected, what):
        if got == expected:
            return
        i = next((k for k in range(min(len(got), len(expected))) if got[k] != expected[k]),
                 min(len(got), len(expected)))
        self.fail("%s differs: got %d bytes, expected %d; first difference at offset %d:\n"
                  "  got      %r\n  expected %r"
                  % (what, len(got), len(expected), i, got[max(0, i - 40):i + 40],
                     expected[max(0, i - 40):i + 40]))

    def test_reference_matches_stored_messages(self):
        """Dovecot's own answers follow the rules in the module docstring
        (checks the test's assumptions, whatever the target)."""
        for n, (name, raw) in enumerate(self.seeded, 1):
            self.assertSameBytes(self.ref["RETR %d" % n], stuff(dovecot_pop3_form(raw)),
                                 "reference RETR of %r" % name)

    def test_same_answers_as_dovecot(self):
        c = self.session(self.user)
        got = self._collect(c, len(self.seeded))
        self.assertOk(c.quit())
        names = {n: name for n, (name, _) in enumerate(self.seeded, 1)}
        for key in self.ref:
            n = int(key.split()[1]) if len(key.split()) > 1 else None
            with self.subTest(key, message=names.get(n)):
                self.assertSameBytes(got[key], self.ref[key], "%s (%s)" % (key, names.get(n)))

    def test_retr_is_stored_message(self):
        c = self.session(self.user)
        for n, (name, raw) in enumerate(self.seeded, 1):
            with self.subTest(name):
                _, body = c.multi("RETR %d" % n)
                self.assertSameBytes(body, stuff(dovecot_pop3_form(raw)), "RETR %d (%s)" % (n, name))

    def test_sizes_are_imap_rfc822_size(self):
        state, _ = self.dovecot.imap_state(self.user)
        c = self.session(self.user)
        _, body = c.multi("LIST")
        sizes = {n: int(v) for n, v in parse_scan_listing(body).items()}
        self.assertEqual(sizes, {n: s for n, (_, s, _) in enumerate(state, 1)})
        # And the size is the CRLF form without the added final CRLF.
        for n, (name, raw) in enumerate(self.seeded, 1):
            expected = len(re.sub(rb"(?<!\r)\n", b"\r\n", raw))
            self.assertEqual(sizes[n], expected, name)


class NulByteTest(Pop3TestCase):
    """Dovecot's POP3 sends NUL as it is; its IMAP BODY[] sends 0x80
    instead, which is all an IMAP client can get without BINARY. Sizes must
    match; the content must match with NUL or with 0x80 in its place."""

    def test_nul_byte(self):
        user, _ = self.dovecot.new_user()
        self.dovecot.seed(user, NUL_MESSAGE)
        ref = self.reference_session(user)
        ref_list = ref.cmd("LIST 1")
        _, ref_retr = ref.multi("RETR 1")
        _, ref_top = ref.multi("TOP 1 1")
        ref.quit()
        self.assertEqual(ref_retr, NUL_MESSAGE)
        c = self.session(user)
        self.assertEqual(c.cmd("LIST 1"), ref_list)
        _, retr = c.multi("RETR 1")
        _, top = c.multi("TOP 1 1")
        for got, want in ((retr, ref_retr), (top, ref_top)):
            self.assertIn(got, (want, want.replace(b"\x00", b"\x80")))


class BigMessageTest(Pop3TestCase):
    """A 20 MB attachment, generated at test time."""

    def test_big_message(self):
        user, _ = self.dovecot.new_user()
        raw = big_message()
        self.dovecot.seed(user, b"Subject: small before\r\n\r\nx\r\n")
        self.dovecot.seed(user, raw)
        self.dovecot.seed(user, b"Subject: small after\r\n\r\ny\r\n")
        ref = self.reference_session(user)
        ref_answers = [ref.cmd("STAT"), ref.multi("LIST")[1], ref.multi("UIDL")[1],
                       ref.multi("TOP 2 10")[1], ref.multi("RETR 2")]
        ref.quit()
        self.assertEqual(ref_answers[4][1], stuff(dovecot_pop3_form(raw)))
        c = self.session(user)
        answers = [c.cmd("STAT"), c.multi("LIST")[1], c.multi("UIDL")[1],
                   c.multi("TOP 2 10")[1], c.multi("RETR 2")]
        # Then the session still works.
        _, after = c.multi("RETR 3")
        self.assertEqual(after, b"Subject: small after\r\n\r\ny\r\n")
        self.assertOk(c.quit())
        self.assertEqual(answers[:4], ref_answers[:4])
        self.assertEqual(answers[4][0][:3], b"+OK")
        got, want = answers[4][1], ref_answers[4][1]
        self.assertEqual((len(got), hashlib.sha256(got).hexdigest()),
                         (len(want), hashlib.sha256(want).hexdigest()),
                         "RETR of the 20 MB message differs from Dovecot's")


if __name__ == "__main__":
    main()
