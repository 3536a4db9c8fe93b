"""No session waits for another: a healthy login goes through while many
sessions hang on an upstream that never greets and many client addresses
flood wrong passwords against an upstream that delays every failure."""

import socket
import threading
import time
import unittest

from harness import AGAINST_DOVECOT, Dovecot, Pop3, Popbridge, free_port, main

DEAD_SESSIONS = 200
FLOOD_ADDRESSES = 64


class NeverGreets:
    """Accepts TCP connections and never writes a byte."""

    def __init__(self):
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(512)
        self.accepted = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@unittest.skipIf(AGAINST_DOVECOT, "popbridge's upstream connections")
class IsolationTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        # Dovecot's own default: every failed login answered after 2 s.
        cls.dovecot = Dovecot(auth_failure_delay="2s").start()
        cls.dead = NeverGreets()
        extra = ('\n[[upstream]]\nname = "dead"\nhost = "127.0.0.1"\nport = %d\n'
                 'domains = ["dead.example"]\nconnect_timeout = "120s"\n' % cls.dead.port)
        try:
            cls.popbridge = Popbridge(
                cls.dovecot.imap_port, connect_timeout="120s", command_timeout="120s",
                server_extra="max_sessions_per_ip = 1000\n", log_level="info",
                extra=extra).start()
        except BaseException:
            cls.dead.close()
            cls.dovecot.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.popbridge.cleanup()
        finally:
            cls.dead.close()
            cls.dovecot.cleanup()

    def test_a_login_goes_through_while_others_hang_and_flood(self):
        user, password = self.dovecot.new_user()
        self.dovecot.seed(user, b"Subject: hi\r\n\r\nhello\r\n")
        victim, _ = self.dovecot.new_user()
        port = self.popbridge.port

        # 200 logins waiting for a greeting that never comes (until 120 s).
        hanging = []
        for i in range(DEAD_SESSIONS):
            s = socket.create_connection(("127.0.0.1", port), timeout=30,
                                         source_address=("127.0.0.%d" % (10 + i % 50), 0))
            s.recv(100)  # the greeting
            s.sendall(b"USER someone%d@dead.example\r\nPASS x\r\n" % i)
            hanging.append(s)

        # 64 addresses guessing a password as fast as they are answered.
        stop = threading.Event()
        verdicts = []

        def flood(address):
            while not stop.is_set():
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=30,
                                                 source_address=(address, 0))
                    with s:
                        s.recv(100)
                        s.sendall(b"USER %s\r\nPASS wrong\r\n" % victim.encode())
                        answer = b""
                        while answer.count(b"\r\n") < 2:
                            chunk = s.recv(1000)
                            if not chunk:
                                break
                            answer += chunk
                        verdicts.append(answer)
                except OSError:
                    if stop.is_set():
                        return
                    time.sleep(0.1)

        threads = [threading.Thread(target=flood, args=("127.0.1.%d" % (10 + i),), daemon=True)
                   for i in range(FLOOD_ADDRESSES)]
        for t in threads:
            t.start()
        try:
            # Everything in flight: 200 hanging, 64 waiting out Dovecot's delay
            # (after their first verdicts).
            time.sleep(2.5)
            started = time.monotonic()
            c = Pop3(port, timeout=30)  # far less than the upstream timeouts (120 s)
            self.assertTrue(c.login(user, password).startswith(b"+OK"))
            self.assertEqual(c.cmd("STAT")[:6], b"+OK 1 ")
            self.assertTrue(c.quit().startswith(b"+OK"))
            took = time.monotonic() - started
            during = len(verdicts)
        finally:
            stop.set()
            for t in threads:
                t.join(40)
            for s in hanging:
                s.close()
        print("\nlegitimate session during the flood: %.2f s (%d wrong-password verdicts by then)"
              % (took, during))
        # The flood was answered, not refused: every verdict says [AUTH].
        self.assertTrue(during > 0)
        self.assertTrue(all(b"-ERR [AUTH]" in v for v in verdicts), verdicts[:3])
        self.assertIsNone(self.popbridge.crashed())


if __name__ == "__main__":
    main()
