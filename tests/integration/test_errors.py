"""Error paths: wrong passwords, unusual passwords, the upstream down or
hung, a second session for the same mailbox, idle clients."""

import base64
import unittest
import socket
import threading

from harness import (AGAINST_DOVECOT, Closed, Pop3TestCase, Popbridge,
                     SPECIAL_USER, free_port, main)


def plain(user, password):
    return base64.b64encode(b"\0" + user.encode("utf-8") + b"\0"
                            + password.encode("utf-8")).decode("ascii")


class WrongPasswordTest(Pop3TestCase):
    """In a class of its own: Dovecot delays logins from an IP that just
    failed one, which would slow the other tests down."""

    def setUp(self):
        super().setUp()
        self.user, self.password = self.dovecot.new_user()
        self.dovecot.seed(self.user, b"Subject: x\r\n\r\ny\r\n")

    def test_wrong_password_user_pass(self):
        c = self.connect()
        self.assertOk(c.cmd("USER " + self.user))
        r = c.cmd("PASS wrong-" + self.password)
        self.assertTrue(r.startswith(b"-ERR [AUTH]"), r)
        # Not logged in.
        self.assertErr(c.cmd("STAT"))

    def test_wrong_password_auth_plain(self):
        c = self.connect()
        r = c.cmd("AUTH PLAIN " + plain(self.user, "wrong"))
        self.assertTrue(r.startswith(b"-ERR [AUTH]"), r)
        self.assertErr(c.cmd("STAT"))

    def test_unknown_user(self):
        c = self.connect()
        r = c.login("no-such-user", "whatever")
        self.assertTrue(r.startswith(b"-ERR [AUTH]"), r)

    def test_password_of_another_user(self):
        other, other_pw = self.dovecot.new_user()
        c = self.connect()
        r = c.login(self.user, other_pw)
        self.assertTrue(r.startswith(b"-ERR [AUTH]"), r)

    def test_wrong_then_right_password(self):
        c = self.connect()
        r = c.login(self.user, "wrong")
        self.assertTrue(r.startswith(b"-ERR [AUTH]"), r)
        c.close()
        c = self.session(self.user)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 1 ")


class SpecialPasswordTest(Pop3TestCase):
    """A password with a space, a double quote, a backslash and UTF-8."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dovecot.seed(SPECIAL_USER[0], b"Subject: special\r\n\r\nhello\r\n")

    def check_logged_in(self, c):
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 1 ")
        _, body = c.multi("RETR 1")
        self.assertEqual(body, b"Subject: special\r\n\r\nhello\r\n")
        self.assertOk(c.quit())

    def test_user_pass(self):
        c = self.connect()
        self.assertOk(c.cmd("USER " + SPECIAL_USER[0]))
        self.assertOk(c.cmd(b"PASS " + SPECIAL_USER[1].encode("utf-8")))
        self.check_logged_in(c)

    def test_auth_plain_initial_response(self):
        c = self.connect()
        self.assertOk(c.cmd("AUTH PLAIN " + plain(*SPECIAL_USER)))
        self.check_logged_in(c)

    def test_auth_plain_continuation(self):
        c = self.connect()
        r = c.cmd("AUTH PLAIN")
        self.assertTrue(r.startswith(b"+"), r)
        self.assertOk(c.cmd(plain(*SPECIAL_USER)))
        self.check_logged_in(c)

    def test_password_is_not_trimmed(self):
        # The password minus its trailing UTF-8 character must fail.
        c = self.connect()
        r = c.login(SPECIAL_USER[0], SPECIAL_USER[1][:-1])
        self.assertTrue(r.startswith(b"-ERR"), r)


class InUseTest(Pop3TestCase):
    """A second concurrent session for the same mailbox gets [IN-USE]."""

    # Against Dovecot, its pop3_lock_session gives the same answer (after
    # waiting about 10 seconds for the lock).
    dovecot_options = {"pop3_lock_session": True} if AGAINST_DOVECOT else {}

    def setUp(self):
        super().setUp()
        self.user, self.password = self.dovecot.new_user()
        self.dovecot.seed(self.user, b"Subject: x\r\n\r\ny\r\n")

    def test_second_session_in_use(self):
        first = self.session(self.user)
        c = self.connect()
        r = c.login(self.user, self.password)
        self.assertTrue(r.startswith(b"-ERR [IN-USE]"), r)
        # The first session is undisturbed.
        self.assertEqual(first.cmd("STAT")[:6], b"+OK 1 ")
        self.assertOk(first.quit())
        # Once it has quit, a new session works.
        c = self.session(self.user)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 1 ")
        self.assertOk(c.quit())

    def test_second_session_in_use_auth_plain(self):
        self.require_popbridge("slow with Dovecot's lock; USER/PASS form covers it")
        first = self.session(self.user)
        c = self.connect()
        r = c.cmd("AUTH PLAIN " + plain(self.user, self.password))
        self.assertTrue(r.startswith(b"-ERR [IN-USE]"), r)
        self.assertOk(first.quit())

    def test_login_the_moment_quit_answers(self):
        # QUIT's +OK ends the session for the client: a new login right
        # behind it must never find the mailbox still locked.
        self.require_popbridge("Dovecot's pop3_lock_session waits for the lock instead")
        for n in range(20):
            self.dovecot.seed(self.user, b"Subject: %d\r\n\r\nz\r\n" % n)
        for round_ in range(15):
            c = self.session(self.user)
            self.assertOk(c.cmd("DELE 1"))
            self.assertOk(c.quit())
            c2 = self.connect()
            r = c2.login(self.user, self.password)
            self.assertTrue(r.startswith(b"+OK"), "round %d: %r" % (round_, r))
            self.assertOk(c2.quit())
        c = self.session(self.user)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 6 ")   # 21 messages, 15 deleted

    def test_in_use_released_by_disconnect(self):
        first = self.session(self.user)
        first.close()
        c = self.session_retry_in_use(self.user, timeout=30)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 1 ")

    def test_different_users_concurrently(self):
        other, _ = self.dovecot.new_user()
        a = self.session(self.user)
        b = self.session(other)
        self.assertEqual(a.cmd("STAT")[:6], b"+OK 1 ")
        self.assertEqual(b.cmd("STAT"), b"+OK 0 0\r\n")
        self.assertOk(a.quit())
        self.assertOk(b.quit())

    def test_wrong_password_does_not_take_the_lock(self):
        self.require_popbridge("popbridge-specific lock")
        c = self.connect()
        r = c.login(self.user, "wrong")
        self.assertTrue(r.startswith(b"-ERR"), r)
        # Still connected and not logged in; a real session can start.
        d = self.session(self.user)
        self.assertEqual(d.cmd("STAT")[:6], b"+OK 1 ")


class UpstreamUnreachableTest(Pop3TestCase):
    """popbridge pointed at a port where nothing listens."""

    @classmethod
    def setUpClass(cls):
        if AGAINST_DOVECOT:
            raise unittest.SkipTest("POP3_TARGET=dovecot: popbridge-specific")
        super().setUpClass()
        cls.dead = Popbridge(free_port(), connect_timeout="3s").start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.dead.cleanup()
        finally:
            super().tearDownClass()

    def test_user_pass_sys_temp(self):
        c = self.connect(self.dead.port)
        self.assertOk(c.cmd("CAPA"))
        c.read_multiline()
        r = c.login(*SPECIAL_USER)
        self.assertTrue(r.startswith(b"-ERR [SYS/TEMP]"), r)
        self.dead.check_alive()

    def test_auth_plain_sys_temp(self):
        c = self.connect(self.dead.port)
        r = c.cmd("AUTH PLAIN " + plain(*SPECIAL_USER))
        self.assertTrue(r.startswith(b"-ERR [SYS/TEMP]"), r)
        self.dead.check_alive()


class HungUpstream:
    """A TCP server that accepts and then says nothing."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
            except socket.timeout:
                pass
            except OSError:
                return

    def close(self):
        self.stop = True
        self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


class UpstreamHungTest(Pop3TestCase):
    """An upstream that accepts but never greets: popbridge gives up."""

    @classmethod
    def setUpClass(cls):
        if AGAINST_DOVECOT:
            raise unittest.SkipTest("POP3_TARGET=dovecot: popbridge-specific")
        super().setUpClass()
        cls.hung = HungUpstream()
        cls.bridge = Popbridge(cls.hung.port, connect_timeout="2s",
                               command_timeout="2s").start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.bridge.cleanup()
        finally:
            cls.hung.close()
            super().tearDownClass()

    def test_login_times_out_with_sys_temp(self):
        c = self.connect(self.bridge.port)
        r = c.login(*SPECIAL_USER)
        self.assertTrue(r.startswith(b"-ERR [SYS/TEMP]"), r)
        self.bridge.check_alive()


class UpstreamGoesDownTest(Pop3TestCase):
    """Dovecot stopped under popbridge, then started again."""

    def setUp(self):
        self.require_popbridge("needs an upstream to stop")
        super().setUp()
        self.user, self.password = self.dovecot.new_user()
        self.dovecot.seed(self.user, b"Subject: one\r\n\r\n1\r\n")
        self.dovecot.seed(self.user, b"Subject: two\r\n\r\n2\r\n")

    def tearDown(self):
        if not self.dovecot.running():
            self.dovecot.start()
        super().tearDown()

    def test_login_while_down_then_recovers(self):
        c = self.session(self.user)
        self.assertOk(c.quit())
        self.dovecot.stop()
        c = self.connect()
        r = c.login(self.user, self.password)
        self.assertTrue(r.startswith(b"-ERR [SYS/TEMP]"), r)
        c.close()
        self.dovecot.start()
        c = self.session(self.user)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 2 ")
        self.assertOk(c.quit())

    def test_upstream_dies_mid_session(self):
        c = self.session(self.user)
        self.assertOk(c.cmd("DELE 1"))
        self.dovecot.stop()
        try:
            r = c.cmd("RETR 2")
            if r.startswith(b"+OK"):
                self.assertEqual(c.read_multiline(), b"Subject: two\r\n\r\n2\r\n")
            r = c.cmd("QUIT")
            # The DELE could not be committed: QUIT must not claim success.
            self.assertFalse(r.startswith(b"+OK"), r)
        except Closed:
            pass
        self.popbridge.check_alive()
        self.dovecot.start()
        state, _ = self.dovecot.imap_state(self.user)
        self.assertEqual(len(state), 2)
        c = self.session_retry_in_use(self.user)
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 2 ")


class IdleTimeoutTest(Pop3TestCase):
    """idle_timeout = 2s: idle clients are disconnected, busy ones are not."""

    popbridge_options = {"idle_timeout": "2s"}

    def setUp(self):
        self.require_popbridge("Dovecot's idle timeout is fixed at 10 minutes")
        super().setUp()

    def test_idle_after_login_is_closed(self):
        user, _ = self.dovecot.new_user()
        c = self.session(user)
        c.read_until_closed(timeout=30)
        # The lock on the mailbox is gone with it.
        c = self.session_retry_in_use(user)
        self.assertEqual(c.cmd("STAT"), b"+OK 0 0\r\n")

    def test_idle_before_login_is_closed(self):
        c = self.connect()
        c.read_until_closed(timeout=30)

    def test_idle_in_auth_continuation_is_closed(self):
        c = self.connect()
        r = c.cmd("AUTH PLAIN")
        self.assertTrue(r.startswith(b"+"), r)
        c.read_until_closed(timeout=30)

    def test_active_session_is_not_closed(self):
        import time
        user, _ = self.dovecot.new_user()
        c = self.session(user)
        # Commands every 0.5 s for 4 s (twice the idle timeout).
        for _ in range(8):
            time.sleep(0.5)
            self.assertOk(c.cmd("NOOP"))
        self.assertOk(c.quit())


if __name__ == "__main__":
    main()
