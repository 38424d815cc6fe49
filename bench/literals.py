#!/usr/bin/env python3
"""Prints the literal strings of the rules under a directory (contains / equals /
starts_with / ends_with / count values and named lists), one per line: the pattern file for
`rg -F -f`, i.e. what a grep-based setup would search for. Literals under `not:` and a rule's
`except:` are left out: they say what a line must not contain (one of them is `-`, the
address of a line logged without one, which occurs on every line and would make the grep
baseline trivial). Needs PyYAML."""
import pathlib
import sys

try:
    import yaml
except ImportError:
    sys.exit("bench/literals.py needs PyYAML: pip install pyyaml")

KEYS = ("contains", "equals", "starts_with", "ends_with")
out = set()


def walk(node, lists):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in KEYS:
                for item in v if isinstance(v, list) else [v]:
                    if isinstance(item, dict) and "list" in item:
                        out.update(lists.get(item["list"], []))
                    elif item is not None:
                        out.add(str(item))
            elif k == "count" and isinstance(v, dict):
                out.add(str(v.get("of", "")))
            elif k not in ("examples", "not", "except"):
                walk(v, lists)
    elif isinstance(node, list):
        for x in node:
            walk(x, lists)


docs = [yaml.safe_load(p.read_text()) or {} for p in sorted(pathlib.Path(sys.argv[1]).rglob("*.y*ml"))]
lists = {}
for d in docs:
    lists.update(d.get("lists") or {})
for d in docs:
    walk(d.get("rules") or [], lists)
for s in sorted(x for x in out if x):
    print(s)
