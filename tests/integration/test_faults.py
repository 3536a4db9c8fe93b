"""Upstream faults (issue 6), injected by faultrelay.py between popbridge and
Dovecot's IMAP port: the upstream refusing, cut (FIN) or reset (RST) in the
middle of a RETR, stalled beyond command_timeout, gone between DELE and QUIT,
and a bounded load test with faults injected halfway.

The rules checked: a client never gets the terminating "." of a message
that did not arrive whole (the connection closes instead), never gets a
corrupt message, a failed commit changes nothing on the IMAP server, and
popbridge keeps serving."""

import random
import resource
import signal
import socket
import threading
import time
import unittest

from faultrelay import FaultRelay
from harness import (AGAINST_DOVECOT, assert_no_secrets, HIDE_KEYWORD, Closed, Dovecot, Pop3,
                     Pop3TestCase, Popbridge, main)

SYS_TEMP = b"-ERR [SYS/TEMP]"


def big_message(size, tag=b"big"):
    """A CRLF message of about `size` octets with some lines that need
    dot-stuffing but never a line that is just "."."""
    head = b"From: faults@example.com\r\nSubject: " + tag + b"\r\n\r\n"
    lines = []
    total = len(head)
    n = 0
    while total < size:
        if n % 37 == 5:
            line = b".dot line %08d %s" % (n, tag)
        else:
            line = b"%s line %08d abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP" % (tag, n)
        lines.append(line)
        total += len(line) + 2
        n += 1
    return head + b"\r\n".join(lines) + b"\r\n"


def stuffed(raw):
    """raw (CRLF, ending in CRLF) as POP3 sends it, without the final '.'."""
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in raw.split(b"\r\n"))


def raise_nofile(want=4096):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class RelayTestCase(Pop3TestCase):
    """Dovecot, then the relay in front of its IMAP port, then popbridge
    talking to the relay."""

    popbridge_relay_options = {"connect_timeout": "2s", "command_timeout": "2s"}

    @classmethod
    def setUpClass(cls):
        if AGAINST_DOVECOT:
            raise unittest.SkipTest("POP3_TARGET=dovecot: faults are injected between popbridge "
                                    "and its upstream")
        cls.secrets = set()
        cls.dovecot = Dovecot(**cls.dovecot_options).start()
        cls.relay = None
        cls.popbridge = None
        try:
            cls.relay = FaultRelay(cls.dovecot.imap_port).start()
            cls.popbridge = Popbridge(cls.relay.port, **cls.popbridge_relay_options).start()
        except BaseException:
            cls._teardown_all(check=False)
            raise
        cls.pop3_port = cls.popbridge.port

    @classmethod
    def tearDownClass(cls):
        cls._teardown_all(check=True)

    @classmethod
    def _teardown_all(cls, check):
        try:
            if cls.popbridge is not None:
                problem = None
                try:
                    cls.popbridge.stop(check=check)
                except AssertionError as e:
                    problem = e
                log = cls.popbridge.read_log()
                cls.popbridge.cleanup(check=False)
                if problem is not None:
                    raise problem
                if check:
                    assert_no_secrets(cls.__name__, log, set(cls.dovecot.users.values()) | cls.secrets)
        finally:
            if cls.relay is not None:
                cls.relay.stop()
            cls.dovecot.cleanup()

    def setUp(self):
        super().setUp()
        self.relay.refuse = None
        self.relay.clear_new()
        self.relay.start_listening()

    def logged_in_with_conn(self, user):
        """A POP3 session and the relay connection its upstream uses."""
        before = len(self.relay.connections)
        c = self.session(user)
        self.relay.wait_for(lambda: len(self.relay.connections) > before, what="upstream connection")
        self.assertEqual(len(self.relay.connections), before + 1)
        return c, self.relay.connections[before]

    def assert_serving(self, user, raw, n=1):
        """A fresh session through the relay gets message n byte-exact."""
        c = self.session_retry_in_use(user)
        _, body = c.multi("RETR %d" % n)
        self.assertEqual(body, stuffed(raw))
        self.assertOk(c.quit())


class UpstreamFaultTest(RelayTestCase):

    def test_upstream_refuses(self):
        user, pw = self.dovecot.new_user()
        raw = b"Subject: refuse\r\n\r\nhello\r\n"
        self.dovecot.seed(user, raw)
        # Nothing listening: connect() fails.
        self.relay.stop_listening()
        c = self.connect()
        r = c.login(user, pw)
        self.assertTrue(r.startswith(SYS_TEMP), r)
        self.assertErr(c.cmd("STAT"))  # not logged in
        c.close()
        self.relay.start_listening()
        # Accepted, then closed or reset before the greeting; and a greeting
        # cut in the middle.
        for mode in ("close", "reset"):
            with self.subTest(mode=mode):
                self.relay.refuse = mode
                c = self.connect()
                r = c.login(user, pw)
                self.assertTrue(r.startswith(SYS_TEMP), r)
                c.close()
        self.relay.refuse = None
        self.relay.arm_new("down", "cut", after=7)
        c = self.connect()
        r = c.login(user, pw)
        self.assertTrue(r.startswith(SYS_TEMP), r)
        c.close()
        self.relay.clear_new()
        self.assertGreaterEqual(self.relay.refused, 2)
        self.assert_serving(user, raw)

    def check_truncated_retr(self, action, direction="down", after=1_000_000):
        user, pw = self.dovecot.new_user()
        raw = big_message(2 * 1024 * 1024, tag=action.encode())
        self.dovecot.seed(user, raw)
        expected = stuffed(raw)
        c, conn = self.logged_in_with_conn(user)
        conn.arm(direction, action, after=after)
        c.send("RETR 1\r\n")
        data = c.read_until_closed(timeout=30)
        self.assertTrue(conn.fault, "the relay never injected its fault: %r" % conn)
        status, _, body = data.partition(b"\r\n")
        self.assertTrue(status.startswith(b"+OK"), data[:200])
        # What arrived is exactly the start of the message: no terminating
        # ".", nothing invented, nothing skipped.
        self.assertLess(len(body), len(expected),
                        "a RETR cut at %s arrived whole (%d octets)" % (conn.fault, len(body)))
        self.assertTrue(expected.startswith(body),
                        "truncated RETR is not a prefix of the message (%d octets, ends %r)"
                        % (len(body), body[-80:]))
        self.assertNotIn(b"\r\n.\r\n", body)
        # The logout line comes once popbridge has closed its side: wait.
        self.relay.wait_for(lambda: 'ended="upstream failed"' in
                            self.popbridge.read_log(self._log_start),
                            what="logout line with ended=\"upstream failed\"")
        # The mailbox is untouched and popbridge keeps serving it.
        state, _ = self.dovecot.imap_state(user)
        self.assertEqual([HIDE_KEYWORD in f for _, _, f in state], [False])
        self.assert_serving(user, raw)
        return body

    def test_cut_mid_retr(self):
        self.check_truncated_retr("cut")

    def test_reset_mid_retr(self):
        self.check_truncated_retr("reset")

    def test_cut_before_the_first_chunk_is_whole(self):
        # Cut 3000 octets into the first 256 KiB chunk's literal: popbridge
        # has sent nothing of the message yet, so RETR can still answer
        # -ERR, and the session stays in step.
        user, pw = self.dovecot.new_user()
        raw = big_message(2 * 1024 * 1024, tag=b"early")
        self.dovecot.seed(user, raw)
        c, conn = self.logged_in_with_conn(user)
        conn.arm("down", "cut", after=3000)
        r = c.cmd("RETR 1")
        self.assertTrue(conn.fault)
        self.assertEqual(r, b"-ERR [SYS/TEMP] Mail server unavailable, try again later.\r\n")
        self.assertEqual(c.cmd("NOOP"), b"+OK\r\n")
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 1 ")
        self.assertOk(c.quit())
        self.assert_serving(user, raw)

    def test_stall_mid_retr_beyond_command_timeout(self):
        user, pw = self.dovecot.new_user()
        raw = big_message(2 * 1024 * 1024, tag=b"stall")
        self.dovecot.seed(user, raw)
        other, _ = self.dovecot.new_user()
        small = b"Subject: meanwhile\r\n\r\nserved while another upstream hangs\r\n"
        self.dovecot.seed(other, small)
        c, conn = self.logged_in_with_conn(user)
        conn.arm("down", "stall", after=1_000_000)
        c.send("RETR 1\r\n")
        self.relay.wait_for(lambda: conn.fault, what="stall")
        t0 = time.monotonic()
        # Another session is served while this one's upstream hangs.
        self.assert_serving(other, small)
        data = c.read_until_closed(timeout=30)
        elapsed = time.monotonic() - t0
        conn.release()
        status, _, body = data.partition(b"\r\n")
        self.assertTrue(status.startswith(b"+OK"), data[:200])
        self.assertLess(len(body), len(stuffed(raw)))
        self.assertTrue(stuffed(raw).startswith(body))
        self.assertNotIn(b"\r\n.\r\n", body)
        # command_timeout is 2s: no earlier than that (lower bound only).
        self.assertGreaterEqual(elapsed, 1.5)
        self.assert_serving(user, raw)

    def test_delay_below_command_timeout_mid_retr_is_harmless(self):
        user, pw = self.dovecot.new_user()
        raw = big_message(1024 * 1024, tag=b"delay")
        self.dovecot.seed(user, raw)
        c, conn = self.logged_in_with_conn(user)
        conn.arm("down", "delay", after=500_000, seconds=1.0)  # command_timeout is 2s
        _, body = c.multi("RETR 1")
        self.assertTrue(conn.fault)
        self.assertEqual(body, stuffed(raw))
        self.assertOk(c.quit())

    def test_cut_anywhere_during_login(self):
        # Cut or reset at every region of the login exchange (greeting,
        # capabilities, LOGIN, SELECT, the message list): the client gets
        # +OK or -ERR [SYS/TEMP], never -ERR [AUTH] (its password is right).
        user, pw = self.dovecot.new_user()
        for n in range(30):
            self.dovecot.seed(user, b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n))
        c, conn = self.logged_in_with_conn(user)
        self.assertEqual(c.cmd("STAT")[:7], b"+OK 30 ")
        self.assertOk(c.quit())
        sizes = dict(conn.passed)
        self.assertGreater(sizes["down"], 0)
        outcomes = {}
        for direction in ("up", "down"):
            total = sizes[direction]
            for offset in sorted({0, 1, 5, 20, 50} | {total * k // 12 for k in range(1, 13)}):
                for action in ("cut", "reset"):
                    self.relay.clear_new()
                    self.relay.arm_new(direction, action, after=offset)
                    c, r = self.login_retry_in_use(user, pw)
                    key = "%s %s@%d" % (direction, action, offset)
                    if r.startswith(b"+OK"):
                        outcomes[key] = "ok"
                        self.assertEqual(c.cmd("STAT")[:7], b"+OK 30 ", key)
                    else:
                        self.assertTrue(r.startswith(SYS_TEMP), "%s: %r" % (key, r))
                        outcomes[key] = "SYS/TEMP"
                    c.close()
        self.relay.clear_new()
        self.assertIn("SYS/TEMP", outcomes.values(), outcomes)
        self.assert_serving(user, b"Subject: 0\r\n\r\nbody 0\r\n")

    def login_retry_in_use(self, user, pw, timeout=10.0):
        """(connection, reply to PASS), retrying while an earlier session
        of user still holds the mailbox lock."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.connect()
            r = c.login(user, pw)
            if b"[IN-USE]" not in r or time.monotonic() > deadline:
                return c, r
            c.close()
            time.sleep(0.05)

    def test_sigterm_with_hung_upstreams_exits_cleanly(self):
        # One session mid-RETR and one login waiting for a greeting, both
        # on hung upstreams: SIGTERM closes both (no final "."), nothing is
        # committed, and the process still exits 0 once the upstream I/O
        # times out.
        pb = Popbridge(self.relay.port, connect_timeout="2s", command_timeout="2s",
                       server_extra='shutdown_grace = "500ms"\n').start()
        try:
            user, pw = self.dovecot.new_user()
            raw = big_message(1024 * 1024, tag=b"term")
            self.dovecot.seed(user, raw)
            self.dovecot.seed(user, b"Subject: 2\r\n\r\ntwo\r\n")
            before = len(self.relay.connections)
            c = self.connect(pb.port)
            self.assertOk(c.login(user, pw))
            conn = self.relay.wait_for(lambda: len(self.relay.connections) > before
                                       and self.relay.connections[before])
            self.assertOk(c.cmd("DELE 2"))
            conn.arm("down", "stall", after=300_000)
            c.send("RETR 1\r\n")
            self.relay.wait_for(lambda: conn.fault, what="stall")
            self.relay.arm_new("down", "stall", after=0)
            other, other_pw = self.dovecot.new_user()
            waiting = self.connect(pb.port)
            self.assertOk(waiting.cmd("USER " + other))
            waiting.send(b"PASS " + other_pw.encode() + b"\r\n")
            self.relay.wait_for(lambda: any(x.fault and x.fault.startswith("down:stall@0")
                                            for x in self.relay.connections[before:]),
                                what="the second login's upstream connection")
            pb.proc.send_signal(signal.SIGTERM)
            data = c.read_until_closed(timeout=30)
            self.assertTrue(stuffed(raw).startswith(data.partition(b"\r\n")[2]))
            self.assertNotIn(b"\r\n.\r\n", data)
            self.assertEqual(waiting.read_until_closed(timeout=30), b"")
            self.assertEqual(pb.proc.wait(timeout=60), 0)
            pb.proc = None
            self.relay.clear_new()
            for x in self.relay.connections[before:]:
                x.release()
            state, _ = self.dovecot.imap_state(user)
            self.assertEqual([HIDE_KEYWORD in f for _, _, f in state], [False, False])
            assert_no_secrets(type(self).__name__, pb.read_log(), set(self.dovecot.users.values()))
        finally:
            pb.cleanup(check=False)

    def test_fetch_command_cut_on_the_way_up(self):
        # The FETCH never reaches Dovecot whole: no byte of the message was
        # sent yet, so RETR may answer -ERR; or the connection closes. Never
        # a "." for a message that did not arrive.
        user, pw = self.dovecot.new_user()
        raw = big_message(300 * 1024, tag=b"up")
        self.dovecot.seed(user, raw)
        c, conn = self.logged_in_with_conn(user)
        conn.arm("up", "cut", after=6)
        try:
            r = c.cmd("RETR 1")
        except Closed:
            r = b""
        if r.startswith(b"+OK"):
            self.fail("RETR answered +OK although its FETCH was cut: %r" % r)
        if r:
            self.assertTrue(r.startswith(SYS_TEMP), r)
            # The session goes on, in step: a local command still answers.
            self.assertEqual(c.cmd("NOOP"), b"+OK\r\n")
            c.close()
        self.assert_serving(user, raw)

    def check_dies_between_dele_and_quit(self, action):
        user, pw = self.dovecot.new_user()
        msgs = [b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n) for n in range(1, 4)]
        for m in msgs:
            self.dovecot.seed(user, m)
        c, conn = self.logged_in_with_conn(user)
        self.assertOk(c.cmd("DELE 1"))
        self.assertOk(c.cmd("DELE 3"))
        # The upstream goes away, and stays away for any reconnect.
        self.relay.stop_listening()
        if action == "stall":
            conn.stall("up")
        else:
            getattr(conn, action)()
        r = c.cmd("QUIT")
        self.assertTrue(r.startswith(SYS_TEMP), r)
        self.assertEqual(c.read_until_closed(), b"")
        # A stalled commit is dropped, not delivered late (late delivery
        # would apply it although QUIT said nothing was changed).
        conn.reset()
        self.relay.start_listening()
        # Directly over IMAP: all three there, none hidden.
        state, _ = self.dovecot.imap_state(user)
        self.assertEqual(len(state), 3)
        self.assertEqual([HIDE_KEYWORD in f for _, _, f in state], [False, False, False])
        # The next session shows every message again.
        c = self.session_retry_in_use(user)
        self.assertEqual(c.cmd("STAT"), b"+OK 3 %d\r\n" % sum(map(len, msgs)))
        for n, m in enumerate(msgs, 1):
            self.assertEqual(c.multi("RETR %d" % n)[1], m)
        self.assertOk(c.quit())

    def test_upstream_cut_between_dele_and_quit(self):
        self.check_dies_between_dele_and_quit("cut")

    def test_upstream_reset_between_dele_and_quit(self):
        self.check_dies_between_dele_and_quit("reset")

    def test_upstream_hangs_at_quit(self):
        # The commit never reaches Dovecot; command_timeout (2s) ends it.
        self.check_dies_between_dele_and_quit("stall")


# --------------------------------------------------------------------------
# Load with faults

LOAD_CLIENTS = 200
LOAD_SECONDS = 15.0
LOAD_IO_TIMEOUT = 25.0


class _Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0                 # sessions with every message byte-exact
        self.ok_after_fault = 0
        self.retrieved = 0          # messages compared byte-exact
        self.errors = {}            # kind -> count (allowed)
        self.corrupt = []           # never allowed
        self.hung = []              # never allowed
        self.auth = []              # -ERR [AUTH] for the right password: never allowed
        self.clients_ok = set()

    def error(self, kind):
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1


class LoadWithFaultsTest(RelayTestCase):
    """200 clients for ~15s each log in, RETR every message and compare it
    byte for byte; halfway through, a third of the upstream connections is
    reset, the rest cut at a random offset, new ones are refused for a
    moment and then cut in the middle of a transfer. Every session ends
    byte-exact or with an error (never corrupt, never hung, never [AUTH])."""

    dovecot_options = {"pool_size": LOAD_CLIENTS + 20}
    popbridge_relay_options = {
        "connect_timeout": "3s", "command_timeout": "5s", "log_level": "info",
        "server_extra": "max_sessions_per_ip = 0\nupstream_threads = 16\n"}

    @classmethod
    def setUpClass(cls):
        raise_nofile(4096)
        super().setUpClass()

    def test_load_with_faults(self):
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.assertGreaterEqual(nofile, 4 * LOAD_CLIENTS + 100, "RLIMIT_NOFILE too low")
        users = []
        for i in range(LOAD_CLIENTS):
            user, pw = self.dovecot.new_user()
            tag = user.encode()
            msgs = [b"Subject: small %s\r\n\r\nhello %s\r\n" % (tag, tag),
                    big_message(20_000 + 97 * i, tag=tag + b"-m"),
                    big_message(300_000 + 13 * i, tag=tag + b"-l")]
            for m in msgs:
                self.dovecot.seed(user, m)
            users.append((user, pw, msgs))
        tally = _Tally()
        start = time.monotonic()
        deadline = start + LOAD_SECONDS
        fault_at = start + LOAD_SECONDS / 2
        fault_done = threading.Event()
        threads = [threading.Thread(target=self._client,
                                    args=(i, users[i], deadline, tally, fault_done),
                                    name="load-%d" % i, daemon=True)
                   for i in range(LOAD_CLIENTS)]
        for t in threads:
            t.start()
        # Halfway: the faults. A third of the upstream connections is reset
        # at once, the others are cut at a random offset still to come
        # (many are idle, waiting for a worker to LOGOUT, and never get
        # there); new ones are refused for 0.5s, then cut 300 kB in for a
        # second (in the second chunk of the third message: mid-transfer).
        time.sleep(max(0.0, fault_at - time.monotonic()))
        rng = random.Random(6)
        victims = self.relay.active()
        reset = cut = 0
        for i, conn in enumerate(victims):
            if i % 3 == 0:
                conn.reset()
                reset += 1
            else:
                conn.arm("down", "cut", after=rng.randrange(0, 400_000))
                cut += 1
        self.relay.refuse = "reset"
        time.sleep(0.5)
        self.relay.refuse = None
        first_new = len(self.relay.connections)
        self.relay.arm_new("down", "cut", after=300_000)
        time.sleep(1.0)
        self.relay.clear_new()
        new_victims = self.relay.connections[first_new:]
        victims += new_victims
        fault_done.set()
        for t in threads:
            t.join(timeout=max(1.0, deadline + LOAD_IO_TIMEOUT + 10 - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        summary = ("%d clients (%d completed a session), %d sessions ok (%d after the fault), "
                   "%d messages byte-exact; "
                   "faults: %d reset, %d open + %d new armed to cut (%d fired), %d refused; "
                   "errors %r"
                   % (LOAD_CLIENTS, len(tally.clients_ok), tally.ok, tally.ok_after_fault,
                      tally.retrieved, reset, cut, len(new_victims),
                      sum(1 for c in victims if c.fault and "cut@" in c.fault),
                      self.relay.refused, tally.errors))
        print("\n  load: " + summary)
        self.assertEqual(alive, [], "clients still running: " + summary)
        self.assertEqual(tally.corrupt, [], "corrupt messages: " + summary)
        self.assertEqual(tally.hung, [], "sessions hung: " + summary)
        self.assertEqual(tally.auth, [], "-ERR [AUTH] for right passwords: " + summary)
        self.assertGreater(reset + cut, 0, "no upstream connection to fault: " + summary)
        self.assertGreater(sum(tally.errors.values()), 0,
                           "the faults caused no error at all: " + summary)
        # A sanity floor that a loaded 2-core machine still clears: the
        # load was real.
        self.assertGreaterEqual(len(tally.clients_ok), LOAD_CLIENTS // 4,
                                "too few clients completed a session: " + summary)
        self.assertGreater(tally.ok_after_fault, 0, "nothing served after the fault: " + summary)
        # And a fresh session afterwards.
        user, _, msgs = users[0]
        c = self.session_retry_in_use(user)
        for n, m in enumerate(msgs, 1):
            self.assertEqual(c.multi("RETR %d" % n)[1], stuffed(m))
        self.assertOk(c.quit())
        self.popbridge.check_alive()

    def _client(self, idx, spec, deadline, tally, fault_done):
        user, pw, msgs = spec
        expected = [stuffed(m) for m in msgs]
        stat = b"+OK %d %d\r\n" % (len(msgs), sum(map(len, msgs)))
        while time.monotonic() < deadline:
            after_fault = fault_done.is_set()
            try:
                outcome = self._session(user, pw, expected, stat, tally)
            except Closed:
                outcome = "closed"
            except (socket.timeout, AssertionError) as e:
                if "timed out" in str(e):
                    with tally.lock:
                        tally.hung.append("%s: %s" % (user, str(e)[:200]))
                    return
                raise
            except OSError as e:
                outcome = "oserror:%s" % type(e).__name__
            if outcome == "ok":
                with tally.lock:
                    tally.ok += 1
                    tally.clients_ok.add(idx)
                    if after_fault:
                        tally.ok_after_fault += 1
            else:
                tally.error(outcome)
                time.sleep(0.05)

    def _session(self, user, pw, expected, stat, tally):
        c = Pop3(self.pop3_port, timeout=LOAD_IO_TIMEOUT)
        try:
            if not c.greeting.startswith(b"+OK"):
                return "greeting:" + c.greeting[:30].decode("ascii", "replace")
            r = c.login(user, pw)
            if r.startswith(b"-ERR [AUTH]"):
                with tally.lock:
                    tally.auth.append("%s: %r" % (user, r))
                return "auth"
            if not r.startswith(b"+OK"):
                return "login:" + r.split(b"]")[0].decode("ascii", "replace") + "]"
            r = c.cmd("STAT")
            if r != stat:
                with tally.lock:
                    tally.corrupt.append("%s: STAT %r, expected %r" % (user, r, stat))
                return "corrupt"
            for n, want in enumerate(expected, 1):
                r = c.cmd("RETR %d" % n)
                if r.startswith(b"-ERR"):
                    return "retr:" + r.split(b"]")[0].decode("ascii", "replace") + "]"
                if not r.startswith(b"+OK"):
                    with tally.lock:
                        tally.corrupt.append("%s: RETR %d status %r" % (user, n, r[:80]))
                    return "corrupt"
                body = c.read_multiline()
                if body != want:
                    with tally.lock:
                        tally.corrupt.append("%s: RETR %d: %d octets, expected %d; first "
                                             "difference at %d" % (user, n, len(body), len(want),
                                                                   _first_diff(body, want)))
                    return "corrupt"
                with tally.lock:
                    tally.retrieved += 1
            r = c.cmd("QUIT")
            if not r.startswith(b"+OK"):
                return "quit:" + r[:30].decode("ascii", "replace")
            return "ok"
        finally:
            c.close()


def _first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


if __name__ == "__main__":
    main()
