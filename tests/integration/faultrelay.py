"""A small threaded TCP relay on 127.0.0.1 that injects faults (stdlib only).

It sits between popbridge and Dovecot's IMAP port. Every accepted
connection is paired with a new connection to the target and pumped by two
threads, one per direction:

    "up"   = client -> target  (popbridge -> Dovecot)
    "down" = target -> client  (Dovecot -> popbridge)

Faults, at a chosen byte offset of one direction (the bytes before the
offset are forwarded, the fault happens exactly there):

    "cut"    FIN to both sides (shutdown), then close
    "reset"  RST to both sides (SO_LINGER 0, close)
    "stall"  stop forwarding that direction (sockets stay open) until
             release() or the relay stops
    "delay"  hold that direction for `seconds`, then go on

Conn.arm(direction, action, after=N) arms one connection: N more bytes
from now (relative=True, the default) or from its start. FaultRelay.arm_new()
arms every connection accepted from then on. Conn.cut()/reset()/stall()
act at once. FaultRelay.refuse = "close" | "reset" accepts and drops new
connections; stop_listening() makes connects fail (ECONNREFUSED) until
start_listening().

Every loop is bounded: sockets use short timeouts and the threads check
their stop flags between calls.
"""

import socket
import struct
import threading
import time

_TICK = 0.1          # how often a blocked pump looks at its flags
_CHUNK = 64 * 1024

DIRECTIONS = ("up", "down")
ACTIONS = ("cut", "reset", "stall", "delay")


class _Rule:
    __slots__ = ("at", "action", "seconds")

    def __init__(self, at, action, seconds):
        self.at, self.action, self.seconds = at, action, seconds


class Conn:
    """One relayed connection."""

    def __init__(self, relay, cid, client, server):
        self.relay = relay
        self.id = cid
        self.client = client      # popbridge's side
        self.server = server      # Dovecot's side
        self.opened = time.monotonic()
        self.passed = {"up": 0, "down": 0}   # bytes forwarded so far
        self.closed = None        # None while open; else "cut", "reset" or "eof"
        self.fault = None         # the fault that ended or stalled it, e.g. "down:cut@1234"
        self._rules = {"up": None, "down": None}
        self._stalled = {"up": False, "down": False}
        self._eof = {"up": False, "down": False}
        self._lock = threading.Lock()
        self._threads = []
        for s in (client, server):
            s.settimeout(_TICK)

    def __repr__(self):
        return "<Conn %d up=%d down=%d closed=%s fault=%s>" % (
            self.id, self.passed["up"], self.passed["down"], self.closed, self.fault)

    # -- control (any thread) ----------------------------------------------

    def arm(self, direction, action, after=0, relative=True, seconds=0.0):
        """Fault `direction` once `after` more bytes (relative) or byte
        offset `after` (absolute) have gone through it."""
        if direction not in DIRECTIONS or action not in ACTIONS:
            raise ValueError((direction, action))
        with self._lock:
            at = after + (self.passed[direction] if relative else 0)
            self._rules[direction] = _Rule(at, action, seconds)

    def cut(self):
        self._finish("cut", "cut by test")

    def reset(self):
        self._finish("reset", "reset by test")

    def stall(self, direction="down"):
        with self._lock:
            self._stalled[direction] = True
            self.fault = self.fault or "%s:stall by test" % direction

    def release(self, direction=None):
        with self._lock:
            for d in DIRECTIONS if direction is None else (direction,):
                self._stalled[d] = False

    @property
    def is_open(self):
        return self.closed is None

    # -- pumps ---------------------------------------------------------------

    def start(self):
        self._running = len(DIRECTIONS)
        for direction in DIRECTIONS:
            t = threading.Thread(target=self._pump, args=(direction,),
                                 name="relay-%d-%s" % (self.id, direction), daemon=True)
            self._threads.append(t)
            t.start()

    def _pump(self, direction):
        try:
            self._pump_loop(direction)
        finally:
            self._pump_done()

    def _pump_loop(self, direction):
        src, dst = (self.client, self.server) if direction == "up" else (self.server, self.client)
        try:
            while self.closed is None and not self.relay._stopping:
                if self._stalled[direction]:
                    time.sleep(0.02)
                    continue
                try:
                    data = src.recv(_CHUNK)
                except socket.timeout:
                    continue
                except OSError:
                    self._finish("eof", None)
                    return
                if not data:
                    self._eof[direction] = True
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return  # the other direction goes on until its own EOF
                if not self._forward(direction, data, dst):
                    return
        except Exception:   # never leave a relay thread dying silently mid-test
            self._finish("reset", "%s: relay error" % direction)
            raise

    def _forward(self, direction, data, dst):
        """Forward data, applying this direction's rule; False when the
        connection ended."""
        while data:
            with self._lock:
                rule = self._rules[direction]
                room = None if rule is None else max(0, rule.at - self.passed[direction])
            if rule is not None and room < len(data):
                head, data = data[:room], data[room:]
                if head and not self._send(dst, head, direction):
                    return False
                with self._lock:
                    self._rules[direction] = None
                    where = "%s:%s@%d" % (direction, rule.action, self.passed[direction])
                if rule.action in ("cut", "reset"):
                    self._finish(rule.action, where)
                    return False
                if rule.action == "stall":
                    with self._lock:
                        self._stalled[direction] = True
                        self.fault = self.fault or where
                elif rule.action == "delay":
                    self.fault = self.fault or where
                    end = time.monotonic() + rule.seconds
                    while time.monotonic() < end and self.closed is None \
                            and not self.relay._stopping:
                        time.sleep(min(0.02, max(0.0, end - time.monotonic())))
                continue
            if not self._send(dst, data, direction):
                return False
            data = b""
        return True

    def _send(self, dst, data, direction):
        # Data read before a stall began is held too.
        while self._stalled[direction] and self.closed is None and not self.relay._stopping:
            time.sleep(0.02)
        view = memoryview(data)
        while view:
            if self.closed is not None or self.relay._stopping:
                return False
            try:
                n = dst.send(view)
            except socket.timeout:
                continue
            except OSError:
                self._finish("eof", None)
                return False
            view = view[n:]
            with self._lock:
                self.passed[direction] += n
        return True

    def _finish(self, how, fault):
        """End the connection: mark it, send the FIN (cut) or arm the RST
        (reset) at once; the last pump to stop closes both sockets. Never
        blocks, so a test can fault hundreds of connections in a row."""
        with self._lock:
            if self.closed is not None:
                return
            self.closed = how
            if fault:
                self.fault = fault
        for s in (self.client, self.server):
            try:
                if how == "reset":
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif how == "cut":
                    s.shutdown(socket.SHUT_WR)  # the FIN goes out now
            except OSError:
                pass
        if not self._threads:
            self._close_sockets()

    def _pump_done(self):
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if last:
            if self.closed is None:
                self.closed = "eof"
            self._close_sockets()

    def _close_sockets(self):
        for s in (self.client, self.server):
            try:
                s.close()  # with SO_LINGER 0: RST
            except OSError:
                pass
        self.relay._closed(self)


class FaultRelay:
    """Relay from 127.0.0.1:self.port to target_host:target_port."""

    def __init__(self, target_port, target_host="127.0.0.1", port=0):
        self.target = (target_host, target_port)
        self.port = port
        self.refuse = None          # None, "close" or "reset": drop new connections
        self.connections = []       # every Conn, in accept order
        self.refused = 0            # connections dropped by `refuse`
        self._new_rules = []        # (direction, action, after, seconds) for new conns
        self._lock = threading.Lock()
        self._listener = None
        self._accept_thread = None
        self._stopping = False
        self._ids = 0

    # -- lifecycle ------------------------------------------------------------

    def start(self):
        self.start_listening()
        return self

    def start_listening(self):
        if self._listener is not None:
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(512)
        s.settimeout(_TICK)
        self.port = s.getsockname()[1]
        self._listener = s
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(s,),
                                               name="relay-accept", daemon=True)
        self._accept_thread.start()

    def stop_listening(self):
        """Close the listening socket: connects are refused (RST) until
        start_listening(), which binds the same port again."""
        s, self._listener = self._listener, None
        if s is None:
            return
        self._accept_thread.join(timeout=5)
        s.close()

    def stop(self):
        """Stop listening, drop every connection, end every thread."""
        self.stop_listening()
        self._stopping = True
        for c in list(self.connections):
            c._finish("cut", None)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- faults ---------------------------------------------------------------

    def arm_new(self, direction, action, after=0, seconds=0.0):
        """Arm every connection accepted from now on (until clear_new())."""
        if direction not in DIRECTIONS or action not in ACTIONS:
            raise ValueError((direction, action))
        with self._lock:
            self._new_rules.append((direction, action, after, seconds))

    def clear_new(self):
        with self._lock:
            self._new_rules = []

    def active(self):
        return [c for c in self.connections if c.is_open]

    def newest(self):
        return self.connections[-1] if self.connections else None

    def wait_for(self, predicate, timeout=10.0, what="condition"):
        """Poll predicate() until true; AssertionError after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("relay: %s not reached within %.0fs (%r)"
                                     % (what, timeout, self.connections[-5:]))
            time.sleep(0.02)

    # -- internals --------------------------------------------------------------

    def _accept_loop(self, listener):
        while self._listener is listener and not self._stopping:
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.refuse:
                self.refused += 1
                if self.refuse == "reset":
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    try:
                        client.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            with self._lock:
                self._ids += 1
                conn = Conn(self, self._ids, client, server)
                for direction, action, after, seconds in self._new_rules:
                    conn.arm(direction, action, after, relative=False, seconds=seconds)
                self.connections.append(conn)
            conn.start()

    def _closed(self, conn):
        pass
