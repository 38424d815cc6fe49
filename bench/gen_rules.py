#!/usr/bin/env python3
"""Generates N synthetic rules (mixed literal and regex rules with distinctive literals) for
the rule-count scaling benchmark. Deterministic.

usage: gen_rules.py OUT_DIR N
"""
import os
import random
import sys

rng = random.Random(7)
ALPHA = "abcdefghijklmnopqrstuvwxyz"


def word(lo=6, hi=12):
    return "".join(rng.choice(ALPHA) for _ in range(rng.randint(lo, hi)))


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "generated.yml"), "w") as f:
        f.write("version: 1\nrules:\n")
        for i in range(n):
            f.write("  - id: gen.r%04d\n    title: generated %d\n    severity: low\n" % (i, i))
            kind = i % 4
            if kind == 0:
                f.write("    match: {field: uri, contains: [\"/%s\", \"%s=\"]}\n" % (word(), word()))
            elif kind == 1:
                f.write("    match: {field: path, transforms: [url_decode], contains: \"/%s/%s.php\"}\n" % (word(4, 8), word()))
            elif kind == 2:
                f.write("    match: {field: query, regex: '%s[0-9]{2,4}=[a-z]+'}\n" % word())
            else:
                f.write("    match:\n      all:\n        - {field: user_agent, contains: \"%s\"}\n"
                        "        - {field: status, equals: \"404\"}\n" % word(8, 14))
            f.write("    examples: {match: [], no_match: []}\n")


if __name__ == "__main__":
    main()
