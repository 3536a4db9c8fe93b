"""The [mailbox] policies against a real Dovecot, checked over IMAP after
QUIT: on_delete hide/seen/move/expunge, retention, mark_seen_on_retr,
visible, max_messages, the login folder suffix, UIDL formats, and routing
to two Dovecots by domain. Every policy must leave alone what it was not
asked to touch, above all a message another IMAP client flagged \\Deleted.
"""

import base64
import imaplib
import re
import time
import unittest

from harness import (AGAINST_DOVECOT, HIDE_KEYWORD, Dovecot, Pop3TestCase,
                     Popbridge, main, parse_scan_listing)

if AGAINST_DOVECOT:
    raise unittest.SkipTest("POP3_TARGET=dovecot: popbridge's own mailbox options")


def message(n):
    return (b"From: sender@example.com\r\nSubject: message %d\r\n\r\nbody of message %d\r\n"
            % (n, n))


def folder_state(dovecot, user, folder="INBOX"):
    """{uid: (flags without \\Recent, body)} of a folder; None if it does not exist."""
    conn = dovecot.imap(user)
    try:
        typ, _ = conn.select(folder, readonly=True)
        if typ != "OK":
            return None
        typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
        assert typ == "OK", (typ, data)
        out = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
            out[uid] = (frozenset(flags.group(1).decode().split()) - {"\\Recent"}, item[1])
        return out
    finally:
        try:
            conn.logout()
        except Exception:
            pass


def flags_of(state):
    return {uid: flags for uid, (flags, _) in state.items()}


class Imap:
    """Another IMAP client on the same mailbox."""

    def __init__(self, dovecot, user, folder="INBOX"):
        self.conn = dovecot.imap(user)
        typ, _ = self.conn.select(folder)
        assert typ == "OK", typ

    def flag(self, uid, flags):
        typ, data = self.conn.uid("STORE", str(uid), "+FLAGS", flags)
        assert typ == "OK", (typ, data)

    def expunge(self, uid):
        self.flag(uid, "(\\Deleted)")
        typ, data = self.conn.uid("EXPUNGE", str(uid))
        assert typ == "OK", (typ, data)

    def close(self):
        try:
            self.conn.logout()
        except Exception:
            pass


class PolicyMixin:
    """Each on_delete policy, the same scenarios. Subclasses say what the
    deleted messages become (expect_inbox / expect_trash)."""

    on_delete = None

    @classmethod
    def setUpClass(cls):
        cls.popbridge_options = {"on_delete": cls.on_delete}
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.user, self.password = self.dovecot.new_user()

    def seed(self, count):
        for n in range(1, count + 1):
            self.dovecot.seed(self.user, message(n))

    def log(self):
        return self.popbridge.read_log(self._log_start)

    def check(self, deleted, untouched, others_deleted=(), gone=()):
        """The deleted UIDs got the policy; the untouched ones kept their
        flags (empty); others_deleted still exist with \\Deleted; gone are
        gone."""
        inbox = folder_state(self.dovecot, self.user)
        trash = folder_state(self.dovecot, self.user, "Trash")
        for uid in untouched:
            self.assertEqual(inbox[uid][0], frozenset(), (uid, inbox))
        for uid in others_deleted:
            self.assertIn(uid, inbox, "a message another client flagged \\Deleted was removed")
            self.assertEqual(inbox[uid][0], frozenset({"\\Deleted"}), inbox)
        for uid in gone:
            self.assertNotIn(uid, inbox)
        self.expect(inbox, trash, deleted)
        self.assertEqual(set(inbox) - set(deleted) - set(gone),
                         set(untouched) | set(others_deleted))
        # Never a plain EXPUNGE, only UID EXPUNGE.
        self.assertNotRegex(self.log(), r"(?m)(?<!UID) EXPUNGE[^\n]*: ok")

    def test_dele_quit(self):
        self.seed(5)
        other = Imap(self.dovecot, self.user)
        try:
            other.flag(5, "(\\Deleted)")          # before the POP3 login
            c = self.session(self.user)
            other.flag(4, "(\\Deleted)")          # while the POP3 session is open
            self.assertOk(c.cmd("DELE 1"))
            self.assertOk(c.cmd("DELE 2"))
            c.multi("RETR 3")
            self.assertOk(c.quit())
        finally:
            other.close()
        self.check(deleted=[1, 2], untouched=[3], others_deleted=[4, 5])
        self.check_commands()
        # The next session lists neither the deleted ones nor, after an
        # expunge, anything that is gone.
        c = self.session(self.user)
        _, body = c.multi("UIDL")
        uids = sorted(int(v[:8], 16) for v in parse_scan_listing(body).values())
        self.assertEqual(uids, [3, 4, 5])
        self.assertOk(c.quit())

    def test_rset_and_drop_change_nothing(self):
        self.seed(2)
        c = self.session(self.user)
        self.assertOk(c.cmd("DELE 1"))
        self.assertOk(c.cmd("RSET"))
        self.assertOk(c.quit())
        c = self.session_retry_in_use(self.user)
        self.assertOk(c.cmd("DELE 2"))
        c.close()  # no QUIT
        time.sleep(0.3)
        inbox = folder_state(self.dovecot, self.user)
        self.assertEqual(flags_of(inbox), {1: frozenset(), 2: frozenset()})

    def test_message_expunged_mid_session(self):
        self.seed(4)
        c = self.session(self.user)
        other = Imap(self.dovecot, self.user)
        try:
            other.expunge(2)
            r = c.cmd("RETR 2")
            self.assertErr(r)
            _, body = c.multi("RETR 4")          # the rest of the session works
            self.assertIn(b"body of message 4", body)
            self.assertOk(c.cmd("DELE 1"))
            self.assertOk(c.cmd("DELE 2"))
            self.assertOk(c.cmd("DELE 3"))
            other.expunge(3)                     # popbridge's IMAP session has not seen this one
        finally:
            other.close()
        self.assertOk(c.quit())
        self.check(deleted=[1], untouched=[4], gone=[2, 3])

    def check_commands(self):
        pass


class HidePolicyTest(PolicyMixin, Pop3TestCase):
    on_delete = "hide"

    def expect(self, inbox, trash, deleted):
        for uid in deleted:
            self.assertEqual(inbox[uid][0], frozenset({HIDE_KEYWORD}))
        self.assertFalse(trash)

    def check_commands(self):
        self.assertIn("UID STORE 1:2 +FLAGS.SILENT (%s): ok" % HIDE_KEYWORD, self.log())


class SeenPolicyTest(PolicyMixin, Pop3TestCase):
    on_delete = "seen"

    def expect(self, inbox, trash, deleted):
        for uid in deleted:
            self.assertEqual(inbox[uid][0], frozenset({HIDE_KEYWORD, "\\Seen"}))
        self.assertFalse(trash)

    def check_commands(self):
        self.assertIn("UID STORE 1:2 +FLAGS.SILENT (\\Seen %s): ok" % HIDE_KEYWORD, self.log())


class MovePolicyTest(PolicyMixin, Pop3TestCase):
    on_delete = "move"

    def expect(self, inbox, trash, deleted):
        for uid in deleted:
            self.assertNotIn(uid, inbox)
        self.assertIsNotNone(trash, "Trash was not created")
        self.assertEqual(sorted(body for _, body in trash.values()),
                         sorted(message(uid) for uid in deleted))
        self.assertTrue(all(not flags for flags, _ in trash.values()), trash)

    def check_commands(self):
        self.assertIn("UID MOVE 1:2 Trash: ok", self.log())


class ExpungePolicyTest(PolicyMixin, Pop3TestCase):
    on_delete = "expunge"

    def expect(self, inbox, trash, deleted):
        for uid in deleted:
            self.assertNotIn(uid, inbox)
        self.assertFalse(trash)

    def check_commands(self):
        log = self.log()
        self.assertIn("UID STORE 1:2 +FLAGS.SILENT (\\Deleted): ok", log)
        self.assertIn("UID EXPUNGE 1:2: ok", log)


class CapabilityOverride(Pop3TestCase):
    """A Dovecot that advertises only these capabilities (imap_capability):
    it still runs MOVE, but popbridge must go by what is advertised."""

    capabilities = None

    @classmethod
    def setUpClass(cls):
        cls.dovecot = Dovecot()
        with open(cls.dovecot.conf_path, "a") as f:
            f.write("imap_capability = %s\n" % cls.capabilities)
        cls.dovecot.start()
        cls.popbridge = None
        try:
            cls.popbridge = Popbridge(cls.dovecot.imap_port, **cls.popbridge_options).start()
        except BaseException:
            cls.dovecot.cleanup()
            raise
        cls.pop3_port = cls.popbridge.port


class MoveByCopyPolicyTest(MovePolicyTest, CapabilityOverride):
    """No MOVE advertised: UID COPY, UID STORE +\Deleted, UID EXPUNGE."""
    capabilities = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE UIDPLUS"

    def check_commands(self):
        log = self.log()
        self.assertIn("UID COPY 1:2 Trash: ok", log)
        self.assertIn("UID STORE 1:2 +FLAGS.SILENT (\\Deleted): ok", log)
        self.assertIn("UID EXPUNGE 1:2: ok", log)
        self.assertNotIn("UID MOVE", log)


class NoUidplusTest(CapabilityOverride):
    """on_delete = "expunge" on a server without UIDPLUS: no session."""
    capabilities = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE MOVE"
    popbridge_options = {"on_delete": "expunge"}

    def test_login_is_refused(self):
        user, password = self.dovecot.new_user()
        self.dovecot.seed(user, message(1))
        c = self.connect()
        r = c.login(user, password)
        self.assertTrue(r.startswith(b"-ERR [SYS/PERM]"), r)
        self.assertIn("needs UIDPLUS", self.popbridge.read_log(self._log_start))
        self.assertEqual(flags_of(folder_state(self.dovecot, user)), {1: frozenset()})


class MarkSeenOnRetrTest(Pop3TestCase):
    popbridge_options = {"extra": "mark_seen_on_retr = true\n"}

    def setUp(self):
        super().setUp()
        self.user, _ = self.dovecot.new_user()
        for n in range(1, 5):
            self.dovecot.seed(self.user, message(n))

    def test_retr_sets_seen_at_quit_only(self):
        c = self.session(self.user)
        c.multi("RETR 1")
        c.multi("TOP 2 0")                 # not whole: no \Seen
        c.multi("RETR 3")
        self.assertOk(c.cmd("DELE 3"))
        # Nothing before QUIT.
        self.assertEqual(set(flags_of(folder_state(self.dovecot, self.user)).values()),
                         {frozenset()})
        self.assertOk(c.quit())
        self.assertEqual(flags_of(folder_state(self.dovecot, self.user)),
                         {1: frozenset({"\\Seen"}), 2: frozenset(),
                          3: frozenset({"\\Seen", HIDE_KEYWORD}), 4: frozenset()})

    def test_no_quit_no_seen(self):
        c = self.session(self.user)
        c.multi("RETR 1")
        c.close()
        time.sleep(0.3)
        self.assertEqual(folder_state(self.dovecot, self.user)[1][0], frozenset())


class UnseenBatchTest(Pop3TestCase):
    """visible = "unseen" with max_messages = 2: Gmail-like batches of the
    oldest messages not yet read."""
    popbridge_options = {"extra": 'visible = "unseen"\nmax_messages = 2\nmark_seen_on_retr = true\n'}

    def test_batches(self):
        user, _ = self.dovecot.new_user()
        for n in range(1, 7):
            self.dovecot.seed(user, message(n), flags="S" if n == 1 else "")
        other = Imap(self.dovecot, user)
        other.flag(3, "(%s)" % HIDE_KEYWORD)
        other.close()

        def listed():
            c = self.session_retry_in_use(user)
            _, body = c.multi("UIDL")
            return c, sorted(int(v[:8], 16) for v in parse_scan_listing(body).values())

        c, uids = listed()
        self.assertEqual(uids, [2, 4])
        self.assertEqual(c.cmd("LAST"), b"+OK 0\r\n")
        c.multi("RETR 1")
        c.multi("RETR 2")
        self.assertOk(c.quit())
        c, uids = listed()
        self.assertEqual(uids, [5, 6])
        self.assertOk(c.quit())


class MaxMessagesTest(Pop3TestCase):
    popbridge_options = {"extra": "max_messages = 3\n"}

    def test_oldest_first(self):
        user, _ = self.dovecot.new_user()
        for n in range(1, 6):
            self.dovecot.seed(user, message(n), flags="S" if n == 2 else "")
        c = self.session(user)
        _, body = c.multi("UIDL")
        self.assertEqual(sorted(int(v[:8], 16) for v in parse_scan_listing(body).values()),
                         [1, 2, 3])
        self.assertOk(c.cmd("DELE 1"))
        self.assertOk(c.quit())
        c = self.session_retry_in_use(user)
        _, body = c.multi("UIDL")
        self.assertEqual(sorted(int(v[:8], 16) for v in parse_scan_listing(body).values()),
                         [2, 3, 4])
        self.assertOk(c.quit())


class RetentionMixin:
    """Hidden messages APPENDed with an old INTERNALDATE; retention_days = 3."""

    action = None

    @classmethod
    def setUpClass(cls):
        cls.popbridge_options = {
            "extra": "retention_days = 3\nretention_action = %s\n" % '"%s"' % cls.action}
        super().setUpClass()

    def append(self, conn, n, days_ago, flags):
        when = imaplib.Time2Internaldate(time.time() - days_ago * 86400)
        typ, data = conn.append("INBOX", flags, when, message(n))
        self.assertEqual(typ, "OK", data)

    def test_old_hidden_messages_go_at_quit(self):
        user, _ = self.dovecot.new_user()
        conn = self.dovecot.imap(user)
        try:
            self.append(conn, 1, 10, "(%s)" % HIDE_KEYWORD)      # old, hidden: goes
            self.append(conn, 2, 10, "()")                        # old, visible: stays
            self.append(conn, 3, 0, "(%s)" % HIDE_KEYWORD)       # hidden today: stays
            self.append(conn, 4, 2, "(%s)" % HIDE_KEYWORD)       # hidden, 2 days: stays
            self.append(conn, 5, 10, "(\\Deleted)")               # another client's \Deleted: stays
            self.append(conn, 6, 30, "(\\Seen %s)" % HIDE_KEYWORD)  # old, hidden: goes
        finally:
            conn.logout()
        c = self.session(user)
        capa = c.multi("CAPA")[1]
        self.assertIn(b"EXPIRE 3\r\n", capa)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 2 ")
        self.assertOk(c.quit())
        inbox = folder_state(self.dovecot, user)
        self.assertEqual(sorted(inbox), [2, 3, 4, 5])
        self.assertEqual(inbox[5][0], frozenset({"\\Deleted"}))
        self.assertEqual(inbox[2][0], frozenset())
        trash = folder_state(self.dovecot, user, "Trash")
        self.expect(trash)
        self.assertIn("UID SEARCH KEYWORD %s BEFORE " % HIDE_KEYWORD,
                      self.popbridge.read_log(self._log_start))


class RetentionExpungeTest(RetentionMixin, Pop3TestCase):
    action = "expunge"

    def expect(self, trash):
        self.assertFalse(trash)


class RetentionMoveTest(RetentionMixin, Pop3TestCase):
    action = "move"

    def expect(self, trash):
        self.assertEqual(sorted(body for _, body in trash.values()), [message(1), message(6)])


class FolderSuffixTest(Pop3TestCase):
    popbridge_options = {"extra": 'folder_separator = "#"\n'}

    def setUp(self):
        super().setUp()
        self.user, self.password = self.dovecot.new_user()
        self.dovecot.seed(self.user, message(1))
        conn = self.dovecot.imap(self.user)
        try:
            for folder in ("Archive", "Entw&APw-rfe"):    # "Entwürfe" in modified UTF-7
                self.assertEqual(conn.create(folder)[0], "OK")
            for n in (11, 12):
                self.assertEqual(conn.append("Archive", "()", None, message(n))[0], "OK")
            self.assertEqual(conn.append("Entw&APw-rfe", "()", None, message(21))[0], "OK")
        finally:
            conn.logout()

    def test_suffix_opens_the_folder(self):
        c = self.session(self.user + "#Archive", self.password)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 2 ")
        _, body = c.multi("RETR 1")
        self.assertIn(b"body of message 11", body)
        self.assertOk(c.cmd("DELE 2"))
        self.assertOk(c.quit())
        archive = flags_of(folder_state(self.dovecot, self.user, "Archive"))
        self.assertEqual(archive, {1: frozenset(), 2: frozenset({HIDE_KEYWORD})})
        self.assertEqual(flags_of(folder_state(self.dovecot, self.user)), {1: frozenset()})

    def test_utf8_folder_name(self):
        c = self.session(self.user + "#Entwürfe", self.password)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 1 ")
        self.assertOk(c.quit())

    def test_missing_folder_is_an_error(self):
        c = self.connect()
        r = c.login(self.user + "#NoSuchFolder", self.password)
        self.assertTrue(r.startswith(b"-ERR"), r)
        self.assertNotIn(b"[AUTH]", r)
        c = self.connect()
        r = c.login(self.user + "#Archive", "wrong")
        self.assertTrue(r.startswith(b"-ERR [AUTH]"), r)

    def test_imap_commands_cannot_ride_in_the_login_name(self):
        # The attack of issue 11: a user who knows their own password puts
        # CRLF and IMAP commands in AUTH PLAIN's authcid, after the folder.
        before = folder_state(self.dovecot, self.user)
        authcid = (self.user + "#INBOX\r\nX1 CREATE pwned\r\nX2 SELECT INBOX\r\n"
                   "X3 UID MOVE 1:* pwned\r\nX4 DELETE pwned\r\nX5 NOOP").encode()
        c = self.connect()
        r = c.cmd("AUTH PLAIN " + base64.b64encode(
            b"\0" + authcid + b"\0" + self.password.encode()).decode())
        self.assertTrue(r.startswith(b"-ERR [AUTH]"), r)
        for name in (self.user + "#Arch\tive", self.user + "\x1b#Archive"):
            c = self.connect()
            self.assertTrue(c.login(name, self.password).startswith(b"-ERR [AUTH]"), name)
        self.assertEqual(folder_state(self.dovecot, self.user), before)
        self.assertIsNone(folder_state(self.dovecot, self.user, "pwned"))
        # The same user logs in normally.
        c = self.session(self.user + "#INBOX", self.password)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 1 ")
        self.assertOk(c.quit())

    def test_lock_is_per_folder(self):
        inbox = self.session(self.user)
        archive = self.session(self.user + "#Archive", self.password)
        c = self.connect()
        r = c.login(self.user + "#Archive", self.password)
        self.assertTrue(r.startswith(b"-ERR [IN-USE]"), r)
        c = self.connect()
        r = c.login(self.user + "#INBOX", self.password)   # the same folder as plain login
        self.assertTrue(r.startswith(b"-ERR [IN-USE]"), r)
        self.assertOk(inbox.quit())
        self.assertOk(archive.quit())


class UidlFormatsTest(Pop3TestCase):
    FORMATS = {
        "dovecot": lambda u, v: "%08x%08x" % (u, v),
        "courier": lambda u, v: "%d-%d" % (v, u),
        "cyrus": lambda u, v: "%d.%d" % (v, u),
        "uw": lambda u, v: "%08x%08x" % (v, u),
        "{uidvalidity:08X}-{uid:x}": lambda u, v: "%08X-%x" % (v, u),
    }

    def test_each_format(self):
        user, _ = self.dovecot.new_user()
        for n in range(1, 4):
            self.dovecot.seed(user, message(n))
        other = Imap(self.dovecot, user)
        other.flag(2, "(%s)" % HIDE_KEYWORD)
        other.close()
        state, uidvalidity = self.dovecot.imap_state(user)
        for spec, make in self.FORMATS.items():
            with self.subTest(uidl_format=spec):
                p = Popbridge(self.dovecot.imap_port, extra="uidl_format = %s\n" % ('"%s"' % spec))
                try:
                    p.start()
                    c = self.session(user, port=p.port)
                    _, body = c.multi("UIDL")
                    got = {n: v.decode() for n, v in parse_scan_listing(body).items()}
                    self.assertEqual(got, {1: make(1, uidvalidity), 2: make(3, uidvalidity)})
                    self.assertEqual(c.cmd("UIDL 2"),
                                     ("+OK 2 %s\r\n" % make(3, uidvalidity)).encode())
                    self.assertOk(c.quit())
                finally:
                    p.cleanup()


class RoutingTest(unittest.TestCase):
    """Two Dovecots: b.example goes to the second (username = "local"),
    everything else to the first (the default, username = "full")."""

    @classmethod
    def setUpClass(cls):
        cls.a = Dovecot().start()
        cls.b = Dovecot()
        cls.b.add_user("carol", "carol-pw")
        cls.b.start()
        cls.p = None
        try:
            extra = ('\n[[upstream]]\nname = "b"\nhost = "127.0.0.1"\nport = %d\n'
                     'domains = ["B.example"]\nusername = "local"\n' % cls.b.imap_port)
            cls.p = Popbridge(cls.a.imap_port, extra=extra).start()
            cls.strict = Popbridge(cls.a.imap_port, upstream_extra='domains = ["a.example"]\n',
                                   extra=extra).start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for p in (getattr(cls, "p", None), getattr(cls, "strict", None)):
            if p is not None:
                p.cleanup()
        cls.a.cleanup()
        cls.b.cleanup()

    def login(self, port, user, password):
        from harness import Pop3
        c = Pop3(port)
        self.addCleanup(c.close)
        return c, c.login(user, password)

    def test_domain_picks_the_upstream(self):
        self.a.seed("alice", message(1))
        self.b.seed("carol", message(2))
        self.b.seed("carol", message(3))
        c, r = self.login(self.p.port, "carol@b.EXAMPLE", "carol-pw")
        self.assertTrue(r.startswith(b"+OK"), r)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 2 ")
        self.assertOk(c.cmd("DELE 1"))
        self.assertOk(c.quit())
        self.assertEqual(flags_of(folder_state(self.b, "carol"))[1], frozenset({HIDE_KEYWORD}))
        # No domain: the default upstream, the name as typed.
        c, r = self.login(self.p.port, "alice", "alicepw")
        self.assertTrue(r.startswith(b"+OK"), r)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 1 ")
        self.assertOk(c.quit())
        # carol exists only on b: through the default she is unknown.
        c, r = self.login(self.p.port, "carol", "carol-pw")
        self.assertTrue(r.startswith(b"-ERR [AUTH]"), r)

    def test_unknown_domain_without_default(self):
        c, r = self.login(self.strict.port, "alice@elsewhere.example", "alicepw")
        self.assertTrue(r.startswith(b"-ERR [AUTH]"), r)
        c, r = self.login(self.strict.port, "carol@b.example", "carol-pw")
        self.assertTrue(r.startswith(b"+OK"), r)
        self.assertOk(c.quit())

    def assertOk(self, r):
        self.assertTrue(r.startswith(b"+OK"), r)


if __name__ == "__main__":
    main()
