#!/usr/bin/env python3
"""Prints each suite's time from the JUnit report of scripts/run-tests.py
(cargo-nextest's reads the same), the test command's stages, and a closing
line `tests: N passed, N failed`.

    scripts/test-times.py target/test-runs/all/junit.xml 'name|seconds|status'...

A suite is a module of the integration binary (`batch`, `crash`, ...) or a
crate's own tests (`mysimbdp`, `mysimbdp-guest`, ...). Its time is the sum of
its tests' times (two run at once, so the suites add up to about twice the
run's wall time); `span` is from its first test's start to its last test's
end. A stage whose status is not 0 counts as one failure. Exits 1 when
anything failed.
"""

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import datetime, timedelta


def suite_of(binary, test):
    if binary.endswith("::all"):
        return test.split("::", 1)[0]
    return binary


def parse_time(text):
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    report, stages = sys.argv[1], sys.argv[2:]
    suites = defaultdict(lambda: {"tests": 0, "failed": 0, "time": 0.0, "longest": ("", 0.0), "start": None, "end": None})
    passed = failed = 0
    failures = []
    try:
        root = ET.parse(report).getroot()
    except (OSError, ET.ParseError) as error:
        print(f"[test] no JUnit report at {report}: {error}", file=sys.stderr)
        root = None
    for case in root.iter("testcase") if root is not None else []:
        binary, name = case.get("classname", ""), case.get("name", "")
        seconds = float(case.get("time") or 0)
        suite = suites[suite_of(binary, name)]
        suite["tests"] += 1
        suite["time"] += seconds
        if seconds > suite["longest"][1]:
            suite["longest"] = (name, seconds)
        start = parse_time(case.get("timestamp"))
        if start is not None:
            end = start + timedelta(seconds=seconds)
            suite["start"] = start if suite["start"] is None else min(suite["start"], start)
            suite["end"] = end if suite["end"] is None else max(suite["end"], end)
        if case.find("failure") is not None or case.find("error") is not None:
            suite["failed"] += 1
            failed += 1
            failures.append(f"{binary} {name}")
        elif case.find("skipped") is None:
            passed += 1

    out = sys.stderr
    print("\n[test] each suite's time (seconds; the sum of its tests' times, and from its first start to its last end):", file=out)
    print(f"  {'suite':<26} {'tests':>5} {'failed':>6} {'time':>8} {'span':>7}  longest test", file=out)
    for name, suite in sorted(suites.items(), key=lambda item: -item[1]["time"]):
        span = (suite["end"] - suite["start"]).total_seconds() if suite["start"] else 0.0
        longest, longest_time = suite["longest"]
        longest = longest.split("::", 1)[-1]
        print(
            f"  {name:<26} {suite['tests']:>5} {suite['failed']:>6} {suite['time']:>8.1f} {span:>7.1f}  {longest} ({longest_time:.1f})",
            file=out,
        )
    if stages:
        print("[test] the test command's stages (seconds):", file=out)
        for stage in stages:
            name, seconds, status = stage.rsplit("|", 2)
            mark = "" if status == "0" else f"  FAILED (exit {status})"
            print(f"  {name:<34} {int(seconds):>6}{mark}", file=out)
            if status != "0" and name != "the whole test command":
                failed += 1
                failures.append(f"stage {name}")
    for failure in failures:
        print(f"[test] failed: {failure}", file=out)
    out.flush()
    # The runner's closing line, in the plain form CI reads.
    print(f"tests: {passed} passed, {failed} failed")
    sys.exit(1 if failed or root is None else 0)


if __name__ == "__main__":
    main()
