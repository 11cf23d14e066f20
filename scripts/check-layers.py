#!/usr/bin/env python3
"""Checks that the host's top-level modules (host/src/*) import each other
only downwards, in the layer order README's architecture states:

    config, failure, framed, host_lock, opened_file, retry -> telemetry -> backends, pipelines ->
    capabilities -> sandbox -> invocation -> batch, stream -> platform ->
    api, experiment, fuzzing -> cli

A module may use a module of a lower layer, never one of its own layer or a
higher one; so there is no cycle. Every `crate::<module>` path in a module's
files counts (in `use` lines and in code), comments and strings aside.

    scripts/check-layers.py          # exit 1 with each import against the order
    scripts/check-layers.py --graph  # the imports found, module by module
"""
import pathlib
import re
import sys

LAYERS = [
    ["config", "failure", "framed", "host_lock", "opened_file", "retry"],
    ["telemetry"],
    ["backends", "pipelines"],
    ["capabilities"],
    ["sandbox"],
    ["invocation"],
    ["batch", "stream"],
    ["platform"],
    ["api", "experiment", "fuzzing"],
    ["cli"],
]
RANK = {module: rank for rank, layer in enumerate(LAYERS) for module in layer}
ROOT = pathlib.Path(__file__).resolve().parent.parent / "host" / "src"
# Files of the crate root itself, which declare the modules.
CRATE_FILES = {"lib.rs", "main.rs"}

PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
# A `use crate::{a, b::c}` group names several modules at once.
GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)


def code_of(text):
    """The text without comments and string literals, line breaks kept."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif text[i] == '"' or text.startswith('r"', i) or text.startswith('r#"', i):
            if text[i] == '"':
                j = i + 1
                while j < n and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
                j += 1
            else:
                hashes = text[i + 1:text.index('"', i)]
                end = '"' + hashes
                j = text.find(end, i + 1 + len(hashes) + 1)
                j = n if j < 0 else j + len(end)
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif text[i] == "'" and i + 2 < n and (text[i + 2] == "'" or (text[i + 1] == "\\" and "'" in text[i + 2:i + 6])):
            # A character literal ('"' or '\n'), not a lifetime.
            j = text.index("'", i + 2) + 1
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def module_of(path):
    relative = path.relative_to(ROOT)
    if len(relative.parts) == 1:
        return None if relative.name in CRATE_FILES else relative.stem
    return relative.parts[0]


def imports():
    """(module, used module, file, line) for every crate path in host/src."""
    found = []
    for path in sorted(ROOT.rglob("*.rs")):
        module = module_of(path)
        if module is None:
            continue
        code = code_of(path.read_text())
        for match in GROUP.finditer(code):
            line = code.count("\n", 0, match.start()) + 1
            for item in match.group(1).split(","):
                name = item.strip().split("::")[0].strip()
                if name:
                    found.append((module, name, path, line))
        for match in PATH.finditer(code):
            line = code.count("\n", 0, match.start()) + 1
            found.append((module, match.group(1), path, line))
    return found


def main():
    problems = []
    graph = {}
    for module, used, path, line in imports():
        if used == module or used in ("self", "super"):
            continue
        where = f"{path.relative_to(ROOT.parent.parent)}:{line}"
        if module not in RANK:
            problems.append(f"{where}: module `{module}` is in no layer of scripts/check-layers.py; add it to LAYERS")
            continue
        if used not in RANK:
            problems.append(f"{where}: `crate::{used}` is in no layer of scripts/check-layers.py; add it to LAYERS")
            continue
        graph.setdefault(module, set()).add(used)
        if RANK[used] >= RANK[module]:
            relation = "its own layer" if RANK[used] == RANK[module] else "a higher layer"
            problems.append(f"{where}: `{module}` imports `crate::{used}`, {relation} (order: {order()})")
    if "--graph" in sys.argv:
        for module in sorted(graph, key=lambda m: (RANK[m], m)):
            print(f"{module} (layer {RANK[module]}) -> {', '.join(sorted(graph[module], key=lambda m: (RANK[m], m)))}")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"[layers] {len(problems)} import(s) against the layer order", file=sys.stderr)
        return 1
    print("[layers] every import of host/src goes down the layer order", file=sys.stderr)
    return 0


def order():
    return " -> ".join(", ".join(layer) for layer in LAYERS)


if __name__ == "__main__":
    sys.exit(main())
