#!/usr/bin/env bash
# Runs the benchmarks of docs/benchmarks.md:
#
#   scripts/bench.sh [batch-core|stream|batch-manager|all] [-- extra arguments of the subcommand]
#
# Builds the host and the bench harness (release) and the example guests,
# generates the input data under bench/data/ when it is missing (once; later
# runs reuse it), starts Kafka and OpenSearch for `stream` (never stops them),
# then runs `mysimbdp-bench <name>`. Results: bench/data/results/<name>.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

what=${1:-all}
shift || true
[ "${1:-}" = "--" ] && shift
case "$what" in
    batch-core|stream|batch-manager|all) ;;
    -h|--help|help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown benchmark: $what (batch-core, stream, batch-manager or all)" >&2; exit 2 ;;
esac

data=bench/data
mkdir -p "$data/results"

# gen FILE ARGS...: generates FILE with scripts/gen-data.py unless it exists;
# written under a temporary name first so an interrupted run leaves no half file.
gen() {
    local file=$1
    shift
    [ -s "$file" ] && return 0
    echo "[bench] generating $file (gen-data.py $*)" >&2
    python3 scripts/gen-data.py "$@" >"$file.part"
    mv "$file.part" "$file"
}

data_for() {
    case "$1" in
        batch-core)
            gen "$data/orders-110mb.csv" orders --mb 110 --seed 1 ;;
        stream)
            gen "$data/readings-200k.ndjson" readings --rows 200000 --bad-every 0 --seed 1 ;;
        batch-manager)
            # Sources of the 2 x 500 small files (sliced by the harness) and the 4 large files.
            gen "$data/orders-51mb-s2.csv" orders --mb 51 --seed 2
            gen "$data/readings-51mb-s2.ndjson" readings --mb 51 --seed 2
            gen "$data/orders-200mb-s3.csv" orders --mb 200 --seed 3
            gen "$data/orders-200mb-s4.csv" orders --mb 200 --seed 4
            gen "$data/readings-200mb-s3.ndjson" readings --mb 200 --seed 3
            gen "$data/readings-200mb-s4.ndjson" readings --mb 200 --seed 4 ;;
    esac
}

echo "[bench] building the guests and the harness (release)" >&2
scripts/build-guests.sh
cargo build --release -p mysimbdp-bench

if [ "$what" = all ]; then benches=(batch-core stream batch-manager); else benches=("$what"); fi
for bench in "${benches[@]}"; do
    data_for "$bench"
    if [ "$bench" = stream ]; then
        scripts/services.sh up
        eval "$(scripts/services.sh env)"
    fi
    echo "[bench] running $bench" >&2
    target/release/mysimbdp-bench "$bench" "$@"
done
