#!/usr/bin/env python3
"""Checks that the modules of a Rust crate's source folder do not import
each other in a cycle, and exits 1 (naming the cycle) if they do.

A module is a file (`a.rs` is `a`, `cmd/mod.rs` is `cmd`, `cmd/plan.rs` is
`cmd::plan`; `lib.rs` is the crate root). Module `m` imports module `n`
when its non-test code names a path into `n` through `crate::`,
`super::` or `self::`: in a `use` (braces expanded) or inline
(`crate::stats::bump(..)`). A path is charged to the longest module it
starts with; a path to an item the crate root re-exports (`crate::Error`,
from `pub use error::Error;`) is an import of the module it comes from,
and a path to the root's own items is not an import. `mod` declarations
are not imports.

    scripts/import-cycles.py src core/src
    scripts/import-cycles.py --graph src     # print the edges too
"""

import argparse
import re
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rust_source import blank, production, rust_files  # noqa: E402

ROOT = "crate"


def module_of(root: Path, f: Path) -> str:
    parts = list(f.relative_to(root).with_suffix("").parts)
    if parts in (["lib"], ["main"]):
        return ROOT
    if parts[-1] == "mod":
        parts.pop()
    return "::".join(parts)


def expand(tree: str) -> list[str]:
    """The paths of a `use` tree: `a::{b, c::{d, e}}` -> a::b, a::c::d, ..."""
    tree = re.sub(r"\s+", "", re.sub(r"\s+as\s+\w+", "", tree))
    depth = 0
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                head, body = tree[:i], tree[i + 1 : tree.rindex("}")]
                return [head + p for p in map(str.strip, split_top(body)) for p in expand(p)]
            depth += 1
    return [tree] if tree else []


def split_top(body: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += (ch == "{") - (ch == "}")
        cur += ch
    out.append(cur)
    return [p for p in out if p.strip()]


USE = re.compile(r"\buse\s+([^;]+);")
INLINE = re.compile(r"(?<![\w:])(crate|super|self)((?:\s*::\s*[A-Za-z_]\w*)+)")


def paths(code: str) -> list[str]:
    found = []
    for m in USE.finditer(code):
        found += [p for p in expand(m.group(1)) if re.match(r"(crate|super|self)::", p)]
    rest = USE.sub(" ", code)
    found += [m.group(1) + re.sub(r"\s+", "", m.group(2)) for m in INLINE.finditer(rest)]
    return found


def reexports(root_code: str) -> dict[str, str]:
    """The crate root's `pub use module::Item;`: item -> module."""
    return {
        m.group(2): m.group(1)
        for m in re.finditer(r"\bpub\s+use\s+([a-z_][a-z0-9_]*)::([A-Za-z_][A-Za-z0-9_]*)\s*;", root_code)
    }


def resolve(
    path: str, here: str, modules: set[str], items: dict[str, str] | None = None
) -> str | None:
    segs = [s for s in path.split("::") if s and s != "*"]
    base: list[str] = [] if here == ROOT else here.split("::")
    head, rest = segs[0], segs[1:]
    if head == "crate":
        start: list[str] = []
    elif head == "self":
        start = base
    else:  # super: the parent of this module (a `mod.rs` is its folder)
        start = base[:-1]
        while rest and rest[0] == "super":
            start, rest = start[:-1], rest[1:]
    full = start + rest
    if len(full) == 1 and items and full[0] in items:
        return items[full[0]]
    for k in range(len(full), 0, -1):
        name = "::".join(full[:k])
        if name in modules:
            return name
    return None  # the root's own items


def graph(root: Path) -> dict[str, set[str]]:
    files = {module_of(root, f): f for f in rust_files(root)}
    modules = set(files) - {ROOT}
    edges: dict[str, set[str]] = {m: set() for m in files}
    items = reexports(blank(files[ROOT].read_text())) if ROOT in files else {}
    for m, f in files.items():
        code = production(blank(f.read_text()))
        for p in paths(code):
            to = resolve(p, m, modules, items)
            if to and to != m:
                edges[m].add(to)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    WHITE, GREY, BLACK = 0, 1, 2
    color = {m: WHITE for m in edges}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        color[m] = GREY
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if color.get(n, WHITE) == GREY:
                return stack[stack.index(n) :] + [n]
            if color.get(n, WHITE) == WHITE:
                if c := visit(n):
                    return c
        stack.pop()
        color[m] = BLACK
        return None

    for m in sorted(edges):
        if color[m] == WHITE and (c := visit(m)):
            return c
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--graph", action="store_true", help="print every import edge")
    a = ap.parse_args()
    status = 0
    for d in a.dirs:
        edges = graph(d)
        if a.graph:
            for m in sorted(edges):
                print(f"{d}: {m} -> {', '.join(sorted(edges[m])) or '-'}")
        cycle = find_cycle(edges)
        if cycle:
            print(f"{d}: import cycle: {' -> '.join(cycle)}")
            status = 1
        else:
            n = sum(map(len, edges.values()))
            print(f"{d}: no import cycle ({len(edges)} modules, {n} imports)")
    return status


if __name__ == "__main__":
    sys.exit(main())
