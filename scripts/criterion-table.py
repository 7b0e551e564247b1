#!/usr/bin/env python3
"""Turns Criterion's saved estimates (target/criterion) into a markdown table.

Usage: scripts/criterion-table.py [CRITERION_DIR]  -> prints the table on stdout.
Figures are read from each benchmark's new/estimates.json and new/benchmark.json; nothing is typed
by hand.
"""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
rows = []
for dirpath, dirnames, filenames in os.walk(root):
    if os.path.basename(dirpath) != "new" or "estimates.json" not in filenames:
        continue
    with open(os.path.join(dirpath, "benchmark.json")) as f:
        bench = json.load(f)
    with open(os.path.join(dirpath, "estimates.json")) as f:
        est = json.load(f)
    ns = est["median"]["point_estimate"]
    thr = bench.get("throughput") or {}
    if "Bytes" in thr:
        rate = f"{thr['Bytes'] / ns:.2f} GB/s"
    elif "Elements" in thr:
        rate = f"{thr['Elements'] / ns * 1e3:.1f} M/s"
    else:
        rate = ""
    rows.append((bench["full_id"], ns, rate))

rows.sort()
print("| benchmark | median time | throughput |")
print("|---|---:|---:|")
for name, ns, rate in rows:
    t = f"{ns:.1f} ns" if ns < 1e4 else f"{ns / 1e3:.2f} µs"
    print(f"| `{name}` | {t} | {rate} |")
