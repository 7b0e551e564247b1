#!/usr/bin/env python3
"""Turns `ringcast-bench fanout --json` result lines (stdin) into a markdown table."""
import json
import sys

rows = [json.loads(l) for l in sys.stdin if l.startswith("{")]
print("| driver | subscribers | rooms | offered msg/s | deliveries/s | p50 | p90 | p99 | p99.9 | max | lost | dup | server CPU | server RSS | client CPU |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    ms = lambda us: f"{us / 1000:.2f} ms"
    print(f"| {r['driver']} | {r['subscribers']} | {r['rooms']} | {r['rate']:.0f} | {r['deliveries_per_sec']:.0f} | "
          f"{ms(r['p50_us'])} | {ms(r['p90_us'])} | {ms(r['p99_us'])} | {ms(r['p999_us'])} | {ms(r['max_us'])} | "
          f"{r['lost']} | {r['duplicated']} | {r['server_cpu_percent']:.0f}% | {r['server_rss_bytes'] / 2**20:.1f} MiB | "
          f"{r['client_cpu_percent']:.0f}% |")
