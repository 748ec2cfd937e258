#!/usr/bin/env python3
"""Reports the functions longer than a limit (60 lines by default) in the
non-test Rust code of the given folders, longest first, and exits 1 if
there is one (0 with --report, which only lists them).

A function's length runs from the line of its `fn` to the line of its
closing brace. Test code (`#[cfg(test)]` and `#[test]` items) is left out.

    scripts/long-fns.py src core/src
    scripts/long-fns.py --max 40 --report --top 10 src
"""

import argparse
import re
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rust_source import blank, line_of, match_brace, production, rust_files, test_files  # noqa: E402

FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")


def functions(path: Path):
    """(name, first line, last line) of every function with a body."""
    code = production(blank(path.read_text()))
    for m in FN.finditer(code):
        # The body opens at the first `{` outside the signature's
        # parentheses and generics; a `;` first means no body (a trait's).
        depth, j = 0, m.end()
        while j < len(code):
            ch = code[j]
            if ch in "(<[":
                depth += 1
            elif ch in ")]" or (ch == ">" and code[j - 1] != "-"):
                depth -= 1
            elif depth <= 0 and ch in "{;":
                break
            j += 1
        if j >= len(code) or code[j] == ";":
            continue
        end = match_brace(code, j)
        yield m.group(1), line_of(code, m.start()), line_of(code, end)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--max", type=int, default=60, help="longest allowed (lines)")
    ap.add_argument("--report", action="store_true", help="list only, exit 0")
    ap.add_argument("--top", type=int, default=0, help="also list the N longest")
    a = ap.parse_args()
    found, over = [], []
    for d in a.dirs:
        tests = test_files(d)
        for f in rust_files(d):
            if f in tests:
                continue
            for name, first, last in functions(f):
                n = last - first + 1
                found.append((n, f"{f}:{first}", name))
                if n > a.max:
                    over.append((n, f"{f}:{first}", name))
    for n, at, name in sorted(over, reverse=True):
        print(f"{at}: fn {name} is {n} lines (over {a.max})")
    if a.top:
        print(f"the {a.top} longest:")
        for n, at, name in sorted(found, reverse=True)[: a.top]:
            print(f"  {n:4} {at} fn {name}")
    if over and not a.report:
        return 1
    if not over:
        print(f"no function over {a.max} lines in {', '.join(map(str, a.dirs))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
