#!/usr/bin/env python3
"""Builds the benchmark corpus: N combined-format access-log lines.

Mostly benign-looking traffic (random IPs, realistic paths, query strings, user agents and
status codes, timestamps advancing about 1 ms per line), with a share of lines (ATTACK_SHARE,
default 0.005: 1 in 200) replaced by an attack line. Attack lines come from the shared scanner-traffic logs when a corpus directory
is given (with fresh IPs and times), else from a small built-in set. Deterministic (seeded).

usage: gen_corpus.py OUT LINES [CORPUS_DIR] [ATTACK_SHARE]
"""
import datetime
import os
import random
import sys

rng = random.Random(42)

WORDS = ("home about products blog news article category item search cart checkout account "
         "login profile settings help contact faq docs api v1 v2 images static assets css js "
         "shop sale summer winter guide review compare order track payment invoice report "
         "team careers press events media gallery video download release notes").split()
EXT = ["", "", "", ".html", ".php", ".js", ".css", ".png", ".jpg", ".svg", ".woff2", ".json"]
UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.5.0",
]
STATUS = [200] * 80 + [304] * 8 + [404] * 6 + [301] * 3 + [500, 403, 206]
BUILTIN_ATTACKS = [
    '"GET /index.php?id=1+UNION+SELECT+1,2,3-- HTTP/1.1" 200 120 "-" "sqlmap/1.7.2#stable (https://sqlmap.org)"',
    '"GET /../../../../etc/passwd HTTP/1.1" 400 0 "-" "Mozilla/5.0"',
    '"GET /phpmyadmin/index.php?pma_username=root&pma_password=root HTTP/1.1" 200 277 "-" "Mozilla/5.0 (Hydra)"',
    '"GET /.env HTTP/1.1" 404 162 "-" "Mozilla/5.0 zgrab/0.x"',
    '"GET /search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E HTTP/1.1" 200 512 "-" "Mozilla/5.0"',
    '"GET /cgi-bin/ViewLog.asp HTTP/1.1" 404 0 "-" "B4ckdoor-owned-you"',
]


def load_attacks(corpus):
    if not corpus:
        return BUILTIN_ATTACKS
    d = os.path.join(corpus, "scanner-traffic")
    out = []
    if os.path.isdir(d):
        for name in sorted(os.listdir(d)):
            if name.endswith(".log"):
                with open(os.path.join(d, name), "rb") as f:
                    for line in f:
                        line = line.decode("utf-8", "replace").rstrip("\n")
                        # Keep the part after the timestamp: request, status, size, referer, UA.
                        i = line.find('] "')
                        if i > 0:
                            out.append(line[i + 2:])
    return out or BUILTIN_ATTACKS


def ip():
    return "%d.%d.%d.%d" % (rng.randint(1, 223), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))


def path():
    n = rng.randint(1, 4)
    p = "/" + "/".join(rng.choice(WORDS) for _ in range(n)) + rng.choice(EXT)
    if rng.random() < 0.3:
        p += "?" + "&".join("%s=%s" % (rng.choice(WORDS), rng.choice(WORDS) + str(rng.randint(0, 999)))
                            for _ in range(rng.randint(1, 3)))
    return p


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    attacks = load_attacks(sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None)
    share = float(sys.argv[4]) if len(sys.argv) > 4 else 0.005
    t = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
    step = datetime.timedelta(milliseconds=1)
    ips = [ip() for _ in range(5000)]
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        for i in range(n):
            ts = t.strftime("%d/%b/%Y:%H:%M:%S +0000")
            if rng.random() < share:
                f.write('%s - - [%s] %s\n' % (rng.choice(ips), ts, rng.choice(attacks)))
            else:
                ref = '"-"' if rng.random() < 0.5 else '"https://example.com%s"' % path()
                f.write('%s - - [%s] "%s %s HTTP/1.1" %d %d %s "%s"\n' % (
                    rng.choice(ips), ts, "GET" if rng.random() < 0.9 else "POST", path(),
                    rng.choice(STATUS), rng.randint(0, 50000), ref, rng.choice(UAS)))
            t += step


if __name__ == "__main__":
    main()
