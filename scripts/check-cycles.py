#!/usr/bin/env python3
"""Fails when the source files of a crate import each other in a circle.

Each crate's files are the nodes; file A has an arrow to file B when A names an item through
a path that resolves to B's module (`use crate::x::y`, `super::z`, `crate::x::f()` inline).
A module declaring its children (`mod child;`) is not an arrow: only naming something is.
Test-only files (`tests.rs`, `*_tests.rs`, and the crate's `tests/` directories) are left
out: a test module naturally uses its parent.

Written by hand rather than with cargo-modules because that tool builds rust-analyzer (many
minutes on two cores) to answer a question that `use` lines answer.

Usage: scripts/check-cycles.py [CRATE_SRC_DIR ...]   (default: every crate of the workspace)
With --graph, prints each crate's arrows too; with --self-test, checks the checker.
"""

import re
import sys
from pathlib import Path

CRATES = ["vault-core/src", "vault-server/src", "src"]
ROOT_FILES = ("lib.rs", "main.rs")

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PATH_RE = re.compile(rf"\b(crate|super|self)((?:::{IDENT})+)")
RELATIVE_RE = re.compile(rf"\b({IDENT})((?:::{IDENT})+)")


def strip_comments_and_strings(text):
    """Blanks out comments, string and char literals, keeping line structure."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            i = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""')
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]) or (c == "'" and text.startswith("'\\u{", i)):
            j = text.find("'", i + 1)
            i = j + 1
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def module_files(src):
    """Maps module paths (tuples) to files, for the non-test files of a crate."""
    mods = {}
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src)
        if rel.name == "tests.rs" or rel.name.endswith("_tests.rs"):
            continue
        if "tests" in rel.parts[:-1] or "bin" in rel.parts[:-1]:
            continue
        parts = list(rel.parts)
        if len(parts) == 1 and parts[0] in ROOT_FILES:
            mods[()] = f
            continue
        if parts[-1] == "mod.rs":
            parts = parts[:-1]
        else:
            parts[-1] = parts[-1][:-3]
        mods[tuple(parts)] = f
    return mods


def use_items(tree):
    """The (path, name) pairs a `use` tree brings in: `a::{b, c as d}` gives (a::b, b) and
    (a::c, d)."""
    tree = re.sub(r"\s*(::|\{|\}|,)\s*", r"\1", re.sub(r"\s+", " ", tree.strip()))
    for leaf in expand(tree):
        path, _, alias = leaf.partition(" as ")
        if path.endswith("::self"):
            path = path[: -len("::self")]
        yield path, alias or path.split("::")[-1]


def expand(tree):
    i = tree.find("{")
    if i < 0:
        for part in tree.split(","):
            if part:
                yield part
        return
    prefix = tree[:i]
    depth, j = 0, i
    for j in range(i, len(tree)):
        if tree[j] == "{":
            depth += 1
        elif tree[j] == "}":
            depth -= 1
            if depth == 0:
                break
    inner, rest = tree[i + 1:j], tree[j + 1:]
    items, depth, start = [], 0, 0
    for k, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:k])
            start = k + 1
    items.append(inner[start:])
    for item in items:
        if item:
            yield from expand(prefix + item)
    if rest.startswith(","):
        yield from expand(rest[1:])


def resolve(path, here, mods, reexports=None, depth=0):
    """The module a path names, as the longest module prefix, following re-exports
    (`pub use x::Item` in `m` makes `m::Item` name `x`); None for other crates."""
    segs = path.split("::")
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    elif segs[0] in ("super", "self"):
        base = list(here)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                if not base:
                    return None
                base.pop()
            segs = segs[1:]
    elif tuple(here) + (segs[0],) in mods:
        # A 2018-edition relative path: `child::item` names a child module of `here`.
        base = list(here)
    else:
        return None
    full = base + [s for s in segs if s not in ("", "*")]
    for k in range(len(full), -1, -1):
        module = tuple(full[:k])
        if module in mods:
            rest = full[k:]
            if reexports and rest and depth < 8:
                source = reexports.get(module, {}).get(rest[0])
                if source is not None:
                    followed = resolve(source, module, mods, reexports, depth + 1)
                    if followed is not None:
                        return followed
            return module
    return None


def reexports_of(mods):
    """For each module, the items it re-exports with `pub use` (any visibility): name -> path."""
    out = {}
    for here, f in mods.items():
        text = strip_comments_and_strings(f.read_text())
        items = {}
        for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
            for path, name in use_items(m.group(1)):
                items[name] = path
        out[here] = items
    return out


def inline_module_spans(text):
    """(start, end, name) of inline `mod name { ... }` blocks, to give their paths a base."""
    spans = []
    for m in re.finditer(rf"\bmod\s+({IDENT})\s*\{{", text):
        depth, j = 0, m.end() - 1
        for j in range(m.end() - 1, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    break
        spans.append((m.start(), j, m.group(1)))
    return spans


def is_test_block(text, start):
    before = text[max(0, start - 80):start]
    return "#[cfg(test)]" in before


def arrows(src):
    mods = module_files(src)
    reexports = reexports_of(mods)
    edges = {}
    for here, f in mods.items():
        text = strip_comments_and_strings(f.read_text())
        spans = inline_module_spans(text)
        # Inline test modules are test code: drop them.
        for s, e, _ in sorted(spans, reverse=True):
            if is_test_block(text, s):
                text = text[:s] + " " * (e - s + 1) + text[e + 1:]
        spans = inline_module_spans(text)
        named = set()

        def base_at(pos):
            extra = [name for s, e, name in spans if s < pos < e]
            return tuple(here) + tuple(extra)

        for m in re.finditer(r"\buse\s+([^;]+);", text):
            for path, _ in use_items(m.group(1)):
                named.add((path, base_at(m.start())))
        # Blanked, not removed, so that positions still match the inline modules' spans.
        body = re.sub(r"\buse\s+[^;]+;", lambda m: " " * len(m.group(0)), text)
        for m in PATH_RE.finditer(body):
            named.add((m.group(1) + m.group(2), base_at(m.start())))
        for m in RELATIVE_RE.finditer(body):
            if m.start() == 0 or body[m.start() - 1] not in ":":
                named.add((m.group(1) + m.group(2), base_at(m.start())))
        for p, base in named:
            target = resolve(p, base, mods, reexports)
            if target is not None and target != here:
                edges.setdefault(here, {}).setdefault(target, set()).add(p.split("::")[-1])
    return mods, edges


def circles(mods, edges):
    """Tarjan's strongly connected components of more than one file."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
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
            if len(comp) > 1:
                out.append(comp)

    for v in mods:
        if v not in index:
            visit(v)
    return out


def self_test():
    """The checker must see a circle tied through an aliased re-export, and no arrow in a
    comment or a string; else it could pass CI while seeing nothing."""
    import tempfile

    files = {
        "lib.rs": "mod a;\nmod base;\npub use a::Thing as Other;\n",
        "a/mod.rs": "mod b;\npub use b::Thing;\n",
        "a/b.rs": "pub struct Thing;\nfn f() { let _ = crate::base::Y; }\n",
        "base.rs": "use crate::Other;\npub struct Y;\n",
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        mods, edges = arrows(Path(tmp))
        found = circles(mods, edges)
        # Through the re-exports, `crate::Other` is `a/b.rs`: the circle is those two files.
        assert [sorted(mods[m].name for m in c) for c in found] == [["b.rs", "base.rs"]], found
        (Path(tmp) / "a/b.rs").write_text(
            "pub struct Thing;\n// crate::base::Y\nfn f() { let _ = \"crate::base::Y\"; }\n"
        )
        mods, edges = arrows(Path(tmp))
        assert not circles(mods, edges), "a comment or a string was read as an import"
    print("self-test: ok")


def main(argv):
    if "--self-test" in argv:
        self_test()
        return 0
    graph = "--graph" in argv
    dirs = [a for a in argv if not a.startswith("--")] or CRATES
    failed = False
    for d in dirs:
        src = Path(d)
        if not src.is_dir() or not any(src.rglob("*.rs")):
            print(f"{d}: no Rust files here; is the path right?", file=sys.stderr)
            failed = True
            continue
        mods, edges = arrows(src)
        name = lambda m: str(mods[m])
        if graph:
            for a in sorted(edges):
                for b in sorted(edges[a]):
                    print(f"{name(a)} -> {name(b)}: {', '.join(sorted(edges[a][b]))}")
        found = circles(mods, edges)
        for comp in found:
            failed = True
            members = set(comp)
            print(f"circle in {d}: {len(comp)} files")
            for a in sorted(comp, key=name):
                for b in sorted(edges.get(a, {}), key=name):
                    if b in members:
                        print(f"  {name(a)} -> {name(b)}: {', '.join(sorted(edges[a][b]))}")
        if not found:
            print(f"{d}: {len(mods)} files, no import circle")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
