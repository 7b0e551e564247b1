#!/usr/bin/env python3
"""Checks a kosoku/Autobahn index.json: every case must end OK, NON-STRICT or INFORMATIONAL (and
its close OK or INFORMATIONAL). Prints the counts as a markdown table row; exits 1 otherwise.

Usage: scripts/autobahn-check.py reports/autobahn-DRIVER/index.json DRIVER [--unimplemented GLOB...]
(cases matching a GLOB may also end UNIMPLEMENTED: a feature the peer does not offer, counted apart)
"""
import collections
import fnmatch
import json
import sys

path, driver = sys.argv[1], sys.argv[2]
unimplemented = sys.argv[sys.argv.index("--unimplemented") + 1:] if "--unimplemented" in sys.argv else []
with open(path) as f:
    index = json.load(f)
counts = collections.Counter()
bad = []
cases = 0
for agent, results in index.items():
    for case, r in sorted(results.items()):
        cases += 1
        counts[r["behavior"]] += 1
        if r["behavior"] == "UNIMPLEMENTED" and any(fnmatch.fnmatch(case, g) for g in unimplemented):
            continue
        if r["behavior"] not in ("OK", "NON-STRICT", "INFORMATIONAL") or r["behaviorClose"] not in ("OK", "INFORMATIONAL"):
            bad.append(f"{case}: {r['behavior']} / close {r['behaviorClose']}")
unimpl = counts["UNIMPLEMENTED"] if unimplemented else 0
print(f"| {driver} | {cases} | {counts['OK']} | {counts['NON-STRICT']} | {counts['INFORMATIONAL']} | "
      f"{cases - counts['OK'] - counts['NON-STRICT'] - counts['INFORMATIONAL'] - unimpl} |"
      + (f" {unimpl} UNIMPLEMENTED ({', '.join(unimplemented)}) |" if unimplemented else ""))
if cases != 517:
    print(f"expected 517 cases, got {cases}", file=sys.stderr)
    sys.exit(1)
if bad:
    print("cases that did not pass:\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)
print(f"autobahn {driver}: {cases - unimpl} passed, 0 failed")
