#!/usr/bin/env python3
"""Runs the workspace's tests, each in a process of its own, under the
timeouts, groups and priorities of tests/runner.toml.

    scripts/run-tests.py [--tier quick] [--threads N] [--filter REGEX]
                         [--ignored] [--timeout SECONDS] [--junit PATH]

Builds every test binary (`cargo test --workspace --no-run`), lists their
tests, and runs each test alone (`BINARY --exact NAME`) in a process group
of its own, at most `threads` at once, the highest priority first. A test
still running after its timeout is stopped (SIGTERM to its process group,
SIGKILL 5 s later) and named as TIMEOUT; every `slow` seconds before that a
SLOW line names it. A test's output is printed when it fails. Whatever a
test started (hosts, CLIs) is killed with its process group when it ends.

The report: a line per test that failed, timed out or was slow, a JUnit file
(`target/test-runs/<tier>/junit.xml` unless --junit) from which
scripts/test-times.py prints each suite's time, and a closing line
`N passed, N failed, N timed out`. Exits 1 when a test failed or timed out.

A test's id is "<binary> <test>" (tests/runner.toml); --filter keeps the
tests whose id matches REGEX; --ignored runs only ignored tests (the
runner's self-test); --timeout overrides every test's timeout.

This is what cargo-nextest does; scripts/test.sh uses this instead because
building nextest on a fresh machine costs more than its scheduling saves
(docs/development/tests.md).
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Test:
    binary: str
    name: str
    exe: str
    cwd: str
    ignored: bool
    priority: int = 0
    timeout: float = 300
    group: str | None = None
    alone: bool = False
    # Filled in by the run.
    status: str = "pending"
    seconds: float = 0.0
    started_at: str = ""
    output: str = ""
    slow_reported: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def id(self):
        return f"{self.binary} {self.name}"


def log(text):
    print(text, file=sys.stderr, flush=True)


def build(extra_env):
    """Builds every test binary; returns [(binary id, exe, cwd)]."""
    command = ["cargo", "test", "--workspace", "--no-run", "--message-format=json-render-diagnostics"]
    log("[runner] " + " ".join(command))
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, env=extra_env, text=True)
    if done.returncode != 0:
        sys.exit(f"[runner] building the tests failed (exit {done.returncode})")
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=ROOT, stdout=subprocess.PIPE, check=True, text=True
        ).stdout
    )
    names = {package["manifest_path"]: package["name"] for package in metadata["packages"]}
    binaries = []
    for line in done.stdout.splitlines():
        if not line.startswith("{"):
            continue
        message = json.loads(line)
        if message.get("reason") != "compiler-artifact" or not message.get("profile", {}).get("test") or not message.get("executable"):
            continue
        package = names.get(message["manifest_path"], "?")
        target = message["target"]
        kind = target["kind"][0]
        if kind in ("lib", "cdylib", "rlib", "proc-macro"):
            binary = package
        elif kind == "bin":
            binary = f"{package}::bin/{target['name']}"
        else:
            binary = f"{package}::{target['name']}"
        binaries.append((binary, message["executable"], str(Path(message["manifest_path"]).parent)))
    return sorted(set(binaries))


def list_tests(binary, exe, cwd, env):
    def names(*flags):
        listed = subprocess.run([exe, "--list", "--format", "terse", *flags], cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
        if listed.returncode != 0:
            sys.exit(f"[runner] listing the tests of {binary} failed (exit {listed.returncode})")
        return [line[: -len(": test")] for line in listed.stdout.splitlines() if line.endswith(": test")]

    ignored = set(names("--ignored"))
    return [Test(binary, name, exe, cwd, name in ignored) for name in names()]


def configure(tests, config, timeout_override):
    rules = [(rule, re.compile(rule["test"])) for rule in config.get("rule", [])]
    for test in tests:
        test.timeout = config.get("timeout", 300)
        for rule, pattern in rules:
            if rule.get("binary", test.binary) != test.binary or not pattern.search(test.name):
                continue
            for key in ("priority", "timeout", "group", "alone"):
                if key in rule:
                    setattr(test, key, rule[key])
        if timeout_override is not None:
            test.timeout = timeout_override


def select(tests, config, tier, pattern, ignored):
    chosen = []
    exclude = None
    if tier != "all":
        settings = config.get("tiers", {}).get(tier)
        if settings is None:
            sys.exit(f"[runner] no tier {tier!r} in tests/runner.toml")
        exclude = (settings.get("binary"), re.compile(settings["exclude"]))
    for test in tests:
        if test.ignored != ignored:
            continue
        if exclude and exclude[0] in (None, test.binary) and exclude[1].search(test.name):
            continue
        if pattern and not re.search(pattern, test.id):
            continue
        chosen.append(test)
    return chosen


def kill_group(process, sig):
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Run:
    def __init__(self, tests, threads, groups, slow, env):
        # The highest priority first; then the order they were listed in.
        self.queue = sorted(tests, key=lambda t: -t.priority)
        self.threads = threads
        self.groups = groups
        self.slow = slow
        self.env = env
        self.running = []
        self.lock = threading.Lock()
        self.interrupted = False

    def fits(self, test):
        if test.alone:
            return not self.running
        if any(t.alone for t in self.running) or len(self.running) >= self.threads:
            return False
        if test.group is not None:
            in_group = sum(1 for t in self.running if t.group == test.group)
            return in_group < self.groups.get(test.group, self.threads)
        return True

    def start(self, test):
        output = tempfile.TemporaryFile(mode="w+b")
        flags = ["--exact", "--nocapture", "--test-threads", "1"] + (["--ignored"] if test.ignored else [])
        test.started = time.monotonic()
        test.started_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        test.process = subprocess.Popen(
            [test.exe, test.name, *flags],
            cwd=test.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        test.output_file = output
        self.running.append(test)

    def finish(self, test, status):
        test.seconds = time.monotonic() - test.started
        # Whatever the test started goes with it.
        kill_group(test.process, signal.SIGKILL)
        test.output_file.seek(0)
        test.output = test.output_file.read().decode("utf-8", "replace")
        test.output_file.close()
        if status == "passed" and not re.search(r"test result: ok\. 1 passed", test.output):
            status = "failed"
            test.output += "\n[runner] the test binary ran no test of this name\n"
        test.status = status
        self.running.remove(test)
        mark = {"passed": "PASS", "failed": "FAIL", "timed out": "TIMEOUT"}[status]
        if status != "passed":
            log(f"{mark:>9} [{test.seconds:8.3f}s] {test.id}")
            log("  output ───\n" + "\n".join("    " + line for line in test.output.rstrip().splitlines()[-200:]))

    def go(self):
        done = []
        total = len(self.queue)
        while self.queue or self.running:
            while not self.interrupted:
                ready = next((t for t in self.queue if self.fits(t)), None)
                if ready is None or (self.queue and self.queue[0].alone and ready is not self.queue[0]):
                    break
                self.queue.remove(ready)
                self.start(ready)
            time.sleep(0.05)
            now = time.monotonic()
            for test in list(self.running):
                elapsed = now - test.started
                code = test.process.poll()
                if code is not None:
                    self.finish(test, "passed" if code == 0 else "failed")
                    done.append(test)
                elif elapsed > test.timeout:
                    kill_group(test.process, signal.SIGTERM)
                    try:
                        test.process.wait(5)
                    except subprocess.TimeoutExpired:
                        pass
                    self.finish(test, "timed out")
                    done.append(test)
                elif elapsed >= self.slow * (test.slow_reported + 1):
                    test.slow_reported += 1
                    log(f"{'SLOW':>9} [> {self.slow * test.slow_reported:6.1f}s] ({len(done)}/{total}) {test.id}")
            if self.interrupted and not self.running:
                break
        return done


def write_junit(path, tests, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    by_binary = {}
    for test in tests:
        by_binary.setdefault(test.binary, []).append(test)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>']
    failures = sum(t.status == "failed" for t in tests)
    errors = sum(t.status == "timed out" for t in tests)
    lines.append(f'<testsuites name="run-tests" tests="{len(tests)}" failures="{failures}" errors="{errors}" time="{seconds:.3f}">')
    for binary, group in sorted(by_binary.items()):
        lines.append(
            f'  <testsuite name={quoteattr(binary)} tests="{len(group)}" '
            f'failures="{sum(t.status == "failed" for t in group)}" errors="{sum(t.status == "timed out" for t in group)}">'
        )
        for test in group:
            lines.append(
                f"    <testcase name={quoteattr(test.name)} classname={quoteattr(binary)} "
                f'timestamp="{test.started_at}" time="{test.seconds:.3f}">'
            )
            if test.status == "failed":
                lines.append(f'      <failure type="test failure">{escape(test.output[-20000:])}</failure>')
            elif test.status == "timed out":
                lines.append(f'      <error type="timeout" message="stopped after {test.timeout} s">{escape(test.output[-20000:])}</error>')
            lines.append("    </testcase>")
        lines.append("  </testsuite>")
    lines.append("</testsuites>")
    path.write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tier", default="all")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--filter")
    parser.add_argument("--ignored", action="store_true")
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--junit")
    args = parser.parse_args()

    config = tomllib.loads((ROOT / "tests" / "runner.toml").read_text())
    threads = args.threads or int(os.environ.get("MYSIMBDP_TEST_THREADS") or config.get("threads", 2))
    env = dict(os.environ)
    # As cargo test: the test binaries of proc-macro crates link the
    # toolchain's libstd dynamically.
    libdir = subprocess.run(["rustc", "--print", "target-libdir"], cwd=ROOT, stdout=subprocess.PIPE, check=True, text=True).stdout.strip()
    libraries = [str(ROOT / "target" / "debug" / "deps"), libdir, env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libraries if p)

    began = time.monotonic()
    tests = []
    for binary, exe, cwd in build(env):
        tests.extend(list_tests(binary, exe, cwd, env))
    configure(tests, config, args.timeout)
    chosen = select(tests, config, args.tier, args.filter, args.ignored)
    if not chosen:
        sys.exit("[runner] no test matches")
    log(f"[runner] {len(chosen)} tests of {len(tests)} ({args.tier} tier), {threads} at once")

    run = Run(chosen, threads, config.get("groups", {}), config.get("slow", 60), env)

    def interrupt(signum, _frame):
        run.interrupted = True
        for test in list(run.running):
            kill_group(test.process, signal.SIGKILL)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    done = run.go()
    seconds = time.monotonic() - began
    junit = Path(args.junit) if args.junit else ROOT / "target" / "test-runs" / args.tier / "junit.xml"
    write_junit(junit, done, seconds)

    passed = sum(t.status == "passed" for t in done)
    failed = sum(t.status == "failed" for t in done)
    timed_out = sum(t.status == "timed out" for t in done)
    not_run = len(chosen) - len(done)
    for test in done:
        if test.status != "passed":
            log(f"{test.status.upper():>9} {test.id}")
    log(f"[runner] {seconds:.1f} s; JUnit report: {junit}")
    print(f"{passed} passed, {failed} failed, {timed_out} timed out" + (f", {not_run} not run" if not_run else ""), flush=True)
    sys.exit(1 if failed or timed_out or not_run or run.interrupted else 0)


if __name__ == "__main__":
    main()
