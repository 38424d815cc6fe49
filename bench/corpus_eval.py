#!/usr/bin/env python3
"""Measure the shipped rule packs against the labeled corpus in ../shared/corpus.

Usage: python3 bench/corpus_eval.py [CORPUS_DIR] [--bin PATH] [--rules DIR] [--md PATH]

Python 3.11 standard library only. Runs the release binary
(`target/release/trapline scan --json --rules rules --format FMT FILE`) over:

- fail2ban filter test logs (`# failJSON:` match true/false annotations), access-log and
  sshd lines;
- CrowdSec hub scenario tests (attack folders vs. folders expecting no alert);
- OWASP CRS regression tests whose payload sits in the URI / User-Agent / Referer, rendered
  as combined-format lines (body-only tests cannot appear in an access log and are skipped);
- PayloadsAllTheThings lists, each payload URL-encoded into `GET /index.php?q=...`;
- real scanner traffic (sqlmap, dirb, hydra, whatweb);
- a synthetic benign set generated here (browsing, assets, search terms with quotes, bots).

Per-line figures use a copy of the rules with `suppress:` removed (so every matching line is
reported) and count only rules without a threshold; "detected" figures for whole files use
the rules as shipped (thresholds and suppression included). Nothing from the corpus is
written into the repository; the temporary files live in a temp directory.

Exits 0 with a message when the corpus is absent.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLASSES = ["sqli", "xss", "traversal", "lfi", "rfi", "cmdi", "webshell", "sensitive-file",
           "admin-probe", "wordpress", "exploit", "scanner", "bruteforce", "recon"]
SEV_ORDER = ["info", "low", "medium", "high", "critical"]
ACCESS_RE = re.compile(r'^(?:\S+ )?\S+ \S+ \S+ \[[^\]]+\] "')


# ----------------------------------------------------------------------------- rules metadata
def rule_meta(rules_dir: Path) -> dict[str, dict]:
    """id -> {classes, severity, threshold} read from the YAML text (flow-style tags)."""
    meta: dict[str, dict] = {}
    cur = None
    for f in sorted(rules_dir.glob("*.yml")):
        for line in f.read_text().splitlines():
            m = re.match(r"^\s*- id:\s*(\S+)", line)
            if m:
                cur = m.group(1)
                meta[cur] = {"classes": set(), "severity": "info", "threshold": False, "file": f.name}
                continue
            if cur is None:
                continue
            m = re.match(r"^\s+tags:\s*\[(.*)\]", line)
            if m:
                tags = {t.strip() for t in m.group(1).split(",")}
                meta[cur]["classes"] = {t for t in tags if t in CLASSES}
            m = re.match(r"^\s+severity:\s*(\w+)", line)
            if m:
                meta[cur]["severity"] = m.group(1)
            if re.match(r"^\s+threshold:", line):
                meta[cur]["threshold"] = True
    return meta


def unsuppressed_copy(rules_dir: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in rules_dir.glob("*.yml"):
        text = "\n".join(l for l in f.read_text().splitlines() if not re.match(r"^\s+suppress:\s*\{.*\}\s*$", l))
        (dest / f.name).write_text(text + "\n")


class Scanner:
    def __init__(self, binary: Path, rules: Path, per_line_rules: Path, meta: dict, tmp: Path):
        self.binary, self.rules, self.per_line_rules, self.meta, self.tmp = binary, rules, per_line_rules, meta, tmp
        self.n = 0

    def run(self, lines: list[str], fmt: str, per_line: bool = True) -> dict[int, set[str]]:
        """Returns {line_index (0-based): {rule ids}}. per_line: unsuppressed rules, no thresholds."""
        self.n += 1
        path = self.tmp / f"in{self.n}.log"
        path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
        return self.run_file(path, fmt, per_line)

    def run_file(self, path: Path, fmt: str, per_line: bool = True) -> dict[int, set[str]]:
        rules = self.per_line_rules if per_line else self.rules
        out = subprocess.run([str(self.binary), "scan", "--json", "--rules", str(rules),
                              "--format", fmt, str(path)], capture_output=True)
        if out.returncode not in (0, 1):
            sys.exit(f"trapline failed: {out.stderr.decode(errors='replace')}")
        hits: dict[int, set[str]] = collections.defaultdict(set)
        for raw in out.stdout.decode("utf-8", "replace").splitlines():
            if not raw.startswith("{"):
                continue
            d = json.loads(raw)
            # A detection stands for its rule and for the rules of its class merged into it.
            for rid in [d["rule"]["id"], *d.get("also", [])]:
                if per_line and self.meta.get(rid, {}).get("threshold"):
                    continue
                hits[d["source"]["line_number"] - 1].add(rid)
        return hits

    def classes(self, ids: set[str]) -> set[str]:
        c = set()
        for i in ids:
            c |= self.meta.get(i, {}).get("classes", set())
        return c

    def max_sev(self, ids: set[str]) -> str:
        return max((self.meta.get(i, {}).get("severity", "info") for i in ids), key=SEV_ORDER.index, default="info")


def pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:5.1f}%" if b else "   n/a"


# ----------------------------------------------------------------------------- fail2ban
def eval_fail2ban(root: Path, sc: Scanner, report: list):
    d = root / "fail2ban-logs"
    if not d.is_dir():
        return
    rows = []
    tot = collections.Counter()
    for f in sorted(p for p in d.rglob("*") if p.is_file() and p.name not in ("README.md",)):
        text = f.read_text(errors="surrogateescape").splitlines()
        items = []  # (label, line, kind)
        for i, l in enumerate(text):
            m = re.match(r"^#\s*failJSON:\s*(\{.*\})\s*$", l)
            if not m or i + 1 >= len(text):
                continue
            try:
                label = json.loads(m.group(1)).get("match")
            except json.JSONDecodeError:
                continue
            nxt = text[i + 1]
            if ACCESS_RE.match(nxt):
                kind = "access"
            elif re.search(r"\bsshd(?:-session)?(?:\[\d+\])?:", nxt) or "sshd " in nxt[:80]:
                kind = "sshd"
            else:
                continue
            items.append((bool(label), nxt, kind))
        if not items:
            continue
        for kind, fmt in (("access", "combined"), ("sshd", "syslog")):
            sub = [(lab, l) for lab, l, k in items if k == kind]
            if not sub:
                continue
            hits = sc.run([l for _, l in sub], fmt)
            tp = sum(1 for i, (lab, _) in enumerate(sub) if lab and hits.get(i))
            pos = sum(1 for lab, _ in sub if lab)
            fp = sum(1 for i, (lab, _) in enumerate(sub) if not lab and hits.get(i))
            fp_med = sum(1 for i, (lab, _) in enumerate(sub) if not lab and hits.get(i) and SEV_ORDER.index(sc.max_sev(hits[i])) >= 2)
            neg = sum(1 for lab, _ in sub if not lab)
            fp_rules = collections.Counter(r for i, (lab, _) in enumerate(sub) if not lab for r in hits.get(i, ()))
            rows.append((f"{f.relative_to(d)} ({kind})", pos, tp, neg, fp, fp_med, dict(fp_rules)))
            tot[kind + "_pos"] += pos; tot[kind + "_tp"] += tp; tot[kind + "_neg"] += neg; tot[kind + "_fp"] += fp; tot[kind + "_fpm"] += fp_med
    report.append(("fail2ban", rows, tot))


# ----------------------------------------------------------------------------- crowdsec
def eval_crowdsec(root: Path, sc: Scanner, report: list):
    d = root / "crowdsec-hub-tests"
    if not d.is_dir():
        return
    expected = {}
    tsv = d / "EXPECTED_ALERT_COUNTS.tsv"
    if tsv.exists():
        for l in tsv.read_text().splitlines()[1:]:
            a, _, b = l.partition("\t")
            expected[a] = int(b) if b.strip().isdigit() else None
    rows = []
    for folder in sorted(p for p in d.iterdir() if p.is_dir()):
        cfg = (folder / "config.yaml").read_text() if (folder / "config.yaml").exists() else ""
        lf = re.search(r"^log_file:\s*(\S+)", cfg, re.M)
        lt = re.search(r"^log_type:\s*(\S+)", cfg, re.M)
        if not lf or not lt:
            continue
        fmt = {"nginx": "combined", "apache2": "combined", "syslog": "syslog"}.get(lt.group(1))
        log = folder / lf.group(1)
        if not fmt or not log.exists():
            continue
        lines = [l for l in log.read_text(errors="surrogateescape").splitlines() if l.strip()]
        if fmt == "combined":
            lines = [l for l in lines if ACCESS_RE.match(l)]
        if not lines:
            continue
        benign = folder.name.endswith("-whitelist") or folder.name == "sshd-logs-fp" or expected.get(folder.name) == 0
        per = sc.run(lines, fmt)
        full = sc.run(lines, fmt, per_line=False)
        flagged = sum(1 for i in range(len(lines)) if per.get(i))
        fired = sorted({r for s in full.values() for r in s})
        rows.append((folder.name, "benign" if benign else "attack", len(lines), flagged, fired))
    report.append(("crowdsec", rows, None))


# ----------------------------------------------------------------------------- CRS
CRS_CLASS = {"913": {"scanner"}, "930": {"traversal", "lfi"}, "931": {"rfi"}, "932": {"cmdi", "exploit"},
             "933": {"cmdi", "webshell", "exploit"}, "934": None, "941": {"xss"}, "942": {"sqli"},
             "944": {"exploit", "cmdi"}}
STD_HEADERS = {"host", "user-agent", "accept", "accept-encoding", "accept-language", "accept-charset", "connection",
               "content-type", "content-length", "proxy-connection", "keep-alive", "cache-control", "te"}


def yaml_scalar(v: str) -> str:
    v = v.strip()
    if v.startswith('"') and v.endswith('"') and len(v) >= 2:
        s, out, i = v[1:-1], [], 0
        while i < len(s):
            c = s[i]
            if c == "\\" and i + 1 < len(s):
                n = s[i + 1]
                simple = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", '"': '"', "\\": "\\", "/": "/", " ": " ", "a": "\a", "e": "\x1b"}
                if n in simple:
                    out.append(simple[n]); i += 2; continue
                if n == "x" and re.match(r"[0-9a-fA-F]{2}", s[i + 2:i + 4]):
                    out.append(chr(int(s[i + 2:i + 4], 16))); i += 4; continue
                if n == "u" and re.match(r"[0-9a-fA-F]{4}", s[i + 2:i + 6]):
                    out.append(chr(int(s[i + 2:i + 6], 16))); i += 6; continue
            out.append(c); i += 1
        return "".join(out)
    if v.startswith("'") and v.endswith("'") and len(v) >= 2:
        return v[1:-1].replace("''", "'")
    return v


def crs_tests(path: Path):
    """Yields dicts: uri, method, version, ua, referer, has_data, other_headers, expect (bool|None)."""
    cur = None
    in_headers = False
    hdr_indent = 0
    for line in path.read_text(errors="surrogateescape").splitlines():
        if re.match(r"^\s*- test_id:", line) or re.match(r"^\s*- input:", line):
            if cur:
                yield cur
            cur = {"uri": None, "method": "GET", "version": "HTTP/1.1", "ua": None, "referer": None,
                   "has_data": False, "other_headers": False, "expect": None,
                   "test": path.stem + ":" + line.split(":", 1)[1].strip()}
            in_headers = False
            if "- input:" not in line:
                continue
        if cur is None:
            continue
        indent = len(line) - len(line.lstrip())
        s = line.strip()
        if s.startswith("headers:"):
            in_headers, hdr_indent = True, indent
            continue
        if in_headers:
            if indent > hdr_indent and ":" in s:
                k, _, v = s.partition(":")
                k = yaml_scalar(k).lower()
                if k == "user-agent":
                    cur["ua"] = yaml_scalar(v)
                elif k == "referer":
                    cur["referer"] = yaml_scalar(v)
                elif k not in STD_HEADERS:
                    cur["other_headers"] = True
                continue
            in_headers = False
        for key in ("uri", "method", "version"):
            if s.startswith(key + ":"):
                cur[key] = yaml_scalar(s.split(":", 1)[1])
        if s.startswith("data:") or s.startswith("encoded_request:") or s.startswith("raw_request:"):
            cur["has_data"] = True
        if s.startswith("expect_ids:"):
            cur["expect"] = True
        if s.startswith("no_expect_ids:"):
            cur["expect"] = False if cur["expect"] is None else cur["expect"]
    if cur:
        yield cur


def crs_line(t: dict) -> str:
    def clf(s: str) -> str:  # the way Apache/nginx escape a logged field
        return "".join(c if 0x20 <= ord(c) < 0x7f and c not in '"\\' else "\\x%02x" % (ord(c) & 0xff) for c in s)
    uri = t["uri"] or "/"
    uri = "".join(c if 0x21 <= ord(c) < 0x7f else urllib.parse.quote(c.encode("utf-8", "surrogateescape")) for c in uri)
    return '192.0.2.77 - - [10/Oct/2024:13:55:36 +0000] "%s %s %s" 200 512 "%s" "%s"' % (
        clf(t["method"]), clf(uri), clf(t["version"] or "HTTP/1.1"), clf(t["referer"] or "-"), clf(t["ua"] or "-"))


def eval_crs(root: Path, sc: Scanner, report: list):
    d = root / "crs-regression-tests"
    if not d.is_dir():
        return
    rows = []
    for sub in sorted(p for p in d.iterdir() if p.is_dir()):
        code = sub.name.split("-")[1]
        want = CRS_CLASS.get(code)
        tests = [t for f in sorted(sub.glob("*.yaml")) for t in crs_tests(f)]
        usable = []
        skipped = 0
        for t in tests:
            default_ua = t["ua"] in (None, "OWASP CRS test agent", "OWASP ModSecurity Core Rule Set")
            in_uri = t["uri"] and ("?" in t["uri"] or re.search(r"[^A-Za-z0-9/._-]", t["uri"]) or len(t["uri"]) > 1)
            visible = (not t["has_data"] and not t["other_headers"]) or (not default_ua) or bool(t["referer"])
            if t["expect"] is None or not visible or not (in_uri or not default_ua or t["referer"]):
                skipped += 1
                continue
            usable.append(t)
        if not usable:
            rows.append((sub.name, 0, 0, 0, 0, 0, 0, skipped, []))
            continue
        hits = sc.run([crs_line(t) for t in usable], "combined")
        pos = [i for i, t in enumerate(usable) if t["expect"]]
        neg = [i for i, t in enumerate(usable) if not t["expect"]]
        any_hit = sum(1 for i in pos if hits.get(i))
        cls_hit = sum(1 for i in pos if hits.get(i) and (want is None or sc.classes(hits[i]) & want))
        neg_hit = sum(1 for i in neg if hits.get(i))
        samples = [(crs_line(usable[i]), sorted(hits[i])) for i in neg if hits.get(i)][:3]
        rows.append((sub.name, len(pos), cls_hit, any_hit, len(neg), neg_hit, len(usable), skipped, samples))
    report.append(("crs", rows, None))


# ----------------------------------------------------------------------------- payloads
PAYLOAD_CLASS = [
    ("SQL Injection/", {"sqli"}),
    ("XSS Injection/", {"xss"}),
    ("Directory Traversal/", {"traversal", "lfi"}),
    ("File Inclusion/", {"lfi", "traversal"}),
    ("Command Injection/", {"cmdi"}),
    ("Server Side Template Injection/", None),
    ("XXE Injection/", None),
    ("LDAP Injection/", None),
    ("NoSQL Injection/", None),
    ("Open Redirect/", None),
]
# Lists that are not payloads (names, headers, wordlists of words) or that target paths.
PAYLOAD_SKIP = ("0xcela_event_handlers.txt", "port_swigger_xss_cheatsheet_event_handlers.txt", "jsonp_endpoint.txt",
                "param_miner_lowercase_headers.txt", "LDAP_attributes.txt", "springboot_actuator.txt")


def eval_payloads(root: Path, sc: Scanner, report: list):
    d = root / "payloads"
    if not d.is_dir():
        return
    rows = []
    for f in sorted(p for p in d.rglob("*") if p.is_file() and p.name not in ("README.md", "LICENSE")):
        rel = str(f.relative_to(d))
        if f.name in PAYLOAD_SKIP or "Web Cache Deception" in rel or "Insecure Management" in rel:
            continue
        want = next((c for prefix, c in PAYLOAD_CLASS if rel.startswith(prefix)), "skip")
        if want == "skip":
            continue
        payloads = [l for l in f.read_bytes().split(b"\n") if l.strip() and not l.startswith(b"#")]
        payloads = [p.rstrip(b"\r") for p in payloads]
        if not payloads:
            continue
        lines = ['192.0.2.88 - - [10/Oct/2024:13:55:36 +0000] "GET /index.php?q=%s HTTP/1.1" 200 512 "-" "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"'
                 % urllib.parse.quote_plus(p, safe="") for p in payloads]
        hits = sc.run(lines, "combined")
        anyh = sum(1 for i in range(len(lines)) if hits.get(i))
        clsh = sum(1 for i in range(len(lines)) if hits.get(i) and (want is None or sc.classes(hits[i]) & want))
        rows.append((rel, "/".join(sorted(want)) if want else "(any)", len(lines), clsh, anyh))
    report.append(("payloads", rows, None))


# ----------------------------------------------------------------------------- scanner traffic
def eval_scanners(root: Path, sc: Scanner, report: list):
    d = root / "scanner-traffic"
    if not d.is_dir():
        return
    rows = []
    for f in sorted(d.glob("*.log")):
        lines = f.read_text(errors="surrogateescape").splitlines()
        per = sc.run_file(f, "combined", per_line=True)
        full = sc.run_file(f, "combined", per_line=False)
        flagged = sum(1 for i in range(len(lines)) if per.get(i))
        payload = sum(1 for i in range(len(lines)) if per.get(i) and sc.classes(per[i]) - {"scanner", "recon"})
        fired = collections.Counter(r for s in full.values() for r in s)
        rows.append((f.name, len(lines), flagged, payload, dict(fired)))
    report.append(("scanners", rows, None))


# ----------------------------------------------------------------------------- synthetic benign
def benign_lines(n: int = 6000, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    browsers = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67",
    ]
    bots = [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Mozilla/5.0 (compatible; DuckDuckBot-Https/1.1; https://duckduckgo.com/duckduckbot)",
    ]
    searches = ["o'reilly books", "rock 'n' roll", '"exact phrase" search', "men's shoes", "women's jackets size 38",
                "c++ primer", "50% off", "AT&T phone", "select a plan", "union station chicago", "drop shipping",
                "tom & jerry", "where to buy", "how to sleep better", "script writing course", "javascript tutorial",
                "order by price", "1/2 inch pipe", "café crème", "naïve bayes", "100% cotton", "#hashtag ideas",
                "rock or pop", "salt and pepper", "price < 100", "kids 5-7 years", "what is 1+1", "it's a wrap",
                "the beatles' white album", "pc & mac", "admin assistant jobs", "shell jacket", "passwd reset help",
                "etc. and so on", "union jack flag", "exec summary template", "cat toys", "ls 400 tires", "id card holder"]
    articles = ["how-to-choose-running-shoes", "2024/05/spring-sale", "recipes/lemon-tart", "news/city-council-vote",
                "guides/getting-started", "about-us", "careers/backend-engineer", "blog/why-we-moved-to-rust",
                "docs/api/v2/authentication", "support/returns-policy", "events/summer-festival-2024"]
    products = ["blue-denim-jacket", "trail-runner-3", "coffee-grinder-pro", "wool-scarf", "led-desk-lamp"]
    assets = ["/static/css/main.4f2a1c.css", "/static/js/app.91bc2e.js", "/static/js/vendor.3e1f00.js",
              "/images/logo.svg", "/images/hero-1600.webp", "/fonts/inter-var.woff2", "/favicon.ico",
              "/apple-touch-icon.png", "/images/products/thumb-%d.jpg", "/wp-content/themes/shop/style.css?ver=6.5.2",
              "/wp-includes/js/jquery/jquery.min.js?ver=3.7.1", "/static/js/chunk-%d.js"]
    refs = ["-", "https://www.google.com/", "https://example.com/", "https://www.bing.com/search?q=shop",
            "https://example.com/blog/", "https://t.co/abc123", "android-app://com.google.android.gm/"]
    out = []
    t0 = 1_717_200_000
    ips = ["203.0.113.%d" % i for i in range(1, 200)] + ["2001:db8:1::%x" % i for i in range(1, 40)]
    t = t0
    import datetime
    while len(out) < n:
        ip = rnd.choice(ips)
        is_bot = rnd.random() < 0.15
        ua = rnd.choice(bots if is_bot else browsers)
        t += rnd.randint(1, 20)
        k = rnd.random()
        if k < 0.25:
            path = "/blog/" + rnd.choice(articles) + rnd.choice(["", "?utm_source=newsletter&utm_medium=email&utm_campaign=may", "?page=2", "#comments"])
        elif k < 0.4:
            path = "/search?q=" + urllib.parse.quote_plus(rnd.choice(searches)) + rnd.choice(["", "&page=2", "&sort=price_asc", "&lang=en"])
        elif k < 0.55:
            path = "/products/" + rnd.choice(products) + rnd.choice(["", "?color=navy&size=M", "?variant=123456", "?ref=homepage"])
        elif k < 0.62:
            path = rnd.choice(["/", "/cart", "/checkout", "/account/login", "/account/orders?status=open", "/sitemap.xml",
                               "/robots.txt", "/feed/", "/contact", "/api/v1/products?limit=20&offset=40&fields=name,price",
                               "/login?next=%2Faccount%2Forders", "/wp-json/wp/v2/posts?per_page=5",
                               "/api/search?q=" + urllib.parse.quote(rnd.choice(searches)),
                               "/category/shoes?filter[brand]=acme&filter[size]=42", "/oauth/callback?code=4/0AY0e-g7abc&state=xyz",
                               "/redirect?to=https%3A%2F%2Fpartner.example.org%2Foffer", "/share?url=https://example.com/blog/about-us"])
        else:
            path = rnd.choice(assets)
            if "%d" in path:
                path = path % rnd.randint(1, 400)
        method = "GET"
        if path in ("/checkout", "/account/login") and rnd.random() < 0.3:
            method = "POST"
        status = rnd.choices([200, 304, 404, 301, 302], [70, 15, 5, 5, 5])[0]
        size = 0 if status in (304, 301, 302) else rnd.randint(200, 90_000)
        ts = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")
        out.append('%s - - [%s] "%s %s HTTP/1.1" %d %d "%s" "%s"' % (ip, ts, method, path, status, size, rnd.choice(refs), ua))
        # a page view pulls its assets in the same second
        if k < 0.55 and not is_bot:
            for a in rnd.sample(assets, 5):
                if "%d" in a:
                    a = a % rnd.randint(1, 400)
                out.append('%s - - [%s] "GET %s HTTP/1.1" %d %d "https://example.com%s" "%s"' % (
                    ip, ts, a, rnd.choice([200, 304]), rnd.randint(100, 50_000), path.split("?")[0], ua))
    return out[:n]


def eval_benign(sc: Scanner, report: list):
    lines = benign_lines()
    per = sc.run(lines, "combined")
    full = sc.run(lines, "combined", per_line=False)
    flagged = [i for i in range(len(lines)) if per.get(i)]
    med = [i for i in flagged if SEV_ORDER.index(sc.max_sev(per[i])) >= 2]
    by_rule = collections.Counter(r for i in flagged for r in per[i])
    fired = collections.Counter(r for s in full.values() for r in s)
    examples = {}
    for i in flagged:
        for r in per[i]:
            examples.setdefault(r, lines[i])
    report.append(("benign", (len(lines), len(flagged), len(med), dict(by_rule), dict(fired), examples), None))


# ----------------------------------------------------------------------------- output
def render(report: list, meta: dict) -> str:
    out = []
    p = out.append
    for name, rows, tot in report:
        if name == "fail2ban":
            p("### fail2ban filter test logs (line labels)\n")
            p("| file | match:true | flagged | match:false | flagged (any) | flagged (>= medium) |")
            p("|---|---:|---:|---:|---:|---:|")
            for fn, pos, tp, neg, fp, fpm, fpr in rows:
                p(f"| {fn} | {pos} | {tp} ({pct(tp, pos).strip()}) | {neg} | {fp} | {fpm} |")
            for kind in ("access", "sshd"):
                p(f"| **total {kind}** | {tot[kind + '_pos']} | {tot[kind + '_tp']} ({pct(tot[kind + '_tp'], tot[kind + '_pos']).strip()}) | {tot[kind + '_neg']} | {tot[kind + '_fp']} | {tot[kind + '_fpm']} |")
            fpr_all = collections.Counter()
            for r in rows:
                fpr_all.update(r[6])
            if fpr_all:
                p("\nRules firing on match:false lines: " + ", ".join(f"`{k}` x{v}" for k, v in fpr_all.most_common()))
            p("")
        elif name == "crowdsec":
            p("### CrowdSec hub tests (per folder)\n")
            p("| folder | kind | lines | lines flagged (single-line rules) | rules fired (as shipped) |")
            p("|---|---|---:|---:|---|")
            att = [r for r in rows if r[1] == "attack"]
            ben = [r for r in rows if r[1] == "benign"]
            for fn, kind, n, fl, fired in att + ben:
                p(f"| {fn} | {kind} | {n} | {fl} ({pct(fl, n).strip()}) | {', '.join(fired) if fired else '-'} |")
            det = sum(1 for r in att if r[4])
            p(f"\nAttack folders with at least one detection: **{det}/{len(att)}**. "
              f"Attack lines flagged: {sum(r[3] for r in att)}/{sum(r[2] for r in att)}. "
              f"Benign folders: {sum(r[3] for r in ben)}/{sum(r[2] for r in ben)} lines flagged, "
              f"{sum(1 for r in ben if r[4])}/{len(ben)} folders with a detection.\n")
        elif name == "crs":
            p("### OWASP CRS regression tests (payload in URI / User-Agent / Referer)\n")
            p("| rule group | must-fire tests | detected, right class | detected, any rule | must-not-fire tests | flagged | skipped (body/cookie only) |")
            p("|---|---:|---:|---:|---:|---:|---:|")
            for g, pos, cls, anyh, neg, negh, used, skipped, _ in rows:
                p(f"| {g} | {pos} | {cls} ({pct(cls, pos).strip()}) | {anyh} ({pct(anyh, pos).strip()}) | {neg} | {negh} | {skipped} |")
            p("\nSamples of flagged must-not-fire tests (CRS negatives are often still attacks aimed at another rule):\n")
            for r in rows:
                for line, ids in r[8]:
                    p(f"- {r[0].split('-')[1]}: `{line[45:200]}` -> {', '.join(ids)}")
            p("")
        elif name == "payloads":
            p("### PayloadsAllTheThings (each payload as `GET /index.php?q=<form-encoded payload>`)\n")
            p("| list | class | payloads | detected, right class | detected, any rule |")
            p("|---|---|---:|---:|---:|")
            agg = collections.defaultdict(lambda: [0, 0, 0])
            for rel, cls, n, c, a in rows:
                p(f"| {rel} | {cls} | {n} | {c} ({pct(c, n).strip()}) | {a} ({pct(a, n).strip()}) |")
                top = rel.split("/")[0]
                agg[top][0] += n; agg[top][1] += c; agg[top][2] += a
            p("\n| category | payloads | right class | any rule |\n|---|---:|---:|---:|")
            for k, (n, c, a) in agg.items():
                p(f"| {k} | {n} | {pct(c, n).strip()} | {pct(a, n).strip()} |")
            p("")
        elif name == "scanners":
            p("### Real scanner traffic\n")
            p("| file | lines | lines flagged (single-line rules) | lines with a payload-class detection | detections as shipped (rule x count) |")
            p("|---|---:|---:|---:|---|")
            for fn, n, fl, pl, fired in rows:
                p(f"| {fn} | {n} | {fl} ({pct(fl, n).strip()}) | {pl} ({pct(pl, n).strip()}) | {', '.join(f'{k} x{v}' for k, v in sorted(fired.items())) or '-'} |")
            p("")
        elif name == "benign":
            n, fl, med, by_rule, fired, examples = rows
            p("### Synthetic benign traffic\n")
            p(f"{n} lines; flagged by any single-line rule: **{fl} ({pct(fl, n).strip()})**, "
              f"by a rule of severity medium or higher: **{med} ({pct(med, n).strip()})**.\n")
            if by_rule:
                p("| rule | severity | lines | example |\n|---|---|---:|---|")
                for r, c in sorted(by_rule.items(), key=lambda x: -x[1]):
                    p(f"| {r} | {meta.get(r, {}).get('severity')} | {c} | `{examples[r][:160]}` |")
            p("\nDetections with the rules as shipped (thresholds, suppression): "
              + (", ".join(f"`{k}` x{v}" for k, v in sorted(fired.items())) or "none") + "\n")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", default=str(REPO.parent / "shared" / "corpus"))
    ap.add_argument("--bin", default=str(REPO / "target" / "release" / "trapline"))
    ap.add_argument("--rules", default=str(REPO / "rules"))
    ap.add_argument("--md", default=None, help="write the tables (markdown) here")
    a = ap.parse_args()
    root = Path(a.corpus)
    if not root.is_dir():
        print(f"corpus not found at {root}: skipping (nothing to measure)")
        return 0
    binary = Path(a.bin)
    if not binary.exists():
        print(f"{binary} missing: run `cargo build --release` first")
        return 2
    rules = Path(a.rules)
    meta = rule_meta(rules)
    tmp = Path(tempfile.mkdtemp(prefix="trapline-corpus-"))
    try:
        unsuppressed_copy(rules, tmp / "rules")
        sc = Scanner(binary, rules, tmp / "rules", meta, tmp)
        report: list = []
        eval_fail2ban(root, sc, report)
        eval_crowdsec(root, sc, report)
        eval_crs(root, sc, report)
        eval_payloads(root, sc, report)
        eval_scanners(root, sc, report)
        eval_benign(sc, report)
        md = render(report, meta)
        print(md)
        if a.md:
            Path(a.md).write_text(md + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
