"""What the harness report scripts share: reading their arguments and results, describing the
machine, and replacing their generated section of docs/benchmarks.md."""
import json
import os
import platform
import subprocess


def parse(argv):
    """`--check RESULTS` or `--write DOC --command CMD RESULTS` -> (mode, doc, command, rows)."""
    args = list(argv)
    mode = args.pop(0)
    doc = args.pop(0) if mode == "--write" else None
    command = None
    if "--command" in args:
        i = args.index("--command")
        command = args[i + 1]
        del args[i:i + 2]
    rows = [json.loads(l) for l in open(args[0]) if l.startswith("{")]
    return mode, doc, command, rows


def machine():
    """`2 vCPU <model>, Linux <release>`."""
    cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"],
                         capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} vCPU {cpu}, Linux {platform.release()}"


def write_section(doc, name, section):
    """Replaces the text between `<!-- NAME:begin` and `<!-- NAME:end -->` (or appends it)."""
    text = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n"
    begin, end = f"<!-- {name}:begin", f"<!-- {name}:end -->"
    if begin in text:
        a = text.index(begin)
        b = text.index(end) + len(end) + 1
        text = text[:a] + section + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    open(doc, "w").write(text)
