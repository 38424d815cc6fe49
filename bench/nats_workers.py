#!/usr/bin/env python3
"""Agents and workers over NATS JetStream: throughput through one worker and through several,
and the latency a line's way through the stream adds. Driven by bench/nats_workers.sh; Python 3
standard library only (it reuses bench/run_mode.py's writer and inotify helpers).

Every phase starts a fresh nats-server (JetStream in a temporary store, monitoring on a second
port, whose /jsz tells the stream's and the consumers' state) and fresh `trapline run`
processes on temporary projects, with the shipped rules.

- Agent: one agent (`nats:` with `evaluate: false`, `start: beginning`) publishes a prepared
  access log of LINES lines; timed from its start until the stream holds every line.
- Workers: with the stream full and the agent stopped, N workers start at once; timed from the
  first acknowledged event until every partition's consumer has nothing pending or
  unacknowledged (each worker acknowledges only once the detections are written and synced).
  One line in ATTACK_EVERY carries a unique marker and fires exactly one detection: the
  workers' out.txt together must hold each exactly once.
- Latency: an agent tailing a file (`start: end`) and N workers, all running; a writer appends
  at a fixed rate (one write(2) per line) and the time from the write to the detection in a
  worker's out.txt is taken per marked line (both sides on CLOCK_MONOTONIC). The same
  measurement without NATS is bench/run_mode.sh's.
"""
import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_mode as rm  # noqa: E402

PARTITIONS = 16
STREAM = "TRAPLINE"
KEEP_LOGS = None  # --keep-logs: where the daemons' logs are copied before their projects go


class Skip(Exception):
    """--lines 0: no throughput phase."""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def nats_binary():
    cands = [os.environ.get("TRAPLINE_NATS_SERVER"), os.path.expanduser("~/.local/bin/nats-server"),
             shutil.which("nats-server")]
    for c in cands:
        if c and os.access(c, os.X_OK):
            out = subprocess.run([c, "--version"], capture_output=True, text=True).stdout.strip()
            try:
                major, minor = (int(x) for x in out.rsplit("v", 1)[1].split(".")[:2])
            except (IndexError, ValueError):
                continue
            if (major, minor) >= (2, 10):
                return c, out
    raise SystemExit("error: needs nats-server >= 2.10 (TRAPLINE_NATS_SERVER, ~/.local/bin or PATH; .ci/setup.sh installs it)")


class Nats:
    def __init__(self, binary, tmp):
        self.dir = tempfile.mkdtemp(prefix="trapline-natsbench-", dir=tmp)
        self.port, self.mport = free_port(), free_port()
        self.log = os.path.join(self.dir, "server.log")
        self.proc = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.mport),
                                      "-js", "-sd", os.path.join(self.dir, "js"), "-l", self.log],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=rm.die_with_parent)
        deadline = rm.now() + 20
        while True:
            try:
                if "Server is ready" in open(self.log).read():
                    break
            except OSError:
                pass
            if rm.now() > deadline or self.proc.poll() is not None:
                raise SystemExit("nats-server did not start")
            time.sleep(0.05)

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def jsz(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/jsz?streams=true&consumers=true", timeout=5) as r:
            doc = json.load(r)
        for acc in doc.get("account_details") or []:
            for s in acc.get("stream_detail") or []:
                if s.get("name") == STREAM:
                    return s
        return None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Node:
    """One `trapline run` on a temporary project (an agent or a worker)."""

    def __init__(self, args, nats, kind, name, log=None, start="end"):
        self.dir = tempfile.mkdtemp(prefix=f"trapline-{name}-", dir=args.tmp)
        self.out = os.path.join(self.dir, "out.txt")
        self.log = log or os.path.join(self.dir, "access.log")
        if not os.path.exists(self.log):
            open(self.log, "wb").close()
        open(self.out, "wb").close()
        nats_cfg = (f"nats:\n  url: {nats.url}\n  stream: {STREAM}\n  subject_prefix: trapline.events\n"
                    f"  partitions: {PARTITIONS}\n")
        if kind == "agent":
            src = (f"sources:\n  - name: web\n    paths: [{json.dumps(self.log)}]\n    format: combined\n"
                   f"    start: {start}\n")
            extra = f"  host: {name}\n  evaluate: false\n"
        else:
            src = "sources:\n  - name: web\n    type: nats\n    format: combined\n"
            extra = f"worker:\n  id: {name}\n"
        cfg = os.path.join(self.dir, "trapline.yml")
        with open(cfg, "w") as f:
            f.write(f"rules: [{json.dumps(args.rules)}]\ntemplates: {json.dumps(args.templates)}\nstate_dir: state\n"
                    f"timezone: UTC\n{src}actions:\n  log: {{path: out.txt, format: json, console: false}}\n"
                    f"{nats_cfg}{extra}")
        self.stderr = open(os.path.join(self.dir, "daemon.log"), "wb")
        self.proc = subprocess.Popen([args.bin, "run", "--config", cfg], cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, preexec_fn=rm.die_with_parent)
        self.t_start = rm.now()

    def alive(self):
        if self.proc.poll() is not None:
            self.stderr.flush()
            tail = open(os.path.join(self.dir, "daemon.log"), errors="replace").readlines()[-20:]
            raise SystemExit(f"trapline run ({self.dir}) exited:\n" + "".join(tail))

    def wait_checkpoint(self):
        deadline = rm.now() + 60
        while not os.path.exists(os.path.join(self.dir, "state", rm.CHECKPOINT)):
            self.alive()
            if rm.now() > deadline:
                raise SystemExit("trapline run did not write its first checkpoint within 60 s")
            time.sleep(0.02)

    def cpu_seconds(self):
        return rm.cpu_seconds(self.proc.pid)

    def hwm_kb(self):
        return rm.hwm_kb(self.proc.pid)

    def markers(self):
        """marker -> count of detections in out.txt."""
        seen = {}
        other = 0
        with open(self.out, "rb") as f:
            for line in f:
                if rm.ROLLUP in line:
                    continue
                m = rm.MARKER.search(line)
                if m:
                    k = int(m.group(1))
                    seen[k] = seen.get(k, 0) + 1
                else:
                    other += 1
        return seen, other

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        if KEEP_LOGS:
            os.makedirs(KEEP_LOGS, exist_ok=True)
            shutil.copy(os.path.join(self.dir, "daemon.log"),
                        os.path.join(KEEP_LOGS, f"{os.path.basename(self.dir)}.log"))
        shutil.rmtree(self.dir, ignore_errors=True)


def prepare_log(path, lines, attack_every, clients):
    """LINES lines, 10,000 per second of event time (one minute per 600,000), one in
    attack_every a marked attack line."""
    pool = rm.benign_pool(min(lines, 1 << 16), clients)
    t0 = int(time.time()) - lines // 10000 - 60
    markers = 0
    with open(path, "wb") as f:
        buf = []
        for i in range(lines):
            ts = rm.log_ts(t0 + i // 10000)
            if i % attack_every == attack_every - 1:
                markers += 1
                buf.append(rm.attack_line(markers, ts))
            else:
                buf.append(pool[i % len(pool)].replace(rm.TS_PLACEHOLDER, ts))
            if len(buf) >= 10000:
                f.write(b"".join(buf))
                buf = []
        f.write(b"".join(buf))
    return markers


def partition_consumers(s):
    """The partitions' durable consumers (not the short-lived ones a takeover replays with)."""
    return [c for c in s.get("consumer_detail") or [] if c.get("name", "").startswith("trapline-p")]


def drained(s, total):
    cons = partition_consumers(s)
    if len(cons) < PARTITIONS:
        return False
    return all(c.get("num_pending", 1) == 0 and c.get("num_ack_pending", 1) == 0 for c in cons) and \
        (s.get("state") or {}).get("messages", 0) >= total


def acked(s):
    return sum((c.get("ack_floor") or {}).get("consumer_seq", 0) for c in partition_consumers(s))


def throughput(args, nats_bin, workers, log, lines, markers):
    nats = Nats(nats_bin, args.tmp)
    nodes = []
    try:
        # The agent publishes the prepared log.
        agent = Node(args, nats, "agent", "agent-1", log=log, start="beginning")
        nodes.append(agent)
        t0 = agent.t_start
        while True:
            agent.alive()
            s = nats.jsz()
            if s and (s.get("state") or {}).get("messages", 0) >= lines:
                break
            if rm.now() - t0 > args.timeout:
                raise SystemExit(f"the agent published {(s or {}).get('state', {}).get('messages', 0):,} of {lines:,} lines within {args.timeout} s")
            time.sleep(0.02)
        agent_s = rm.now() - t0
        agent_cpu, agent_rss = agent.cpu_seconds(), agent.hwm_kb()
        agent.stop()
        nodes.remove(agent)
        # The workers evaluate it.
        ncpu0 = rm.cpu_seconds(nats.proc.pid)
        ws = [Node(args, nats, "worker", f"worker-{i + 1}") for i in range(workers)]
        nodes.extend(ws)
        t_start = ws[0].t_start
        t_first = None
        while True:
            for w in ws:
                w.alive()
            s = nats.jsz()
            t = rm.now()
            if t_first is None and s and acked(s) > 0:
                t_first = t
            if s and drained(s, lines):
                break
            if t - t_start > args.timeout:
                raise SystemExit(f"the workers acknowledged {acked(s or {}):,} of {lines:,} events within {args.timeout} s")
            time.sleep(0.02)
        t_end = rm.now()
        cpu = sum(w.cpu_seconds() for w in ws)
        rss = max(w.hwm_kb() for w in ws)
        ncpu = rm.cpu_seconds(nats.proc.pid) - ncpu0
        time.sleep(0.5)
        seen, other = {}, 0
        for w in ws:
            m, o = w.markers()
            other += o
            for k, v in m.items():
                seen[k] = seen.get(k, 0) + v
        missing = sum(1 for k in range(1, markers + 1) if k not in seen)
        doubled = sum(v - 1 for v in seen.values() if v > 1)
        return dict(workers=workers, agent_rate=lines / agent_s, agent_cpu=100 * agent_cpu / agent_s,
                    agent_rss=agent_rss, rate=lines / (t_end - (t_first or t_start)), wall=t_end - t_start,
                    startup=(t_first or t_start) - t_start, cpu=100 * cpu / (t_end - t_start), rss=rss,
                    nats_cpu=100 * ncpu / (t_end - t_start), missing=missing, doubled=doubled, other=other)
    finally:
        for n in nodes:
            n.stop()
        nats.stop()


def latency(args, nats_bin, workers, rate, total):
    nats = Nats(nats_bin, args.tmp)
    nodes = []
    try:
        ws = [Node(args, nats, "worker", f"worker-{i + 1}") for i in range(workers)]
        nodes.extend(ws)
        agent = Node(args, nats, "agent", "agent-1")
        nodes.append(agent)
        agent.wait_checkpoint()
        # Every partition owned, and by the fair share of each (no hand-over during the run).
        deadline = rm.now() + 60
        while True:
            for n in nodes:
                n.alive()
            s = nats.jsz()
            if s and len(partition_consumers(s)) >= PARTITIONS:
                break
            if rm.now() > deadline:
                raise SystemExit("the workers did not take every partition within 60 s")
            time.sleep(0.1)
        time.sleep(3 * 5 + 1 if workers > 1 else 1)  # a lease period (5 s) or three to settle hand-backs
        ino = rm.Inotify()
        files = {}
        for w in ws:
            ino.add(w.dir, rm.IN_MODIFY)
            files[w.dir] = [open(w.out, "rb"), b""]
        seen = {}
        dups = 0

        def read(t):
            nonlocal dups
            for fr in files.values():
                data = fr[0].read()
                if not data:
                    continue
                data = fr[1] + data
                parts = data.split(b"\n")
                fr[1] = parts.pop()
                for line in parts:
                    if rm.ROLLUP in line:
                        continue
                    m = rm.MARKER.search(line)
                    if m:
                        k = int(m.group(1))
                        if k in seen:
                            dups += 1
                        else:
                            seen[k] = t

        q = mp.Queue()
        p = mp.Process(target=rm.writer_lines, args=(agent.log, rate, total, args.attack_every_latency, 5000, q),
                       daemon=True)
        cpu0 = {n: n.cpu_seconds() for n in nodes}
        ncpu0 = rm.cpu_seconds(nats.proc.pid)
        t0 = rm.now()
        p.start()
        res = None
        while res is None:
            ino.wait(0.05)
            read(rm.now())
            try:
                res = q.get_nowait()
            except Exception:
                if not p.is_alive() and q.empty():
                    raise SystemExit("writer process died")
        p.join()
        want = set(res["times"])
        deadline = rm.now() + 20
        while not want <= set(seen) and rm.now() < deadline:
            ino.wait(0.05)
            read(rm.now())
        t1 = rm.now()
        lat = [seen[k] - ta for k, ta in res["times"].items() if k in seen]
        cpu_agent = 100 * (agent.cpu_seconds() - cpu0[agent]) / (t1 - t0)
        cpu_workers = 100 * sum(w.cpu_seconds() - cpu0[w] for w in ws) / (t1 - t0)
        cpu_nats = 100 * (rm.cpu_seconds(nats.proc.pid) - ncpu0) / (t1 - t0)
        ino.close()
        for fr in files.values():
            fr[0].close()
        return dict(workers=workers, rate=rate, lines=res["lines"], timed=len(res["times"]), lat=lat,
                    missing=len(want - set(seen)), dups=dups, cpu_agent=cpu_agent, cpu_workers=cpu_workers,
                    cpu_nats=cpu_nats)
    finally:
        for n in nodes:
            n.stop()
        nats.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--templates", required=True)
    ap.add_argument("--lines", type=int, default=300000, help="events of the throughput phase (0: skip it)")
    ap.add_argument("--workers", default="1,3", help="worker counts to measure")
    ap.add_argument("--attack-every", type=int, default=100, help="throughput phase: one marked attack line every N")
    ap.add_argument("--clients", type=int, default=50000, help="distinct client addresses of the benign lines")
    ap.add_argument("--rates", default="1000", help="latency phase: lines/s")
    ap.add_argument("--latency-lines", type=int, default=10000)
    ap.add_argument("--attack-every-latency", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--out", default=None)
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--keep-logs", default=None, help="copy each daemon's log (stderr) into this directory")
    args = ap.parse_args()
    global KEEP_LOGS
    KEEP_LOGS = args.keep_logs and os.path.abspath(args.keep_logs)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    nats_bin, nats_version = nats_binary()

    rep = []

    def say(s=""):
        print(s, flush=True)
        rep.append(s)

    say("## trapline over NATS JetStream: workers' throughput and added latency\n")
    say(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores (every process on this one "
        f"machine), load average before: {' '.join(open('/proc/loadavg').read().split()[:3])}; {nats_version}; "
        f"rules: {args.rules}; {PARTITIONS} partitions by client address\n")
    tmp = tempfile.mkdtemp(prefix="trapline-natsbench-log-", dir=args.tmp)
    try:
        if args.lines <= 0:
            raise Skip
        log = os.path.join(tmp, "access.log")
        markers = prepare_log(log, args.lines, args.attack_every, args.clients)
        say(f"### Throughput ({args.lines:,} events, {markers:,} of them marked attacks)\n")
        say("| workers | agent publishes (events/s) | agent CPU | workers evaluate (events/s) | start-up | workers' CPU (sum) | nats-server CPU | worker peak RSS | detections missing / doubled |")
        say("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in [int(x) for x in args.workers.split(",") if x]:
            x = throughput(args, nats_bin, n, log, args.lines, markers)
            say(f"| {n} | {x['agent_rate']:,.0f} | {x['agent_cpu']:.0f}% | {x['rate']:,.0f} | {x['startup']:.1f} s "
                f"| {x['cpu']:.0f}% | {x['nats_cpu']:.0f}% | {x['rss'] / 1024:.0f} MB | {x['missing']} / {x['doubled']} |")
    except Skip:
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    say("\n### Latency (line appended on the agent → detection in a worker's out.txt)\n")
    say(f"One write(2) per line, one line in {args.attack_every_latency} a marked attack (one detection each).\n")
    say("| workers | rate (lines/s) | timed | p50 | p95 | p99 | max | missing / doubled | CPU agent | workers | nats-server |")
    say("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in [int(x) for x in args.workers.split(",") if x]:
        for r in [int(x) for x in args.rates.split(",") if x]:
            x = latency(args, nats_bin, n, r, max(args.latency_lines, r * 10))
            lat = x["lat"]
            say(f"| {n} | {r:,} | {len(lat):,} | {rm.ms(rm.pct(lat, 50))} ms | {rm.ms(rm.pct(lat, 95))} ms "
                f"| {rm.ms(rm.pct(lat, 99))} ms | {rm.ms(max(lat, default=float('nan')))} ms | {x['missing']} / {x['dups']} "
                f"| {x['cpu_agent']:.0f}% | {x['cpu_workers']:.0f}% | {x['cpu_nats']:.0f}% |")
    say(f"\nLoad average after: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(rep) + "\n")


if __name__ == "__main__":
    main()
