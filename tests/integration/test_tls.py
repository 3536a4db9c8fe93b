"""TLS towards POP3 clients: STLS and implicit TLS (port 995 style) with
real clients (curl, Python's poplib, openssl s_client), the STLS plaintext
injection, CAPA before and after STLS, plaintext authentication from a
non-loopback client (made visible through a PROXY protocol header),
min_version, certificate errors in the config, SIGHUP with new and broken
certificates, and a byte-exact 5 MB RETR over TLS.

Certificates come from certs.CertFactory, made at test time.
"""

import base64
import os
import poplib
import random
import shutil
import socket
import ssl
import subprocess
import sys
import time
import unittest

from certs import CertFactory, fingerprint
from harness import (AGAINST_DOVECOT, IO_TIMEOUT, Pop3, Pop3TestCase, Popbridge, main,
                     make_tempdir, parse_scan_listing, pop3_unstuff)

CLIENT_TIMEOUT = 60

# What popbridge sees as the client: a documentation address, not loopback.
PROXY_HEADER = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 110\r\n"
TRUSTED = ["127.0.0.1/32"]
PLAINTEXT_REFUSED = (b"-ERR [AUTH] Plaintext authentication disallowed on non-secure "
                     b"connections, use STLS.\r\n")
STLS_OK = b"+OK Begin TLS negotiation.\r\n"

MESSAGE = (b"From: alice@example.com\r\nSubject: over TLS\r\nMessage-ID: <tls@example.com>\r\n"
           b"\r\nHello over TLS.\r\n.a dotted line\r\n.\r\nend\r\n")


def need(binary):
    path = shutil.which(binary)
    if not path:
        raise unittest.SkipTest("%s is not installed (scripts/install-deps.sh installs it)" % binary)
    return path


def big_message(size=5 * 1024 * 1024, seed=7):
    """About `size` bytes of CRLF lines: printable and 8-bit text, lines
    starting with dots, a lone "." line, varied lengths."""
    rnd = random.Random(seed)
    alphabet = bytes(range(0x20, 0x7f)) + bytes(range(0xa0, 0x100))
    parts = [b"From: big@example.com\r\nSubject: 5 MB over TLS\r\n"
             b"Message-ID: <big@example.com>\r\n\r\n"]
    total = len(parts[0])
    n = 0
    while total < size:
        n += 1
        if n % 97 == 0:
            line = b"."
        elif n % 13 == 0:
            line = b".." + bytes(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 60)))
        else:
            line = b"%07d " % n + bytes(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 200)))
        parts.append(line + b"\r\n")
        total += len(line) + 2
    return b"".join(parts)


def peer_fingerprint(conn):
    return fingerprint(conn.sock.getpeercert(binary_form=True))


class TlsTestCase(Pop3TestCase):
    """One Dovecot, one CA and one popbridge with a plaintext listener
    (self.pop3_port), an STLS one, an implicit one, and plaintext and STLS
    listeners behind a PROXY protocol header; allow_plaintext_auth = false."""

    @classmethod
    def setUpClass(cls):
        if AGAINST_DOVECOT:
            raise unittest.SkipTest("POP3_TARGET=dovecot: tests popbridge's client-side TLS")
        need("openssl")
        cls.certs = CertFactory()
        try:
            cls.cert = cls.certs.server("localhost")
            cls.popbridge_options = dict(
                listeners=[
                    {"tls": "starttls"},
                    {"tls": "implicit"},
                    {"name": "proxy", "tls": "none", "proxy_protocol": True,
                     "trusted_proxies": TRUSTED},
                    {"name": "proxy-stls", "tls": "starttls", "proxy_protocol": True,
                     "trusted_proxies": TRUSTED},
                ],
                tls={"certificate": cls.cert.fullchain, "key": cls.cert.key,
                     "min_version": "1.2"},
                allow_plaintext_auth=False)
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
        self.ctx = self.certs.client_context()
        self.user, self.password = self.dovecot.new_user()

    # -- helpers -------------------------------------------------------------

    def port(self, name, popbridge=None):
        return (popbridge or self.popbridge).ports[name]

    def raw(self, port, proxy_header=None):
        """A plaintext connection (after an optional PROXY header) with its
        greeting read."""
        c = Pop3(port, read_greeting=False)
        self._conns.append(c)
        if proxy_header:
            c.send(proxy_header)
        c.greeting = c.readline()
        self.assertEqual(c.greeting, b"+OK popbridge ready.\r\n")
        return c

    def wrap(self, c, ctx=None):
        """Start TLS on c's socket (nothing may be buffered)."""
        self.assertEqual(c.buf, b"", "plaintext bytes after the last reply")
        c.sock = (ctx or self.ctx).wrap_socket(c.sock, server_hostname="localhost")
        c.sock.settimeout(IO_TIMEOUT)
        return c

    def implicit(self, port=None, ctx=None):
        c = Pop3(port or self.port("implicit"), read_greeting=False)
        self._conns.append(c)
        self.wrap(c, ctx)
        c.greeting = c.readline()
        self.assertEqual(c.greeting, b"+OK popbridge ready.\r\n")
        return c

    def stls(self, port=None, proxy_header=None, ctx=None):
        c = self.raw(port or self.port("starttls"), proxy_header)
        self.assertEqual(c.cmd("STLS"), STLS_OK)
        return self.wrap(c, ctx)

    def upgrade_and_use(self, c):
        """STLS on c: afterwards CAPA offers USER and SASL but no STLS, and
        a login, STAT and QUIT work."""
        self.assertEqual(c.cmd("STLS"), STLS_OK)
        self.wrap(c)
        caps = self.capa(c)
        self.assertNotIn("STLS", caps)
        self.assertIn("USER", caps)
        self.assertIn("SASL PLAIN", caps)
        self.assertLogin(c)
        self.assertOk(c.cmd("STAT"))
        self.assertOk(c.quit())

    def capa(self, c):
        status, body = c.multi("CAPA")
        return [line for line in body.decode("ascii").split("\r\n") if line]

    def assertLogin(self, c):
        self.assertEqual(c.cmd("USER " + self.user), b"+OK\r\n")
        self.assertOk(c.cmd("PASS " + self.password))

    def start_popbridge(self, **options):
        """Another popbridge in front of this class's Dovecot, stopped at the
        end of the test (its log is shown if the test fails)."""
        p = Popbridge(self.dovecot.imap_port, **options)

        def finish():
            failed = not getattr(self._outcome, "success", True)
            if failed or p.crashed():
                p.dump_log()
            p.cleanup()
        p.start()
        self.addCleanup(finish)
        return p

    def wait_for_log(self, popbridge, text, start):
        """Wait (bounded) until popbridge's log from offset start has text."""
        deadline = time.monotonic() + IO_TIMEOUT
        while text not in popbridge.read_log(start):
            popbridge.check_alive()
            if time.monotonic() > deadline:
                self.fail("popbridge did not log %r" % text)
            time.sleep(0.02)

    def run_client(self, argv, input=None):
        work = make_tempdir("popbridge-tls-client-")
        self.addCleanup(shutil.rmtree, work, True)
        env = dict(os.environ, HOME=work, LC_ALL="C.UTF-8")
        return subprocess.run(argv, input=input, capture_output=True, env=env,
                              timeout=CLIENT_TIMEOUT,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def s_client(self, port, *args, input=b"QUIT\n"):
        """openssl s_client, verifying the certificate and host name, sending
        input (LF -> CRLF) and reading until the server closes."""
        need("openssl")
        return self.run_client(
            ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", "localhost",
             "-CAfile", self.certs.ca_cert, "-verify_return_error", "-verify_hostname",
             "localhost", "-crlf", "-ign_eof"] + list(args), input=input)


class StlsTest(TlsTestCase):
    """STLS and implicit TLS with a raw client: state, CAPA, injection."""

    def test_capa_before_and_after_stls(self):
        c = self.raw(self.port("starttls"))
        before = self.capa(c)
        # Loopback may log in without TLS, so USER and SASL are offered too.
        for cap in ("STLS", "USER", "SASL PLAIN"):
            self.assertIn(cap, before)
        self.upgrade_and_use(c)

    def test_capa_over_implicit_tls_has_no_stls(self):
        c = self.implicit()
        caps = self.capa(c)
        self.assertNotIn("STLS", caps)
        self.assertIn("USER", caps)

    def test_no_stls_on_a_plaintext_listener(self):
        c = self.raw(self.pop3_port)
        self.assertNotIn("STLS", self.capa(c))
        self.assertEqual(c.cmd("STLS"), b"-ERR STLS is not available on this port.\r\n")
        self.assertLogin(c)  # loopback: plaintext login allowed

    def test_stls_inside_tls_is_refused(self):
        c = self.implicit()
        self.assertEqual(c.cmd("STLS"), b"-ERR TLS is already active.\r\n")
        c = self.stls()
        self.assertEqual(c.cmd("STLS"), b"-ERR TLS is already active.\r\n")
        # The session goes on over the same TLS connection.
        self.assertLogin(c)
        self.assertOk(c.cmd("STAT"))
        self.assertOk(c.quit())

    def test_commands_behind_stls_in_the_same_packet_are_discarded(self):
        # A man in the middle appends a command to the client's STLS: it
        # arrives in plaintext with it and must never run as if it came over
        # TLS (CVE-2011-0411 style injection).
        c = self.raw(self.port("starttls"))
        c.send(b"STLS\r\nUSER " + self.user.encode() + b"\r\n")
        self.assertEqual(c.readline(), STLS_OK)
        self.wrap(c)  # no plaintext reply to USER may follow the +OK
        self.assertEqual(c.cmd("PASS " + self.password), b"-ERR No user name given.\r\n")
        # A session logged in over TLS works normally afterwards.
        self.assertLogin(c)
        self.assertOk(c.cmd("STAT"))
        self.assertOk(c.quit())

    def test_whole_login_behind_stls_is_discarded(self):
        c = self.raw(self.port("starttls"))
        c.send(("STLS\r\nUSER %s\r\nPASS %s\r\nSTAT\r\n" % (self.user, self.password)).encode())
        self.assertEqual(c.readline(), STLS_OK)
        self.wrap(c)
        self.assertEqual(c.cmd("STAT"), b"-ERR Command not valid in this state.\r\n")
        self.assertIn("USER", self.capa(c))  # still in AUTHORIZATION

    def test_user_before_stls_is_forgotten(self):
        # RFC 2595: nothing learnt before TLS (here a USER, allowed on
        # loopback) survives the switch.
        c = self.raw(self.port("starttls"))
        self.assertEqual(c.cmd("USER " + self.user), b"+OK\r\n")
        self.assertEqual(c.cmd("STLS"), STLS_OK)
        self.wrap(c)
        self.assertEqual(c.cmd("PASS " + self.password), b"-ERR No user name given.\r\n")

    def test_plaintext_instead_of_a_handshake_closes(self):
        for how in ("stls", "implicit"):
            with self.subTest(how=how):
                if how == "stls":
                    c = self.raw(self.port("starttls"))
                    self.assertEqual(c.cmd("STLS"), STLS_OK)
                else:
                    c = Pop3(self.port("implicit"), read_greeting=False)
                    self._conns.append(c)
                c.send("USER %s\r\nPASS %s\r\n" % (self.user, self.password))
                self.assertNotIn(b"+OK", c.read_until_closed())

    def test_quit_over_tls_sends_close_notify(self):
        # Dovecot's POP3 sends a TLS close_notify after QUIT's reply;
        # openssl s_client reports "unexpected eof while reading" without it.
        c = self.implicit()
        c.sock.suppress_ragged_eofs = False
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out.\r\n")
        try:
            self.assertEqual(c.sock.recv(100), b"")
        except ssl.SSLEOFError as e:
            self.fail("the connection ended without close_notify: %s" % e)

    def test_retr_5mb_byte_exact_over_tls(self):
        raw = big_message()
        self.dovecot.seed(self.user, raw)
        for how in ("implicit", "stls"):
            with self.subTest(how=how):
                c = self.implicit() if how == "implicit" else self.stls()
                self.assertLogin(c)
                self.assertEqual(c.cmd("LIST 1"), b"+OK 1 %d\r\n" % len(raw))
                status, body = c.multi("RETR 1")
                self.assertTrue(pop3_unstuff(body) == raw,
                                "RETR over TLS differs from the stored %d bytes (got %d)"
                                % (len(raw), len(pop3_unstuff(body))))
                self.assertOk(c.quit())


class PlaintextAuthTest(TlsTestCase):
    """allow_plaintext_auth with a non-loopback client, behind PROXY."""

    def test_plaintext_auth_refused_from_non_loopback(self):
        c = self.raw(self.port("proxy"), PROXY_HEADER)
        caps = self.capa(c)
        for cap in ("USER", "SASL PLAIN", "STLS"):
            self.assertNotIn(cap, caps)
        self.assertEqual(c.cmd("USER " + self.user), PLAINTEXT_REFUSED)
        self.assertEqual(c.cmd("PASS " + self.password), PLAINTEXT_REFUSED)
        self.assertEqual(c.cmd("AUTH PLAIN"), PLAINTEXT_REFUSED)
        ir = base64.b64encode(("\0%s\0%s" % (self.user, self.password)).encode()).decode()
        self.assertEqual(c.cmd("AUTH PLAIN " + ir), PLAINTEXT_REFUSED)
        self.assertEqual(c.cmd("STAT"), b"-ERR Command not valid in this state.\r\n")
        self.assertOk(c.quit())

    def test_non_loopback_logs_in_after_stls(self):
        start = self.popbridge.log_size()
        c = self.raw(self.port("proxy-stls"), PROXY_HEADER)
        caps = self.capa(c)
        self.assertIn("STLS", caps)
        self.assertNotIn("USER", caps)
        self.assertNotIn("SASL PLAIN", caps)
        self.assertEqual(c.cmd("USER " + self.user), PLAINTEXT_REFUSED)
        self.upgrade_and_use(c)
        # popbridge really saw the address from the PROXY header.
        self.wait_for_log(self.popbridge, "client=192.0.2.7:5555 user=%s" % self.user, start)

    def test_plaintext_auth_allowed_when_configured(self):
        p = self.start_popbridge(
            allow_plaintext_auth=True,
            listeners=[{"name": "proxy", "tls": "none", "proxy_protocol": True,
                        "trusted_proxies": TRUSTED}])
        c = self.raw(p.ports["proxy"], PROXY_HEADER)
        caps = self.capa(c)
        self.assertIn("USER", caps)
        self.assertIn("SASL PLAIN", caps)
        self.assertLogin(c)
        self.assertOk(c.cmd("STAT"))
        self.assertOk(c.quit())


class RealClientTest(TlsTestCase):
    """curl, poplib and openssl s_client over STLS and implicit TLS; every
    client checks the certificate against the test CA and the name localhost."""

    def setUp(self):
        super().setUp()
        self.dovecot.seed(self.user, MESSAGE)

    def curl(self, url, *extra, ok=True):
        need("curl")
        r = self.run_client(["curl", "-sS", "--max-time", str(CLIENT_TIMEOUT),
                             "--cacert", self.certs.ca_cert,
                             "-u", "%s:%s" % (self.user, self.password)] + list(extra) + [url])
        if ok and r.returncode != 0:
            self.fail("curl %s exited %d: %s" % (url, r.returncode, r.stderr.decode(errors="replace")))
        return r

    def test_curl_pop3s(self):
        base = "pop3s://localhost:%d/" % self.port("implicit")
        out = self.curl(base).stdout.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        listing = parse_scan_listing(out)
        self.assertEqual(listing, {1: b"%d" % len(MESSAGE)})
        self.assertEqual(self.curl(base + "1").stdout, MESSAGE)

    def test_curl_ssl_reqd_over_stls(self):
        url = "pop3://localhost:%d/1" % self.port("starttls")
        self.assertEqual(self.curl(url, "--ssl-reqd").stdout, MESSAGE)

    def test_curl_ssl_reqd_without_stls_gives_up(self):
        # No STLS in CAPA: curl must not fall back to plaintext.
        r = self.curl("pop3://localhost:%d/1" % self.pop3_port, "--ssl-reqd", ok=False)
        self.assertEqual(r.returncode, 64, r.stderr)  # CURLE_USE_SSL_FAILED
        self.assertEqual(r.stdout, b"")

    def test_poplib_stls(self):
        p = poplib.POP3("localhost", self.port("starttls"), timeout=IO_TIMEOUT)
        try:
            self.assertIn("STLS", p.capa())
            p.stls(context=self.ctx)
            self.assertNotIn("STLS", p.capa())
            p.user(self.user)
            p.pass_(self.password)
            self.assertEqual(p.stat(), (1, len(MESSAGE)))
            _, lines, _ = p.retr(1)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", MESSAGE)
            with self.assertRaises(poplib.error_proto):
                p.stls(context=self.ctx)  # poplib itself refuses a second STLS
            self.assertTrue(p.quit().startswith(b"+OK"))
        finally:
            p.close()

    def test_poplib_pop3_ssl(self):
        p = poplib.POP3_SSL("localhost", self.port("implicit"), context=self.ctx,
                            timeout=IO_TIMEOUT)
        try:
            self.assertTrue(p.getwelcome().startswith(b"+OK"))
            self.assertNotIn("STLS", p.capa())
            p.user(self.user)
            p.pass_(self.password)
            self.assertEqual(p.stat(), (1, len(MESSAGE)))
            _, lines, _ = p.retr(1)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", MESSAGE)
            self.assertTrue(p.quit().startswith(b"+OK"))
        finally:
            p.close()

    def test_openssl_s_client_starttls_pop3(self):
        r = self.s_client(self.port("starttls"), "-starttls", "pop3", "-quiet", input=(
            "USER %s\nPASS %s\nSTAT\nRETR 1\nQUIT\n" % (self.user, self.password)).encode())
        out = r.stdout.decode("utf-8", "replace")
        err = r.stderr.decode("utf-8", "replace")
        self.assertIn("verify return:1", err)
        self.assertIn("+OK Logged in.", out, err)
        self.assertIn("+OK 1 %d" % len(MESSAGE), out)
        self.assertIn("Hello over TLS.", out)
        self.assertIn("..a dotted line", out)  # dot-stuffed on the wire
        self.assertIn("+OK Logging out.", out)

    def test_clients_reject_wrong_name_and_expired_certificates(self):
        # The certificates from certs.py fail where they should, so the
        # passing checks above do verify something.
        wrong = self.certs.server("wrong-name", cn="wrong.example", dns=["wrong.example"], ips=[])
        expired = self.certs.server("expired", expired=True)
        for cert, why in ((wrong, "Hostname mismatch"), (expired, "certificate has expired")):
            with self.subTest(cert=cert.name):
                p = self.start_popbridge(listeners=[{"tls": "implicit"}],
                                         tls={"certificate": cert.fullchain, "key": cert.key})
                with self.assertRaises(ssl.SSLCertVerificationError) as cm:
                    poplib.POP3_SSL("localhost", p.ports["implicit"], context=self.ctx,
                                    timeout=IO_TIMEOUT)
                self.assertIn(why, str(cm.exception))
                r = self.curl("pop3s://localhost:%d/" % p.ports["implicit"], ok=False)
                self.assertEqual(r.returncode, 60, r.stderr)  # CURLE_PEER_FAILED_VERIFICATION


class VersionTest(TlsTestCase):
    """min_version with openssl s_client -tls1."""

    LEGACY = ["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0", "-brief"]

    def test_min_version(self):
        old = self.start_popbridge(
            listeners=[{"tls": "starttls"}, {"tls": "implicit"}],
            tls={"certificate": self.cert.fullchain, "key": self.cert.key, "min_version": "1.0"})
        for name in ("implicit", "starttls"):
            extra = self.LEGACY + (["-starttls", "pop3"] if name == "starttls" else [])
            with self.subTest(min_version="1.0", listener=name):
                r = self.s_client(old.ports[name], *extra)
                err = r.stderr.decode("utf-8", "replace")
                if "Protocol version: TLSv1\n" not in err and "no protocols available" in err:
                    self.skipTest("the local OpenSSL cannot speak TLS 1.0: " + err[-500:])
                self.assertIn("Protocol version: TLSv1\n", err)
                self.assertIn("Verification: OK", err)
                if name == "implicit":
                    self.assertIn(b"+OK popbridge ready.", r.stdout)
                self.assertIn(b"+OK Logging out.", r.stdout)
            with self.subTest(min_version="1.2", listener=name):
                r = self.s_client(self.port(name), *extra)
                err = r.stderr.decode("utf-8", "replace")
                self.assertNotEqual(r.returncode, 0)
                self.assertNotIn("CONNECTION ESTABLISHED", err)
                self.assertIn("alert protocol version", err)
                self.assertNotIn(b"+OK Logging out.", r.stdout)
        # TLS 1.2 still works on the default listener.
        r = self.s_client(self.port("implicit"), "-tls1_2", "-brief")
        self.assertIn("Protocol version: TLSv1.2", r.stderr.decode())
        self.assertIn(b"+OK Logging out.", r.stdout)


class CertificateConfigTest(TlsTestCase):
    """Certificate files in the config, and SIGHUP."""

    def check_config(self, **tls):
        p = Popbridge(self.dovecot.imap_port, listeners=[{"tls": "implicit"}], tls=tls)
        self.addCleanup(p.cleanup, False)
        r = subprocess.run([p.bin, "--check-config", p.config_path], capture_output=True,
                           text=True, timeout=30, stdin=subprocess.DEVNULL)
        return p, r.returncode, r.stdout + r.stderr

    def test_missing_certificate_or_key_is_a_config_error(self):
        missing = os.path.join(self.certs.dir, "no-such-cert.pem")
        p, rc, out = self.check_config(certificate=missing, key=self.cert.key)
        self.assertEqual(rc, 1, out)
        self.assertIn(missing, out)
        self.assertIn("tls.certificate", out)
        # Starting with it fails the same way.
        r = subprocess.run([p.bin, "--config", p.config_path], capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(missing, r.stderr)

        missing = os.path.join(self.certs.dir, "no-such-key.pem")
        _, rc, out = self.check_config(certificate=self.cert.fullchain, key=missing)
        self.assertEqual(rc, 1, out)
        self.assertIn(missing, out)
        self.assertIn("tls.key", out)

        _, rc, out = self.check_config(certificate=self.cert.fullchain, key=self.cert.key)
        self.assertEqual(rc, 0, out)

    def test_unusable_certificate_fails_to_start(self):
        garbage = os.path.join(self.certs.dir, "garbage.pem")
        with open(garbage, "w") as f:
            f.write("not a certificate\n")
        other = self.certs.server("other-key")
        for cert, key, named in ((garbage, self.cert.key, garbage),
                                 (self.cert.fullchain, other.key, other.key)):
            with self.subTest(cert=cert, key=key):
                p = Popbridge(self.dovecot.imap_port, listeners=[{"tls": "implicit"}],
                              tls={"certificate": cert, "key": key})
                self.addCleanup(p.cleanup, False)
                r = subprocess.run([p.bin, "--config", p.config_path], capture_output=True,
                                   text=True, timeout=30, stdin=subprocess.DEVNULL)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn(named, r.stderr)

    def test_check_config_rejects_unusable_certificate(self):
        garbage = os.path.join(self.certs.dir, "garbage2.pem")
        with open(garbage, "w") as f:
            f.write("not a certificate\n")
        _, rc, out = self.check_config(certificate=garbage, key=self.cert.key)
        self.assertEqual(rc, 1, out)
        self.assertIn(garbage, out)

    def test_sighup_reloads_certificate(self):
        first = self.cert
        second = self.certs.server("second")
        live_cert = os.path.join(self.certs.dir, "live.pem")
        live_key = os.path.join(self.certs.dir, "live.key")

        def install(cert_pem, key_pem):
            for src, dst in ((cert_pem, live_cert), (key_pem, live_key)):
                shutil.copyfile(src, dst + ".tmp")
                os.replace(dst + ".tmp", dst)

        def reload(expect):
            start = p.log_size()
            p.reload()
            self.wait_for_log(p, expect, start)

        def new_fingerprint(how):
            c = self.implicit(p.ports["implicit"]) if how == "implicit" else \
                self.stls(p.ports["starttls"])
            fp = peer_fingerprint(c)
            self.assertLogin(c)
            self.assertOk(c.quit())
            return fp

        install(first.fullchain, first.key)
        p = self.start_popbridge(listeners=[{"tls": "starttls"}, {"tls": "implicit"}],
                                 tls={"certificate": live_cert, "key": live_key})
        self.dovecot.seed(self.user, MESSAGE)
        user2, password2 = self.dovecot.new_user()
        self.dovecot.seed(user2, MESSAGE)

        # A TLS session open across the reloads.
        old = self.implicit(p.ports["implicit"])
        self.assertEqual(peer_fingerprint(old), first.fingerprint)
        self.assertEqual(old.cmd("USER " + user2), b"+OK\r\n")
        self.assertOk(old.cmd("PASS " + password2))

        install(second.fullchain, second.key)
        reload("reload: done")
        for how in ("implicit", "stls"):
            self.assertEqual(new_fingerprint(how), second.fingerprint, how)
        self.assertEqual(old.cmd("STAT"), b"+OK 1 %d\r\n" % len(MESSAGE))

        # Broken files: the reload is refused, the second certificate stays.
        garbage = os.path.join(self.certs.dir, "garbage3.pem")
        with open(garbage, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
        for cert_pem, key_pem in ((garbage, second.key), (first.fullchain, second.key)):
            install(cert_pem, key_pem)
            reload("reload: configuration rejected")
            self.assertEqual(new_fingerprint("implicit"), second.fingerprint)
        self.assertEqual(old.cmd("STAT"), b"+OK 1 %d\r\n" % len(MESSAGE))

        # Repaired: the next SIGHUP takes the files again.
        install(first.fullchain, first.key)
        reload("reload: done")
        self.assertEqual(new_fingerprint("implicit"), first.fingerprint)

        # The old session saw the first certificate throughout and still works.
        status, body = old.multi("RETR 1")
        self.assertEqual(pop3_unstuff(body), MESSAGE)
        self.assertOk(old.quit())


if __name__ == "__main__":
    main()
