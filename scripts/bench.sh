#!/usr/bin/env bash
# Runs the benchmarks of docs/benchmarks/journal.md:
#
#   scripts/bench.sh [NAME|all] [-- extra arguments of the subcommand]
#     NAME: batch-core, stream, batch-manager, noisy-neighbour, instantiation,
#           embedded-yardstick, query-latency, batch-opensearch, concurrency
#   scripts/bench.sh instructions   # batch-core's wasm-null and native, counted
#                                   # in instructions (valgrind), not seconds
#
# Builds the host and the bench harness (release) and the example guests,
# generates the input data under bench/data/ when it is missing (once; later
# runs reuse it), starts Kafka and OpenSearch for the benchmarks that use them
# (stream, batch-opensearch, concurrency, query-latency; never stops them),
# then runs `mysimbdp-bench <name>`. Results: bench/data/results/<name>.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

what=${1:-all}
shift || true
[ "${1:-}" = "--" ] && shift
case "$what" in
    batch-core|stream|batch-manager|noisy-neighbour|instantiation|embedded-yardstick|query-latency|batch-opensearch|concurrency|all|instructions) ;;
    -h|--help|help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown benchmark: $what (batch-core, stream, batch-manager, noisy-neighbour, instantiation, embedded-yardstick, query-latency, batch-opensearch, concurrency, all or instructions)" >&2; exit 2 ;;
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
        instructions)
            gen "$data/orders-5mb.csv" orders --mb 5 --seed 1 ;;
        noisy-neighbour|embedded-yardstick)
            gen "$data/orders-20mb.csv" orders --mb 20 --seed 5 ;;
        query-latency)
            gen "$data/orders-110mb.csv" orders --mb 110 --seed 1 ;;
        batch-opensearch)
            gen "$data/orders-10mb.csv" orders --mb 10 --seed 6 ;;
        concurrency)
            for seed in 21 22 23 24 25 26 27 28; do gen "$data/orders-5mb-s$seed.csv" orders --mb 5 --seed "$seed"; done ;;
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
# noisy-neighbour and instantiation run test fixtures too.
if [ "$what" = noisy-neighbour ] || [ "$what" = instantiation ] || [ "$what" = all ]; then scripts/build-guests.sh --all; else scripts/build-guests.sh; fi
cargo build --release -p mysimbdp-bench

# instructions VARIANT: the instructions one run of VARIANT executes, counted
# by valgrind (callgrind), so the same on every run however busy the machine
# is: the difference between two runs and one, which leaves out start-up,
# compiling the component and the untimed warm-up.
instructions() {
    local variant=$1 runs counts=()
    for runs in 1 2; do
        counts+=("$(valgrind --tool=callgrind --smc-check=all --callgrind-out-file=/dev/null \
            target/release/mysimbdp-bench batch-core --file "$data/orders-5mb.csv" \
            --only "$variant" --runs "$runs" 2>&1 | sed -n 's/.*Collected : //p')")
    done
    echo $((counts[1] - counts[0]))
}

if [ "$what" = instructions ]; then
    if ! command -v valgrind >/dev/null; then
        [ "$(id -u)" = 0 ] || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
        apt-get install -y -q valgrind >&2
    fi
    data_for instructions
    rows=$(($(wc -l <"$data/orders-5mb.csv") - 1))
    echo "[bench] counting instructions with valgrind (about 8 minutes)" >&2
    native=$(instructions native)
    wasm=$(instructions wasm-null)
    hash=$(instructions sha256)
    python3 - "$rows" "$native" "$wasm" "$hash" <<'PY'
import sys
rows, native, wasm, sha = map(int, sys.argv[1:])
print(f"instructions per CSV row ({rows} rows, valgrind):")
print(f"  native     {native / rows:9,.0f}")
print(f"  wasm-null  {wasm / rows:9,.0f}")
print(f"  native / wasm-null: {native / wasm:.2f}")
# Both variants hash the file first; valgrind's CPU has no SHA extensions, so
# there SHA-256 runs in software and weighs far more than on the real CPU.
print(f"  of which the SHA-256 of the file, in both: {sha / rows:,.0f}")
print(f"  without it: native {(native - sha) / rows:,.0f}, wasm-null {(wasm - sha) / rows:,.0f}, "
      f"native / wasm-null: {(native - sha) / (wasm - sha):.2f}")
PY
    exit 0
fi

if [ "$what" = all ]; then
    benches=(batch-core stream batch-manager noisy-neighbour instantiation embedded-yardstick query-latency batch-opensearch concurrency)
else
    benches=("$what")
fi
for bench in "${benches[@]}"; do
    data_for "$bench"
    if [ "$bench" = stream ] || [ "$bench" = batch-opensearch ] || [ "$bench" = concurrency ] || [ "$bench" = query-latency ]; then
        scripts/services.sh up
        eval "$(scripts/services.sh env)"
    fi
    echo "[bench] running $bench" >&2
    target/release/mysimbdp-bench "$bench" "$@"
done
