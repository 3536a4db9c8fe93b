"""The popbridge command line: --version, --help, --check-config, and a
clean exit on SIGTERM; no core dumps (the process and the systemd unit)."""

import os
import tempfile
import pwd
import shutil
import signal
import subprocess
import time
import unittest

from harness import (AGAINST_DOVECOT, Popbridge, free_port, make_tempdir, main, popbridge_bin,
                     wait_for_port)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class CliTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if AGAINST_DOVECOT:
            raise unittest.SkipTest("POP3_TARGET=dovecot: tests popbridge's command line")
        cls.bin = popbridge_bin()
        if not cls.bin:
            raise unittest.SkipTest("POPBRIDGE_BIN is not set")

    def setUp(self):
        self.dir = make_tempdir("popbridge-cli-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def run_bin(self, *args):
        return subprocess.run([self.bin] + list(args), capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_version(self):
        r = self.run_bin("--version")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^popbridge \d+\.\d+")

    def test_help(self):
        r = self.run_bin("--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        for word in ("--config", "--check-config", "--version"):
            self.assertIn(word, r.stdout)

    def test_no_arguments_is_an_error(self):
        r = self.run_bin()
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--config", r.stderr)

    def test_check_config_accepts_the_test_config(self):
        p = Popbridge(free_port())
        self.addCleanup(p.cleanup, False)
        r = self.run_bin("--check-config", p.config_path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_check_config_accepts_the_documented_example(self):
        example = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), "config", "popbridge.toml")
        if not os.path.exists(example):
            self.skipTest("no config/popbridge.toml")
        r = self.run_bin("--check-config", example)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_check_config_reports_every_problem(self):
        path = self.write("bad.toml", """\
[server]
log_level = "loud"
idle_timeout = "soon"

[[listener]]
address = "127.0.0.1:1110"
tls = "none"

[[upstream]]
name = "main"
host = "127.0.0.1"
port = 70000
tls = "none"
folder = "INBOX"

[mailbox]
on_delete = "hide"
hide_keyword = "$POP3Deleted"
""")
        r = self.run_bin("--check-config", path)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        out = r.stdout + r.stderr
        for key in ("log_level", "idle_timeout", "port"):
            self.assertIn(key, out)
        self.assertIn("bad.toml", out)

    def test_check_config_missing_file(self):
        r = self.run_bin("--check-config", os.path.join(self.dir, "nope.toml"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("nope.toml", r.stdout + r.stderr)

    def test_check_config_syntax_error(self):
        path = self.write("syntax.toml", "[server\nlog_level = \n")
        r = self.run_bin("--check-config", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("syntax.toml", r.stdout + r.stderr)

    def test_sigterm_exits_cleanly(self):
        p = Popbridge(free_port()).start()
        p.proc.send_signal(signal.SIGTERM)
        rc = p.proc.wait(timeout=20)
        self.assertEqual(rc, 0, p.read_log())
        p.proc = None
        p.cleanup()

    def test_config_errors_refuse_to_start(self):
        path = self.write("bad.toml", '[server]\nlog_level = "loud"\n')
        r = self.run_bin("--config", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("log_level", r.stderr)

    def test_unusable_upstream_ca_file_refuses_to_start(self):
        not_pem = self.write("ca.pem", "not a certificate\n")
        path = self.write("ca.toml", '[[listener]]\naddress = "127.0.0.1:%d"\n'
                          '[[upstream]]\ntls = "implicit"\nport = 993\nca_file = "%s"\n'
                          % (free_port(), not_pem))
        r = self.run_bin("--config", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot load CA certificates from " + not_pem, r.stderr)
        r = self.run_bin("--check-config", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot load CA certificates from " + not_pem, r.stderr)

    # ---- tls = "none" to an IMAP server not on this machine ----
    # 192.0.2.x (TEST-NET-1) is never connected to: warnings come from the
    # config alone.

    def upstreams_config(self, name, upstreams):
        text = '[[listener]]\naddress = "127.0.0.1:%d"\n' % free_port()
        for i, lines in enumerate(upstreams):
            text += '\n[[upstream]]\nname = "u%d"\n%s' % (i, lines)
            if i:
                text += 'domains = ["d%d.example"]\n' % i
        return self.write(name, text)

    def test_check_config_warns_of_plaintext_upstream_not_on_loopback(self):
        path = self.upstreams_config("clear.toml", [
            'host = "192.0.2.1"\n',
            'hosts = ["127.0.0.1:143", "imap.example.com:143", "[2001:db8::1]:143"]\n',
            'host = "192.0.2.2"\ntls = "starttls"\n'])
        r = self.run_bin("--check-config", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("configuration OK", r.stdout)
        warnings = [l for l in r.stderr.splitlines() if "warning" in l]
        self.assertEqual(len(warnings), 3, r.stderr)
        for warning, where in zip(warnings, ("192.0.2.1:143", "imap.example.com:143",
                                             "[2001:db8::1]:143")):
            self.assertTrue(warning.startswith(path + ": warning: "), warning)
            self.assertIn(where, warning)
            self.assertIn('tls = "none"', warning)
            self.assertIn("clear", warning)
        self.assertNotIn("127.0.0.1", r.stderr)
        self.assertNotIn("192.0.2.2", r.stderr)  # STARTTLS

    def test_check_config_plaintext_upstream_on_loopback_is_fine(self):
        path = self.upstreams_config("loopback.toml", [
            'host = "127.0.0.1"\n', 'host = "127.1.2.3"\n', 'host = "::1"\n',
            'host = "[::1]"\n', 'host = "localhost"\n', 'host = "LocalHost"\n',
            'hosts = ["[0:0::1]:143", "127.0.0.53:143", "localhost:1143"]\n'])
        r = self.run_bin("--check-config", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stderr, "")

    def test_plaintext_upstream_warning_at_start_and_on_reload(self):
        path = self.upstreams_config("run.toml", ['host = "192.0.2.1"\nport = 1143\n'])
        with open(path) as f:
            port = int(f.read().split(":")[1].split('"')[0])  # the listener's
        log_path = os.path.join(self.dir, "log")

        def read():
            with open(log_path, encoding="utf-8") as f:
                return f.read()

        with open(log_path, "wb") as log:
            proc = subprocess.Popen([self.bin, "--config", path], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log)
        try:
            wait_for_port(port, proc=proc, what="popbridge")
            needle = " warn upstream u0: 192.0.2.1:1143: tls = \"none\" to a server not on loopback"
            self.assertEqual(read().count(needle), 1, read())
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 20
            while "reload: done" not in read() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(read().count(needle), 2, read())
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        self.assertEqual(proc.returncode, 0, read())

    def test_running_process_is_not_dumpable(self):
        # PR_SET_DUMPABLE 0: the kernel makes the files of /proc/PID owned by
        # root, whoever the process runs as, and refuses other processes of
        # the same user ptrace and /proc/PID/mem. Seen from outside only for
        # a process not running as root: as root, run it as nobody.
        port = free_port()
        path = self.write("run.toml", '[[listener]]\naddress = "127.0.0.1:%d"\n'
                          '[[upstream]]\nport = %d\n' % (port, free_port()))
        user = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        uid = user.get("user", os.geteuid())
        binary = self.bin
        if user:
            # The build may sit where nobody cannot reach it (/root is 0700):
            # run a copy from a world-readable directory.
            copy_dir = tempfile.mkdtemp(prefix="popbridge-bin-")
            self.addCleanup(shutil.rmtree, copy_dir, True)
            os.chmod(copy_dir, 0o755)
            binary = os.path.join(copy_dir, "popbridge")
            shutil.copy(self.bin, binary)
            os.chmod(binary, 0o755)
            os.chmod(path, 0o644)
            parent = os.path.dirname(path)
            while parent not in ("/", ""):
                if not os.stat(parent).st_mode & 0o001:
                    shutil.copy(path, os.path.join(copy_dir, "run.toml"))
                    path = os.path.join(copy_dir, "run.toml")
                    os.chmod(path, 0o644)
                    break
                parent = os.path.dirname(parent)
        proc = subprocess.Popen([binary, "--config", path], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **user)
        try:
            wait_for_port(port, proc=proc, what="popbridge")
            with open("/proc/%d/status" % proc.pid) as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            self.assertEqual(int(status["Uid"].split()[0]), uid)
            self.assertNotEqual(uid, 0)
            self.assertEqual(os.stat("/proc/%d/status" % proc.pid).st_uid, 0,
                             "popbridge is dumpable: /proc/PID is owned by its user")
            self.assertEqual(os.stat("/proc/%d/mem" % proc.pid).st_uid, 0)
            # And no core file, whatever the system's core settings.
            with open("/proc/%d/limits" % proc.pid) as f:
                core = [line.split() for line in f if line.startswith("Max core file size")]
            self.assertEqual(core[0][4:6], ["0", "0"], core)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        self.assertEqual(proc.returncode, 0, err)

    def test_systemd_unit_disables_core_dumps(self):
        unit = os.path.join(ROOT, "packaging", "popbridge.service")
        with open(unit) as f:
            lines = [line.strip() for line in f]
        service = lines[lines.index("[Service]"):]
        service = service[:next((i for i, l in enumerate(service[1:], 1) if l.startswith("[")),
                                len(service))]
        self.assertIn("LimitCORE=0", service)


if __name__ == "__main__":
    main()
