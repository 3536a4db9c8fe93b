"""TLS from popbridge to the upstream IMAP server (Dovecot with ssl = yes):
implicit TLS (IMAPS) and STARTTLS, each logging in and RETRieving byte-exact;
certificate verification against ca_file and the system store (wrong name,
unknown CA, expired: -ERR [SYS/TEMP] and a log line saying why); verify =
false; no plaintext fallback when STARTTLS is missing; fail-over across
[[upstream]] hosts (past a closed port, never past a failed verification).

Certificates come from certs.CertFactory, made at test time with the
openssl command line.
"""

import os
import unittest

from certs import CertFactory
from harness import (AGAINST_DOVECOT, Dovecot, Pop3, Popbridge, free_port, main,
                     pop3_unstuff)

UNAVAILABLE = b"-ERR [SYS/TEMP]"
MESSAGES = [
    b"From: alice@example.com\r\nSubject: one\r\nMessage-ID: <one@example.com>\r\n\r\n"
    b"Hello over upstream TLS.\r\n.a dotted line\r\n.\r\nend\r\n",
    b"From: bob@example.com\r\nSubject: two\r\n\r\n" + b"x" * 70 + b"\r\n" * 1 +
    bytes(range(0x20, 0x7f)) + b"\r\n" + (b"0123456789abcdef" * 8 + b"\r\n") * 20000,
]


@unittest.skipIf(AGAINST_DOVECOT, "POP3_TARGET=dovecot: popbridge's upstream TLS")
class UpstreamTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = CertFactory()
        cls.unknown_certs = CertFactory(ca_name="unknown test CA")
        cls.dovecots = {}
        try:
            issued = {
                "good": cls.certs.server("good"),
                "wrong": cls.certs.server("wrong", cn="wrong.example", dns=["wrong.example"],
                                          ips=[]),
                "expired": cls.certs.server("expired", expired=True),
                "unknown": cls.unknown_certs.server("unknown"),
            }
            for name, cert in issued.items():
                cls.dovecots[name] = Dovecot(ssl_cert=cert.cert, ssl_key=cert.key).start()
            cls.dovecots["plain"] = Dovecot().start()  # no TLS: no STARTTLS offered
        except BaseException:
            cls.tearDownClass()
            raise
        cls.ca_file = cls.certs.ca_cert

    @classmethod
    def tearDownClass(cls):
        for dovecot in cls.dovecots.values():
            dovecot.cleanup()
        cls.certs.cleanup()
        cls.unknown_certs.cleanup()

    def setUp(self):
        self._popbridges = []

    def tearDown(self):
        failed = not getattr(self._outcome, "success", True)
        for p in self._popbridges:
            if failed:
                p.dump_log()
            p.cleanup()

    # -- helpers -------------------------------------------------------------

    def popbridge(self, port, tls, host="localhost", verify=None, ca_file="default",
                  hosts=None):
        extra = ""
        if ca_file == "default":
            ca_file = self.ca_file
        if ca_file:
            extra += 'ca_file = "%s"\n' % ca_file
        if verify is not None:
            extra += "verify = %s\n" % ("true" if verify else "false")
        p = Popbridge(port, upstream_host=host, upstream_tls=tls, upstream_extra=extra,
                      upstream_hosts=hosts, connect_timeout="3s")
        self._popbridges.append(p)
        return p.start()

    def seeded_user(self, dovecot):
        user, password = dovecot.new_user()
        for raw in MESSAGES:
            dovecot.seed(user, raw)
        return user, password

    def login(self, popbridge, user, password):
        c = Pop3(popbridge.port)
        self.addCleanup(c.close)
        self.assertTrue(c.greeting.startswith(b"+OK"), c.greeting)
        return c, c.login(user, password)

    def retr_all(self, port, user, password):
        c = Pop3(port)
        try:
            r = c.login(user, password)
            self.assertTrue(r.startswith(b"+OK"), r)
            bodies = []
            for n in range(1, len(MESSAGES) + 1):
                status, body = c.multi(b"RETR %d" % n)
                self.assertTrue(status.startswith(b"+OK"), status)
                bodies.append(pop3_unstuff(body))
            c.quit()
            return bodies
        finally:
            c.close()

    def assert_retr_byte_exact(self, popbridge, dovecot):
        user, password = self.seeded_user(dovecot)
        got = self.retr_all(popbridge.port, user, password)
        reference = self.retr_all(dovecot.pop3_port, user, password)
        self.assertEqual(len(got), len(MESSAGES))
        for ours, theirs in zip(got, reference):
            self.assertEqual(ours, theirs)
        self.assert_no_password_logged(popbridge, password)

    def assert_no_password_logged(self, popbridge, password):
        self.assertNotIn(password, popbridge.read_log())

    def assert_refused(self, popbridge, dovecot, why):
        """Login fails with -ERR [SYS/TEMP]; popbridge's log says `why`."""
        user, password = dovecot.new_user()
        c, r = self.login(popbridge, user, password)
        self.assertTrue(r.startswith(UNAVAILABLE), r)
        log = popbridge.read_log()
        self.assertIn(why, log)
        self.assertNotIn("LOGIN " + user, log)  # the credentials never went out
        self.assert_no_password_logged(popbridge, password)
        return log

    # -- tests ---------------------------------------------------------------

    def test_implicit_tls_logs_in_and_retrs_byte_exact(self):
        dovecot = self.dovecots["good"]
        p = self.popbridge(dovecot.imaps_port, "implicit")
        self.assert_retr_byte_exact(p, dovecot)
        self.assertIn(" connected (TLSv1.", p.read_log())

    def test_starttls_logs_in_and_retrs_byte_exact(self):
        dovecot = self.dovecots["good"]
        # An IP literal: checked against the certificate's IP:127.0.0.1.
        p = self.popbridge(dovecot.imap_port, "starttls", host="127.0.0.1")
        self.assert_retr_byte_exact(p, dovecot)
        self.assertIn(" connected (TLSv1.", p.read_log())

    def test_wrong_name_is_refused(self):
        dovecot = self.dovecots["wrong"]
        p = self.popbridge(dovecot.imaps_port, "implicit")
        log = self.assert_refused(p, dovecot,
                                  "certificate verification failed for localhost: "
                                  "hostname mismatch")
        self.assertIn("DNS:wrong.example", log)

    def test_wrong_name_is_refused_with_starttls(self):
        dovecot = self.dovecots["wrong"]
        p = self.popbridge(dovecot.imap_port, "starttls")
        self.assert_refused(p, dovecot, "STARTTLS failed: certificate verification failed for "
                                        "localhost: hostname mismatch")

    def test_unknown_ca_is_refused(self):
        dovecot = self.dovecots["unknown"]
        p = self.popbridge(dovecot.imaps_port, "implicit")
        log = self.assert_refused(p, dovecot, "certificate verification failed for localhost: "
                                              "unable to get local issuer certificate")
        self.assertIn("issued by CN=unknown test CA", log)

    def test_expired_is_refused(self):
        dovecot = self.dovecots["expired"]
        p = self.popbridge(dovecot.imaps_port, "implicit")
        self.assert_refused(p, dovecot, "certificate verification failed for localhost: "
                                        "certificate has expired")

    def test_system_store_does_not_know_the_test_ca(self):
        dovecot = self.dovecots["good"]
        p = self.popbridge(dovecot.imaps_port, "implicit", ca_file="")
        self.assert_refused(p, dovecot, "unable to get local issuer certificate")

    def test_verify_false_accepts_the_wrong_name(self):
        dovecot = self.dovecots["wrong"]
        p = self.popbridge(dovecot.imaps_port, "implicit", verify=False, ca_file="")
        self.assert_retr_byte_exact(p, dovecot)
        self.assertIn("verify = false", p.read_log())  # the warning at start

    def test_starttls_missing_never_falls_back_to_plaintext(self):
        dovecot = self.dovecots["plain"]
        p = self.popbridge(dovecot.imap_port, "starttls")
        self.assert_refused(p, dovecot, "STARTTLS failed: the server does not advertise STARTTLS")

    def test_plaintext_server_on_the_implicit_port(self):
        dovecot = self.dovecots["plain"]
        p = self.popbridge(dovecot.imap_port, "implicit")
        log = self.assert_refused(p, dovecot, "TLS error during the TLS handshake")
        self.assertNotIn("certificate verification failed", log)

    def test_fail_over_past_a_closed_port(self):
        dovecot = self.dovecots["good"]
        closed = free_port()
        p = self.popbridge(0, "implicit", hosts=["127.0.0.1:%d" % closed,
                                                 "localhost:%d" % dovecot.imaps_port])
        self.assert_retr_byte_exact(p, dovecot)
        self.assertIn("127.0.0.1:%d unreachable; trying localhost:%d"
                      % (closed, dovecot.imaps_port), p.read_log())

    def test_no_fail_over_past_a_failed_verification(self):
        wrong, good = self.dovecots["wrong"], self.dovecots["good"]
        p = self.popbridge(0, "implicit", hosts=["localhost:%d" % wrong.imaps_port,
                                                 "localhost:%d" % good.imaps_port])
        # The user exists on both: only the verification stands in the way.
        user, password = good.new_user()
        wrong.add_user(user, password)
        c, r = self.login(p, user, password)
        self.assertTrue(r.startswith(UNAVAILABLE), r)
        log = p.read_log()
        self.assertIn("hostname mismatch", log)
        self.assertNotIn("trying localhost:%d" % good.imaps_port, log)


if __name__ == "__main__":
    main()
