#!/usr/bin/env bash
# Every test (what .ci/run runs):
#   scripts/test.sh           installs what is missing, checks the formatting
#                             (rustfmt.toml), the layer order of the host's
#                             modules (scripts/check-layers.py, its parser first
#                             against its own table) and the documentation's
#                             links (scripts/check-docs.py), runs clippy with warnings
#                             as errors while it builds the tests, starts real
#                             Kafka and OpenSearch
#                             (scripts/services.sh), checks the test runner
#                             itself (a test made to hang must be stopped by its
#                             timeout and named), runs every test of the
#                             workspace with scripts/run-tests.py, each in a
#                             process of its own (guest components are built
#                             from source by tests/build.rs), the
#                             doctests, the main job once (scripts/run.sh
#                             --exit) and the hostile-request attacks from
#                             outside the repository
#                             (scripts/hostile-acceptance.sh); prints each
#                             suite's time and ends with the count of tests
#                             passed and failed. Services it started are
#                             stopped again.
#   scripts/test.sh --quick   the quick tier: formatting, layer order, links,
#                             the lints and every test that needs no services,
#                             crash or fuzz (no services started), in a few
#                             minutes after a build.
# Each test runs under a timeout that names it (tests/runner.toml).
# MYSIMBDP_TEST_THREADS sets the tests run at once (2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=0
case "${1:-}" in
    --quick) quick=1 ;;
    "") ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (use --quick or nothing)" >&2; exit 2 ;;
esac

started=$(date +%s)
stage_times=()
stage() { # name command...: runs it and keeps its time for the summary
    local name=$1 begun status=0
    shift
    begun=$(date +%s)
    printf '[test] %s\n' "$name" >&2
    "$@" || status=$?
    stage_times+=("$name|$(($(date +%s) - begun))|$status")
    return "$status"
}

# The workspace's crates compiled by clippy-driver, lints as errors (what
# `cargo clippy -- -D warnings` passes it; cargo keeps the wrapper and the
# arguments in each crate's fingerprint).
lint_while_building() {
    RUSTC_WORKSPACE_WRAPPER=$(rustup which clippy-driver)
    CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
    export RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
}

stage "setup" scripts/setup.sh --tests

# Formatting, the host's layer order and the documentation's links (README
# at most 300 lines, every relative link and anchor resolving) first: they
# fail in a second,
# before anything is built or started.
stage "formatting" cargo fmt --all --check
stage "layer order" bash -c 'python3 scripts/check-layers.py --self-test && python3 scripts/check-layers.py'
stage "documentation links" bash -c 'python3 scripts/check-docs.py --self-test && python3 scripts/check-docs.py'

if [ "$quick" = 1 ]; then
    status=0
    lint_while_building
    stage "tests (quick tier)" python3 scripts/run-tests.py --tier quick || status=$?
    python3 scripts/test-times.py target/test-runs/quick/junit.xml "${stage_times[@]}" || status=$?
    exit "$status"
fi

# Lints as errors, every target (the guest SDK denies missing docs itself),
# while the tests are built: clippy-driver wraps rustc for the workspace's
# own crates (as `cargo clippy` runs it, with the same -D warnings), but the
# build goes on to code, so the dependencies are compiled once instead of
# checked by clippy and then built again for the tests (docs/development/tests.md: Its time).
# Every later cargo call of this script sees the same wrapper and reuses
# that build.
lint_while_building
stage "clippy and build the tests" cargo test --workspace --no-run --quiet

started_services=0
if ! scripts/services.sh status >/dev/null 2>&1; then
    started_services=1
fi
cleanup() {
    if [ "$started_services" = 1 ]; then
        scripts/services.sh down >&2 || true
    fi
}
trap cleanup EXIT
stage "services up" scripts/services.sh up
eval "$(scripts/services.sh env)"

# The runner's self-test: a test that hangs (only with this variable) must be
# stopped by a 5 s timeout, fail the run and be named.
runner_self_test() {
    local output status=0
    output=$(MYSIMBDP_RUNNER_SELF_TEST=hang python3 scripts/run-tests.py --ignored --timeout 5 \
        --filter '^mysimbdp-tests::all runner::a_test_that_hangs_is_stopped_by_its_timeout$' \
        --junit target/test-runs/runner-self-test/junit.xml 2>&1) || status=$?
    if [ "$status" = 0 ] \
        || ! grep -q 'TIMEOUT .*runner::a_test_that_hangs_is_stopped_by_its_timeout' <<<"$output" \
        || ! grep -q '^0 passed, 0 failed, 1 timed out$' <<<"$output"; then
        printf '%s\n' "$output" >&2
        echo "[test] the runner's self-test failed: the hanging test was not stopped by its timeout and named (exit $status)" >&2
        return 1
    fi
    echo "[test] the runner stopped the hanging test at its 5 s timeout and named it" >&2
}
stage "runner self-test" runner_self_test

status=0
stage "tests" python3 scripts/run-tests.py || status=$?
# The runner runs the test binaries; the doctests are compiled apart.
stage "doctests" cargo test --workspace --doc --quiet || status=$?
if [ "$status" = 0 ]; then
    stage "scripts/run.sh --exit" scripts/run.sh --exit || status=$?
    stage "scripts/hostile-acceptance.sh" scripts/hostile-acceptance.sh || status=$?
fi
stage_times+=("the whole test command|$(($(date +%s) - started))|$status")
python3 scripts/test-times.py target/test-runs/all/junit.xml "${stage_times[@]}" || status=$?
exit "$status"
