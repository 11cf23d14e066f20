#!/usr/bin/env bash
# Every test: installs what is missing, checks the formatting
# (rustfmt.toml) and the layer order of the host's modules
# (scripts/check-layers.py, its parser first against its own table), runs
# clippy with warnings as errors, starts real Kafka and OpenSearch
# (scripts/services.sh), runs the whole workspace's tests (guest components
# are built from source by tests/build.rs), then the main job once
# (scripts/run.sh --exit) and the hostile-request attacks from outside the
# repository (scripts/hostile-acceptance.sh). Services this script started
# are stopped again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh --tests
# Formatting and the host's layer order first: they fail in a second,
# before anything is started.
cargo fmt --all --check
python3 scripts/check-layers.py --self-test
python3 scripts/check-layers.py
# Lints as errors, every target (the guest SDK denies missing docs itself),
# before the services start.
cargo clippy --workspace --all-targets -- -D warnings
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
scripts/services.sh up
eval "$(scripts/services.sh env)"

cargo test --workspace --no-fail-fast -- --test-threads "${MYSIMBDP_TEST_THREADS:-2}"
scripts/run.sh --exit
scripts/hostile-acceptance.sh
echo "[test] all tests passed" >&2
