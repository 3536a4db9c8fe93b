"""Every POP3 command, its argument errors, pipelining, line limits."""

import base64
import time

from harness import (AGAINST_DOVECOT, Closed, EMPTY_USER, Pop3TestCase, main,
                     parse_scan_listing)

MESSAGES = [
    b"From: a@example.com\r\nSubject: first\r\n\r\nbody one\r\nsecond line\r\nthird line\r\n",
    b"From: b@example.com\r\nSubject: second\r\n\r\nbody two\r\n",
    b"From: c@example.com\r\nSubject: third\r\nX-Long: " + b"y" * 300 + b"\r\n\r\n"
    + b"".join(b"line %d\r\n" % i for i in range(50)),
]

# After how many consecutive bad commands the server hangs up.
BAD_COMMAND_LIMIT = 22 if AGAINST_DOVECOT else 10


def b64(data):
    return base64.b64encode(data).decode("ascii")


class CommandTest(Pop3TestCase):

    def setUp(self):
        super().setUp()
        self.user, self.password = self.dovecot.new_user()
        for raw in MESSAGES:
            self.dovecot.seed(self.user, raw)

    def login(self):
        return self.session(self.user, self.password)

    # -- greeting, CAPA, QUIT ------------------------------------------------

    def test_greeting_and_quit_before_login(self):
        c = self.connect()
        self.assertRegex(c.greeting, rb"^\+OK[ \r]")
        self.assertOk(c.cmd("QUIT"))
        self.assertEqual(c.read_until_closed(), b"")

    def test_capa_before_login(self):
        c = self.connect()
        _, body = c.multi("CAPA")
        caps = [l for l in body.split(b"\r\n") if l]
        names = {l.split(b" ")[0].upper() for l in caps}
        for cap in (b"TOP", b"UIDL", b"USER", b"RESP-CODES", b"AUTH-RESP-CODE",
                    b"PIPELINING", b"SASL"):
            self.assertIn(cap, names, caps)
        sasl = [l for l in caps if l.upper().startswith(b"SASL ")]
        self.assertIn(b"PLAIN", sasl[0].upper().split()[1:], sasl)
        if not AGAINST_DOVECOT:
            self.assertIn(b"EXPIRE NEVER", [l.upper() for l in caps], caps)
            self.assertTrue(any(l.upper().startswith(b"IMPLEMENTATION") for l in caps), caps)
        # Still usable afterwards.
        self.assertOk(c.login(self.user, self.password))

    def test_capa_after_login(self):
        c = self.login()
        _, body = c.multi("CAPA")
        names = {l.split(b" ")[0].upper() for l in body.split(b"\r\n") if l}
        for cap in (b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING"):
            self.assertIn(cap, names, body)

    def test_quit_after_login(self):
        c = self.login()
        self.assertOk(c.cmd("QUIT"))
        self.assertEqual(c.read_until_closed(), b"")

    # -- authentication ----------------------------------------------------

    def test_user_pass(self):
        c = self.connect()
        self.assertOk(c.cmd("USER " + self.user))
        self.assertOk(c.cmd("PASS " + self.password))
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")

    def test_pass_without_user(self):
        c = self.connect()
        self.assertErr(c.cmd("PASS " + self.password))
        self.assertErr(c.cmd("STAT"))

    def test_commands_before_login_are_refused(self):
        c = self.connect()
        # Only two: Dovecot hangs up after three bad commands before login.
        for cmd in ("STAT", "RETR 1"):
            self.assertErr(c.cmd(cmd), cmd)
        self.assertOk(c.login(self.user, self.password))
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")

    def test_auth_commands_after_login_are_refused(self):
        c = self.login()
        self.assertErr(c.cmd("USER " + self.user))
        self.assertErr(c.cmd("PASS " + self.password))
        self.assertErr(c.cmd("AUTH PLAIN " + b64(b"\0%s\0%s" % (self.user.encode(), self.password.encode()))))
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")

    def test_auth_plain_initial_response(self):
        c = self.connect()
        r = c.cmd("AUTH PLAIN " + b64(b"\0" + self.user.encode() + b"\0" + self.password.encode()))
        self.assertOk(r)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")

    def test_auth_plain_with_authzid_equal_to_user(self):
        c = self.connect()
        u, p = self.user.encode(), self.password.encode()
        self.assertOk(c.cmd("AUTH PLAIN " + b64(u + b"\0" + u + b"\0" + p)))
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")

    def test_auth_plain_continuation(self):
        c = self.connect()
        r = c.cmd("AUTH PLAIN")
        self.assertTrue(r.startswith(b"+ ") or r == b"+\r\n", r)
        self.assertOk(c.cmd(b64(b"\0" + self.user.encode() + b"\0" + self.password.encode())))
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")

    def test_auth_lowercase_mechanism(self):
        c = self.connect()
        self.assertOk(c.cmd("auth plain " + b64(b"\0" + self.user.encode() + b"\0" + self.password.encode())))

    def test_bare_auth_lists_mechanisms(self):
        c = self.connect()
        _, body = c.multi("AUTH")
        mechs = [l.upper() for l in body.split(b"\r\n") if l]
        self.assertIn(b"PLAIN", mechs)
        self.assertOk(c.login(self.user, self.password))

    def test_auth_plain_bad_base64(self):
        c = self.connect()
        self.assertErr(c.cmd("AUTH PLAIN !!!notbase64"))
        r = c.cmd("AUTH PLAIN")
        self.assertTrue(r.startswith(b"+"), r)
        self.assertErr(c.cmd("%%%"))
        # The connection is still usable.
        self.assertOk(c.login(self.user, self.password))

    def test_auth_plain_malformed_credentials(self):
        c = self.connect()
        # Decodes fine but has no NUL separators.
        self.assertErr(c.cmd("AUTH PLAIN " + b64(b"just-a-string")))
        self.assertOk(c.login(self.user, self.password))

    def test_auth_plain_cancelled(self):
        c = self.connect()
        r = c.cmd("AUTH PLAIN")
        self.assertTrue(r.startswith(b"+"), r)
        self.assertErr(c.cmd("*"))
        self.assertOk(c.login(self.user, self.password))

    def test_auth_unknown_mechanism(self):
        c = self.connect()
        self.assertErr(c.cmd("AUTH X-UNKNOWN-MECH"))
        self.assertOk(c.login(self.user, self.password))

    # -- transaction commands ------------------------------------------------

    def test_stat_list_sizes_match_imap(self):
        c = self.login()
        stat = c.cmd("STAT")
        _, body = c.multi("LIST")
        sizes = {n: int(v) for n, v in parse_scan_listing(body).items()}
        state, _ = self.dovecot.imap_state(self.user)
        self.assertEqual(sizes, {i + 1: s for i, (_, s, _) in enumerate(state)})
        self.assertEqual(stat, b"+OK 3 %d\r\n" % sum(sizes.values()))
        for n, size in sizes.items():
            r = c.cmd("LIST %d" % n)
            self.assertEqual(r, b"+OK %d %d\r\n" % (n, size))

    def test_uidl_is_dovecot_default_format(self):
        c = self.login()
        _, body = c.multi("UIDL")
        uidls = parse_scan_listing(body)
        state, uidvalidity = self.dovecot.imap_state(self.user)
        self.assertEqual(len(uidls), 3)
        for i, (uid, _, _) in enumerate(state):
            value = uidls[i + 1]
            # Dovecot's pop3_uidl_format default %08Xu%08Xv: UID then
            # UIDVALIDITY, 8 hex digits each.
            self.assertRegex(value, rb"^[0-9A-Fa-f]{16}$")
            self.assertEqual(int(value[:8], 16), uid)
            self.assertEqual(int(value[8:], 16), uidvalidity)
            self.assertEqual(c.cmd("UIDL %d" % (i + 1)), b"+OK %d %s\r\n" % (i + 1, value))
        # Byte-identical to Dovecot's own POP3 server.
        ref = self.reference_session(self.user)
        _, ref_body = ref.multi("UIDL")
        ref.quit()
        self.assertEqual(body, ref_body)

    def test_retr(self):
        c = self.login()
        for n, raw in enumerate(MESSAGES, 1):
            status, body = c.multi("RETR %d" % n)
            self.assertEqual(body, raw)
            self.assertRegex(status, rb"^\+OK")

    def test_top(self):
        c = self.login()
        raw = MESSAGES[0]
        header, _, text = raw.partition(b"\r\n\r\n")
        lines = text.split(b"\r\n")
        _, body = c.multi("TOP 1 0")
        self.assertEqual(body, header + b"\r\n\r\n")
        _, body = c.multi("TOP 1 2")
        self.assertEqual(body, header + b"\r\n\r\n" + b"\r\n".join(lines[:2]) + b"\r\n")
        _, body = c.multi("TOP 1 100")
        self.assertEqual(body, raw)
        _, body = c.multi("TOP 3 5")
        self.assertEqual(body.count(b"\r\n"), 3 + 1 + 5)

    def test_top_with_huge_line_count(self):
        # fetchmail --keep reads messages with "TOP n 99999999".
        c = self.login()
        for n, raw in enumerate(MESSAGES, 1):
            _, body = c.multi("TOP %d 99999999" % n)
            self.assertEqual(body, raw)

    def test_noop(self):
        c = self.login()
        self.assertOk(c.cmd("NOOP"))
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")

    def test_empty_mailbox(self):
        c = self.session(*EMPTY_USER)
        self.assertEqual(c.cmd("STAT"), b"+OK 0 0\r\n")
        _, body = c.multi("LIST")
        self.assertEqual(body, b"")
        _, body = c.multi("UIDL")
        self.assertEqual(body, b"")
        self.assertErr(c.cmd("RETR 1"))
        self.assertErr(c.cmd("LIST 1"))
        if not AGAINST_DOVECOT:
            self.assertEqual(c.cmd("LAST"), b"+OK 0\r\n")
        self.assertOk(c.quit())

    def test_no_such_message(self):
        c = self.login()
        for cmd in ("LIST 4", "LIST 0", "UIDL 4", "RETR 4", "TOP 4 0"):
            self.assertErr(c.cmd(cmd), cmd)
        self.assertOk(c.quit())
        c2 = self.login()
        for cmd in ("DELE 4", "RETR 0", "DELE 0", "UIDL 0"):
            self.assertErr(c2.cmd(cmd), cmd)
        self.assertEqual(c2.cmd("STAT")[:6], b"+OK 3 ")

    def test_bad_message_numbers(self):
        # A few per session, so a server that counts these as bad commands
        # does not hang up on us.
        for arg in ("-1", "99999999999999999999", "18446744073709551617", "abc", "1x", "+1"):
            c = self.login()
            for verb in ("LIST", "UIDL", "RETR", "DELE"):
                self.assertErr(c.cmd("%s %s" % (verb, arg)), "%s %s" % (verb, arg))
            self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")
            self.assertOk(c.quit())

    def test_missing_arguments(self):
        c = self.login()
        for cmd in ("RETR", "DELE", "TOP", "TOP 1"):
            self.assertErr(c.cmd(cmd), cmd)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")

    def test_extra_arguments_are_refused(self):
        # Dovecot: "-ERR Noise after message number"; nothing happens.
        c = self.login()
        for cmd in ("LIST 1 2 3", "LIST 1 2", "UIDL 1 2", "RETR 1 2", "DELE 1 2", "TOP 1 2 3"):
            self.assertErr(c.cmd(cmd), cmd)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")
        self.assertOk(c.cmd("LIST 1"))

    def test_top_bad_line_counts(self):
        c = self.login()
        self.assertErr(c.cmd("TOP 1 -1"))
        self.assertErr(c.cmd("TOP 1 x"))
        r = c.cmd("TOP 1 99999999999999999999")
        if r.startswith(b"+OK"):
            # Accepted as "all lines": must then be the whole message.
            self.assertEqual(c.read_multiline(), MESSAGES[0])
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")

    def test_dele_and_deleted_message(self):
        c = self.login()
        _, before = c.multi("UIDL")
        self.assertOk(c.cmd("DELE 2"))
        for cmd in ("DELE 2", "RETR 2", "TOP 2 0", "LIST 2", "UIDL 2"):
            self.assertErr(c.cmd(cmd), cmd)
        _, body = c.multi("LIST")
        self.assertEqual(sorted(parse_scan_listing(body)), [1, 3])
        _, body = c.multi("UIDL")
        uidls = parse_scan_listing(before)
        del uidls[2]
        self.assertEqual(parse_scan_listing(body), uidls)
        sizes = [len(MESSAGES[0]), len(MESSAGES[2])]
        self.assertEqual(c.cmd("STAT"), b"+OK 2 %d\r\n" % sum(sizes))
        # Other messages keep their numbers.
        _, body = c.multi("RETR 3")
        self.assertEqual(body, MESSAGES[2])

    def test_rset_undeletes(self):
        c = self.login()
        stat = c.cmd("STAT")
        self.assertOk(c.cmd("DELE 1"))
        self.assertOk(c.cmd("DELE 3"))
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 1 ")
        self.assertOk(c.cmd("RSET"))
        self.assertEqual(c.cmd("STAT"), stat)
        _, body = c.multi("RETR 1")
        self.assertEqual(body, MESSAGES[0])
        self.assertOk(c.cmd("DELE 1"))

    def test_case_insensitive_verbs(self):
        c = self.connect()
        self.assertOk(c.cmd("user " + self.user))
        self.assertOk(c.cmd("pAsS " + self.password))
        self.assertEqual(c.cmd("stat")[:6], b"+OK 3 ")
        self.assertEqual(c.cmd("LiSt 2"), b"+OK 2 %d\r\n" % len(MESSAGES[1]))
        self.assertOk(c.cmd("uidl 1"))
        status = c.cmd("retr 2")
        self.assertOk(status)
        self.assertEqual(c.read_multiline(), MESSAGES[1])
        self.assertOk(c.cmd("Top 1 0"))
        c.read_multiline()
        self.assertOk(c.cmd("noop"))
        self.assertOk(c.cmd("dele 1"))
        self.assertOk(c.cmd("rset"))
        self.assertOk(c.cmd("capa"))
        c.read_multiline()
        self.assertOk(c.cmd("quit"))

    def test_unknown_command(self):
        c = self.login()
        self.assertErr(c.cmd("XYZZY"))
        self.assertErr(c.cmd("APOP %s 0123456789abcdef0123456789abcdef" % self.user))
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")

    # -- pipelining ------------------------------------------------------------

    def serial_answers(self):
        c = self.login()
        out = [c.cmd("STAT")]
        out.append(c.multi("LIST"))
        out.append(c.cmd("UIDL 1"))
        out.append(c.multi("TOP 1 1"))
        out.append(c.multi("RETR 2"))
        out.append(c.cmd("LIST 3"))
        out.append(c.cmd("NOOP"))
        c.quit()
        return out

    def test_pipelining_in_one_packet(self):
        expected = self.serial_answers()
        c = self.login()
        c.send(b"STAT\r\nLIST\r\nUIDL 1\r\nTOP 1 1\r\nRETR 2\r\nLIST 3\r\nNOOP\r\n")
        got = [c.readline()]
        got.append((c.readline(), c.read_multiline()))
        got.append(c.readline())
        got.append((c.readline(), c.read_multiline()))
        got.append((c.readline(), c.read_multiline()))
        got.append(c.readline())
        got.append(c.readline())
        self.assertEqual(got, expected)

    def test_pipelined_login(self):
        c = self.connect()
        c.send(("USER %s\r\nPASS %s\r\nSTAT\r\nRETR 2\r\nQUIT\r\n"
                % (self.user, self.password)).encode())
        self.assertOk(c.readline())
        self.assertOk(c.readline())
        self.assertEqual(c.readline()[:6], b"+OK 3 ")
        self.assertOk(c.readline())
        self.assertEqual(c.read_multiline(), MESSAGES[1])
        self.assertOk(c.readline())
        self.assertEqual(c.read_until_closed(), b"")

    def test_pipelined_retr_of_every_message(self):
        # As mpop does: all RETRs at once, then QUIT.
        c = self.login()
        c.send(b"".join(b"RETR %d\r\n" % n for n in (1, 2, 3)) + b"QUIT\r\n")
        for raw in MESSAGES:
            self.assertOk(c.readline())
            self.assertEqual(c.read_multiline(), raw)
        self.assertOk(c.readline())

    def test_command_split_across_packets(self):
        c = self.login()
        c.send(b"ST")
        time.sleep(0.2)
        c.send(b"AT\r")
        time.sleep(0.2)
        c.send(b"\n")
        self.assertEqual(c.readline()[:6], b"+OK 3 ")

    # -- line length, bad commands ---------------------------------------------

    def test_long_line_is_rejected(self):
        self.require_popbridge("Dovecot accepts long lines")
        c = self.login()
        self.assertErr(c.cmd("NOOP " + "x" * 300))
        # A command just under the limit is still answered normally.
        self.assertOk(c.cmd("NOOP" + " " * 200))
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")

    def test_very_long_line_is_rejected(self):
        self.require_popbridge("Dovecot accepts long lines")
        c = self.connect()
        c.send(b"USER " + b"a" * 100000 + b"\r\n")
        try:
            self.assertErr(c.readline())
        except Closed:
            pass  # hanging up on a 100 kB line is acceptable too

    def test_bad_commands_close_the_connection(self):
        c = self.login()
        for i in range(BAD_COMMAND_LIMIT - 1):
            self.assertErr(c.cmd("BOGUS%d" % i))
        c.send(b"BOGUS-LAST\r\n")
        rest = c.read_until_closed()
        self.assertTrue(rest == b"" or rest.startswith(b"-ERR"), rest)

    def test_bad_commands_close_before_login(self):
        c = self.connect()
        closed = False
        try:
            for i in range(BAD_COMMAND_LIMIT):
                self.assertErr(c.cmd("BOGUS%d" % i))
        except Closed:
            closed = True
        if not closed:
            # Answered all of them: it must hang up now.
            c.read_until_closed()

    def test_good_commands_do_not_count_as_bad(self):
        c = self.login()
        for i in range(BAD_COMMAND_LIMIT + 5):
            self.assertOk(c.cmd("NOOP"))
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")


class LastTest(Pop3TestCase):
    """LAST: the highest message number already \\Seen at login, raised by
    RETR; it never changes flags on the server."""

    def setUp(self):
        super().setUp()
        self.require_popbridge("Dovecot has no LAST command")
        self.user, self.password = self.dovecot.new_user()

    def test_last_is_highest_seen_at_login(self):
        for flags in ("S", "", "S", "", ""):
            self.dovecot.seed(self.user, b"Subject: x\r\n\r\nbody\r\n", flags=flags)
        c = self.session(self.user)
        self.assertEqual(c.cmd("LAST"), b"+OK 3\r\n")
        c.multi("RETR 2")
        self.assertEqual(c.cmd("LAST"), b"+OK 3\r\n")
        c.multi("RETR 5")
        self.assertEqual(c.cmd("LAST"), b"+OK 5\r\n")
        c.multi("RETR 4")
        self.assertEqual(c.cmd("LAST"), b"+OK 5\r\n")
        self.assertOk(c.quit())
        # RETR set no flags: the next session sees the same LAST as before.
        state, _ = self.dovecot.imap_state(self.user)
        self.assertEqual([("\\Seen" in f) for _, _, f in state], [True, False, True, False, False])
        c = self.session(self.user)
        self.assertEqual(c.cmd("LAST"), b"+OK 3\r\n")

    def test_last_without_seen_messages(self):
        for _ in range(3):
            self.dovecot.seed(self.user, b"Subject: x\r\n\r\nbody\r\n")
        c = self.session(self.user)
        self.assertEqual(c.cmd("LAST"), b"+OK 0\r\n")
        c.multi("RETR 1")
        self.assertEqual(c.cmd("LAST"), b"+OK 1\r\n")
        self.assertOk(c.cmd("RSET"))
        self.assertRegex(c.cmd("LAST"), rb"^\+OK [01]\r\n$")
        self.assertOk(c.quit())
        state, _ = self.dovecot.imap_state(self.user)
        self.assertFalse(any("\\Seen" in f for _, _, f in state), state)

    def test_last_before_login_is_refused(self):
        c = self.connect()
        self.assertErr(c.cmd("LAST"))


if __name__ == "__main__":
    main()
