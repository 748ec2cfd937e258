"""Rust source read as text, for the lint scripts beside this file
(import-cycles.py, long-fns.py): comments and literals blanked, test code
found, braces matched. Not a parser: enough for okome's own code, which
rustfmt keeps regular.
"""

import re
from pathlib import Path


def blank(text: str) -> str:
    """`text` with comments, strings and char literals replaced by spaces
    (newlines kept, so line numbers and columns stay where they were)."""
    out = []
    i, n = 0, len(text)

    def spaces(s: str) -> str:
        return re.sub(r"[^\n]", " ", s)

    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(spaces(text[i:j]))
            i = j
        elif c == "/" and nxt == "*":
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(spaces(text[i:j]))
            i = j
        elif (m := re.compile(r'b?r(#*)"').match(text, i)) and (
            i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            end = '"' + m.group(1)
            j = text.find(end, m.end())
            j = n if j < 0 else j + len(end)
            out.append(spaces(text[i:j]))
            i = j
        elif c == '"' or (c in "bc" and nxt == '"' and not _ident_before(text, i)):
            j = i + (1 if c == '"' else 2)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(spaces(text[i : j + 1]))
            i = j + 1
        elif c == "'" and (m := _CHAR.match(text, i)):
            out.append(spaces(m.group(0)))
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


# A char literal (not a lifetime): 'x', '\n', '\'', '\u{1F600}', b'x'.
_CHAR = re.compile(r"'(?:\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\.|[^\\'\n])'")


def _ident_before(text: str, i: int) -> bool:
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")


def match_brace(code: str, open_at: int) -> int:
    """The index of the `}` closing the `{` at `open_at` (in blanked code)."""
    depth = 0
    for j in range(open_at, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(code) - 1


_TEST_ATTR = re.compile(r"#\[(?:cfg\(test\)|test)\]")


def test_spans(code: str) -> list[tuple[int, int]]:
    """Spans of test-only items (`#[cfg(test)]` and `#[test]`, up to the
    end of the item they mark) in blanked code."""
    spans = []
    for m in _TEST_ATTR.finditer(code):
        brace = code.find("{", m.end())
        semi = code.find(";", m.end())
        if brace < 0 or (0 <= semi < brace):
            spans.append((m.start(), semi if semi >= 0 else len(code)))
        else:
            spans.append((m.start(), match_brace(code, brace)))
    return spans


def production(code: str) -> str:
    """Blanked code with its test-only items blanked too."""
    chars = list(code)
    for start, end in test_spans(code):
        for k in range(start, min(end + 1, len(chars))):
            if chars[k] != "\n":
                chars[k] = " "
    return "".join(chars)


def rust_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.rs") if p.is_file())


_TEST_MOD = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([A-Za-z_][A-Za-z0-9_]*)\s*;")


def test_files(root: Path) -> set[Path]:
    """Files that are test modules as a whole: declared `#[cfg(test)] mod
    name;` by their parent (`name.rs` or `name/mod.rs` in the parent's
    module folder), with every file below them."""
    found: set[Path] = set()
    for f in rust_files(root):
        home = f.parent if f.name in ("mod.rs", "lib.rs", "main.rs") else f.parent / f.stem
        for m in _TEST_MOD.finditer(blank(f.read_text())):
            for cand in (home / f"{m.group(1)}.rs", home / m.group(1) / "mod.rs"):
                if cand.is_file():
                    found.add(cand)
                    found.update(rust_files(cand.parent) if cand.name == "mod.rs" else [])
    return found


def line_of(code: str, index: int) -> int:
    """1-based line number of `index`."""
    return code.count("\n", 0, index) + 1
