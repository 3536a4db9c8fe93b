"""What POP3 sessions do to the IMAP mailbox: DELE hides with a keyword at
QUIT (the mail stays on the server), RSET and disconnects change nothing,
RETR never sets \\Seen, each session works on a snapshot taken at login."""

from harness import (HIDE_KEYWORD, Pop3TestCase, main,
                     parse_scan_listing)


def message(n):
    return b"From: sender@example.com\r\nSubject: message %d\r\n\r\nbody of message %d\r\n" % (n, n)


def flags_without_recent(state):
    return [(uid, frozenset(f - {"\\Recent"})) for uid, _, f in state]


class MailboxTest(Pop3TestCase):

    def setUp(self):
        super().setUp()
        self.user, self.password = self.dovecot.new_user()

    def seed(self, count, flags=""):
        for n in range(1, count + 1):
            self.dovecot.seed(self.user, message(n), flags=flags)

    def retr_all(self, c):
        _, body = c.multi("LIST")
        return [c.multi("RETR %d" % n)[1] for n in sorted(parse_scan_listing(body))]

    def test_dele_quit_hides_with_keyword(self):
        self.seed(4)
        c = self.session(self.user)
        _, uidl_before = c.multi("UIDL")
        self.assertOk(c.cmd("DELE 2"))
        self.assertOk(c.cmd("DELE 4"))
        self.assertOk(c.quit())
        # Still on the server, with the keyword on exactly those two.
        state, _ = self.dovecot.imap_state(self.user)
        self.assertEqual(len(state), 4)
        self.assertEqual([HIDE_KEYWORD in f for _, _, f in state], [False, True, False, True])
        # Hidden from the next session; the others keep their UIDLs.
        c = self.session(self.user)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 2 ")
        _, uidl_after = c.multi("UIDL")
        before = parse_scan_listing(uidl_before)
        after = parse_scan_listing(uidl_after)
        self.assertEqual(after, {1: before[1], 2: before[3]})
        self.assertEqual(self.retr_all(c), [message(1), message(3)])
        self.assertOk(c.quit())

    def test_pipelined_dele_and_quit(self):
        self.seed(3)
        c = self.session(self.user)
        c.send(b"DELE 1\r\nDELE 3\r\nQUIT\r\n")
        for _ in range(3):
            self.assertOk(c.readline())
        self.assertEqual(c.read_until_closed(), b"")
        state, _ = self.dovecot.imap_state(self.user)
        self.assertEqual([HIDE_KEYWORD in f for _, _, f in state], [True, False, True])

    def test_dele_all_then_quit(self):
        self.seed(3)
        c = self.session(self.user)
        for n in (1, 2, 3):
            self.assertOk(c.cmd("DELE %d" % n))
        self.assertEqual(c.cmd("STAT"), b"+OK 0 0\r\n")
        self.assertOk(c.quit())
        state, _ = self.dovecot.imap_state(self.user)
        self.assertEqual(len(state), 3)
        self.assertTrue(all(HIDE_KEYWORD in f for _, _, f in state), state)
        c = self.session(self.user)
        self.assertEqual(c.cmd("STAT"), b"+OK 0 0\r\n")
        _, body = c.multi("LIST")
        self.assertEqual(body, b"")

    def test_dele_rset_quit_keeps_everything(self):
        self.seed(3)
        before, _ = self.dovecot.imap_state(self.user)
        c = self.session(self.user)
        self.assertOk(c.cmd("DELE 1"))
        self.assertOk(c.cmd("DELE 3"))
        self.assertOk(c.cmd("RSET"))
        self.assertOk(c.quit())
        after, _ = self.dovecot.imap_state(self.user)
        self.assertEqual(flags_without_recent(after), flags_without_recent(before))
        c = self.session(self.user)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")

    def test_dele_then_disconnect_changes_nothing(self):
        self.seed(3)
        before, _ = self.dovecot.imap_state(self.user)
        c = self.session(self.user)
        self.assertOk(c.cmd("DELE 1"))
        self.assertOk(c.cmd("DELE 2"))
        c.close()  # no QUIT
        c = self.session_retry_in_use(self.user)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")
        self.assertEqual(self.retr_all(c), [message(1), message(2), message(3)])
        self.assertOk(c.quit())
        after, _ = self.dovecot.imap_state(self.user)
        self.assertEqual(flags_without_recent(after), flags_without_recent(before))
        self.assertFalse(any(HIDE_KEYWORD in f for _, _, f in after), after)

    def test_retr_and_top_do_not_set_seen(self):
        self.seed(3)
        c = self.session(self.user)
        c.multi("RETR 1")
        c.multi("RETR 2")
        c.multi("TOP 3 5")
        self.assertOk(c.quit())
        state, _ = self.dovecot.imap_state(self.user)
        self.assertFalse(any("\\Seen" in f for _, _, f in state), state)

    def test_quit_keeps_existing_flags(self):
        self.dovecot.seed(self.user, message(1), flags="S")
        self.dovecot.seed(self.user, message(2), flags="F")
        self.dovecot.seed(self.user, message(3), flags="RS")
        self.dovecot.seed(self.user, message(4))
        before, _ = self.dovecot.imap_state(self.user)
        c = self.session(self.user)
        self.retr_all(c)
        self.assertOk(c.cmd("DELE 4"))
        self.assertOk(c.quit())
        after, _ = self.dovecot.imap_state(self.user)
        expected = flags_without_recent(before)
        expected[3] = (expected[3][0], expected[3][1] | {HIDE_KEYWORD})
        self.assertEqual(flags_without_recent(after), expected)

    def test_message_with_keyword_set_over_imap_is_hidden(self):
        self.seed(3)
        imap = self.dovecot.imap(self.user)
        try:
            imap.select("INBOX")
            typ, data = imap.store("2", "+FLAGS", "(%s)" % HIDE_KEYWORD)
            self.assertEqual(typ, "OK", data)
        finally:
            imap.logout()
        c = self.session(self.user)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 2 ")
        self.assertEqual(self.retr_all(c), [message(1), message(3)])

    def test_expunged_over_imap_is_gone(self):
        self.seed(3)
        imap = self.dovecot.imap(self.user)
        try:
            imap.select("INBOX")
            imap.store("1", "+FLAGS", "(\\Deleted)")
            imap.expunge()
        finally:
            imap.logout()
        c = self.session(self.user)
        self.assertEqual(self.retr_all(c), [message(2), message(3)])

    def test_snapshot_at_login(self):
        self.seed(2)
        c = self.session(self.user)
        stat = c.cmd("STAT")
        _, uidl = c.multi("UIDL")
        self.dovecot.seed(self.user, message(3))
        # Mail arriving during the session is not seen by it ...
        self.assertOk(c.cmd("NOOP"))
        self.assertEqual(c.cmd("STAT"), stat)
        self.assertEqual(c.multi("UIDL")[1], uidl)
        self.assertErr(c.cmd("RETR 3"))
        self.assertOk(c.quit())
        # ... but by the next one.
        c = self.session(self.user)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 3 ")
        self.assertEqual(self.retr_all(c), [message(1), message(2), message(3)])

    def test_deleted_messages_stay_hidden_after_new_mail(self):
        self.seed(2)
        c = self.session(self.user)
        self.assertOk(c.cmd("DELE 1"))
        self.assertOk(c.quit())
        self.dovecot.seed(self.user, message(3))
        c = self.session(self.user)
        self.assertEqual(self.retr_all(c), [message(2), message(3)])

    def test_folder_other_than_inbox_untouched(self):
        self.seed(1)
        imap = self.dovecot.imap(self.user)
        try:
            self.assertEqual(imap.create("Archive")[0], "OK")
            self.assertEqual(imap.append("Archive", None, None, message(99))[0], "OK")
        finally:
            imap.logout()
        c = self.session(self.user)
        self.assertEqual(self.retr_all(c), [message(1)])


if __name__ == "__main__":
    main()
