#!/usr/bin/env python3
"""Checks the documentation a newcomer reads: README.md is the front door (at
most 300 lines), and every relative link of README.md and docs/**/*.md
resolves, to a file or directory of the repository and, with `#anchor`, to a
heading of that Markdown file (anchors made as GitHub makes them: lower case,
punctuation dropped, spaces to `-`, `-1`, `-2` … for repeats).

  python3 scripts/check-docs.py              # exit 1 naming each broken link
  python3 scripts/check-docs.py --self-test  # the slug and link parsers against their table

Links inside code (fenced blocks, `inline code`) are not links; `http(s)://`
and `mailto:` ones are not checked (no network here).
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
README_MAX_LINES = 300

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def slug(heading):
    """The anchor GitHub gives a heading's text (before repeats are numbered)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def strip_code(line):
    """The line without its `inline code` spans."""
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", line)


def prose_lines(text):
    """(line number, line) of what is not inside a fenced code block."""
    fence = None
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.lstrip()
        marker = re.match(r"(```+|~~~+)", stripped)
        if marker:
            if fence is None:
                fence = marker.group(1)[0] * 3
            elif stripped.startswith(fence):
                fence = None
            continue
        if fence is None:
            yield number, line


def anchors(text):
    """Every anchor of a Markdown text's headings, repeats numbered."""
    seen = {}
    found = set()
    for _, line in prose_lines(text):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(text):
    """(line number, target) of each link outside code."""
    for number, line in prose_lines(text):
        for match in LINK.finditer(strip_code(line)):
            yield number, match.group(1)


def broken_links(path, cache):
    """What is wrong with each relative link of the Markdown file `path`."""
    problems = []
    text = path.read_text(encoding="utf-8")
    for number, target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # http:, https:, mailto:
        file_part, _, anchor = target.partition("#")
        destination = path if file_part == "" else (path.parent / file_part).resolve()
        where = f"{path.relative_to(ROOT)}:{number}: ({target})"
        if not destination.exists():
            problems.append(f"{where} names {file_part}, which does not exist")
            continue
        try:
            destination.relative_to(ROOT)
        except ValueError:
            problems.append(f"{where} leaves the repository")
            continue
        if anchor and destination.suffix == ".md":
            if destination not in cache:
                cache[destination] = anchors(destination.read_text(encoding="utf-8"))
            if anchor not in cache[destination]:
                problems.append(f"{where} names the anchor #{anchor}, which no heading of {destination.relative_to(ROOT)} makes")
    return problems


def check():
    problems = []
    readme = ROOT / "README.md"
    lines = readme.read_text(encoding="utf-8").count("\n")
    if lines > README_MAX_LINES:
        problems.append(f"README.md has {lines} lines; the front door has at most {README_MAX_LINES}: move the detail into docs/")
    cache = {}
    files = [readme] + sorted((ROOT / "docs").rglob("*.md"))
    checked = 0
    for path in files:
        problems += broken_links(path, cache)
        checked += sum(1 for _ in links(path.read_text(encoding="utf-8")))
    for problem in problems:
        print(f"[docs] {problem}", file=sys.stderr)
    if problems:
        print(f"[docs] {len(problems)} problem(s) in {len(files)} files", file=sys.stderr)
        return 1
    print(f"[docs] README.md has {lines} lines; {checked} links in {len(files)} files resolve", file=sys.stderr)
    return 0


def self_test():
    slugs = [
        ("Architecture", "architecture"),
        ("The contract: `wit/pipeline.wit`", "the-contract-witpipelinewit"),
        ("Sandbox and quotas", "sandbox-and-quotas"),
        ("query-latency: searches on a million documents (issue 22, part 5)", "query-latency-searches-on-a-million-documents-issue-22-part-5"),
        ("On the AMD EPYC (2026-12-03, commit 95e90f2)", "on-the-amd-epyc-2026-12-03-commit-95e90f2"),
        ("A [linked](x.md) heading", "a-linked-heading"),
        ("snake_case stays", "snake_case-stays"),
    ]
    failures = [f"slug({text!r}) = {slug(text)!r}, not {want!r}" for text, want in slugs if slug(text) != want]
    repeats = anchors("# A\n## A\n```\n# A\n```\n### A\n")
    if repeats != {"a", "a-1", "a-2"}:
        failures.append(f"repeated headings (one inside code) gave {sorted(repeats)}")
    text = "\n".join(
        [
            "See [one](a.md) and [two](b.md#x), ![img](c.png), `[not](code.md)`.",
            "```",
            "[not](fenced.md)",
            "```",
            "| [cell](d.md \"title\") | <https://example.org> [web](https://example.org) |",
            "[[nested] text](e.md)",
        ]
    )
    found = [target for _, target in links(text)]
    want = ["a.md", "b.md#x", "c.png", "d.md", "https://example.org", "e.md"]
    if found != want:
        failures.append(f"links found {found}, not {want}")
    for failure in failures:
        print(f"[docs] self-test: {failure}", file=sys.stderr)
    if not failures:
        print(f"[docs] self-test: {len(slugs) + 2} cases hold", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    if sys.argv[1:]:
        sys.exit(__doc__)
    sys.exit(check())
