#!/usr/bin/env python3
"""Checks that the host's top-level modules (host/src/*) import each other
only downwards, in the layer order README's architecture states:

    foundation (config, cpu_shares, failure, framed, host_lock, opened_file, query, retry)
    -> telemetry -> backends, pipelines -> capabilities -> sandbox -> invocation
    -> batch, stream -> platform -> api, experiment, fuzzing -> cli

The foundation is the crate host/foundation: Cargo already keeps it below the
rest (it cannot name a module of the host), so what is left to check here is
the order above it. The modules come from the code: the foundation's from
the `use mysimbdp_foundation::{...}` lines of host/src/lib.rs, the host's
from its `mod` lines, and each must be in exactly one layer of LAYERS_ABOVE.

A module may use a module of a lower layer, never one of its own layer or a
higher one; so there is no cycle. Every path in a module's files that
reaches another top-level module counts, comments and strings aside: in
`use` declarations (brace groups nested to any depth:
`use crate::{config::{self}, stream};`) and in code, written from the crate
(`crate::x`) or from the file's own module (`super::super::x` in
backends/embedded_bus/mod.rs is `crate::x`; inside an inline `mod tests`,
`super::` starts from the file's module).

    scripts/check-layers.py              # exit 1 with each import against the order
    scripts/check-layers.py --graph      # the imports found, module by module
    scripts/check-layers.py --self-test  # the parser against the table CASES
"""
import pathlib
import re
import sys

# The layers above the foundation, lowest first. The foundation (layer 0) is
# the crate host/foundation, which Cargo keeps below the rest (it cannot name
# the host's modules); its modules are read from the `use
# mysimbdp_foundation::{...}` lines of host/src/lib.rs, the host's modules
# from its `mod` lines, and each must be in exactly one layer.
LAYERS_ABOVE = [
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
ROOT = pathlib.Path(__file__).resolve().parent.parent / "host" / "src"
LIB_TEXT = (ROOT / "lib.rs").read_text()
FOUNDATION = sorted(
    name.strip()
    for group in re.findall(r"use\s+mysimbdp_foundation::\{([^}]*)\}", LIB_TEXT)
    for name in group.split(",")
    if name.strip()
)
DECLARED = sorted(re.findall(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([A-Za-z_][A-Za-z0-9_]*)\s*;", LIB_TEXT, re.M))
LAYERS = [FOUNDATION] + LAYERS_ABOVE
RANK = {module: rank for rank, layer in enumerate(LAYERS) for module in layer}
# Files of the crate root itself, which declare the modules.
CRATE_FILES = {"lib.rs", "main.rs"}

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
RAW_STRING = re.compile(r'r#*"')
# A `use` declaration, up to its `;` (found by `use_spans`, braces counted).
USE = re.compile(r"(?<![\w$])use\s")
# A path in code, outside `use`: `crate::x`, `$crate::x`, `super::super::x`,
# `self::super::x`.
CODE_PATH = re.compile(r"(?<![\w:$])\$?((?:(?:crate|super|self)::)+)(" + IDENT + ")")
# An inline module, `mod tests { ... }`: `super::` inside it starts one
# module deeper than the file's.
INLINE_MOD = re.compile(r"(?<![\w$])mod\s+(" + IDENT + r")\s*\{")
TOKEN = re.compile(r"\s*(::|[{}*,;]|\$?" + IDENT + ")")


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
        elif text[i] == '"' or RAW_STRING.match(text, i):
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


def module_path(relative):
    """The module path of a file under host/src: `platform.rs` is
    [platform], `backends/embedded_bus/mod.rs` [backends, embedded_bus],
    `config/profile/validate.rs` [config, profile, validate]; the crate
    files are []."""
    parts = list(pathlib.PurePosixPath(relative).parts)
    last = parts.pop()
    if not parts and last in CRATE_FILES:
        return []
    if last != "mod.rs":
        parts.append(last.removesuffix(".rs"))
    return parts


def module_of(path):
    relative = path.relative_to(ROOT)
    if len(relative.parts) == 1:
        return None if relative.name in CRATE_FILES else relative.stem
    return relative.parts[0]


def matching_brace(code, open_at):
    """The index of the `}` closing the `{` at `open_at` (or the end)."""
    depth = 0
    for i in range(open_at, len(code)):
        if code[i] == "{":
            depth += 1
        elif code[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return len(code)


def inline_modules(code):
    """(start, end, name) of every `mod name { ... }` in the code."""
    spans = []
    for match in INLINE_MOD.finditer(code):
        open_at = match.end() - 1
        spans.append((open_at, matching_brace(code, open_at), match.group(1)))
    return spans


def use_spans(code):
    """(start, end) of every `use ...;` declaration, `end` past its `;`."""
    spans, at = [], 0
    while True:
        match = USE.search(code, at)
        if not match:
            return spans
        depth, i = 0, match.end()
        while i < len(code) and not (code[i] == ";" and depth == 0):
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        spans.append((match.start(), i + 1))
        at = i + 1


def use_leaves(code, start, end):
    """The paths a `use` declaration at code[start:end] names, one per leaf
    of its tree (`use a::{b, c::{self, d}}` names a::b, a::c::self, a::c::d),
    each as its segments and their offsets. A tree it cannot read (a
    macro's `use $x;`) names nothing."""
    tokens, i = [], start + len("use")
    while i < end:
        match = TOKEN.match(code, i)
        if not match:
            return []
        tokens.append((match.group(1), match.start(1)))
        i = match.end()
    leaves = []

    def tree(at, prefix):
        """Parses one use tree from tokens[at]; returns the index after it."""
        segments = list(prefix)
        if at < len(tokens) and tokens[at][0] == "::":
            segments.append(("::", tokens[at][1]))  # `use ::name`: an extern crate.
            at += 1
        while at < len(tokens):
            token, offset = tokens[at]
            if token == "{":
                at += 1
                while at < len(tokens) and tokens[at][0] != "}":
                    at = tree(at, segments)
                    if at < len(tokens) and tokens[at][0] == ",":
                        at += 1
                return at + 1
            if token == "*":
                leaves.append(segments + [("*", offset)])
                return at + 1
            if not re.fullmatch(r"\$?" + IDENT, token) or token == "as":
                return at + 1
            segments.append((token.removeprefix("$"), offset))
            at += 1
            if at < len(tokens) and tokens[at][0] == "::":
                at += 1
                continue
            if at < len(tokens) and tokens[at][0] == "as":
                at += 2
            leaves.append(segments)
            return at
        return at

    tree(0, [])
    return leaves


def resolve(segments, within):
    """The top-level module a path written in module `within` (a module
    path) reaches, and the index of the segment that names it (0 when
    `super`s name it: `super::Consumer` in backends/kafka.rs): `crate::x::..`
    is x; `super::` and `self::` go from `within`. None for a path that
    reaches no module of the crate by itself (an extern crate, a name in
    scope, a glob of the crate root). Raises ValueError for a `super` above
    the crate root."""
    if not segments or segments[0] not in ("crate", "super", "self"):
        return None
    base, i = [], 1
    if segments[0] != "crate":
        base, i = list(within), 0
        while i < len(segments) and segments[i] in ("super", "self"):
            if segments[i] == "super":
                if not base:
                    raise ValueError("`super` goes above the crate root")
                base.pop()
            i += 1
    if base:
        return base[0], 0
    while i < len(segments) and segments[i] == "self":
        i += 1
    if i == len(segments) or segments[i] == "*":
        return None
    return segments[i], i


def blanked(code, spans):
    """The code with the spans replaced by spaces, line breaks kept."""
    out, at = [], 0
    for start, end in spans:
        out.append(code[at:start])
        out.append(re.sub(r"[^\n]", " ", code[start:end]))
        at = end
    out.append(code[at:])
    return "".join(out)


def paths_in(relative, text):
    """(used top-level module, line, path as written) for every path of a
    file at `relative` under host/src (with the text `text`) that reaches a
    top-level module of the crate; a `super` above the root is given as
    used module None."""
    code = code_of(text)
    file_module = module_path(relative)
    modules = inline_modules(code)

    def within(offset):
        return file_module + [name for start, end, name in modules if start < offset < end]

    def line(offset):
        return code.count("\n", 0, offset) + 1

    found = []

    def add(leaf):
        segments = [segment for segment, _ in leaf]
        written = "::".join(segments)
        try:
            resolved = resolve(segments, within(leaf[0][1]))
        except ValueError:
            found.append((None, line(leaf[0][1]), written))
            return
        if resolved is not None:
            used, named_by = resolved
            found.append((used, line(leaf[named_by][1]), written))

    uses = use_spans(code)
    for start, end in uses:
        for leaf in use_leaves(code, start, end):
            add(leaf)
    for match in CODE_PATH.finditer(blanked(code, uses)):
        prefix = match.group(1).split("::")[:-1]
        add([(segment, match.start()) for segment in prefix] + [(match.group(2), match.start(2))])
    return found


def imports():
    """(module, used module, file, line, path as written) for every crate
    path in host/src."""
    found = []
    for path in sorted(ROOT.rglob("*.rs")):
        module = module_of(path)
        if module is None:
            continue
        relative = path.relative_to(ROOT).as_posix()
        for used, line, written in paths_in(relative, path.read_text()):
            found.append((module, used, path, line, written))
    return found


# The self-test (`--self-test`): a file under host/src, its text, and the
# top-level modules (with their lines) its paths must be found to reach.
CASES = [
    ("platform.rs", "use crate::batch::BatchManager;", [("batch", 1)]),
    ("platform.rs", "use std::sync::Arc;\nuse anyhow::Context;", []),
    ("platform.rs", "use super::batch::BatchManager;", [("batch", 1)]),
    ("backends/embedded_bus/mod.rs", "use super::super::platform::Platform;", [("platform", 1)]),
    ("backends/embedded_bus/mod.rs", "use super::{Consumer, InRecord};", [("backends", 1), ("backends", 1)]),
    ("backends/embedded_bus/storage.rs", "use super::super::super::platform::Platform;", [("platform", 1)]),
    ("backends/embedded_bus/storage.rs", "use super::super::{query, Consumer};", [("backends", 1), ("backends", 1)]),
    ("backends/embedded_bus/storage.rs", "use self::super::super::super::api;", [("api", 1)]),
    ("batch/worker.rs", "use crate::{config::{self}, stream};", [("config", 1), ("stream", 1)]),
    ("batch/worker.rs", "use crate::{config::{self, TenantId}, telemetry::{events, logs::{LogSink}}, api as a};",
     [("config", 1), ("config", 1), ("telemetry", 1), ("telemetry", 1), ("api", 1)]),
    ("batch/worker.rs", "pub(crate) use crate::{\n    config::{\n        Name,\n    },\n    stream::{self as s},\n};",
     [("config", 2), ("stream", 5)]),
    ("batch/worker.rs", "use super::{super::platform, write_stop};", [("platform", 1), ("batch", 1)]),
    ("batch/worker.rs", "use crate::*;\nuse super::*;", [("batch", 2)]),
    ("batch/mod.rs", "pub use write_stop::WriteStop;\nmod write_stop;", []),
    ("retry.rs", "#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::Backoff;\n}", [("retry", 3), ("retry", 4)]),
    ("backends/kafka.rs", "mod tests {\n    use super::refused_as_bad;\n    use super::super::super::cli;\n}",
     [("backends", 2), ("cli", 3)]),
    ("stream/monitor.rs", "fn f() { let x = crate::telemetry::events::Foo; }", [("telemetry", 1)]),
    ("stream/monitor.rs", "fn f() {\n    super::super::config::Name::parse(s)\n}", [("config", 2)]),
    ("stream/monitor.rs", "fn f() { self::super::scaling::decide(); $crate::api::x(); }", [("stream", 1), ("api", 1)]),
    ("stream/monitor.rs", "// use crate::cli::x;\n/* super::super::api */\nlet s = \"crate::api\";\nlet r = r##\"crate::cli\"##;", []),
    ("stream/monitor.rs", "let c = '{';\nuse crate::{api, cli};", [("api", 2), ("cli", 2)]),
    ("config/profile/validate.rs", "use super::{Profile, files_glob};\nuse super::super::super::telemetry::X;",
     [("config", 1), ("config", 1), ("telemetry", 2)]),
    ("platform.rs", "use super::super::x;", [(None, 1)]),
]


def self_test():
    failures = 0
    for relative, text, expected in CASES:
        got = [(used, line) for used, line, _ in paths_in(relative, text)]
        if sorted(got, key=repr) != sorted(expected, key=repr):
            failures += 1
            print(f"[layers] self-test: {relative}: {text!r}\n  expected {expected}\n  got      {got}", file=sys.stderr)
    # And the verdict: an upward import is reported with its file and line.
    problems = problems_of([("backends", "platform", ROOT / "backends/embedded_bus/mod.rs", 3, "super::super::platform::Platform")])
    if len(problems) != 1 or "host/src/backends/embedded_bus/mod.rs:3:" not in problems[0] or "a higher layer" not in problems[0]:
        failures += 1
        print(f"[layers] self-test: an upward import was not reported as one: {problems}", file=sys.stderr)
    if failures:
        print(f"[layers] self-test: {failures} of {len(CASES) + 1} case(s) failed", file=sys.stderr)
        return 1
    print(f"[layers] self-test: {len(CASES) + 1} cases pass", file=sys.stderr)
    return 0


def problems_of(found, graph=None):
    problems = []
    for module, used, path, line, written in found:
        where = f"{path.relative_to(ROOT.parent.parent)}:{line}"
        if used is None:
            problems.append(f"{where}: `{written}` goes above the crate root")
            continue
        if used == module:
            continue
        via = "" if written.startswith(f"crate::{used}") else f" (written `{written}`)"
        if module not in RANK:
            problems.append(f"{where}: module `{module}` is in no layer of scripts/check-layers.py; add it to LAYERS")
            continue
        if used not in RANK:
            problems.append(f"{where}: `crate::{used}`{via} is in no layer of scripts/check-layers.py; add it to LAYERS")
            continue
        if graph is not None:
            graph.setdefault(module, set()).add(used)
        if RANK[used] >= RANK[module]:
            relation = "its own layer" if RANK[used] == RANK[module] else "a higher layer"
            problems.append(f"{where}: `{module}` imports `crate::{used}`{via}, {relation} (order: {order()})")
    return problems


def module_list_problems():
    """The host's modules (lib.rs) against the layers: each in exactly one."""
    problems = []
    if not FOUNDATION:
        problems.append("host/src/lib.rs re-exports no module of mysimbdp_foundation (`pub use mysimbdp_foundation::{...}`)")
    placed = [module for layer in LAYERS_ABOVE for module in layer]
    for module in DECLARED:
        if module not in placed:
            problems.append(f"host/src/lib.rs declares `mod {module}`, which is in no layer of scripts/check-layers.py; add it to LAYERS_ABOVE")
    for module in placed:
        if module not in DECLARED:
            problems.append(f"scripts/check-layers.py places `{module}`, which host/src/lib.rs does not declare; remove it from LAYERS_ABOVE")
    for module in FOUNDATION:
        if module in placed:
            problems.append(f"`{module}` is both in the foundation crate and in a layer above it")
    return problems


def main():
    if "--self-test" in sys.argv:
        return self_test()
    graph = {}
    problems = module_list_problems() + problems_of(imports(), graph)
    if "--graph" in sys.argv:
        for module in sorted(graph, key=lambda m: (RANK[m], m)):
            print(f"{module} (layer {RANK[module]}) -> {', '.join(sorted(graph[module], key=lambda m: (RANK[m], m)))}")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"[layers] {len(problems)} problem(s) with the layer order", file=sys.stderr)
        return 1
    print("[layers] every import of host/src goes down the layer order", file=sys.stderr)
    return 0


def order():
    return " -> ".join(", ".join(layer) for layer in LAYERS)


if __name__ == "__main__":
    sys.exit(main())
