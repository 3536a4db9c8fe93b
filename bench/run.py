#!/usr/bin/env python3
"""popbridge benchmark (issue 5): popbridge vs Dovecot POP3 over imapc vs
Dovecot's native POP3, on the same mailboxes of one private Dovecot.

    python3 bench/run.py            full run (~9 min on 2 cores), writes bench/RESULTS.md
    python3 bench/run.py --quick    tiny sizes, one round (< 60 s), for CI

See bench/README.md. Standard library only.
"""

import argparse
import base64
import datetime
import json
import os
import platform
import pwd
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
KB = 1024
MB = 1024 * 1024

FULL = dict(
    rounds=7,           # bulk, big, logins
    rounds_heavy=5,     # open, sessions
    repeat=3,           # bulk and big: the session this many times per measurement
    bulk_count=2000, bulk_size=50 * KB,
    big_size=100 * MB,
    logins=300, login_concurrency=8,
    open_conns=10000,
    sessions=1000, session_retr=20, session_size=50 * KB,
    timeout=600,
)
QUICK = dict(
    rounds=1,
    rounds_heavy=1,
    repeat=2,
    bulk_count=40, bulk_size=8 * KB,
    big_size=2 * MB,
    logins=20, login_concurrency=4,
    open_conns=100,
    sessions=20, session_retr=3, session_size=4 * KB,
    timeout=60,
)

CONTESTANTS = ("A", "B", "C")
SHORT = {"A": "A popbridge", "B": "B imapc", "C": "C native"}
NAMES = {
    "A": "popbridge",
    "B": "Dovecot POP3 + imapc",
    "C": "Dovecot native POP3",
}


def log(*args):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), " ".join(str(a) for a in args)))
    sys.stderr.flush()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError("%s exited (%s) before listening on %d" % (what, proc.returncode, port))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("%s did not listen on %d within %.0f s" % (what, port, timeout))
            time.sleep(0.05)


def git_head():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def existing_user(name, fallback):
    try:
        pwd.getpwnam(name)
        return name
    except KeyError:
        return fallback


# --------------------------------------------------------------------------
# /proc sampling

def proc_table():
    """{pid: (ppid, comm, cpu_ticks, child_cpu_ticks, rss_pages)}"""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                data = f.read()
        except OSError:
            continue
        r = data.rfind(b")")
        comm = data[data.find(b"(") + 1:r].decode("ascii", "replace")
        fields = data[r + 2:].split()
        try:
            out[int(name)] = (int(fields[1]), comm, int(fields[11]) + int(fields[12]),
                              int(fields[13]) + int(fields[14]), int(fields[21]))
        except (IndexError, ValueError):
            continue
    return out


def descendants(table, root):
    children = {}
    for pid, row in table.items():
        children.setdefault(row[0], []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        for c in children.get(pid, ()):
            out.append(c)
            todo.append(c)
    return out


def cpu_stat():
    """(busy ticks, steal ticks) of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def wait_quiet(limit):
    deadline = time.monotonic() + limit
    while True:
        b0, t0 = cpu_stat()[0], os.times()
        time.sleep(5)
        b1, t1 = cpu_stat()[0], os.times()
        ours = (t1.user + t1.system + t1.children_user + t1.children_system
                - t0.user - t0.system - t0.children_user - t0.children_system)
        other = ((b1 - b0) / CLK_TCK - ours) / 5
        if other < 0.25:
            log("machine quiet: other processes use %.2f cores" % other)
            return
        if time.monotonic() > deadline:
            log("machine still busy (%.2f cores used by others); starting anyway" % other)
            return
        log("waiting for a quiet machine: other processes use %.2f cores" % other)


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def status_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Group:
    """A set of processes whose RSS and CPU are summed: either one PID
    (popbridge) or a Dovecot master's children with given names."""

    def __init__(self, label, pid, comms=None):
        self.label, self.pid, self.comms = label, pid, comms

    def pids(self, table):
        if self.comms is None:
            return [self.pid]
        return [p for p in descendants(table, self.pid) if table[p][1] in self.comms]

    def rss_kb(self, table, pss=False):
        """Summed VmRSS, or PSS (shared pages divided among their users,
        so 1,000 processes do not count their libraries 1,000 times)."""
        if pss:
            return sum(pss_kb(p) for p in self.pids(table))
        if self.comms is None:
            return status_kb(self.pid, "VmRSS")
        return sum(table[p][4] for p in self.pids(table)) * PAGE // KB

    def cpu_s(self, table):
        """CPU seconds of the whole instance so far (for Dovecot: the master,
        its live children, and the children it has reaped)."""
        if self.pid not in table:
            return 0.0
        if self.comms is None:
            return table[self.pid][2] / CLK_TCK
        ticks = table[self.pid][2] + table[self.pid][3]
        ticks += sum(table[p][2] for p in descendants(table, self.pid))
        return ticks / CLK_TCK


class Sampler(threading.Thread):
    """Peak summed RSS of some groups, sampled every `interval` seconds."""

    def __init__(self, groups, interval, fd_pid=None, pss=False):
        super().__init__(daemon=True)
        self.groups, self.interval, self.fd_pid, self.pss = groups, interval, fd_pid, pss
        self.fds_peak = 0
        self.procs_peak = {g.label: 0 for g in groups}
        self.peak = {g.label: 0 for g in groups}
        self.stop_event = threading.Event()
        self.samples = 0

    def sample(self):
        table = proc_table()
        for g in self.groups:
            self.peak[g.label] = max(self.peak[g.label], g.rss_kb(table, self.pss))
            self.procs_peak[g.label] = max(self.procs_peak[g.label], len(g.pids(table)))
        if self.fd_pid:
            try:
                self.fds_peak = max(self.fds_peak, len(os.listdir("/proc/%d/fd" % self.fd_pid)))
            except OSError:
                pass
        self.samples += 1

    def run(self):
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval)

    def finish(self):
        self.stop_event.set()
        self.join()
        self.sample()
        return self.peak


# --------------------------------------------------------------------------
# Mail

class MailFactory:
    """Message texts with LF line ends (as Dovecot stores them), base64-ish
    body lines, and a line starting with '.' every so often (dot-stuffing)."""

    def __init__(self, pool_bytes):
        raw = os.urandom(max(pool_bytes * 3 // 4, 4096))
        self.pool = base64.encodebytes(raw).replace(b"\nA", b"\n.A")
        self.pos = 0

    def body(self, size):
        if size > len(self.pool):
            reps = size // len(self.pool) + 1
            return (self.pool * reps)[:size].rsplit(b"\n", 1)[0] + b"\n"
        if self.pos + size > len(self.pool):
            self.pos = 0
        start = self.pool.find(b"\n", self.pos) + 1
        chunk = self.pool[start:start + size]
        self.pos = start + size
        cut = chunk.rfind(b"\n")
        return chunk[:cut + 1]

    def message(self, n, size, tag):
        header = ("Return-Path: <sender@example.org>\n"
                  "From: Sender <sender@example.org>\n"
                  "To: %s@example.org\n"
                  "Subject: benchmark message %d (%s)\n"
                  "Date: Mon, 1 Jan 2024 00:00:00 +0000\n"
                  "Message-ID: <%s.%d@bench.example.org>\n"
                  "MIME-Version: 1.0\n"
                  "Content-Type: text/plain; charset=us-ascii\n"
                  "\n" % (tag, n, tag, tag, n)).encode()
        return header + self.body(max(size - len(header), 100))


def wire_expectation(msg):
    """(length, crc32) of a message's RETR body as a POP3 server sends it:
    CRLF line ends, dot-stuffed, up to and including the final CRLF."""
    wire = msg.replace(b"\n", b"\r\n")
    wire = wire.replace(b"\r\n.", b"\r\n..")
    if wire.startswith(b"."):
        wire = b"." + wire
    if not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    return len(wire), zlib.crc32(wire)


# --------------------------------------------------------------------------
# Dovecot instances

_COMMON_CONF = """\
# Generated by popbridge's bench/run.py.
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
instance_name = pbbench-{label}-{port}
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
default_internal_user = {internal_user}
default_login_user = {login_user}
first_valid_uid = 1
first_valid_gid = 1
mail_max_userip_connections = 100000
# RETR leaves \\Seen alone, like popbridge's BODY.PEEK; DELE hides.
pop3_no_flag_updates = yes
pop3_deleted_flag = "$POP3Deleted"
# Limits for 10,000 connections and 1,000 sessions at once.
default_process_limit = 3000
default_client_limit = 15000
default_vsz_limit = 1G
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
  # High-performance login mode: a few processes each holding many
  # connections (the default one-process-per-connection cannot hold 10,000).
  service_count = 0
  process_min_avail = {nproc}
  process_limit = {login_procs}
  client_limit = 12000
}}
service pop3 {{
  process_limit = 3000
}}
"""

_UPSTREAM_CONF = """\
protocols = imap pop3
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {dir}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  service_count = 0
  process_min_avail = {nproc}
  process_limit = {login_procs}
  client_limit = 12000
}}
service imap {{
  process_limit = 3000
}}
"""

_IMAPC_CONF = """\
protocols = pop3
# Dovecot as a POP3 front end to another IMAP server: the existing way.
mail_uid = {uid}
mail_gid = {gid}
mail_home = {dir}/home/%u
mail_location = imapc:~/imapc
imapc_host = 127.0.0.1
imapc_port = {upstream_imap}
# Without rfc822.size it downloads every message to learn its size.
imapc_features = rfc822.size
passdb {{
  driver = imap
  args = host=127.0.0.1 port={upstream_imap}
  default_fields = userdb_imapc_user=%u userdb_imapc_password=%w
}}
userdb {{
  driver = prefetch
}}
"""


class Dovecot:
    def __init__(self, label, base, conf_extra, mail_user, nproc, upstream_imap=0):
        self.label = label
        self.dir = os.path.join(base, "dovecot-" + label)
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.pop3_port = free_port()
        self.imap_port = free_port()
        pw = pwd.getpwnam(mail_user)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        fmt = dict(dir=self.dir, label=label, port=self.pop3_port, imap_port=self.imap_port,
                   internal_user=existing_user("dovecot", mail_user),
                   login_user=existing_user("dovenull", mail_user),
                   uid=self.uid, gid=self.gid, nproc=nproc, login_procs=max(4, nproc * 2),
                   upstream_imap=upstream_imap)
        self.has_imap = "imap-login" in conf_extra
        with open(self.conf_path, "w") as f:
            f.write(_COMMON_CONF.format(**fmt))
            f.write(conf_extra.format(**fmt))
        self.proc = None

    @property
    def conf_path(self):
        return os.path.join(self.dir, "dovecot.conf")

    def start(self):
        for sub in ("run", "state"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        out = open(os.path.join(self.dir, "dovecot.stdout"), "ab")
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", self.conf_path],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        try:
            wait_for_port(self.pop3_port, self.proc, "dovecot " + self.label)
            if self.has_imap:
                wait_for_port(self.imap_port, self.proc, "dovecot " + self.label)
        except Exception:
            self.dump_log()
            raise

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def dump_log(self, limit=4000):
        for name in ("dovecot.stdout", "dovecot.log"):
            path = os.path.join(self.dir, name)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    data = f.read()[-limit:]
                sys.stderr.write("----- %s %s -----\n%s\n" % (self.label, name,
                                                             data.decode("utf-8", "replace")))

    def log_problems(self):
        path = os.path.join(self.dir, "dovecot.log")
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        return [l for l in text.splitlines() if re.search(r"\b(Error|Fatal|Panic)\b", l)]


class Popbridge:
    def __init__(self, binary, base, upstream_port, wrapper=()):
        self.dir = os.path.join(base, "popbridge")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.binary = binary
        self.wrapper = list(wrapper)
        self.config = os.path.join(self.dir, "popbridge.toml")
        self.log_path = os.path.join(self.dir, "popbridge.log")
        base_conf = ('[[listener]]\naddress = "127.0.0.1:%d"\ntls = "none"\n\n'
                     '[[upstream]]\nname = "main"\nhost = "127.0.0.1"\nport = %d\ntls = "none"\n'
                     'folder = "INBOX"\n' % (self.port, upstream_port))
        # Everything comes from 127.0.0.1: lift the per-IP and total session
        # limits (if this popbridge has them; older ones reject unknown keys).
        limits = 'max_sessions = 30000\nmax_sessions_per_ip = 0\n'
        self.limits_raised = False
        for server in ('[server]\nlog_level = "info"\n' + limits, '[server]\nlog_level = "info"\n'):
            with open(self.config, "w") as f:
                f.write(server + "\n" + base_conf)
            check = subprocess.run([binary, "--check-config", self.config], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
            if check.returncode == 0:
                self.limits_raised = server.endswith(limits)
                break
        else:
            raise RuntimeError("popbridge rejects its config: " + check.stdout)
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self, timeout=30.0):
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.wrapper + [self.binary, "--config", self.config],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        out.close()
        wait_for_port(self.port, self.proc, "popbridge", timeout=timeout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        self.proc = None
        return rc

    def log_problems(self):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        return [l for l in text.splitlines() if re.search(r"\b(ERROR|error|WARN|warn)\b", l)]


# --------------------------------------------------------------------------
# The benchmark

class Bench:
    def __init__(self, args, profile):
        self.args = args
        self.p = profile
        self.nproc = os.cpu_count() or 1
        self.base = tempfile.mkdtemp(prefix="popbridge-bench-")
        os.chmod(self.base, 0o755)
        self.loadgen = None
        self.popbridge_bin = None
        self.upstream = self.imapc = self.popbridge = None
        self.runs = []          # every loadgen run with its measurements
        self.failures = []      # problems that make the exit status 1
        self.notes = []
        self.mail_user = "nobody"
        self.expect = {}        # mailbox name -> expectation file
        self.machine_load = None
        self.cpu_stat0 = cpu_stat()
        self.times0 = os.times()

    def measure_other_load(self):
        """CPU time the machine spent on processes other than this benchmark
        (builds, tests, fuzzers of people sharing it) since the start."""
        busy, steal = cpu_stat()
        t = os.times()
        ours = (t.user + t.system + t.children_user + t.children_system
                - self.times0.user - self.times0.system
                - self.times0.children_user - self.times0.children_system)
        wall = time.monotonic() - self.t_start
        other = (busy - self.cpu_stat0[0]) / CLK_TCK - ours
        stolen = (steal - self.cpu_stat0[1]) / CLK_TCK
        self.machine_load = ("%.0f CPU-seconds by other processes in %.0f s of wall time "
                             "(%.2f of the %d cores on average); %.0f s stolen by the hypervisor"
                             % (max(other, 0), wall, max(other, 0) / wall, self.nproc, stolen))

    # -- setup ---------------------------------------------------------------

    @property
    def quiet(self):
        return dict(stdout=self.build_log, stderr=subprocess.STDOUT)

    def build(self):
        """popbridge from the working tree (or from --rev via git archive) and
        the load generator on its own from bench/ (Release)."""
        build = self.args.build_dir
        os.makedirs(build, exist_ok=True)
        self.build_log = open(os.path.join(build, "bench-build.log"), "w")
        self.commit = None
        if not self.args.popbridge:
            src = ROOT
            pb_build = build
            if self.args.rev:
                self.commit = subprocess.run(["git", "-C", ROOT, "rev-parse", self.args.rev],
                                             check=True, stdout=subprocess.PIPE,
                                             text=True).stdout.strip()
                src = os.path.join(build, "rev-src-" + self.commit[:12])
                pb_build = os.path.join(build, "rev-build-" + self.commit[:12])
                if not os.path.isdir(src):
                    os.makedirs(src + ".tmp", exist_ok=True)
                    archive = subprocess.Popen(["git", "-C", ROOT, "archive", self.commit],
                                               stdout=subprocess.PIPE)
                    subprocess.run(["tar", "-x", "-C", src + ".tmp"], stdin=archive.stdout, check=True)
                    archive.wait()
                    os.rename(src + ".tmp", src)
            log("building popbridge (Release) from", self.args.rev or "the working tree", "in", pb_build)
            subprocess.run(["cmake", "-S", src, "-B", pb_build, "-DCMAKE_BUILD_TYPE=Release",
                            "-DPOPBRIDGE_BENCH=OFF", "-DPOPBRIDGE_TESTS=OFF"],
                           check=True, **self.quiet)
            subprocess.run(["cmake", "--build", pb_build, "-j%d" % self.nproc, "--target", "popbridge"],
                           check=True, **self.quiet)
            self.popbridge_bin = os.path.join(pb_build, "proxy", "popbridge")
        else:
            self.popbridge_bin = self.args.popbridge
        if not self.args.loadgen:
            lg_build = os.path.join(build, "loadgen")
            log("building popbridge-loadgen (Release) in", lg_build)
            subprocess.run(["cmake", "-S", HERE, "-B", lg_build, "-DCMAKE_BUILD_TYPE=Release"],
                           check=True, **self.quiet)
            subprocess.run(["cmake", "--build", lg_build, "-j%d" % self.nproc],
                           check=True, **self.quiet)
            self.loadgen = os.path.join(lg_build, "popbridge-loadgen")
        else:
            self.loadgen = self.args.loadgen

    def seed(self):
        p = self.p
        up = self.upstream
        home = os.path.join(up.dir, "home")
        os.makedirs(home)
        os.chmod(home, 0o755)
        self.users = {"bulk": "bulkpw", "big": "bigpw"}
        self.session_users = ["s%04d" % i for i in range(1, p["sessions"] + 1)]
        for u in self.session_users:
            self.users[u] = "pw-" + u
        with open(os.path.join(up.dir, "passwd"), "w") as f:
            for u, pw in self.users.items():
                f.write("%s:{PLAIN}%s:%d:%d::%s/%s::\n" % (u, pw, up.uid, up.gid, home, u))
        for u in self.users:
            for sub in ("", "/Maildir", "/Maildir/new", "/Maildir/cur", "/Maildir/tmp"):
                path = os.path.join(home, u) + sub
                os.mkdir(path, 0o700)
                os.chown(path, up.uid, up.gid)
        pool = max(p["bulk_count"] * p["bulk_size"], p["big_size"], p["session_retr"] * p["session_size"])
        log("generating mail (%.0f MB pool)" % (pool / MB))
        factory = MailFactory(pool + MB)
        seq = [0]

        def write(user, msg, links=()):
            seq[0] += 1
            n = seq[0]
            name = "%d.M%dP%d.pbbench,S=%d,W=%d:2," % (1_600_000_000 + n, n, os.getpid(), len(msg),
                                                      len(msg) + msg.count(b"\n"))
            path = os.path.join(home, user, "Maildir", "cur", name)
            with open(path, "wb") as f:
                f.write(msg)
            os.chown(path, up.uid, up.gid)
            os.chmod(path, 0o600)
            for other in links:
                os.link(path, os.path.join(home, other, "Maildir", "cur", name))

        def expect_file(name, msgs):
            path = os.path.join(self.base, name + ".expect")
            with open(path, "w") as f:
                for i, m in enumerate(msgs, 1):
                    length, crc = wire_expectation(m)
                    f.write("%d %d %08x\n" % (i, length, crc))
            self.expect[name] = path

        log("seeding bulk: %d x %d KB" % (p["bulk_count"], p["bulk_size"] // KB))
        msgs = []
        for i in range(p["bulk_count"]):
            m = factory.message(i + 1, p["bulk_size"], "bulk")
            write("bulk", m)
            msgs.append(m)
        expect_file("bulk", msgs)
        self.bulk_bytes = sum(wire_expectation(m)[0] for m in msgs)
        log("seeding big: 1 x %d MB" % (p["big_size"] // MB))
        m = factory.message(1, p["big_size"], "big")
        write("big", m)
        expect_file("big", [m])
        del m
        log("seeding sessions: %d users x %d x %d KB (hard links)"
            % (len(self.session_users), p["session_retr"], p["session_size"] // KB))
        msgs = []
        first, rest = self.session_users[0], self.session_users[1:]
        for i in range(p["session_retr"]):
            m = factory.message(i + 1, p["session_size"], "session")
            write(first, m, links=rest)
            msgs.append(m)
        expect_file("sessions", msgs)
        self.users_file = os.path.join(self.base, "session-users.txt")
        with open(self.users_file, "w") as f:
            for u in self.session_users:
                f.write("%s:%s\n" % (u, self.users[u]))
        self.all_users_file = os.path.join(self.base, "all-users.txt")
        with open(self.all_users_file, "w") as f:
            for u, pw in self.users.items():
                f.write("%s:%s\n" % (u, pw))
        # Into the page cache, so that no contestant pays for the disk.
        for dirpath, _, files in os.walk(home):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as f:
                    while f.read(8 * MB):
                        pass

    def start_servers(self, popbridge_wrapper=()):
        self.upstream = Dovecot("upstream", self.base, _UPSTREAM_CONF, self.mail_user, self.nproc)
        self.seed()
        self.upstream.start()
        self.imapc = Dovecot("imapc", self.base, _IMAPC_CONF, self.mail_user, self.nproc,
                             upstream_imap=self.upstream.imap_port)
        ihome = os.path.join(self.imapc.dir, "home")
        os.makedirs(ihome)
        os.chown(ihome, self.imapc.uid, self.imapc.gid)
        self.imapc.start()
        self.port = {"B": self.imapc.pop3_port, "C": self.upstream.pop3_port}
        up_pid = self.upstream.proc.pid
        self.own = {
            "B": Group("B", self.imapc.proc.pid, {"pop3", "pop3-login", "auth"}),
            "C": Group("C", up_pid, {"pop3", "pop3-login", "auth"}),
        }
        self.login_group = {
            "B": Group("B", self.imapc.proc.pid, {"pop3-login"}),
            "C": Group("C", up_pid, {"pop3-login"}),
        }
        self.upstream_group = Group("U", up_pid, {"imap", "imap-login", "auth"})
        # Whole-instance CPU (master + children, live and reaped).
        self.cpu_group = {
            "B": Group("B", self.imapc.proc.pid, set()),
            "C": Group("C", up_pid, set()),
        }
        self.upstream_cpu = Group("U", up_pid, set())
        self.start_popbridge(popbridge_wrapper)

    def start_popbridge(self, wrapper=(), timeout=30.0):
        self.popbridge = Popbridge(self.popbridge_bin, self.base, self.upstream.imap_port,
                                   wrapper=wrapper)
        if not self.popbridge.limits_raised and not any("max_sessions" in n for n in self.notes):
            self.notes.append("this popbridge has no max_sessions/max_sessions_per_ip keys; "
                              "it ran with its built-in limits")
        self.popbridge.start(timeout=timeout)
        self.port["A"] = self.popbridge.port
        for d in (self.own, self.login_group, self.cpu_group):
            d["A"] = Group("A", self.popbridge.pid)

    def stop_servers(self):
        rc = None
        if self.popbridge is not None:
            was_alive = self.popbridge.alive()
            rc = self.popbridge.stop()
            if not was_alive:
                self.failures.append("popbridge died during the run (exit %s)" % rc)
        for d in (self.imapc, self.upstream):
            if d is not None:
                d.stop()
        return rc

    # -- running the load generator -------------------------------------------

    def loadgen_cmd(self, who, mode, extra):
        return [self.loadgen, "--mode", mode, "--port", str(self.port[who]),
                "--timeout", str(self.p["timeout"])] + extra

    def run_loadgen(self, who, workload, mode, extra, interval=0.05, pss=False):
        """One run of one workload against one contestant, with RSS and CPU."""
        cmd = self.loadgen_cmd(who, mode, extra)
        up = who in ("A", "B")
        groups = [self.own[who]] + ([self.upstream_group] if up else [])
        table = proc_table()
        rss0 = {g.label: g.rss_kb(table, pss) for g in groups}
        cpu0 = self.cpu_group[who].cpu_s(table)
        ucpu0 = self.upstream_cpu.cpu_s(table) if up else 0.0
        hwm0 = status_kb(self.popbridge.pid, "VmHWM") if who == "A" else 0
        sampler = Sampler(groups, interval, self.popbridge.pid if who == "A" else None, pss)
        sampler.start()
        t0 = time.monotonic()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=self.p["timeout"] + 60)
        wall = time.monotonic() - t0
        peak = sampler.finish()
        time.sleep(0.05)
        table = proc_table()
        res = self.parse(proc, cmd)
        run = dict(who=who, workload=workload, result=res, wall=wall,
                   rss0_kb=rss0[who], peak_kb=peak[who], growth_kb=peak[who] - rss0[who],
                   cpu_s=self.cpu_group[who].cpu_s(table) - cpu0)
        if up:
            run["upstream_cpu_s"] = self.upstream_cpu.cpu_s(table) - ucpu0
            run["upstream_peak_kb"] = peak["U"]
            run["upstream_procs_peak"] = sampler.procs_peak["U"]
        run["procs_peak"] = sampler.procs_peak[who]
        if who == "A":
            run["hwm_kb"] = status_kb(self.popbridge.pid, "VmHWM")
            run["hwm_growth_kb"] = run["hwm_kb"] - hwm0
            run["fds_peak"] = sampler.fds_peak
        self.record(run)
        return run

    def parse(self, proc, cmd):
        lines = [l for l in proc.stdout.decode("utf-8", "replace").splitlines() if l.startswith("{")]
        try:
            res = json.loads(lines[-1])
        except (IndexError, ValueError):
            res = {"error_count": 1, "errors": {"loadgen": 1},
                   "error_samples": ["loadgen exit %s: %s" % (proc.returncode,
                                                             proc.stderr.decode()[-500:])]}
        return res

    def record(self, run):
        res = run["result"]
        self.runs.append(run)
        errs = res.get("error_count", 0)
        msg = "%-11s %-16s %s" % (SHORT[run["who"]], run["workload"], self.brief(run))
        if errs:
            msg += "  ERRORS %s %s" % (res.get("errors"), res.get("error_samples", [])[:3])
        log(msg)

    @staticmethod
    def brief(run):
        r = run["result"]
        w = run["workload"]
        if w.startswith("bulk") or w == "client-check":
            return "%.1f MB/s (%d msgs, %.2f s), cpu %.2f s, upstream cpu %s, loadgen cpu %.2f s" % (
                r.get("mbps", 0), r.get("verified", 0), r.get("xfer_seconds", 0), run["cpu_s"],
                "%.2f s" % run["upstream_cpu_s"] if "upstream_cpu_s" in run else "-",
                r.get("client_cpu_s", 0))
        if w == "sessions":
            return ("%.1f MB/s (%d msgs, %.2f s), cpu %.2f s, upstream cpu %s, loadgen cpu %.2f s, "
                    "peak PSS %.0f MB in %d processes, upstream %s" % (
                        r.get("mbps", 0), r.get("verified", 0), r.get("xfer_seconds", 0),
                        run["cpu_s"], "%.2f s" % run["upstream_cpu_s"] if "upstream_cpu_s" in run
                        else "-", r.get("client_cpu_s", 0), run["peak_kb"] / KB,
                        run.get("procs_peak", 0),
                        "%.0f MB in %d processes" % (run["upstream_peak_kb"] / KB,
                                                     run["upstream_procs_peak"])
                        if "upstream_peak_kb" in run else "-"))
        if w == "big":
            return "%.3f s per RETR, ttfb %.1f ms, peak rss %.1f MB (+%.1f)" % (
                r.get("xfer_seconds", 0) / max(r.get("sessions_done", 1), 1),
                r.get("ttfb_first_ms", {}).get("max", 0),
                run["peak_kb"] / KB, run["growth_kb"] / KB)
        if w.startswith("logins"):
            return "%.0f logins/s" % r.get("logins_per_s", 0)
        if w == "open":
            return "%d open, %.2f KB/conn" % (r.get("greeted", 0), run.get("kb_per_conn", 0))
        return ""

    def run_open(self, who):
        """N connections at once before login; RSS of the contestant's own
        processes with all of them open."""
        n = self.p["open_conns"]
        self.fresh_login_processes(who)
        cmd = self.loadgen_cmd(who, "open", ["--sessions", str(n)])
        group = self.login_group[who]
        rss0 = group.rss_kb(proc_table())
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        ready = None
        deadline = time.monotonic() + self.p["timeout"]
        buf = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([proc.stdout], [], [], 1.0)
            if r:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                if b"\n" in buf:
                    ready = json.loads(buf.split(b"\n", 1)[0])
                    buf = buf.split(b"\n", 1)[1]
                    break
            if proc.poll() is not None:
                break
        rss_open = 0
        fds = 0
        if ready is not None:
            time.sleep(0.5)  # let the servers settle
            for _ in range(3):
                rss_open = max(rss_open, group.rss_kb(proc_table()))
                time.sleep(0.1)
            if who == "A":
                fds = len(os.listdir("/proc/%d/fd" % self.popbridge.pid))
        try:
            proc.stdin.close()
        except OSError:
            pass
        proc.stdin = None
        out, err = proc.communicate(timeout=120)
        res = self.parse(subprocess.CompletedProcess(cmd, proc.returncode, buf + out, err), cmd)
        opened = ready["open"] if ready else 0
        run = dict(who=who, workload="open", result=res, wall=res.get("seconds", 0),
                   rss0_kb=rss0, peak_kb=rss_open, growth_kb=rss_open - rss0, cpu_s=0.0,
                   open=opened, fds=fds,
                   kb_per_conn=(rss_open - rss0) / opened if opened else 0.0)
        self.record(run)
        time.sleep(1.0)  # the servers close 10,000 sockets
        return run

    def fresh_login_processes(self, who):
        """Memory freed by an earlier run stays in a process's heap and is
        reused, so per-connection RSS is only meaningful in a fresh process:
        restart popbridge, or make Dovecot replace its login processes
        (SIGHUP to the master: idle login processes exit, new ones start)."""
        if who == "A":
            self.popbridge.stop()
            self.start_popbridge()
        else:
            master = (self.imapc if who == "B" else self.upstream).proc.pid
            group = self.login_group[who]
            old = set(group.pids(proc_table()))
            os.kill(master, signal.SIGHUP)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                now = set(group.pids(proc_table()))
                if now and not (now & old):
                    break
                time.sleep(0.1)
            else:
                self.notes.append("%s: old pop3-login processes still there 15 s after SIGHUP"
                                  % NAMES[who])
        time.sleep(0.5)

    def warm_up(self):
        log("warm-up: one login per mailbox on each contestant (indexes, caches)")
        for who in ("C", "B", "A"):
            run = self.run_loadgen(who, "warm-up", "logins",
                                   ["--users", self.all_users_file, "--sessions", str(len(self.users)),
                                    "--concurrency", str(min(8, len(self.users)))], interval=0.5)
            if run["result"].get("error_count"):
                self.failures.append("warm-up against %s failed: %s" % (
                    NAMES[who], run["result"].get("error_samples")))

    def workloads(self):
        p = self.p
        n_logins = str(p["logins"])
        # The same session several times in a row, so that a measurement
        # lasts long enough to be timed (and CPU-accounted) reliably.
        rep = ["--sessions", str(p["repeat"]), "--concurrency", "1"]
        return [
            ("bulk-pipelined", lambda w: self.run_loadgen(
                w, "bulk-pipelined", "bulk-pipelined",
                ["--user", "bulk", "--pass", self.users["bulk"], "--expect", self.expect["bulk"]] + rep)),
            ("bulk-sequential", lambda w: self.run_loadgen(
                w, "bulk-sequential", "bulk-sequential",
                ["--user", "bulk", "--pass", self.users["bulk"], "--expect", self.expect["bulk"]] + rep)),
            ("big", lambda w: self.run_loadgen(
                w, "big", "big",
                ["--user", "big", "--pass", self.users["big"], "--expect", self.expect["big"]] + rep,
                interval=0.01)),
            ("logins-seq", lambda w: self.run_loadgen(
                w, "logins-seq", "logins",
                ["--users", self.users_file, "--sessions", n_logins, "--concurrency", "1"],
                interval=0.2)),
            ("logins-par", lambda w: self.run_loadgen(
                w, "logins-par", "logins",
                ["--users", self.users_file, "--sessions", n_logins,
                 "--concurrency", str(p["login_concurrency"])], interval=0.2)),
            ("open", self.run_open),
            ("sessions", lambda w: self.run_loadgen(
                w, "sessions", "sessions",
                ["--users", self.users_file, "--sessions", str(p["sessions"]),
                 "--retr", str(p["session_retr"]), "--expect", self.expect["sessions"]],
                interval=1.0, pss=True)),
        ]

    def run_all(self):
        only = set(self.args.only.split(",")) if self.args.only else None
        for name, fn in self.workloads():
            if only and name not in only:
                continue
            rounds = self.p["rounds_heavy" if name in ("open", "sessions") else "rounds"]
            for rnd in range(rounds):
                order = CONTESTANTS[rnd % 3:] + CONTESTANTS[:rnd % 3]
                for who in order:
                    if not self.popbridge.alive():
                        self.failures.append("popbridge is not running (before %s)" % name)
                        return
                    fn(who)

    def client_check(self):
        """The load generator against poplib on the same server (C), and the
        load generator's own cost (hashing off)."""
        rep = ["--sessions", str(self.p["repeat"]), "--concurrency", "1"]
        hashed, nohash = [], []
        for _ in range(3):
            for extra, into in (([], hashed), (["--no-hash"], nohash)):
                run = self.run_loadgen("C", "client-check", "bulk-pipelined",
                                       ["--user", "bulk", "--pass", self.users["bulk"]] + extra + rep)
                into.append(run["result"].get("mbps", 0))
        import poplib
        poplib._MAXLINE = 1 << 20
        t0 = time.monotonic()
        c = poplib.POP3("127.0.0.1", self.port["C"], timeout=60)
        c.user("bulk")
        c.pass_(self.users["bulk"])
        count = c.stat()[0]
        total = 0
        t1 = time.monotonic()
        for i in range(1, count + 1):
            _, lines, octets = c.retr(i)
            total += octets
        t2 = time.monotonic()
        c.quit()
        return dict(mbps=total / (t2 - t1) / 1e6, seconds=t2 - t0, bytes=total,
                    nohash_mbps=statistics.median(nohash), hash_mbps=statistics.median(hashed))

    # -- results -------------------------------------------------------------------

    def collect(self):
        """{workload: {who: [runs]}}"""
        out = {}
        for run in self.runs:
            if run["workload"] in ("warm-up", "client-check"):
                continue
            out.setdefault(run["workload"], {}).setdefault(run["who"], []).append(run)
        return out

    def check_failures(self):
        for run in self.runs:
            res = run["result"]
            errs = res.get("error_count", 0)
            if not errs:
                continue
            what = "%s %s: errors %s" % (NAMES[run["who"]], run["workload"], res.get("errors"))
            limitation = (not self.args.quick and run["who"] in ("B", "C")
                          and run["workload"] in ("open", "sessions"))
            if limitation:
                self.notes.append("%s (Dovecot on this machine; see samples: %s)"
                                  % (what, res.get("error_samples", [])[:2]))
            else:
                self.failures.append(what + " " + str(res.get("error_samples", [])[:3]))
        # Every RETR of a run without errors was verified, or it counts as an error.
        for run in self.runs:
            r = run["result"]
            if run["workload"] in ("bulk-pipelined", "bulk-sequential", "big", "sessions") \
                    and not r.get("error_count") and r.get("verified") != r.get("messages"):
                self.failures.append("%s %s: %s of %s messages verified" % (
                    NAMES[run["who"]], run["workload"], r.get("verified"), r.get("messages")))

    def report(self, elapsed, client):
        data = self.collect()
        p = self.p

        def med(workload, who, fn):
            runs = data.get(workload, {}).get(who, [])
            vals = []
            for r in runs:
                try:
                    v = fn(r)
                except (KeyError, TypeError, ZeroDivisionError):
                    v = None
                if v is not None:
                    vals.append(v)
            return statistics.median(vals) if vals else None

        def ok_runs(workload, who):
            runs = data.get(workload, {}).get(who, [])
            return sum(1 for r in runs if not r["result"].get("error_count")), len(runs)

        gb = lambda r: r["result"].get("bytes", 0) / 1e9
        rows = []  # (section, metric, unit, better, fn, fmt)

        def add(section, metric, better, workload, fn, fmt="%.1f"):
            vals = {w: med(workload, w, fn) for w in CONTESTANTS}
            rows.append((section, metric, better, vals, fmt, workload))

        def errs_or_none(r, v):
            return None if r["result"].get("error_count") else v

        add("1 bulk", "pipelined, MB/s (%d x %d KB)" % (p["bulk_count"], p["bulk_size"] // KB),
            "higher", "bulk-pipelined", lambda r: errs_or_none(r, r["result"]["mbps"]))
        add("1 bulk", "one RETR at a time, MB/s", "higher", "bulk-sequential",
            lambda r: errs_or_none(r, r["result"]["mbps"]))
        add("2 big", "RETR of %d MB, seconds" % (p["big_size"] // MB), "lower", "big",
            lambda r: errs_or_none(r, r["result"]["xfer_seconds"] / r["result"]["sessions_done"]),
            "%.3f")
        add("2 big", "first byte after RETR, ms", "lower", "big",
            lambda r: r["result"]["ttfb_first_ms"]["max"], "%.1f")
        add("2 big", "peak RSS of the server, MB", "lower", "big", lambda r: r["peak_kb"] / KB)
        add("2 big", "RSS growth during RETR, MB", "lower", "big", lambda r: r["growth_kb"] / KB)
        add("2 big", "popbridge VmHWM growth during RETR, MB", "lower", "big",
            lambda r: r["hwm_growth_kb"] / KB if "hwm_growth_kb" in r else None)
        add("3 logins", "%d sequential, logins/s" % p["logins"], "higher", "logins-seq",
            lambda r: errs_or_none(r, r["result"]["logins_per_s"]), "%.0f")
        add("3 logins", "%d, %d at a time, logins/s" % (p["logins"], p["login_concurrency"]),
            "higher", "logins-par", lambda r: errs_or_none(r, r["result"]["logins_per_s"]), "%.0f")
        add("4 connections", "%d open before login: opened" % p["open_conns"], "higher", "open",
            lambda r: r["open"], "%.0f")
        add("4 connections", "RSS per open connection, KB", "lower", "open",
            lambda r: r["kb_per_conn"] if r["open"] else None, "%.2f")
        add("4 connections", "%d sessions x %d RETR: verified RETRs" % (p["sessions"], p["session_retr"]),
            "higher", "sessions", lambda r: r["result"].get("verified", 0), "%.0f")
        add("4 connections", "sessions: errors", "lower", "sessions",
            lambda r: r["result"].get("error_count", 0), "%.0f")
        add("4 connections", "sessions: total MB/s", "higher", "sessions",
            lambda r: errs_or_none(r, r["result"]["mbps"]))
        add("4 connections", "sessions: p99 RETR latency, ms", "lower", "sessions",
            lambda r: errs_or_none(r, r["result"]["latency_ms"]["retr"]["p99"]))
        add("4 connections", "sessions: p99 login (USER+PASS), ms", "lower", "sessions",
            lambda r: errs_or_none(r, r["result"]["latency_ms"]["login"]["p99"]))
        add("4 connections", "sessions: peak PSS of the server, MB", "lower", "sessions",
            lambda r: r["peak_kb"] / KB)
        add("4 connections", "sessions: peak PSS of the upstream IMAP, MB", "lower", "sessions",
            lambda r: r["upstream_peak_kb"] / KB if "upstream_peak_kb" in r else None)
        for wl, label in (("bulk-pipelined", "bulk pipelined"), ("big", "big"), ("sessions", "sessions")):
            add("5 cost", "CPU s per GB, %s (server's own processes)" % label, "lower", wl,
                lambda r: r["cpu_s"] / gb(r) if gb(r) else None, "%.2f")
            add("5 cost", "upstream IMAP CPU s per GB, %s" % label, "lower", wl,
                lambda r: r["upstream_cpu_s"] / gb(r) if gb(r) and "upstream_cpu_s" in r else None,
                "%.2f")

        def fmt(v, f):
            return "n/a" if v is None else f % v

        def ratio(a, b):
            if a is None or b is None or b == 0:
                return "n/a"
            return "%.2f" % (a / b)

        if self.commit:
            commit = "%s (popbridge built from `git archive %s`)" % (self.commit[:12], self.args.rev)
        elif self.args.popbridge:
            commit = "binary %s; tree at %s" % (self.args.popbridge, git_head())
        else:
            commit = git_head()
            dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no",
                                    "--", "proxy", "backends", "common", "config", "CMakeLists.txt"],
                                   stdout=subprocess.PIPE, text=True).stdout.strip()
            if dirty:
                commit += " (+ uncommitted changes in the source)"
        cpu_model = "?"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        cpu_model = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        dovecot_version = subprocess.run(["dovecot", "--version"], stdout=subprocess.PIPE,
                                         text=True).stdout.strip()
        mem_gb = os.sysconf("SC_PHYS_PAGES") * PAGE / 2 ** 30

        L = []
        L.append("# popbridge benchmark results%s" % (" (quick)" if self.args.quick else ""))
        L.append("")
        L.append("- date: %s" % datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
        L.append("- commit: %s" % commit)
        L.append("- nproc: %d (%s), %.0f GB RAM, kernel %s" % (self.nproc, cpu_model, mem_gb,
                                                               platform.release()))
        L.append("- Dovecot %s; popbridge Release build, default settings (8 upstream threads, "
                 "256 KB chunks)" % dovecot_version)
        L.append("- median of %d interleaved runs per contestant (%d for the two connection "
                 "workloads; order rotated every round); run took %.0f s"
                 % (p["rounds"], p["rounds_heavy"], elapsed))
        if self.machine_load:
            L.append("- other load on this shared machine during the run: %s; the benchmark's "
                     "processes ran at nice %d" % (self.machine_load,
                                                   os.getpriority(os.PRIO_PROCESS, 0)))
        L.append("- command: `python3 bench/run.py%s`" % "".join(
            " " + a for a in self.args.argv if a is not None))
        L.append("")
        L.append("Contestants, all on 127.0.0.1, all reading the same Maildirs of one Dovecot:")
        L.append("")
        L.append("- **A** popbridge in front of the upstream Dovecot's IMAP;")
        L.append("- **B** Dovecot's POP3 with `imapc` storage and `passdb imap` in front of the same "
                 "IMAP (`imapc_features = rfc822.size`);")
        L.append("- **C** the upstream Dovecot's own POP3 on its Maildirs (the reference).")
        L.append("")
        L.append("Ratios are A/B and A/C of the medians; for \"lower is better\" rows a ratio "
                 "below 1 favours popbridge. MB = 10^6 bytes of RETR body as sent (dot-stuffed). "
                 "RSS: popbridge's VmRSS; for B and C the sum over their `pop3`, `pop3-login` and "
                 "`auth` processes (connection rows: `pop3-login` only). CPU: popbridge's own; for "
                 "B and C the whole Dovecot instance (master + all children, live and reaped); "
                 "\"upstream\" is the IMAP Dovecot's CPU for A's and B's runs.")
        L.append("")
        L.append("| workload | metric | better | A popbridge | B imapc | C native | A/B | A/C |")
        L.append("|---|---|---|---:|---:|---:|---:|---:|")
        for section, metric, better, vals, f, workload in rows:
            cells = []
            for w in CONTESTANTS:
                okc, total = ok_runs(workload, w)
                cell = fmt(vals[w], f)
                if total and okc < total:
                    cell += " (%d/%d runs had errors)" % (total - okc, total)
                cells.append(cell)
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                section, metric, better, cells[0], cells[1], cells[2],
                ratio(vals["A"], vals["B"]), ratio(vals["A"], vals["C"])))
        L.append("")

        # Goals.
        v = {(r[5], r[1]): r[3] for r in rows}

        def val(workload, prefix, who):
            for (wl, metric), vals in v.items():
                if wl == workload and metric.startswith(prefix):
                    return vals[who]
            return None

        goals = []

        def goal(text, ok, detail):
            goals.append("| %s | %s | %s |" % (text, detail, "n/a" if ok is None else
                                              ("met" if ok else "**not met**")))

        def rr(a, b):
            return None if a is None or b is None or b == 0 else a / b

        bp = rr(val("bulk-pipelined", "pipelined", "A"), val("bulk-pipelined", "pipelined", "B"))
        bpc = rr(val("bulk-pipelined", "pipelined", "A"), val("bulk-pipelined", "pipelined", "C"))
        bs = rr(val("bulk-sequential", "one RETR", "A"), val("bulk-sequential", "one RETR", "B"))
        bsc = rr(val("bulk-sequential", "one RETR", "A"), val("bulk-sequential", "one RETR", "C"))
        f2 = lambda x: "n/a" if x is None else "%.2f" % x
        goal("bulk A/B >= 2", None if bp is None or bs is None else (bp >= 2 and bs >= 2),
             "pipelined %s, sequential %s" % (f2(bp), f2(bs)))
        goal("bulk A/C >= 1", None if bpc is None or bsc is None else (bpc >= 1 and bsc >= 1),
             "pipelined %s, sequential %s" % (f2(bpc), f2(bsc)))
        g = val("big", "RSS growth", "A")
        hg = val("big", "popbridge VmHWM growth", "A")
        if g is not None and hg is not None:
            g = max(g, hg)
        goal("big: popbridge RSS grows <= 16 MB", None if g is None else g <= 16,
             "%s MB" % f2(g))
        t = val("big", "first byte", "A")
        goal("big: first byte within 10 ms of the RETR", None if t is None else t <= 10,
             "%s ms" % f2(t))
        bt = rr(val("big", "RETR of", "A"), val("big", "RETR of", "C"))
        goal("big: total within 1.2x of C", None if bt is None else bt <= 1.2, "A/C %s" % f2(bt))
        ls = rr(val("logins-seq", "%d sequential" % p["logins"], "A"),
                val("logins-seq", "%d sequential" % p["logins"], "C"))
        lp = rr(val("logins-par", "%d," % p["logins"], "A"), val("logins-par", "%d," % p["logins"], "C"))
        goal("logins A/C >= 0.8", None if ls is None or lp is None else (ls >= 0.8 and lp >= 0.8),
             "sequential %s, %d at a time %s" % (f2(ls), p["login_concurrency"], f2(lp)))
        op = val("open", "%d open" % p["open_conns"], "A")
        kb = val("open", "RSS per open", "A")
        goal("%d open at once, <= 16 KB RSS each" % p["open_conns"],
             None if op is None else (op >= p["open_conns"] and kb is not None and kb <= 16),
             "%s open, %s KB each" % ("n/a" if op is None else "%d" % op, f2(kb)))
        se = data.get("sessions", {}).get("A", [])
        fds = max((r.get("fds_peak", 0) for r in se), default=0)
        serr = sum(r["result"].get("error_count", 0) for r in se)
        goal("%d logged in at once (over 1,024 descriptors), no error" % p["sessions"],
             None if not se else serr == 0,
             "%d errors in %d runs; popbridge peak %d descriptors" % (serr, len(se), fds))
        L.append("## Goals (issue 5)")
        L.append("")
        L.append("| goal | measured (A) | |")
        L.append("|---|---|---|")
        L.extend(goals)
        L.append("")

        L.append("## Load generator check")
        L.append("")
        lc = val("bulk-sequential", "one RETR", "C")
        if client:
            L.append("Against C (Dovecot native POP3), one RETR at a time on the bulk mailbox: "
                     "popbridge-loadgen %s MB/s, Python poplib %.1f MB/s (%.2fx)."
                     % (f2(lc), client["mbps"], (lc or 0) / client["mbps"]))
            L.append("Against C, all RETRs pipelined, 3 runs each, interleaved: %.1f MB/s with "
                     "CRC-32 checks, %.1f MB/s with lengths only (`--no-hash`) (medians)."
                     % (client["hash_mbps"], client["nohash_mbps"]))
        busiest = max(self.runs, key=lambda r: r["result"].get("client_cpu_s", 0) / max(r["wall"], 1e-9),
                      default=None)
        if busiest:
            L.append("Busiest load generator run: %s against %s used %.0f%% of one core "
                     "(%.2f CPU s in %.2f s)." % (
                         busiest["workload"], NAMES[busiest["who"]],
                         100 * busiest["result"].get("client_cpu_s", 0) / max(busiest["wall"], 1e-9),
                         busiest["result"].get("client_cpu_s", 0), busiest["wall"]))
        L.append("")
        L.append("## Notes")
        L.append("")
        L.append("- Dovecot runs in high-performance login mode (`service_count = 0`, "
                 "`client_limit = 12000`, `process_min_avail = nproc`) with "
                 "`default_process_limit = 3000`, `default_client_limit = 15000`, "
                 "`default_vsz_limit = 1G`, `mail_max_userip_connections = 100000`; "
                 "`pop3_no_flag_updates = yes` (RETR does not set \\Seen, like popbridge).")
        L.append("- Maildir files carry `,S=` and `,W=` sizes, are in the page cache, and every "
                 "mailbox was opened once by each contestant before timing (index warm-up).")
        L.append("- The %d session users share the same %d message files (hard links)."
                 % (p["sessions"], p["session_retr"]))
        L.append("- Load generator, servers and the upstream share the %d cores." % self.nproc)
        up_a = [r.get("upstream_procs_peak", 0) for r in data.get("sessions", {}).get("A", [])]
        up_b = [r.get("upstream_procs_peak", 0) for r in data.get("sessions", {}).get("B", [])]
        if up_a and up_b:
            L.append("- Upstream IMAP sessions during the %d-session workload (peak number of "
                     "upstream `imap` processes, sampled every second): A %d, B %d. popbridge "
                     "keeps one upstream session per logged-in POP3 session; B's pop3 processes "
                     "answer the login from their local imapc index and connect upstream only "
                     "while they fetch (here: during each session's RETRs), so B's upstream "
                     "memory is small and its RETR latency large."
                     % (p["sessions"], max(up_a), max(up_b)))
        for n in self.notes:
            L.append("- " + n)
        for f in self.failures:
            L.append("- FAILURE: " + f)
        L.append("")
        L.append("## Every run")
        L.append("")
        L.append("| workload | contestant | result | errors |")
        L.append("|---|---|---|---|")
        for run in self.runs:
            r = run["result"]
            L.append("| %s | %s | %s | %s |" % (run["workload"], run["who"], self.brief(run),
                                                r.get("error_count", 0) and
                                                json.dumps(r.get("errors")) or ""))
        L.append("")
        text = "\n".join(L)
        return text, rows

    def profile(self, tool):
        """popbridge alone under callgrind (or perf record -e cpu-clock) for
        bulk-pipelined and big, one fresh popbridge per workload."""
        out_dir = os.path.abspath(os.path.join(self.args.build_dir, "profile"))
        os.makedirs(out_dir, exist_ok=True)
        fns = dict(self.workloads())
        reports = []
        for wl in ("bulk-pipelined", "big"):
            data = os.path.join(out_dir, "%s.%s.out" % (tool, wl))
            if os.path.exists(data):
                os.unlink(data)
            wrapper = []
            if tool == "callgrind":
                wrapper = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + data]
            self.popbridge.stop()
            self.start_popbridge(wrapper, timeout=120)
            rec = None
            if tool == "perf":
                rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "4999", "-g",
                                        "-o", data, "-p", str(self.popbridge.pid)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            fns[wl]("A")
            if rec is not None:
                rec.send_signal(signal.SIGINT)
                rec.wait(timeout=60)
            self.popbridge.stop()
            if tool == "callgrind":
                cmds = [["callgrind_annotate", data],
                        ["callgrind_annotate", "--inclusive=yes", data]]
            else:
                cmds = [["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "comm",
                         "-g", "none"],
                        ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort",
                         "comm,dso,sym", "-g", "none", "--percent-limit", "0.7"]]
            text = []
            for cmd in cmds:
                r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                text.append("$ " + " ".join(cmd) + "\n" + "\n".join(r.stdout.splitlines()[:70]))
            path = os.path.join(out_dir, "%s.%s.txt" % (tool, wl))
            with open(path, "w") as f:
                f.write("\n\n".join(text) + "\n")
            reports.append(path)
            log("profile of", wl, "->", path)
        self.start_popbridge()
        return reports


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one round (CI)")
    ap.add_argument("--popbridge", help="popbridge binary (default: build it)")
    ap.add_argument("--loadgen", help="popbridge-loadgen binary (default: build it)")
    ap.add_argument("--rev", help="build popbridge from this git revision (git archive) instead "
                                  "of the working tree")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--out", help="results file (default: bench/RESULTS.md; --quick: only printed)")
    ap.add_argument("--rounds", type=int, help="runs per contestant and workload")
    ap.add_argument("--only", help="comma-separated workloads (bulk-pipelined, bulk-sequential, big, "
                                   "logins-seq, logins-par, open, sessions)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--nice", type=int, default=-10,
                    help="scheduling priority of everything the benchmark runs (default -10, so that "
                         "other people's builds on a shared machine disturb it less; 0 to leave it)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                    help="on a shared machine: first wait up to S seconds until other processes "
                         "use less than a quarter of a core (measured over 5 s)")
    ap.add_argument("--profile", choices=("callgrind", "perf"),
                    help="profile popbridge alone during bulk-pipelined and big (smaller sizes "
                         "unless --set); writes BUILD_DIR/profile/*.txt; no RESULTS.md")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=N",
                    help="override a size, e.g. --set bulk_count=200")
    args = ap.parse_args()
    args.argv = []
    skip = False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a in ("--out", "--build-dir"):
            skip = True
        elif a != "--keep" and not a.startswith(("--out=", "--build-dir=")):
            args.argv.append(a)

    profile = dict(QUICK if args.quick else FULL)
    if args.profile == "callgrind":
        profile.update(bulk_count=200, big_size=10 * MB, sessions=10, rounds=1, rounds_heavy=1)
    elif args.profile == "perf":
        profile.update(sessions=10, rounds=1, rounds_heavy=1)
    if args.rounds:
        profile["rounds"] = profile["rounds_heavy"] = args.rounds
    for kv in args.set:
        k, _, n = kv.partition("=")
        if k not in profile:
            ap.error("unknown key %s (have %s)" % (k, ", ".join(profile)))
        profile[k] = int(n)
    if os.geteuid() != 0:
        ap.error("run as root (Dovecot's mail processes switch to an unprivileged user)")

    if args.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by every child
        except OSError as e:
            log("cannot set priority %d: %s" % (args.nice, e))
    if args.wait_quiet > 0:
        wait_quiet(args.wait_quiet)
    t0 = time.monotonic()
    bench = Bench(args, profile)
    bench.t_start = t0
    client = None
    try:
        try:
            bench.build()
        except subprocess.CalledProcessError as e:
            bench.build_log.flush()
            with open(bench.build_log.name, errors="replace") as f:
                sys.stderr.write(f.read()[-6000:])
            log("build failed:", " ".join(e.cmd))
            return 2
        bench.start_servers()
        bench.warm_up()
        if args.profile:
            for path in bench.profile(args.profile):
                with open(path) as f:
                    print(f.read())
            return 0
        bench.run_all()
        if not args.quick and (not args.only or "bulk-sequential" in args.only.split(",")):
            client = bench.client_check()
            log("client check: poplib %.1f MB/s against C" % client["mbps"])
    finally:
        bench.stop_servers()
        bench.measure_other_load()
        for d in (bench.upstream, bench.imapc):
            if d is not None:
                for line in d.log_problems()[:5]:
                    bench.notes.append("Dovecot %s log: %s" % (d.label, line[:300]))
        if args.keep:
            log("kept", bench.base)
        else:
            shutil.rmtree(bench.base, ignore_errors=True)
    bench.check_failures()
    try:
        with open(os.path.join(args.build_dir, "bench-runs.json"), "w") as f:
            json.dump(dict(profile=profile, runs=bench.runs, client=client), f, indent=1)
    except OSError:
        pass
    text, _ = bench.report(time.monotonic() - t0, client)
    out = args.out or (None if args.quick else os.path.join(HERE, "RESULTS.md"))
    if out:
        with open(out, "w") as f:
            f.write(text)
        log("wrote", out)
    table = text.split("\n## Every run")[0]
    print(table)
    if bench.failures:
        print("\nFAILED:\n  " + "\n  ".join(bench.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
