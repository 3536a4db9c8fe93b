#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/<target>/ (run from anywhere).

The seeds are small, meaningful inputs in each target's input format (see
the comment at the top of each fuzz_<target>.cpp). Re-run after changing the
formats or config/popbridge.toml; the files are committed.
"""
import base64
import hashlib
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("latin-1")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def b64(s):
    return base64.b64encode(s.encode("latin-1")).decode()


PLAIN_ALICE = b64("\0alice\0secret")
PLAIN_ALICE_AUTHZ = b64("alice\0alice\0secret")
PLAIN_CAROL = b64("\0carol\0c")
PLAIN_OTHER = b64("admin\0alice\0secret")

# --- fuzz_parser: h[0] max_line, h[1..2] split seed, h[3] flags; stream ----
def parser(name, stream, max_line=0, seed=(1, 0), flags=0):
    write("fuzz_parser", name, bytes([max_line, seed[0], seed[1], flags]) + stream.encode("latin-1"))

parser("dialogue", "USER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\nUIDL 1\r\nRETR 1\r\nTOP 2 10\r\nDELE 1\r\nRSET\r\nNOOP\r\nLAST\r\nQUIT\r\n")
parser("bare_lf", "capa\nuser alice\npass secret\nlist\n", seed=(7, 3))
parser("spaces", "LIST     2   \r\nTOP 1 0\r\nPASS  two  spaces \r\nUSER \r\nRETR 007\r\nTOP 1 4294967295\r\nLIST 4294967296\r\n")
parser("too_many_args", "NOOP a b c d e f g h\r\nNOOP a b c d e f g h i\r\nABCDEFGH\r\nABCDEFGHI\r\n")
parser("nul_cr", "NO\0OP\r\nST\rAT\r\nQUIT\r\r\n\r\n\n")
parser("long_line", "NOOP " + "x" * 300 + "\r\nSTAT\r\n" + "y" * 254 + "\r\n" + "z" * 253 + "\r\nQUIT\r\n", seed=(2, 9))
parser("edge_253_254", "A" * 252 + "\r\n" + "B" * 253 + "\r\n" + "C" * 254 + "\n" + "D" * 255 + "\n")
parser("sasl_limit", "AUTH PLAIN\r\n" + "QUFB" * 2000 + "\r\n" + "Q" * 8200 + "\r\nQUIT\r\n", max_line=255)
parser("tiny_limit", "a\nbb\r\nccc\n\n\r\n", max_line=3, seed=(5, 5))
parser("limit_one", "\n\r\nx\n", max_line=1)
parser("chaos", "AUTH PLAIN\r\n" + PLAIN_ALICE + "\r\n" + "STAT\r\n" + "L" * 400 + "\r\nQUIT\r\n", seed=(3, 1), flags=1)
parser("chaos_partial", "USER alice\r\nPASS " + "p" * 600, seed=(9, 2), flags=1)
parser("numbers", "RETR 0\r\nRETR 4294967295\r\nRETR 99999999999\r\nRETR -1\r\nRETR +1\r\nRETR 1a\r\n")
parser("no_final_lf", "STAT\r\nLIST", seed=(4, 4))
parser("high_bytes", "USER \xc3\xa9l\xc3\xa8ve\r\nPASS \xff\xfe\r\n")

# --- fuzz_encoder: h[0] 0xff RETR / TOP n, h[1..2] seed; message ---------
def encoder(name, msg, lines=0xFF, seed=(1, 0)):
    write("fuzz_encoder", name, bytes([lines, seed[0], seed[1], 0]) + msg.encode("latin-1"))

MSG = "From: a@example.org\r\nSubject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nmiddle\r\n.\r\n"
encoder("dots", MSG)
encoder("dots_top0", MSG, lines=0)
encoder("dots_top2", MSG, lines=2, seed=(3, 7))
encoder("bare_lf", "Subject: x\n\n.\nline\n.\n", seed=(5, 1))
encoder("bare_lf_top1", "Subject: x\n\n.\nline\n.\n", lines=1)
encoder("bare_cr", "A: b\r\rc\r\n\r\nx\ry\r.\r\r\n.\r", seed=(2, 2))
encoder("cr_at_split", "a\r\n" * 40, seed=(0, 1))
encoder("empty", "")
encoder("only_dot", ".\r\n")
encoder("dot_first", ".")
encoder("crlf_dot_crlf", "\r\n.\r\n")
encoder("no_final_newline", "Subject: t\r\n\r\nno newline")
encoder("no_body", "Subject: only headers\r\nX: y\r\n", lines=3)
encoder("blank_first", "\r\nbody\r\n.x\r\n", lines=0)
encoder("lf_first", "\nbody\n.x\n", lines=1)
encoder("nul_8bit", "Subject: \xe9\0\r\n\r\n\0.\r\n\xff\n", seed=(8, 8))
encoder("many_lines", "H: 1\r\n\r\n" + "".join(f".{i}\n" if i % 2 else f"{i}\r\n" for i in range(60)), lines=130, seed=(6, 6))

# --- fuzz_sasl: mode byte (bit 0: raw), data --------------------------------
def sasl(name, data, raw=False):
    write("fuzz_sasl", name, bytes([1 if raw else 0]) + data.encode("latin-1"))

sasl("plain", PLAIN_ALICE)
sasl("plain_authz", PLAIN_ALICE_AUTHZ)
sasl("plain_other_authz", PLAIN_OTHER)
sasl("plain_no_user", b64("\0\0pw"))
sasl("plain_three_nul", b64("\0a\0b\0c"))
sasl("pad1", "QUI=")
sasl("pad2", "QQ==")
sasl("noncanonical", "QR==")
sasl("bad_char", "QU!=")
sasl("pad_middle", "QQ==QUJD")
sasl("short", "QUJ")
sasl("star", "*")
sasl("equals", "=")
sasl("empty", "")
sasl("raw_plain", "\0alice\0secret", raw=True)
sasl("raw_authz", "alice\0alice\0p a s s", raw=True)
sasl("raw_other", "bob\0alice\0pw", raw=True)
sasl("raw_8bit", "\0\xc3\xa9\0\xff\xfe", raw=True)

# --- fuzz_session: client stream [+ "\xfe\xffFZ" + control] -----------------
SEP = b"\xfe\xffFZ"

def op(code, arg=0):
    return bytes([(arg << 3) | code])

def session(name, stream, control=None):
    data = stream.encode("latin-1")
    if control is not None:
        data += SEP + control
    write("fuzz_session", name, data)

def ctl(flags=0, chunk=6, hw=0, bad=0, more=0, ops=b""):
    return bytes([flags, chunk, hw, bad, more]) + ops

FEED_LINE = op(1)          # one line
RUN = op(3)                # backend answers
READ_ALL = op(7)

FULL = ("USER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 3\r\nRETR 1\r\n"
        "TOP 2 1\r\nRETR 7\r\nRETR 9\r\nDELE 3\r\nLAST\r\nRSET\r\nDELE 1\r\nDELE 2\r\nNOOP\r\nQUIT\r\n")
session("pipelined", FULL)
session("line_by_line", FULL, ctl(ops=(FEED_LINE + RUN + READ_ALL) * 20))
session("byte_by_byte", "USER alice\r\nPASS secret\r\nRETR 1\r\nQUIT\r\n",
        ctl(chunk=0, ops=(op(0, 0) + op(2)) * 60))
session("auth_plain_ir", f"CAPA\r\nAUTH\r\nAUTH PLAIN {PLAIN_ALICE}\r\nSTAT\r\nRETR 8\r\nDELE 8\r\nQUIT\r\n")
session("auth_plain_cont", f"AUTH PLAIN\r\n{PLAIN_ALICE_AUTHZ}\r\nLIST\r\nTOP 9 2\r\nQUIT\r\n",
        ctl(ops=FEED_LINE + RUN + READ_ALL + FEED_LINE + RUN + READ_ALL))
session("auth_refusals", f"AUTH PLAIN\r\n*\r\nAUTH PLAIN !!!!\r\nAUTH PLAIN {PLAIN_OTHER}\r\nAUTH CRAM-MD5\r\n"
        f"AUTH PLAIN =\r\nAUTH PLAIN a b\r\nAUTH PLAIN\r\n" + "QUFB" * 100 + f"\r\nAUTH PLAIN {PLAIN_CAROL}\r\nQUIT\r\n")
session("stls", "CAPA\r\nUSER alice\r\nSTLS\r\nUSER alice\r\nPASS secret\r\n",
        ctl(flags=2 | 4, ops=FEED_LINE + FEED_LINE + FEED_LINE + READ_ALL + op(1, 3)))
session("stls_then_login", "STLS\r\nCAPA\r\nSTLS\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nQUIT\r\n",
        ctl(flags=2 | 4, ops=FEED_LINE + READ_ALL + op(1, 3) + RUN))
session("implicit_tls", "STLS\r\nCAPA\r\nUSER bob\r\nPASS p a\"s\\s\xc3\xa9\r\nSTAT\r\nLIST\r\nQUIT\r\n",
        ctl(flags=1 | 4))
session("bad_commands", "NOOP\r\nSTAT\r\nFOO\r\nRETR\r\nUSER\r\nPASS x\r\n\r\n \r\n" + "X" * 300 + "\r\nN\0OP\r\nST\rAT\r\nQUIT\r\n",
        ctl(bad=5))
session("wrong_password", "USER alice\r\nPASS wrong\r\nSTAT\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nQUIT\r\n",
        ctl(ops=op(1, 1) + RUN + op(5, 13) + READ_ALL + op(1, 3) + RUN))
session("bad_numbers", "USER alice\r\nPASS secret\r\nLIST 0\r\nLIST 99\r\nRETR 99999999999999\r\nRETR -1\r\n"
        "TOP 1\r\nTOP 1 x\r\nTOP 1 4294967295\r\nDELE 1\r\nRETR 1\r\nDELE 1\r\nUIDL 1\r\nQUIT\r\n")
session("slow_reader", "USER alice\r\nPASS secret\r\nRETR 8\r\nLIST\r\nRETR 1\r\nQUIT\r\n",
        ctl(chunk=15, hw=4, ops=FEED_LINE * 6 + RUN + (op(4, 8) + op(2)) * 40))
session("stop_reading", "USER alice\r\nPASS secret\r\n" + "UIDL\r\nLIST\r\n" * 30 + "QUIT\r\n",
        ctl(hw=2, ops=op(0, 31) + RUN + op(5, 12) + op(4, 5) + op(5, 0) + READ_ALL))
session("upstream_failures", "USER alice\r\nPASS secret\r\nUSER alice\r\nPASS secret\r\nRETR 1\r\nRETR 8\r\nDELE 1\r\nQUIT\r\n",
        ctl(chunk=3, ops=op(5, 6) + op(1, 1) + RUN + op(1, 1) + RUN + op(5, 8) + FEED_LINE + RUN
                          + FEED_LINE + op(2) + op(2) + op(5, 9) + RUN + op(1, 1) + op(5, 5) + RUN))
session("commit_fails", "USER alice\r\nPASS secret\r\nDELE 1\r\nDELE 2\r\nQUIT\r\n",
        ctl(ops=op(1, 3) + RUN + op(5, 6) + FEED_LINE + RUN))
session("drop_before_quit", "USER alice\r\nPASS secret\r\nDELE 1\r\nQUIT\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nQUIT\r\n",
        ctl(ops=op(1, 3) + RUN + FEED_LINE + op(5, 3) + op(1, 3) + RUN))
session("two_clients_in_use", "USER alice\r\nPASS secret\r\nUSER alice\r\nPASS secret\r\nQUIT\r\nSTAT\r\nQUIT\r\n",
        ctl(ops=op(1, 1) + RUN + op(5, 2) + op(1, 1) + RUN + op(5, 2) + FEED_LINE + op(5, 2) + op(1, 1) + RUN))
session("locked_elsewhere", "USER alice\r\nPASS secret\r\nUSER carol\r\nPASS c\r\nDELE 1\r\nQUIT\r\n", ctl(flags=8))
session("idle_timeout", "USER alice\r\nPASS secret\r\nRETR 8\r\n",
        ctl(chunk=10, hw=1, ops=op(1, 1) + RUN + FEED_LINE + op(2) + op(2) + op(5, 1)))
session("idle_login", "USER alice\r\nPASS secret\r\n", ctl(ops=op(1, 1) + op(5, 1) + RUN))
session("expunged", "USER alice\r\nPASS secret\r\nRETR 2\r\nTOP 2 0\r\nLIST\r\nDELE 2\r\nQUIT\r\n",
        ctl(flags=32, ops=op(1, 1) + RUN + op(5, 10) + op(5, 11) + op(1, 3)))
session("long_sasl_pipelined", "AUTH PLAIN\r\n" + "QUFB" * 80 + "\r\nAUTH PLAIN\r\n" + PLAIN_ALICE + "\r\nQUIT\r\n")
session("partial_at_end", "USER alice\r\nPASS secret\r\nRETR 1\r\nTOP 1")
session("lf_only", "user alice\npass secret\nlist\nretr 2\ntop 4 1\nquit\n")
session("uidl_formats", "USER alice\r\nPASS secret\r\nUIDL\r\nUIDL 9\r\nLAST\r\nCAPA\r\nQUIT\r\n", ctl(more=1 | 8 | 32))
session("uidl_template", "USER alice\r\nPASS secret\r\nUIDL\r\nUIDL 1\r\nRETR 1\r\nQUIT\r\n", ctl(more=5))
session("no_lock", "USER alice\r\nPASS secret\r\nUSER alice\r\nPASS secret\r\nDELE 1\r\nQUIT\r\nDELE 1\r\nQUIT\r\n",
        ctl(more=16, ops=op(1, 1) + RUN + op(5, 2) + op(1, 1) + RUN + op(5, 2) + op(1, 1) + RUN + op(5, 2) + op(1, 1) + RUN))
session("metrics", "USER x\r\nPASS y\r\nUSER alice\r\nPASS secret\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n", ctl(flags=32))

# --- fuzz_config: TOML text -------------------------------------------------
shipped = os.path.join(ROOT, "config", "popbridge.toml")
d = os.path.join(OUT, "fuzz_config")
os.makedirs(d, exist_ok=True)
shutil.copyfile(shipped, os.path.join(d, "popbridge.toml"))

MIN = '[[listener]]\naddress = "127.0.0.1:1110"\n\n[[upstream]]\nhost = "imap.example.org"\n'
write("fuzz_config", "minimal", MIN)
write("fuzz_config", "tls", '[server]\nidle_timeout = 600\nlog_level = "debug"\n\n'
      '[tls]\ncertificate = "/etc/ssl/certs/ssl-cert-snakeoil.pem"\nkey = "/nonexistent/key.pem"\nmin_version = "1.3"\nciphers = ""\n\n'
      '[[listener]]\naddress = "[::1]:995"\ntls = "implicit"\n\n[[listener]]\naddress = "*:110"\ntls = "starttls"\n\n'
      '[[upstream]]\nname = "m"\nhost = "[::1]"\nport = 993\ntls = "implicit"\nverify = false\nca_file = "/etc/hosts"\n'
      'connect_timeout = "500ms"\ncommand_timeout = "2h"\nfolder = "INBOX/Sub"\n')
write("fuzz_config", "server_all", '[server]\nidle_timeout = "1d"\nlog_level = "warn"\nlog_format = "json"\n'
      'upstream_threads = 256\nallow_plaintext_auth = true\nmax_sessions = 1000\nmax_sessions_per_ip = 10\n'
      'auth_failure_delay = "0s"\nauth_failure_delay_max = "30s"\nsend_timeout = "5m"\nshutdown_grace = 0\n\n'
      '[metrics]\naddress = "127.0.0.1:9100"\n\n' + MIN)
write("fuzz_config", "proxy_protocol", '[[listener]]\naddress = "0.0.0.0:1110"\nproxy_protocol = true\n'
      'trusted_proxies = ["10.0.0.0/8", "::1/128", "192.0.2.7", "1.2.3.4/33", "x"]\n\n'
      '[[upstream]]\nhost = "127.0.0.1"\n\n[mailbox]\non_delete = "hide"\nhide_keyword = "$Gone"\n')
write("fuzz_config", "errors", '[server]\nidle_timeout = "-5s"\nlog_level = "loud"\nupstream_threads = 0\nbogus = 1\n\n'
      '[[listener]]\naddress = "localhost:1110"\n[[listener]]\naddress = "127.0.0.1:99999"\n'
      '[[listener]]\naddress = "[::1]:1110"\n[[listener]]\naddress = "[0::1]:1110"\ntls = "maybe"\n\n'
      '[[upstream]]\nhost = "999.1.1.1"\nport = 0\nconnect_timeout = "99999999999999999999s"\n'
      '[[upstream]]\nname = "main"\nhost = "-bad-.example"\n\n[mailbox]\nhide_keyword = "\\\\Deleted"\n')
write("fuzz_config", "wrong_types", 'server = 1\nmailbox = []\nlistener = "x"\nupstream = [1, 2]\ntls = { certificate = 1 }\n')
write("fuzz_config", "syntax_error", '[server\nidle_timeout = = 1\n')
write("fuzz_config", "unicode", '# \xc3\xa9\n"\xc3\xa9" = "\\u00e9\\U0001F600"\n[[listener]]\naddress = \'\'\'127.0.0.1:1\'\'\'\n'
      '[[upstream]]\nhost = """\nimap"""\n')
write("fuzz_config", "nesting", 'a = ' + '[' * 300 + ']' * 300 + '\nb = { c = { d = { e = [1, 2.5, 1979-05-27T07:32:00Z, true, "s"] } } }\n')
write("fuzz_config", "numbers", 'a = 0x7fffffffffffffff\nb = -9223372036854775808\nc = 1e308\nd = inf\ne = nan\nf = 0o777\ng = 0b101\nh = 1_000\n'
      '[server]\nidle_timeout = 9223372036854775807\n' + MIN)
write("fuzz_config", "mailbox_all", '[mailbox]\non_delete = "move"\nmove_to = "Trash"\nretention_days = 30\n'
      'retention_action = "expunge"\nmark_seen_on_retr = true\nvisible = "unseen"\nmax_messages = 1000\n'
      'folder_separator = "#"\nuidl_format = "{uidvalidity:08X}-{uid:x}"\nlock = false\nenable_last = false\n'
      'hide_keyword = "$Gone"\n\n' + MIN)
write("fuzz_config", "uidl_bad", '[mailbox]\nuidl_format = "{uid:71d}{uidvalidity:x}{"\n\n' + MIN)
write("fuzz_config", "routing", '[[listener]]\naddress = "127.0.0.1:1110"\n\n'
      '[[upstream]]\nname = "a"\nhosts = ["imap1.example.com:993", "[::1]:143", "10.0.0.1:1"]\ntls = "implicit"\n'
      'domains = ["example.com", "Example.org"]\nusername = "local"\n\n'
      '[[upstream]]\nname = "b"\nhost = "imap.example.net"\ndomains = ["example.com"]\n\n'
      '[[upstream]]\nname = "default"\nhost = "127.0.0.1"\nport = 143\nhosts = ["x:1"]\n')
write("fuzz_config", "dotted_keys", 'server.idle_timeout = "10m"\nlistener = [{ address = "127.0.0.1:1" }]\n'
      '[[upstream]]\n"host" = "a.b"\nupstream.extra = 1\n')


# --- fuzz_fetch_reader: h[0] max_body, h[1] max_line-1, h[2] tag | buffer<<2,
#     h[3] split seed; the server's answer to UID FETCH ... BODY.PEEK[] ------
FR_TAGS = ["1", "12", "A0001", "a"]


def fetch_reader(name, stream, max_body=0xF0, max_line=255, tag=0, buffer=5, seed=1):
    stream = stream.replace("$TAG", FR_TAGS[tag])
    write("fuzz_fetch_reader", name,
          bytes([max_body, max_line - 1, tag | (buffer << 2), seed]) + stream.encode("latin-1"))


def lit(data):
    return "{%d}\r\n%s" % (len(data), data)


MAIL = ("Return-Path: <bob@example.org>\r\nDelivered-To: alice@example.org\r\n"
        "From: Bob <bob@example.org>\r\nSubject: hi\r\n\r\nline one\r\n.\r\n..two\r\n")
DONE = "$TAG OK Fetch completed (0.001 + 0.000 secs).\r\n"
fetch_reader("dovecot_single", "* 1 FETCH (UID 7 BODY[]<0> " + lit(MAIL) + ")\r\n" + DONE)
fetch_reader("dovecot_batch", "* 1 FETCH (UID 7 BODY[]<0> " + lit("a\r\n") + ")\r\n"
             "* 3 FETCH (UID 9 BODY[]<0> " + lit("ccc\r\n") + ")\r\n"
             "* 2 FETCH (UID 8 BODY[]<0> " + lit("bb\r\n") + ")\r\n" + DONE, tag=1, buffer=0)
fetch_reader("dovecot_expunged", "* 1 FETCH (UID 7 BODY[]<0> " + lit("seven") + ")\r\n"
             "* 2 FETCH (UID 8 BODY[]<0> NIL)\r\n"
             "$TAG NO [EXPUNGEISSUED] Some of the requested messages no longer exist (0.001 + 0.000 secs).\r\n",
             tag=2, buffer=1)
fetch_reader("expunged_ok", "* 2 FETCH (UID 8 BODY[] nil)\r\n$TAG OK [EXPUNGEISSUED] gone\r\n", max_body=8)
fetch_reader("unsolicited", "* 5 EXISTS\r\n* 1 RECENT\r\n* 3 EXPUNGE\r\n"
             "* 2 FETCH (FLAGS (\\Seen $Junk) MODSEQ (1234))\r\n"
             "* OK [HIGHESTMODSEQ 1235] Highest\r\n* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
             "* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Seen \\*)] Flags permitted.\r\n"
             "* 4 FETCH (UID 40 BODY[]<0> " + lit("x") + " FLAGS (\\Recent))\r\n"
             "* VANISHED (EARLIER) 1:3,5\r\n" + DONE, seed=2, buffer=2)
fetch_reader("other_items", "* 4 FETCH (UID 40 RFC822.SIZE 4711 INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" "
             "BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 10 1 NIL NIL NIL) "
             "(\"APPLICATION\" \"OCTET-STREAM\" (\"NAME\" " + lit("a (b) \"c\"") + ") NIL NIL \"BASE64\" 20 NIL "
             "(\"attachment\" (\"FILENAME\" \"x\\\"y\")) NIL) \"MIXED\" (\"BOUNDARY\" \"--\") NIL NIL) "
             "BODY[HEADER.FIELDS (DATE FROM)] " + lit("Date: x\r\n\r\n") + " BODY[TEXT]<0> " + lit("text")
             + " BODY[]<0> " + lit("body") + ")\r\n" + DONE, tag=3, seed=3, buffer=3)
fetch_reader("unknown_literals", "* XLIST (\\Noselect) \"/\" " + lit("1 OK fake\r\n") + " more "
             + lit("* 9 FETCH (UID 9 BODY[] {1}\r\nx)\r\n") + "\r\n* 7 XNUM (a b) {3+}\r\nabc\r\n"
             "* 8 FETCH (UID 7 BODY[] " + lit("real") + ")\r\n" + DONE, seed=4, buffer=4)
fetch_reader("text_with_braces", "* OK [ALERT] Maintenance at 22:00 {5}\r\n* NO warn {3}\r\n* BYE soon {1}\r\n"
             "* 1 FETCH (UID 1 BODY[] {2}\r\nhi)\r\n$TAG OK done {4}\r\n* 6 EXISTS\r\n", seed=5)
fetch_reader("tagged_no", "* 1 FETCH (UID 1 BODY[]<0> " + lit("partial") + ")\r\n"
             "$TAG NO [SERVERBUG] Internal error occurred. Refer to server log for more information. "
             "[2024-01-01 10:00:00] (0.001 + 0.000 secs).\r\n", tag=1)
fetch_reader("tagged_bad", "$TAG BAD Error in IMAP command UID FETCH: Invalid arguments.\r\n", tag=2)
fetch_reader("lowercase", "* 3 fetch (uid 7 body[]<0> " + lit("mail") + ")\r\n* 4 exists\r\n$TAG ok [expungeissued] x\r\n", tag=3)
fetch_reader("quoted_body", "* 1 FETCH (UID 7 BODY[]<0> \"a \\\"q\\\" \\\\ {3}\")\r\n" + DONE, max_body=20)
fetch_reader("lf_only", "* 5 EXISTS\n* 3 FETCH (UID 7 BODY[] {4}\nab\r\n)\n* XFOO {2}\nzz\n1 OK done\nrest")
fetch_reader("max_body_exact", "* 1 FETCH (UID 7 BODY[]<0> " + lit("12345") + ")\r\n" + DONE, max_body=5)
fetch_reader("max_body_over", "* 1 FETCH (UID 7 BODY[]<0> " + lit("123456") + ")\r\n" + DONE, max_body=5)
fetch_reader("long_line", "* OK " + "x" * 40 + "\r\n" + DONE, max_line=32, seed=6)
fetch_reader("tag_prefix", "12 OK other\r\n1 OK done\r\n", tag=0)
fetch_reader("continuation", "+ go ahead\r\n1 OK done\r\n")
fetch_reader("eof_in_literal", "* 1 FETCH (UID 7 BODY[]<0> {100}\r\nonly a part", max_body=0xF8)
fetch_reader("fake_tagged_in_body", "* 1 FETCH (UID 7 BODY[] " + lit("1 OK fake\r\n* 2 FETCH (UID 8 BODY[] {1}\r\n") +
             ")\r\n1 OK real\r\n2 OK next\r\n", max_body=0xF1, seed=7, buffer=7)
fetch_reader("zero_literal", "* 1 FETCH (UID 7 BODY[]<500> {0}\r\n)\r\n" + DONE, max_body=0)

print("seeds written to", OUT)
