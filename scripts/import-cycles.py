#!/usr/bin/env python3
"""Lists the import circles between the files of a crate's `src/` (issue 20: "no module imports
form a circle of more than three files").

A file depends on another when it names an item of it: `crate::a::b` paths (in `use` lines or
inline), `super::x` and `self::x` resolved from the file's module path. Children's use of their
own parent module's items counts like any other. The strongly connected components of that
graph are the circles; the script prints every component of more than one file, largest first,
and exits 1 when one has more than --max files (default: report only).

Usage: scripts/import-cycles.py [--max N] [CRATE_SRC]   (default: gateway/src)
"""
import os
import re
import sys

args = sys.argv[1:]
limit = None
if args[:1] == ["--max"]:
    limit = int(args[1])
    args = args[2:]
root = args[0] if args else "gateway/src"

# Module path (tuple) -> file.
modules = {}
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".rs"):
            continue
        path = os.path.join(dirpath, f)
        rel = os.path.relpath(path, root)[:-3].split(os.sep)
        if rel[-1] in ("mod", "lib", "main"):
            rel = rel[:-1]
        # Unit-test files (`foo/tests.rs`) belong to their parent's circle anyway: skip them.
        if rel and rel[-1] == "tests":
            continue
        modules[tuple(rel)] = path


def resolve(parts):
    """The longest module prefix of a path that is a file."""
    for n in range(len(parts), -1, -1):
        if tuple(parts[:n]) in modules:
            return tuple(parts[:n])
    return None


PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*?)\};", re.S)

edges = {m: set() for m in modules}
for mod, path in modules.items():
    text = open(path).read()
    # Drop `#[cfg(test)] mod tests { ... }` blocks written inline (to the end of the file).
    cut = re.search(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)
    if cut:
        text = text[: cut.start()]
    text = re.sub(r"//[^\n]*", "", text)

    def base(kind):
        if kind == "crate":
            return []
        parent = list(mod)
        # A file `a/b.rs` (module a::b): `super` is a; for `a/mod.rs` (module a) it is a's parent.
        if kind == "super":
            return parent[:-1]
        return parent

    targets = []
    for m in GROUP.finditer(text):
        prefix = base(m.group(1)) + [p for p in m.group(2).split("::") if p]
        for item in re.split(r",", m.group(3)):
            item = item.strip().split(" as ")[0].strip()
            if not item or item == "self":
                targets.append(prefix)
                continue
            targets.append(prefix + [p for p in re.split(r"::|\{", item) if p.strip()][:3])
    for m in PATH.finditer(text):
        targets.append(base(m.group(1)) + [p for p in m.group(2).split("::") if p])
    # Relative paths to a child module (`use home::Pending;`, `home::f()` in `shard/mod.rs`).
    own = list(mod) if path.endswith(("mod.rs", "lib.rs", "main.rs")) else None
    if own is not None:
        for child in [k[-1] for k in modules if len(k) == len(own) + 1 and list(k[:-1]) == own]:
            if re.search(r"(?<![:\w])" + child + r"::", text):
                targets.append(own + [child])
    for t in targets:
        dep = resolve(t)
        if dep is not None and dep != mod and dep != ():
            edges[mod].add(dep)

# Tarjan's strongly connected components.
index, low, on, stack, comps = {}, {}, set(), [], []
counter = [0]


def strong(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        comps.append(comp)


sys.setrecursionlimit(10000)
for v in modules:
    if v not in index:
        strong(v)

circles = sorted((c for c in comps if len(c) > 1), key=len, reverse=True)
for c in circles:
    print(f"{len(c)} files: " + ", ".join(sorted(modules[m][len(root) + 1:] for m in c)))
if not circles:
    print("no import circles")
if limit is not None and circles and len(circles[0]) > limit:
    print(f"FAILED: a circle of {len(circles[0])} files (at most {limit})")
    sys.exit(1)
