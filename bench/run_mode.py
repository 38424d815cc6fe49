#!/usr/bin/env python3
"""`trapline run` benchmark: detection latency at fixed append rates, and the highest append
rate one daemon keeps up with. Driven by bench/run_mode.sh; Python 3 standard library only.

Each phase starts a fresh `trapline run` on a temporary project (one combined-format source on
a file created empty, `start: end`, JSON-lines output, console off, the given rules) and stops
it afterwards. A writer process appends benign access-log lines plus attack lines that carry
a unique marker (`GET /shell.php?m=MK<n>`: exactly one detection, web.webshell.known-name,
with the shipped rules); this process watches the output and the checkpoint file with inotify
and matches each detection to its line by the marker. Both sides time with CLOCK_MONOTONIC.

- written: the detection's record is in out.txt (write(2) returned; readable by anyone, not
  yet on disk). The daemon writes each detection with one unbuffered write.
- durable: the first checkpoint (state/tail-checkpoints.json, renamed into place) whose log
  mark covers the record. The daemon fsyncs out.txt right before writing it, so this is an
  upper bound on the time to fsync, and it is also the point after which a crash cannot lose
  or repeat the detection.
"""
import argparse
import ctypes
import ctypes.util
import json
import multiprocessing as mp
import os
import random
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

MARKER = re.compile(rb"m=MK(\d+)")
ROLLUP = b'"kind":"rollup"'
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
TS_PLACEHOLDER = b"@" * 26  # width of "02/Dec/2026:00:48:49 +0000"
WORDS = ("home about products blog news article category item search cart checkout account "
         "profile settings help contact faq docs api v1 v2 images static assets css js shop "
         "sale summer winter guide review compare order track payment invoice report team "
         "careers press events media gallery video download release notes").split()
CHECKPOINT = "tail-checkpoints.json"


def die_with_parent():
    """In the daemon's child, before exec: SIGTERM when this process dies, however it dies."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def now():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def cpu_seconds(pid):
    """A process's user + system CPU time so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hwm_kb(pid):
    """A process's peak resident set size."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def log_ts(wall=None):
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(wall)).encode()


def benign_pool(n, clients, seed=7):
    """n benign lines (timestamp placeholder) from `clients` addresses in turn, status 200: no
    per-line rule matches them, and at these rates and durations no per-client threshold is
    reached (but every line steps the per-client windows, whose keys are the engine's saved
    state)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        c = i % clients
        ip = "10.%d.%d.%d" % ((c >> 16) & 255, (c >> 8) & 255, c & 255)
        path = "/" + "/".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        if rng.random() < 0.3:
            path += "?page=%d&sort=%s" % (rng.randint(1, 50), rng.choice(WORDS))
        size = rng.randint(200, 40000)
        out.append(('%s - - [%s] "GET %s HTTP/1.1" 200 %d "-" "%s"\n'
                    % (ip, TS_PLACEHOLDER.decode(), path, size, UA)).encode())
    return out


def attack_line(n, ts):
    ip = "172.%d.%d.%d" % (16 + ((n >> 16) & 15), (n >> 8) & 255, n & 255)
    return ('%s - - [%s] "GET /shell.php?m=MK%d HTTP/1.1" 404 162 "-" "%s"\n'
            % (ip, ts.decode(), n, UA)).encode()


# ---------------------------------------------------------------- writer (a child process)

def writer_lines(path, rate, total, attack_every, clients, result):
    """One write(2) per line, paced at `rate` lines/s; every attack_every-th line is an attack
    line, timed right after its write returns."""
    pool = benign_pool(min(total, 1 << 16), clients)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    times = {}
    ts_sec, ts = None, None
    t0 = now()
    sent = 0
    marker = 0
    while sent < total:
        t = now()
        due = min(total, int((t - t0) * rate) + 1)
        while sent < due:
            sec = int(time.time())
            if sec != ts_sec:
                ts_sec, ts = sec, log_ts(sec)
            if sent % attack_every == attack_every - 1:
                marker += 1
                os.write(fd, attack_line(marker, ts))
                times[marker] = now()
            else:
                os.write(fd, pool[sent % len(pool)].replace(TS_PLACEHOLDER, ts))
            sent += 1
        nxt = t0 + sent / rate
        d = nxt - now()
        if d > 0:
            time.sleep(d)
    t1 = now()
    os.close(fd)
    result.put({"times": times, "t0": t0, "t1": t1, "lines": sent, "bytes": os.path.getsize(path)})


def writer_batches(path, rate, seconds, batch_ms, clients, result):
    """Appends in batches (one write(2) every batch_ms, of the lines due by then), each batch
    ending with one attack line timed after the write: its detection lag is the backlog."""
    pool = benign_pool(1 << 18, clients)
    n = len(pool)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    total = int(rate * seconds)
    times = {}
    t0 = now()
    sent = 0
    marker = 0
    pos = 0
    ts_sec, ts = None, None
    while sent < total:
        t = now()
        due = min(total, int((t - t0) * rate))
        k = due - sent
        if k > 0:
            sec = int(time.time())
            if sec != ts_sec:
                ts_sec, ts = sec, log_ts(sec)
            k = min(k, 20000)
            if pos + k > n:
                pos = 0
            chunk = b"".join(pool[pos:pos + k - 1]).replace(TS_PLACEHOLDER, ts)
            pos += k - 1
            marker += 1
            os.write(fd, chunk + attack_line(marker, ts))
            times[marker] = now()
            sent += k
        d = t0 + (sent + max(1, rate * batch_ms / 1000)) / rate - now()
        if d > 0:
            time.sleep(min(d, batch_ms / 1000))
    t1 = now()
    os.close(fd)
    result.put({"times": times, "t0": t0, "t1": t1, "lines": sent, "bytes": os.path.getsize(path)})


# ---------------------------------------------------------------- inotify

IN_MODIFY, IN_MOVED_TO, IN_CLOSE_WRITE, IN_CREATE = 0x2, 0x80, 0x8, 0x100
IN_NONBLOCK = 0o4000


class Inotify:
    def __init__(self):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.libc = libc
        self.fd = libc.inotify_init1(IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.wds = {}

    def add(self, path, mask):
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch " + path)
        self.wds[wd] = path

    def wait(self, timeout):
        """Names (per watch) of the events received within `timeout` seconds."""
        r, _, _ = select.select([self.fd], [], [], timeout)
        names = []
        if not r:
            return names
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return names
            i = 0
            while i < len(buf):
                wd, _mask, _cookie, ln = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16:i + 16 + ln].rstrip(b"\0").decode()
                names.append((self.wds.get(wd), name))
                i += 16 + ln

    def close(self):
        os.close(self.fd)


# ---------------------------------------------------------------- the daemon

class Daemon:
    def __init__(self, binary, rules, templates, tmp=None, http=False):
        self.dir = tempfile.mkdtemp(prefix="trapline-runbench-", dir=tmp)
        self.log = os.path.join(self.dir, "access.log")
        self.out = os.path.join(self.dir, "logs", "out.txt")
        self.state = os.path.join(self.dir, "state")
        os.makedirs(os.path.dirname(self.out))
        open(self.log, "wb").close()
        open(self.out, "wb").close()
        cfg = os.path.join(self.dir, "trapline.yml")
        with open(cfg, "w") as f:
            f.write(f"""rules: [{json.dumps(rules)}]
templates: {json.dumps(templates)}
state_dir: state
timezone: UTC
sources:
  - name: bench
    paths: [access.log]
    format: combined
    start: end
actions:
  log:
    path: logs/out.txt
    format: json
    console: false
""")
            if http:
                import socket
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                self.http_port = s.getsockname()[1]
                s.close()
                self.token = "bench-token"
                with open(os.path.join(self.dir, "token.txt"), "w") as t:
                    t.write(self.token)
                f.write(f'http:\n  listen: "127.0.0.1:{self.http_port}"\n  token_file: token.txt\n')
        self.stderr = open(os.path.join(self.dir, "daemon.log"), "wb")
        self.proc = subprocess.Popen([binary, "run", "--config", cfg], cwd=self.dir,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr, preexec_fn=die_with_parent)
        # Ready: the first checkpoint (start positions) is written before the first line.
        deadline = now() + 60
        while not os.path.exists(os.path.join(self.state, CHECKPOINT)):
            if self.proc.poll() is not None:
                raise SystemExit("trapline run exited at start-up:\n" + self.tail_log())
            if now() > deadline:
                raise SystemExit("trapline run did not write its first checkpoint within 60 s")
            time.sleep(0.02)
        time.sleep(0.3)  # the watches are in place after the first checkpoint

    def tail_log(self):
        self.stderr.flush()
        with open(os.path.join(self.dir, "daemon.log"), errors="replace") as f:
            return "".join(f.readlines()[-20:])

    def cpu_seconds(self):
        return cpu_seconds(self.proc.pid)

    def hwm_kb(self):
        return hwm_kb(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Watcher:
    """Follows out.txt (markers, record ends) and the checkpoint file (log mark, file offset)."""

    def __init__(self, d):
        self.d = d
        self.ino = Inotify()
        self.ino.add(os.path.dirname(d.out), IN_MODIFY | IN_CREATE | IN_MOVED_TO)
        self.ino.add(d.state, IN_MOVED_TO | IN_CLOSE_WRITE)
        self.f = open(d.out, "rb")
        self.pos = 0
        self.rest = b""
        self.seen = {}  # marker -> (time written seen, end offset in out.txt)
        self.dups = 0
        self.rollups = 0
        self.other = 0
        self.checkpoints = []  # (time, log mark len, read offset, log size then)

    def poll(self, timeout):
        names = self.ino.wait(timeout)
        t = now()
        if any(n == CHECKPOINT for _, n in names):
            self.read_checkpoint(t)
        self.read_out(t)

    def read_out(self, t):
        data = self.f.read()
        if not data:
            return
        data = self.rest + data
        start = self.pos - len(self.rest)
        lines = data.split(b"\n")
        self.rest = lines.pop()
        off = start
        for line in lines:
            off += len(line) + 1
            # Roll-up records (one per attacker: opened, escalated, closed) quote sample lines;
            # only detections are timed.
            if ROLLUP in line:
                self.rollups += 1
                continue
            m = MARKER.search(line)
            if not m:
                self.other += 1
                continue
            k = int(m.group(1))
            if k in self.seen:
                self.dups += 1
            else:
                self.seen[k] = (t, off)
        self.pos = start + len(data)

    def read_checkpoint(self, t):
        try:
            with open(os.path.join(self.d.state, CHECKPOINT), "rb") as f:
                doc = json.load(f)
            size = os.path.getsize(self.d.log)
        except (OSError, ValueError):
            return
        mark = doc.get("sink_mark")
        if isinstance(mark, dict):  # {"log": {"dev", "ino", "len"}, ...}
            mark = (mark.get("log") or {}).get("len", 0)
        offset = sum(f.get("offset", 0) for f in doc.get("files", []))
        self.checkpoints.append((t, mark if isinstance(mark, int) else 0, offset, size))

    def close(self):
        self.f.close()
        self.ino.close()


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))]


def durable_times(w, written):
    """For each (marker, seen, end): the first checkpoint at or after `seen` whose mark covers
    `end`."""
    cps = w.checkpoints
    out = {}
    j = 0
    for k, (t, end) in sorted(written.items(), key=lambda kv: kv[1][1]):
        while j < len(cps) and cps[j][1] < end:
            j += 1
        if j < len(cps):
            out[k] = max(cps[j][0], t)
    return out


def feed_client(port, token, stop, counts, i):
    """One client of the live feed (server-sent events): reads and discards until `stop`."""
    import socket
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(0.2)
    s.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    n = 0
    while not stop.is_set():
        try:
            b = s.recv(65536)
        except socket.timeout:
            continue
        if not b:
            break
        n += b.count(b'"key":"')  # one per detection in the events' arrays
    counts[i] = n
    s.close()


def run_phase(args, target, wargs, settle):
    import threading
    d = Daemon(args.bin, args.rules, args.templates, args.tmp, http=args.feed_clients > 0)
    w = Watcher(d)
    stop = threading.Event()
    counts = [0] * args.feed_clients
    clients = [threading.Thread(target=feed_client, args=(d.http_port, d.token, stop, counts, i), daemon=True)
               for i in range(args.feed_clients)]
    for c in clients:
        c.start()
    try:
        q = mp.Queue()
        cpu0, t_cpu0 = d.cpu_seconds(), now()
        p = mp.Process(target=target, args=(d.log,) + wargs + (q,), daemon=True)
        p.start()
        res = None
        while res is None:
            w.poll(0.05)
            try:
                res = q.get_nowait()
            except Exception:
                if not p.is_alive() and q.empty():
                    raise SystemExit("writer process died")
            if d.proc.poll() is not None:
                raise SystemExit("trapline run exited:\n" + d.tail_log())
        p.join()
        want = set(res["times"])
        # Wait until every marker is detected and durable (or the settle time passes).
        deadline = now() + settle
        while now() < deadline:
            w.poll(0.05)
            if want <= set(w.seen) and w.checkpoints and w.checkpoints[-1][1] >= max(
                    (w.seen[k][1] for k in want), default=0):
                break
        t_end = now()
        cpu = d.cpu_seconds() - cpu0
        res.update(cpu=cpu, cpu_wall=t_end - t_cpu0, hwm_kb=d.hwm_kb())
        w.poll(0)
        return res, w
    finally:
        stop.set()
        for c in clients:
            c.join(2)
        if clients:
            print(f"  live feed: {len(clients)} clients received {min(counts):,}–{max(counts):,} detections each", flush=True)
        w.close()
        d.stop()


def latency(args, rate):
    total = max(args.min_lines, int(rate * args.latency_seconds))
    res, w = run_phase(args, writer_lines, (rate, total, args.attack_every, args.clients), settle=10)
    times = res["times"]
    lat, dur, missing = [], [], 0
    durable = durable_times(w, {k: w.seen[k] for k in times if k in w.seen})
    for k, ta in times.items():
        if k not in w.seen:
            missing += 1
            continue
        lat.append(w.seen[k][0] - ta)
        if k in durable:
            dur.append(durable[k] - ta)
    # Slow lines that waited while a checkpoint was being written (the daemon reads nothing
    # while it flushes the output and saves the engine state).
    cps = [c[0] for c in w.checkpoints]
    slow = [(ta, w.seen[k][0]) for k, ta in times.items() if k in w.seen and w.seen[k][0] - ta > 0.010]
    slow_cp = sum(1 for ta, ts in slow if any(ta <= c <= ts + 0.001 for c in cps))
    cp_gaps = [b[0] - a[0] for a, b in zip(w.checkpoints, w.checkpoints[1:])]
    achieved = res["lines"] / max(res["t1"] - res["t0"], 1e-9)
    return dict(rate=rate, lines=res["lines"], achieved=achieved, samples=len(times), missing=missing,
                dups=w.dups, other=w.other, lat=lat, slow=len(slow), slow_cp=slow_cp, dur=dur, cp_gap=pct(cp_gaps, 50) if cp_gaps else float("nan"),
                cpu=100 * res["cpu"] / res["cpu_wall"], hwm_kb=res["hwm_kb"])


def sustained(args, rate):
    res, w = run_phase(args, writer_batches, (rate, args.sustain_seconds, args.batch_ms, args.clients),
                         settle=args.settle)
    times = res["times"]
    t0, t1 = res["t0"], res["t1"]
    lat = {k: w.seen[k][0] - ta for k, ta in times.items() if k in w.seen}
    missing = len(times) - len(lat)
    appended = res["lines"]
    achieved = appended / max(t1 - t0, 1e-9)
    # Lag of the lines appended in the last quarter of the run, and the drain after it.
    late = [v for k, v in lat.items() if times[k] >= t0 + 0.75 * (t1 - t0)]
    early = [v for k, v in lat.items() if t0 + 0.25 * (t1 - t0) <= times[k] < t0 + 0.5 * (t1 - t0)]
    last = max(times) if times else None
    drain = (w.seen[last][0] - times[last]) if last in w.seen else float("inf")
    # Backlog from the checkpoints: bytes appended but not yet read, in lines.
    avg_line = res["bytes"] / max(appended, 1)
    # Read rate: lines read between the first and the last checkpoint while reading (the
    # offsets in the checkpoints), over the time between them.
    busy = [(t, off) for t, _, off, _ in w.checkpoints if t >= t0]
    busy = [c for i, c in enumerate(busy) if i == 0 or c[1] != busy[i - 1][1]]
    processed = ((busy[-1][1] - busy[0][1]) / avg_line / (busy[-1][0] - busy[0][0])
                 if len(busy) >= 2 and busy[-1][0] > busy[0][0] else float("nan"))
    backlog = [(t, (size - off) / avg_line) for t, _, off, size in w.checkpoints if t0 <= t <= t1]
    keeps_up = (not missing and achieved >= 0.95 * rate and drain <= args.max_lag
                and (max(late) if late else float("inf")) <= args.max_lag)
    return dict(rate=rate, achieved=achieved, lines=appended, drain=drain, missing=missing,
                late_p99=pct(late, 99), early_p99=pct(early, 99), processed=processed,
                backlog_max=max((b for _, b in backlog), default=0), keeps_up=keeps_up,
                cp_max=max((b[0] - a[0] for a, b in zip(w.checkpoints, w.checkpoints[1:])), default=float("nan")),
                cpu=100 * res["cpu"] / res["cpu_wall"], hwm_kb=res["hwm_kb"], dups=w.dups)


def ms(x):
    return "—" if x != x else f"{x * 1000:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--templates", required=True)
    ap.add_argument("--rates", default="1000,10000", help="latency phase: lines/s")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--min-lines", type=int, default=10000, help="at least this many lines per latency rate")
    ap.add_argument("--attack-every", type=int, default=20, help="one attack line every N lines (latency phase)")
    ap.add_argument("--sustain-rates", default="50000,100000,200000,300000,400000")
    ap.add_argument("--sustain-seconds", type=float, default=12.0)
    ap.add_argument("--batch-ms", type=float, default=10.0)
    ap.add_argument("--max-lag", type=float, default=1.0, help="seconds of lag still counted as keeping up")
    ap.add_argument("--settle", type=float, default=30.0, help="sustained phase: wait this long for the backlog")
    ap.add_argument("--clients", type=int, default=50000, help="distinct client addresses of the benign lines")
    ap.add_argument("--out", default=None, help="also write the markdown here")
    ap.add_argument("--tmp", default=None, help="directory for the temporary projects")
    ap.add_argument("--feed-clients", type=int, default=0,
                    help="serve the HTTP API and keep this many clients on the live feed (/api/events)")
    args = ap.parse_args()
    # A stop (the script's trap) unwinds through the `finally`s: daemons stopped, dirs removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    rep = []
    def say(s=""):
        print(s, flush=True)
        rep.append(s)

    cores = os.cpu_count()
    load = open("/proc/loadavg").read().split()[:3]
    say(f"## trapline run: latency and sustained rate\n")
    say(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cores} cores, load average before: "
        f"{' '.join(load)}; rules: {args.rules}; benign lines from {args.clients:,} client addresses\n")

    say("### Latency (append → detection)\n")
    say(f"One write(2) per line; one line in {args.attack_every} is an attack line with a unique marker "
        "(exactly one detection each). *written*: the record is in out.txt; *durable*: the first "
        "checkpoint after the fsync that covers it (an upper bound of the fsync's end). The append time is taken "
        "when write(2) returned, so a preempted writer can see a tiny negative lag.\n")
    say("| rate (lines/s) | lines | timed | written p50 | p95 | p99 | max | > 10 ms (of which during a checkpoint) | durable p50 | durable p99 | durable max | checkpoint every | CPU | peak RSS |")
    say("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lat_rows = []
    for r in [int(x) for x in args.rates.split(",") if x]:
        x = latency(args, r)
        lat_rows.append(x)
        note = ""
        if x["missing"] or x["dups"] or x["other"]:
            note = f" (missing {x['missing']}, duplicates {x['dups']}, other detections {x['other']})"
        if x["achieved"] < 0.95 * r:
            note += f" (writer reached only {x['achieved']:,.0f} lines/s)"
        say(f"| {r:,} | {x['lines']:,} | {len(x['lat']):,}{note} | {ms(pct(x['lat'], 50))} ms | {ms(pct(x['lat'], 95))} ms "
            f"| {ms(pct(x['lat'], 99))} ms | {ms(max(x['lat'], default=float('nan')))} ms | {x['slow']} ({x['slow_cp']}) "
            f"| {ms(pct(x['dur'], 50))} ms "
            f"| {ms(pct(x['dur'], 99))} ms | {ms(max(x['dur'], default=float('nan')))} ms | {ms(x['cp_gap'])} ms "
            f"| {x['cpu']:.0f}% | {x['hwm_kb'] / 1024:.0f} MB |")

    say("\n### Sustained rate\n")
    say(f"Batches every {args.batch_ms:g} ms for {args.sustain_seconds:g} s per rate, each batch ending with a marked "
        f"attack line; *keeps up* = the writer reached ≥95% of the rate, and the lag of the lines appended in the "
        f"last quarter and after the last write stays ≤ {args.max_lag:g} s. Backlog: lines appended but not yet read, "
        "at the checkpoints; processed: lines read per second between the checkpoints. CPU: the daemon's utime+stime over the phase (100% = one core).\n")
    say("| target lines/s | appended lines/s | keeps up | lag p99, 2nd quarter | lag p99, last quarter | lag after last write | max backlog (lines) | processed lines/s | longest checkpoint gap | CPU | peak RSS |")
    say("|---:|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    best = None
    for r in [int(x) for x in args.sustain_rates.split(",") if x]:
        x = sustained(args, r)
        if x["keeps_up"]:
            best = x
        proc = "—" if x["processed"] != x["processed"] else f"{x['processed']:,.0f}"
        say(f"| {r:,} | {x['achieved']:,.0f} | {'yes' if x['keeps_up'] else 'no'} | {ms(x['early_p99'])} ms "
            f"| {ms(x['late_p99'])} ms | {ms(x['drain'])} ms | {x['backlog_max']:,.0f} | {proc} | {ms(x['cp_max'])} ms | {x['cpu']:.0f}% "
            f"| {x['hwm_kb'] / 1024:.0f} MB |")
        if not x["keeps_up"] and x["achieved"] >= 0.95 * r and x["drain"] > 5 * args.max_lag:
            say(f"\n(stopped stepping: {r:,} lines/s is well beyond what one daemon reads)\n")
            break

    say("")
    if best:
        say(f"Highest sustained rate: **{best['rate']:,} lines/s** (CPU {best['cpu']:.0f}%, peak RSS {best['hwm_kb'] / 1024:.0f} MB).")
    else:
        say("No tested rate was sustained.")
    say(f"Load average after: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(rep) + "\n")


if __name__ == "__main__":
    main()
