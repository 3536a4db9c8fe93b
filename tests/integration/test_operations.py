"""Operations (issue 7): PROXY protocol behind a real HAProxy, /metrics and
/healthz, max_sessions and max_sessions_per_ip, the failed-login delay,
SIGHUP reloads (good and broken files), SIGTERM with its grace period, slow
readers and send_timeout, log_format = json, and no password in any log.

Timing checks are lower bounds only; "not blocked" is checked by order of
events, never by a stopwatch."""

import base64
import json
import os
import poplib
import select
import shutil
import signal
import socket
import subprocess
import time
import unittest
import urllib.error
import urllib.request

from harness import (AGAINST_DOVECOT, assert_no_secrets, HIDE_KEYWORD, IO_TIMEOUT, SPECIAL_USER,
                     Pop3, Pop3TestCase, Popbridge, free_port, main,
                     make_tempdir, toml_str, wait_for_port)

TOO_MANY = b"-ERR [SYS/TEMP] Too many connections, try again later.\r\n"


def plain_b64(user, password):
    return base64.b64encode(b"\0" + user.encode("utf-8") + b"\0"
                            + password.encode("utf-8")).decode("ascii")


def wait_until(predicate, timeout=15.0, what="condition", interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("%s not reached within %.0fs" % (what, timeout))
        time.sleep(interval)


def wait_log(pb, needle, start=0, timeout=15.0):
    """Wait until popbridge's log (from offset start) contains needle."""
    return wait_until(lambda: needle in pb.read_log(start), timeout,
                      "log line %r in %s" % (needle, pb.log_path))


def logout_lines(text):
    return [l for l in text.splitlines() if " logout " in l or '"event":"logout"' in l]


class SrcPop3(Pop3):
    """A raw POP3 connection from a chosen loopback source address, with
    optional bytes (a PROXY header) sent before the greeting is read."""

    def __init__(self, port, source="127.0.0.1", timeout=IO_TIMEOUT, preamble=b"",
                 read_greeting=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.sock.settimeout(timeout)
        self.buf = b""
        if preamble:
            self.sock.sendall(preamble)
        self.greeting = self.readline() if read_greeting else None

    @property
    def local(self):
        return "%s:%d" % self.sock.getsockname()


class SourcePOP3(poplib.POP3):
    """poplib from a chosen loopback source address."""

    def __init__(self, host, port, source, timeout=IO_TIMEOUT):
        self._source = source
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._source, 0))


def scrape(port, path="/metrics"):
    """(status, body text) of GET path on the metrics listener."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def parse_metrics(text):
    """{'name{labels}': value} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


def closed_without_data(sock, timeout=10.0):
    """True when the peer closes (FIN or RST) without sending a byte."""
    sock.settimeout(timeout)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


class OpsTestCase(Pop3TestCase):
    """Pop3TestCase that checks, before the class's logs are deleted, that
    no password or AUTH PLAIN string used against it was logged."""

    @classmethod
    def setUpClass(cls):
        if AGAINST_DOVECOT:
            raise unittest.SkipTest("POP3_TARGET=dovecot: popbridge operations")
        cls.secrets = set()
        cls.extra_popbridges = []
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            problems = []
            for pb in [cls.popbridge] + cls.extra_popbridges:
                if pb is None:
                    continue
                try:
                    pb.stop(check=True)
                except AssertionError as e:
                    problems.append(str(e))
                try:
                    assert_no_secrets(cls.__name__, pb.read_log(),
                                      set(cls.dovecot.users.values()) | cls.secrets)
                except AssertionError as e:
                    problems.append(str(e))
                if pb is not cls.popbridge:
                    pb.cleanup(check=False)
            if problems:
                raise AssertionError("\n".join(problems))
        finally:
            super().tearDownClass()

    def secret(self, s):
        type(self).secrets.add(s)
        return s

    def auth_plain(self, c, user, password):
        return c.cmd("AUTH PLAIN " + self.secret(plain_b64(user, password)))

    def src(self, *args, **kw):
        """SrcPop3, closed after the test."""
        c = SrcPop3(*args, **kw)
        self._conns.append(c)
        return c

    def new_popbridge(self, **options):
        """A popbridge of this test's own, in front of the class's Dovecot."""
        pb = Popbridge(self.dovecot.imap_port, **options).start()
        type(self).extra_popbridges.append(pb)
        return pb


# --------------------------------------------------------------------------
# PROXY protocol with HAProxy

_HAPROXY_CFG = """\
global
    maxconn 200
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend pop3
    bind 127.0.0.1:{port}
    default_backend popbridges
backend popbridges
    balance roundrobin
    server v2 127.0.0.1:{port_v2} send-proxy-v2
    server v1 127.0.0.1:{port_v1} send-proxy
"""


class ProxyProtocolTest(OpsTestCase):
    """HAProxy (send-proxy-v2 to one popbridge, send-proxy to another,
    round robin) in front; popbridge logs the real client."""

    popbridge_options = {
        "listeners": [{"name": "proxy", "proxy_protocol": True,
                       "trusted_proxies": ["127.0.0.1/32"]}],
        "server_extra": "max_sessions_per_ip = 2\n"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.haproxy = None
        cls.hadir = None
        try:
            cls.pb_v1 = Popbridge(cls.dovecot.imap_port, **cls.popbridge_options).start()
            cls.extra_popbridges.append(cls.pb_v1)
            # 127.0.0.1 is not a trusted proxy here.
            cls.pb_untrusted = Popbridge(cls.dovecot.imap_port, listeners=[
                {"name": "proxy", "proxy_protocol": True,
                 "trusted_proxies": ["192.0.2.0/24"]}]).start()
            cls.extra_popbridges.append(cls.pb_untrusted)
            cls.start_haproxy()
        except BaseException:
            cls.stop_haproxy()
            super().tearDownClass()
            raise

    @classmethod
    def start_haproxy(cls):
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.access(binary, os.X_OK):
            raise RuntimeError("haproxy not found: run scripts/install-deps.sh")
        cls.hadir = make_tempdir("popbridge-haproxy-")
        cls.haproxy_port = free_port()
        cfg = os.path.join(cls.hadir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(_HAPROXY_CFG.format(port=cls.haproxy_port,
                                        port_v2=cls.popbridge.ports["proxy"],
                                        port_v1=cls.pb_v1.ports["proxy"]))
        check = subprocess.run([binary, "-c", "-f", cfg], capture_output=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError("haproxy -c: %s" % (check.stdout + check.stderr).decode())
        cls.halog = open(os.path.join(cls.hadir, "haproxy.log"), "wb")
        cls.haproxy = subprocess.Popen([binary, "-db", "-f", cfg], stdin=subprocess.DEVNULL,
                                       stdout=cls.halog, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        wait_for_port(cls.haproxy_port, proc=cls.haproxy, what="haproxy")

    @classmethod
    def stop_haproxy(cls):
        if cls.haproxy is not None:
            if cls.haproxy.poll() is None:
                cls.haproxy.terminate()
                try:
                    cls.haproxy.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    cls.haproxy.kill()
                    cls.haproxy.wait()
            cls.halog.close()
            cls.haproxy = None
        if cls.hadir and not os.environ.get("KEEP_TEST_DIRS"):
            shutil.rmtree(cls.hadir, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.stop_haproxy()
        finally:
            super().tearDownClass()

    def test_fetch_through_haproxy_logs_real_client(self):
        user, pw = self.dovecot.new_user()
        raw = b"From: a@example.com\r\nSubject: via haproxy\r\n\r\n.dot\r\nbody\r\n"
        self.dovecot.seed(user, raw)
        starts = {pb: pb.log_size() for pb in (self.popbridge, self.pb_v1)}
        clients = []
        for n in range(4):
            source = "127.0.0.%d" % (20 + n)
            p = SourcePOP3("127.0.0.1", self.haproxy_port, source)
            clients.append("%s:%d" % p.sock.getsockname())
            self.assertTrue(p.getwelcome().startswith(b"+OK"), p.getwelcome())
            p.user(user)
            p.pass_(pw)
            self.assertEqual(p.stat(), (1, len(raw)))
            _, lines, _ = p.retr(1)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", raw)
            self.assertTrue(p.quit().startswith(b"+OK"))

        def found():
            seen = {}
            for pb, start in starts.items():
                for line in logout_lines(pb.read_log(start)):
                    for client in clients:
                        if "client=%s " % client in line and "user=%s " % user in line:
                            seen[client] = pb
            return seen if len(seen) == len(clients) else None

        try:
            seen = wait_until(found, what="logout lines with every real client address")
        except AssertionError:
            for pb, start in starts.items():
                pb.dump_log(start)
            raise
        # Round robin: both the v2 and the v1 popbridge served some.
        self.assertEqual(set(seen.values()), {self.popbridge, self.pb_v1}, seen)
        for pb, start in starts.items():
            for line in logout_lines(pb.read_log(start)):
                if "user=%s " % user in line:
                    self.assertIn("retrieved=1 ", line)
                    self.assertIn("ended=quit", line)

    def test_raw_v1_header_from_trusted_proxy_and_per_ip_limit(self):
        # max_sessions_per_ip = 2 counts the real client, not the balancer.
        user, pw = self.dovecot.new_user()
        self.dovecot.seed(user, b"Subject: x\r\n\r\ny\r\n")
        port = self.popbridge.ports["proxy"]
        start = self.popbridge.log_size()
        hdr = lambda ip, p: b"PROXY TCP4 %s 127.0.0.1 %d 110\r\n" % (ip, p)
        a = self.src(port, preamble=hdr(b"198.51.100.7", 40001))
        b = self.src(port, preamble=hdr(b"198.51.100.7", 40002))
        self.assertTrue(a.greeting.startswith(b"+OK"), a.greeting)
        self.assertTrue(b.greeting.startswith(b"+OK"), b.greeting)
        c = self.src(port, preamble=hdr(b"198.51.100.7", 40003))
        self.assertEqual(c.greeting, TOO_MANY)
        self.assertEqual(c.read_until_closed(), b"")
        c.close()
        d = self.src(port, preamble=hdr(b"198.51.100.8", 40004))
        self.assertTrue(d.greeting.startswith(b"+OK"), d.greeting)
        # The real client is not on loopback: no plaintext login for it
        # (allow_plaintext_auth = false), though the balancer is.
        self.assertEqual(a.cmd("USER " + user),
                         b"-ERR [AUTH] Plaintext authentication disallowed on non-secure "
                         b"connections, use STLS.\r\n")
        for x in (a, b, d):
            self.assertOk(x.quit())
        wait_log(self.popbridge, "client=198.51.100.7:40001 ", start)
        wait_log(self.popbridge, "client=198.51.100.8:40004 ", start)
        self.assertIn("198.51.100.7:40003 refused: max_sessions_per_ip", self.popbridge.read_log(start))

    def test_header_without_address_is_not_loopback(self):
        # v1 UNKNOWN and v2 LOCAL name no client: popbridge serves the
        # connection, but the balancer's loopback address must not count as
        # the client's (no plaintext login without allow_plaintext_auth).
        v2_local = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0x00, 0x00])
        for preamble in (b"PROXY UNKNOWN\r\n", v2_local):
            with self.subTest(preamble=preamble):
                c = self.src(self.popbridge.ports["proxy"], preamble=preamble)
                self.assertTrue(c.greeting.startswith(b"+OK"), c.greeting)
                r = c.cmd("USER nobody")
                self.assertTrue(r.startswith(b"-ERR [AUTH] Plaintext authentication disallowed"), r)
                self.assertOk(c.quit())

    def test_garbage_instead_of_header_is_closed(self):
        c = self.src(self.popbridge.ports["proxy"], preamble=b"USER alice\r\n",
                    read_greeting=False)
        self.assertTrue(closed_without_data(c.sock))
        c.close()

    def test_untrusted_sender_is_refused(self):
        start = self.pb_untrusted.log_size()
        port = self.pb_untrusted.ports["proxy"]
        # Plain POP3 and a well-formed PROXY header alike: no greeting.
        for preamble in (b"", b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 110\r\n"):
            with self.subTest(preamble=preamble):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                if preamble:
                    try:
                        s.sendall(preamble)
                    except OSError:
                        pass
                self.assertTrue(closed_without_data(s))
                s.close()
        # 127.0.0.21 is loopback but not in 127.0.0.1/32 on the other one.
        c = self.src(self.popbridge.ports["proxy"], source="127.0.0.21", read_greeting=False,
                    preamble=b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 110\r\n")
        self.assertTrue(closed_without_data(c.sock))
        c.close()
        wait_log(self.pb_untrusted, "connection from 127.0.0.1:", start)
        self.assertIn("refused: not a trusted proxy", self.pb_untrusted.read_log(start))
        # The plain listener of that popbridge still serves.
        user, pw = self.dovecot.new_user()
        c = self.connect(self.pb_untrusted.port)
        self.assertOk(c.login(user, pw))
        self.assertOk(c.quit())


# --------------------------------------------------------------------------
# Metrics

class MetricsTest(OpsTestCase):

    @classmethod
    def setUpClass(cls):
        cls.metrics_port = free_port()
        cls.popbridge_options = {"extra": "\n[metrics]\naddress = %s\n"
                                          % toml_str("127.0.0.1:%d" % cls.metrics_port)}
        super().setUpClass()

    def metrics(self):
        status, body = scrape(self.metrics_port)
        self.assertEqual(status, 200)
        return parse_metrics(body)

    def test_healthz_and_unknown_path(self):
        self.assertEqual(scrape(self.metrics_port, "/healthz"), (200, "ok\n"))
        status, _ = scrape(self.metrics_port, "/nope")
        self.assertEqual(status, 404)

    def test_connections_over_the_cap_get_503_until_some_close(self):
        # At most 16 metrics connections at once: the 17th is answered 503
        # and closed, and so is a scrape, until one of the 16 goes away.
        # (Idle ones are closed after 5 s anyway; this takes milliseconds.)
        held = [socket.create_connection(("127.0.0.1", self.metrics_port), timeout=10)
                for _ in range(16)]
        try:
            extra = socket.create_connection(("127.0.0.1", self.metrics_port), timeout=10)
            with extra:
                answer = b""
                while True:
                    data = extra.recv(4096)
                    if not data:
                        break
                    answer += data
                self.assertTrue(answer.startswith(b"HTTP/1.0 503 "), answer)
            self.assertEqual(scrape(self.metrics_port)[0], 503)
        finally:
            for s in held:
                s.close()
        wait_until(lambda: scrape(self.metrics_port)[0] == 200, what="/metrics answering again")
        self.assertEqual(scrape(self.metrics_port, "/healthz"), (200, "ok\n"))

    def test_request_never_completed_is_closed(self):
        # A scrape gets 5 s from connecting to its answer.
        s = socket.create_connection(("127.0.0.1", self.metrics_port), timeout=10)
        with s:
            s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n")  # no blank line, ever
            self.assertTrue(closed_without_data(s, timeout=20))

    def test_counters_during_and_after_a_session(self):
        user, pw = self.dovecot.new_user()
        raw = b"Subject: metrics\r\n\r\n" + b"0123456789abcdef\r\n" * 400
        self.dovecot.seed(user, raw)
        self.dovecot.seed(user, b"Subject: two\r\n\r\nsecond\r\n")
        m0 = self.metrics()
        c = self.connect()
        self.assertOk(self.auth_plain(c, user, pw))
        during = self.metrics()
        self.assertGreaterEqual(during["popbridge_sessions_open"], 1)
        self.assertEqual(during['popbridge_logins_total{result="ok"}'],
                         m0['popbridge_logins_total{result="ok"}'] + 1)
        _, body = c.multi("RETR 1")
        self.assertEqual(body, raw)
        self.assertOk(c.cmd("DELE 2"))
        self.assertOk(c.quit())
        bad = self.connect()
        r = bad.login(user, self.secret("Wrong-Secret-metrics"))
        self.assertTrue(r.startswith(b"-ERR [AUTH]"), r)
        bad.close()
        m1 = wait_until(lambda: (lambda m: m if m["popbridge_sessions_open"] == 0 else None)(
            self.metrics()), what="sessions_open back to 0")
        d = lambda key: m1[key] - m0[key]
        self.assertEqual(d('popbridge_logins_total{result="ok"}'), 1)
        self.assertEqual(d('popbridge_logins_total{result="auth_failed"}'), 1)
        self.assertEqual(d("popbridge_connections_total"), 2)
        self.assertGreaterEqual(d("popbridge_bytes_out_total"), len(raw))
        self.assertEqual(d("popbridge_messages_retrieved_total"), 1)
        self.assertEqual(d("popbridge_messages_deleted_total"), 1)
        for op, least in (("login", 2), ("fetch", 1), ("commit", 1)):
            count = 'popbridge_upstream_seconds_count{op="%s"}' % op
            self.assertGreaterEqual(d(count), least, op)
            inf = 'popbridge_upstream_seconds_bucket{op="%s",le="+Inf"}' % op
            self.assertEqual(m1[inf], m1[count])
            buckets = [v for k, v in m1.items()
                       if k.startswith('popbridge_upstream_seconds_bucket{op="%s",' % op)]
            self.assertEqual(buckets, sorted(buckets), "histogram buckets not cumulative")
            self.assertGreater(m1['popbridge_upstream_seconds_sum{op="%s"}' % op], 0)

    def test_special_password_logins_are_counted(self):
        # USER/PASS, AUTH PLAIN with an initial response and after a "+"
        # continuation, with the password that has a space, a quote, a
        # backslash and UTF-8 (and must not show up in the debug log).
        name, pw = SPECIAL_USER
        key = 'popbridge_logins_total{result="ok"}'
        before = self.metrics()[key]
        b64 = self.secret(plain_b64(name, pw))

        def user_pass(c):
            r = c.cmd("USER " + name)
            return c.cmd(b"PASS " + pw.encode("utf-8")) if r.startswith(b"+OK") else r

        def plain_initial(c):
            return c.cmd("AUTH PLAIN " + b64)

        def plain_continued(c):
            r = c.cmd("AUTH PLAIN")
            return c.cmd(b64) if r.startswith(b"+ ") or r == b"+\r\n" else r

        for how in (user_pass, plain_initial, plain_continued):
            deadline = time.monotonic() + 10
            while True:  # the previous session may still hold the lock
                c = self.connect()
                r = how(c)
                if not r.startswith(b"-ERR [IN-USE]") or time.monotonic() > deadline:
                    break
                c.close()
                time.sleep(0.1)
            self.assertOk(r, "%s: %r" % (how.__name__, r))
            self.assertOk(c.quit())
        self.assertEqual(self.metrics()[key] - before, 3)

    def test_bytes_out_grows_during_a_session(self):
        user, pw = self.dovecot.new_user()
        raw = b"Subject: grow\r\n\r\n" + b"x" * 70 + b"\r\n" * 1
        self.dovecot.seed(user, raw)
        c = self.session(user)
        before = self.metrics()["popbridge_bytes_out_total"]
        c.multi("RETR 1")
        wait_until(lambda: self.metrics()["popbridge_bytes_out_total"] >= before + len(raw),
                   what="bytes_out to grow by the message")
        self.assertOk(c.quit())


# --------------------------------------------------------------------------
# Connection limits

class LimitsTest(OpsTestCase):

    @classmethod
    def setUpClass(cls):
        cls.metrics_port = free_port()
        cls.popbridge_options = {
            "server_extra": "max_sessions = 3\nmax_sessions_per_ip = 2\n",
            "extra": "\n[metrics]\naddress = %s\n" % toml_str("127.0.0.1:%d" % cls.metrics_port)}
        super().setUpClass()

    def open_sessions(self):
        _, body = scrape(self.metrics_port)
        return parse_metrics(body)["popbridge_sessions_open"]

    def wait_open(self, n):
        wait_until(lambda: self.open_sessions() == n, what="sessions_open == %d" % n)

    def refused(self, source):
        c = self.src(self.pop3_port, source=source)
        self.assertEqual(c.greeting, TOO_MANY)
        self.assertEqual(c.read_until_closed(), b"")
        c.close()

    def test_max_sessions_and_per_ip(self):
        user, pw = self.dovecot.new_user()
        self.dovecot.seed(user, b"Subject: limits\r\n\r\nbody\r\n")
        start = self.popbridge.log_size()
        self.wait_open(0)  # the harness's readiness probe is gone
        a1 = self.src(self.pop3_port, "127.0.0.1")
        a2 = self.src(self.pop3_port, "127.0.0.1")
        self.assertTrue(a1.greeting.startswith(b"+OK"), a1.greeting)
        self.assertTrue(a2.greeting.startswith(b"+OK"), a2.greeting)
        self.refused("127.0.0.1")           # third from one IP
        self.wait_open(2)
        b1 = self.src(self.pop3_port, "127.0.0.2")
        self.assertTrue(b1.greeting.startswith(b"+OK"), b1.greeting)
        self.refused("127.0.0.3")           # fourth in all
        self.wait_open(3)
        # The admitted ones work normally at the limit.
        self.assertOk(a2.login(user, pw))
        self.assertEqual(a2.multi("RETR 1")[1], b"Subject: limits\r\n\r\nbody\r\n")
        # Freeing one admits one more.
        a1.close()
        self.wait_open(2)
        c1 = self.src(self.pop3_port, "127.0.0.3")
        self.assertTrue(c1.greeting.startswith(b"+OK"), c1.greeting)
        for c in (a2, b1, c1):
            self.assertOk(c.quit())
        log = self.popbridge.read_log(start)
        self.assertIn("refused: max_sessions_per_ip reached", log)
        self.assertIn("refused: max_sessions reached", log)
        _, body = scrape(self.metrics_port)
        self.assertGreaterEqual(parse_metrics(body)["popbridge_connections_refused_total"], 2)


# --------------------------------------------------------------------------
# Failed-login delay

class AuthDelayTest(OpsTestCase):
    """auth_failure_delay: a failed login's -ERR waits the base delay, and
    the address's next attempt first waits out its penalty (base, doubling
    per failure) before the upstream hears of it. Timers, not blocking:
    other clients go on meanwhile. Lower bounds only; "not blocked" is
    checked by which reply comes first."""

    BASE = 0.4
    popbridge_options = {"auth_failure_delay": "400ms",
                         "server_extra": 'auth_failure_delay_max = "5s"\n'}

    def timed_login(self, c, user, password):
        t0 = time.monotonic()
        r = c.login(user, password)
        return r, time.monotonic() - t0

    def test_delay_doubles_and_blocks_nobody_else(self):
        base = self.BASE
        user, pw = self.dovecot.new_user()
        self.dovecot.seed(user, b"Subject: d\r\n\r\nd\r\n")
        other, other_pw = self.dovecot.new_user()
        self.dovecot.seed(other, b"Subject: o\r\n\r\no\r\n")
        ip = "127.0.0.9"
        a = self.src(self.pop3_port, ip)
        # Failure n: the penalty owed (0, base, 2 base) plus the base delay.
        for n, least in enumerate((base, 2 * base, 3 * base), 1):
            r, took = self.timed_login(a, user, self.secret("Wrong-Secret-%d" % n))
            self.assertTrue(r.startswith(b"-ERR [AUTH]"), r)
            self.assertGreaterEqual(took, least, "failure %d answered after %.3fs" % (n, took))
        # Fourth attempt from that address: 4 base owed + base. Meanwhile a
        # client from another address is served at once, and one from the
        # same address (right password, a new connection) owes the same
        # 4 base but waits beside the first, not behind it.
        same = self.src(self.pop3_port, ip)
        self.assertOk(same.cmd("USER " + user))
        self.assertOk(a.cmd("USER " + user))
        t0 = time.monotonic()
        a.send(b"PASS " + self.secret("Wrong-Secret-4").encode() + b"\r\n")
        same.send(b"PASS " + pw.encode() + b"\r\n")
        b = self.src(self.pop3_port, "127.0.0.10")
        self.assertOk(b.login(other, other_pw))
        self.assertEqual(b.multi("RETR 1")[1], b"Subject: o\r\n\r\no\r\n")
        self.assertOk(b.quit())
        self.assertEqual(select.select([a.sock, same.sock], [], [], 0)[0], [],
                         "a penalised login answered before another address was served")
        r = same.readline()
        took_same = time.monotonic() - t0
        self.assertOk(r)
        self.assertEqual(select.select([a.sock], [], [], 0)[0], [],
                         "the same address's second client was kept waiting behind the first")
        self.assertEqual(same.multi("RETR 1")[1], b"Subject: d\r\n\r\nd\r\n")
        self.assertOk(same.quit())
        r = a.readline()
        took = time.monotonic() - t0
        self.assertTrue(r.startswith(b"-ERR [AUTH]"), r)
        self.assertGreaterEqual(took_same, 4 * base)
        self.assertGreaterEqual(took, 5 * base)
        # The success cleared the address's penalty: only the base delay
        # now, for AUTH PLAIN too.
        t0 = time.monotonic()
        r = self.auth_plain(a, user, "Wrong-Secret-5")
        self.secret("Wrong-Secret-5")
        self.assertTrue(r.startswith(b"-ERR [AUTH]"), r)
        self.assertGreaterEqual(time.monotonic() - t0, base)
        a.close()


# --------------------------------------------------------------------------
# SIGHUP

class ReloadTest(OpsTestCase):

    def setUp(self):
        super().setUp()
        self.original = self.popbridge.config_text

    def tearDown(self):
        try:
            if self.read_config() != self.original:
                self.reload_with(self.original, "reload: done")
        finally:
            super().tearDown()

    def read_config(self):
        with open(self.popbridge.config_path) as f:
            return f.read()

    def reload_with(self, text, expect):
        start = self.popbridge.log_size()
        with open(self.popbridge.config_path + ".tmp", "w") as f:
            f.write(text)
        os.replace(self.popbridge.config_path + ".tmp", self.popbridge.config_path)
        self.popbridge.reload()
        wait_log(self.popbridge, expect, start)
        return self.popbridge.read_log(start)

    def user_with(self, n):
        user, pw = self.dovecot.new_user()
        for i in range(n):
            self.dovecot.seed(user, b"Subject: %d\r\n\r\nbody\r\n" % i)
        return user

    def flags(self, user):
        state, _ = self.dovecot.imap_state(user)
        return [f - {"\\Recent"} for _, _, f in state]

    def test_new_sessions_use_new_config_open_ones_keep_theirs(self):
        u_old, u_new, u_idle = self.user_with(1), self.user_with(1), self.user_with(1)
        old = self.session(u_old)
        new_text = (self.original.replace('idle_timeout = "10m"', 'idle_timeout = "1s"')
                    .replace('hide_keyword = "%s"' % HIDE_KEYWORD, 'hide_keyword = "$Reloaded"'))
        self.assertNotEqual(new_text, self.original)
        self.reload_with(new_text, "reload: done")
        new = self.session(u_new)
        self.assertOk(new.cmd("DELE 1"))
        self.assertOk(new.quit())
        self.assertEqual(self.flags(u_new), [{"$Reloaded"}])
        # The new idle_timeout: a new idle session is closed (not before 1s).
        idle = self.session(u_idle)
        t0 = time.monotonic()
        data = idle.read_until_closed(timeout=20)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertIn(b"-ERR", data)
        # The open session kept 10m and $POP3Deleted, though idle longer than 1s.
        self.assertEqual(old.cmd("NOOP"), b"+OK\r\n")
        self.assertOk(old.cmd("DELE 1"))
        self.assertOk(old.quit())
        self.assertEqual(self.flags(u_old), [{HIDE_KEYWORD}])

    def test_broken_file_keeps_running_config(self):
        for broken in ("[server\nidle_timeout = \n",
                       self.original + "\nno_such_key = 1\n",
                       self.original.replace('idle_timeout = "10m"', 'idle_timeout = "0s"')):
            with self.subTest(broken=broken[:30]):
                log = self.reload_with(broken, "configuration rejected")
                self.assertIn("reload: configuration rejected, the running one stays", log)
                self.assertNotIn("reload: done", log)
                user = self.user_with(1)
                c = self.session(user)
                self.assertOk(c.cmd("DELE 1"))
                self.assertOk(c.quit())
                self.assertEqual(self.flags(user), [{HIDE_KEYWORD}])
                self.popbridge.check_alive()


# --------------------------------------------------------------------------
# SIGTERM

class ShutdownTest(OpsTestCase):

    def start_own(self, grace):
        return self.new_popbridge(server_extra='shutdown_grace = "%s"\n' % grace)

    def exited(self, pb):
        """Wait for the exit after SIGTERM; returns the exit status."""
        rc = pb.proc.wait(timeout=30)
        pb.proc = None  # ended as asked: nothing for tearDownClass to stop
        return rc

    def user_with(self, n):
        user, pw = self.dovecot.new_user()
        for i in range(n):
            self.dovecot.seed(user, b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i))
        return user, pw

    def hidden(self, user):
        state, _ = self.dovecot.imap_state(user)
        return [HIDE_KEYWORD in f for _, _, f in state]

    def sigterm(self, pb):
        start = pb.log_size()
        pb.proc.send_signal(signal.SIGTERM)
        wait_log(pb, "stopping; open sessions get", start)

    def test_quit_within_grace_is_committed(self):
        pb = self.start_own("20s")
        user, pw = self.user_with(2)
        s = self.connect(pb.port)
        self.assertOk(s.login(user, pw))
        self.assertOk(s.cmd("DELE 1"))
        unauth = self.connect(pb.port)
        self.sigterm(pb)
        # Not logged in: closed at once. New connections: refused.
        self.assertEqual(unauth.read_until_closed(timeout=10), b"")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", pb.port), timeout=5).close()
        # The logged-in one finishes its session, then the process exits 0.
        self.assertEqual(s.cmd("STAT")[:6], b"+OK 1 ")
        self.assertEqual(s.cmd("QUIT"), b"+OK Logging out, messages deleted.\r\n")
        self.assertEqual(s.read_until_closed(), b"")
        self.assertEqual(self.exited(pb), 0)
        self.assertEqual(self.hidden(user), [True, False])
        log = pb.read_log()
        self.assertIn("user=%s " % user, log)
        line = [l for l in logout_lines(log) if "user=%s " % user in l]
        self.assertEqual(len(line), 1, line)
        self.assertIn("deleted=1 ", line[0])
        self.assertIn("ended=quit", line[0])

    def test_grace_over_closes_without_commit(self):
        pb = self.start_own("500ms")
        user, pw = self.user_with(2)
        s = self.connect(pb.port)
        self.assertOk(s.login(user, pw))
        self.assertOk(s.cmd("DELE 1"))
        self.assertOk(s.cmd("DELE 2"))
        t0 = time.monotonic()
        self.sigterm(pb)
        s.read_until_closed(timeout=20)
        self.assertGreaterEqual(time.monotonic() - t0, 0.4)
        self.assertEqual(self.exited(pb), 0)
        self.assertEqual(self.hidden(user), [False, False])
        line = [l for l in logout_lines(pb.read_log()) if "user=%s " % user in l]
        self.assertEqual(len(line), 1, line)
        self.assertIn("ended=shutdown", line[0])
        # Nothing committed, so a new popbridge lists both again.
        pb2 = self.start_own("1s")
        c = self.connect(pb2.port)
        self.assertOk(c.login(user, pw))
        self.assertEqual(c.cmd("STAT")[:6], b"+OK 2 ")
        self.assertOk(c.quit())


# --------------------------------------------------------------------------
# Slow readers

def twenty_mb():
    line = b"y" * 78 + b"\r\n"
    return b"Subject: 20 MB\r\n\r\n" + line * (20 * 1024 * 1024 // len(line))


class SlowReaderTest(OpsTestCase):
    popbridge_options = {"server_extra": 'send_timeout = "1s"\n'}

    def test_client_that_never_reads_is_dropped(self):
        slow_user, slow_pw = self.dovecot.new_user()
        raw = twenty_mb()
        self.dovecot.seed(slow_user, raw)
        other, _ = self.dovecot.new_user()
        small = b"Subject: small\r\n\r\nstill served\r\n"
        self.dovecot.seed(other, small)
        start = self.popbridge.log_size()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        s.settimeout(IO_TIMEOUT)
        s.connect(("127.0.0.1", self.pop3_port))
        slow = Pop3.__new__(Pop3)
        slow.sock, slow.buf = s, b""
        self._conns.append(slow)
        self.assertTrue(slow.readline().startswith(b"+OK"))
        self.assertOk(slow.login(slow_user, slow_pw))
        slow.send("RETR 1\r\n")   # ... and never read
        # Others are served meanwhile.
        c = self.session(other)
        self.assertEqual(c.multi("RETR 1")[1], small)
        self.assertOk(c.quit())
        wait_log(self.popbridge, "client stopped reading, dropping it", start, timeout=30)
        data = slow.read_until_closed(timeout=30)
        self.assertLess(len(data), len(raw))
        self.assertFalse(data.endswith(b"\r\n.\r\n"))
        slow.close()
        wait_until(lambda: [l for l in logout_lines(self.popbridge.read_log(start))
                            if "user=%s " % slow_user in l], what="slow reader's logout line")
        line = [l for l in logout_lines(self.popbridge.read_log(start))
                if "user=%s " % slow_user in l][0]
        self.assertIn('ended="send timeout"', line)
        self.assertIn("retrieved=0 ", line)
        c = self.session(other)
        self.assertEqual(c.multi("RETR 1")[1], small)
        self.assertOk(c.quit())


# --------------------------------------------------------------------------
# JSON logs, and passwords that must not be logged

class JsonLogTest(OpsTestCase):
    popbridge_options = {"server_extra": 'log_format = "json"\n'}

    def test_every_line_is_json_and_logout_has_every_field(self):
        name, pw = SPECIAL_USER
        self.dovecot.seed(name, b"Subject: special\r\n\r\nhello\r\n")
        start = self.popbridge.log_size()
        c = self.connect()
        self.assertOk(c.cmd("USER " + name))
        self.assertOk(c.cmd(b"PASS " + pw.encode("utf-8")))
        self.assertEqual(c.multi("RETR 1")[1], b"Subject: special\r\n\r\nhello\r\n")
        self.assertOk(c.quit())
        c = self.connect()
        self.assertOk(self.auth_plain(c, name, pw))
        self.assertOk(c.quit())
        # Wrong passwords, and a user name that needs escaping.
        c = self.connect()
        r = self.auth_plain(c, name, pw[:-1])
        self.assertTrue(r.startswith(b"-ERR"), r)
        odd = 'od"d\\user é'
        r = c.login(odd, self.secret("Wrong-Secret-json"))
        self.assertTrue(r.startswith(b"-ERR"), r)
        c.close()
        # A user name that is not UTF-8: a stray 0xFF, a truncated sequence,
        # a surrogate, then a valid é. Each such octet is logged as \u00XX.
        c = self.connect()
        r = c.cmd(b"USER inv\xffal\xc3(id\xed\xa0\x80\xe2\x82\xc3\xa9")
        if r.startswith(b"+OK"):
            r = c.cmd(b"PASS " + self.secret("Wrong-Secret-utf8").encode("ascii"))
        self.assertTrue(r.startswith(b"-ERR"), r)
        c.close()
        not_utf8 = "inv\u00ffal\u00c3(id\u00ed\u00a0\u0080\u00e2\u0082\u00e9"
        self.popbridge.reload()
        wait_log(self.popbridge, "reload: done", start)
        wait_until(lambda: len(logout_lines(self.popbridge.read_log(start))) >= 4,
                   what="four logout lines")
        with open(self.popbridge.log_path, "rb") as f:
            f.seek(start)
            raw = f.read()
        records = []
        for line in raw.splitlines():
            try:
                rec = json.loads(line.decode("utf-8"))  # strict: no invalid UTF-8
            except ValueError:
                self.fail("not JSON in UTF-8: %r" % line)
            self.assertIsInstance(rec, dict, line)
            self.assertIn("time", rec)
            self.assertIn(rec.get("level"), ("debug", "info", "warn", "error"))
            records.append(rec)
        logouts = [r for r in records if r.get("event") == "logout"]
        fields = {"client", "user", "upstream", "tls", "listed", "retrieved", "deleted",
                  "bytes", "duration", "ended"}
        for rec in logouts:
            self.assertLessEqual(fields, set(rec), rec)
        mine = [r for r in logouts if r["user"] == name and r["retrieved"] == "1"]
        self.assertEqual(len(mine), 1, logouts)
        self.assertEqual(mine[0]["ended"], "quit")
        self.assertTrue(mine[0]["client"].startswith("127.0.0.1:"))
        self.assertIn(odd, [r["user"] for r in logouts])
        self.assertIn(not_utf8, [r["user"] for r in logouts])


if __name__ == "__main__":
    main()
