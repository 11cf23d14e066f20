#!/usr/bin/env bash
# The main job on one machine with nothing else installed: builds the host
# and the example pipelines, starts `mysimbdp host run` with the embedded
# backends, uploads both tenants' pipelines, stages the sample data in data/,
# streams readings through the sensors tenant's stream pipeline, shows what
# landed in the store, and keeps the host running until Ctrl-C.
#
#   scripts/run.sh                 # then open http://127.0.0.1:8780/
#   scripts/run.sh --exit          # stop after showing the results (used by the tests)
#   scripts/run.sh --distributed   # the same against real Kafka and OpenSearch (scripts/services.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
stay=1
distributed=0
for argument in "$@"; do
    case "$argument" in
        --exit) stay=0 ;;
        --distributed) distributed=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument $argument" >&2; exit 2 ;;
    esac
done

log() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

scripts/setup.sh
log "Building the host and the example pipelines"
cargo build -p mysimbdp
scripts/build-guests.sh
mysimbdp=target/debug/mysimbdp
guests=target/guests/wasm32-wasip2/release
if [ "$distributed" = 1 ]; then
    log "Starting Kafka and OpenSearch (scripts/services.sh)"
    scripts/services.sh install
    scripts/services.sh up
    export MYSIMBDP_CONFIG=deploy/distributed.yaml
    hostlog=var/host-distributed.log
else
    unset MYSIMBDP_CONFIG  # embedded defaults: tenants/tenants.yaml, data in ./var
    hostlog=var/host.log
fi
api=http://127.0.0.1:8780

if curl -fs "$api/api/health" >/dev/null 2>&1; then
    echo "A host already answers at $api; stop it first (Ctrl-C in its terminal)." >&2
    exit 1
fi

log "Uploading the tenants' pipelines (each upload is a new version)"
$mysimbdp pipeline upload --tenant retail --kind batch --name orders "$guests/retail_orders.wasm"
$mysimbdp pipeline upload --tenant retail --kind batch --name features "$guests/retail_features.wasm"
$mysimbdp pipeline upload --tenant sensors --kind batch "$guests/sensor_readings.wasm"
$mysimbdp pipeline upload --tenant sensors --kind stream "$guests/sensor_stream.wasm"

log "Starting the host (log in $hostlog)"
mkdir -p var
$mysimbdp host run > "$hostlog" 2>&1 &
host=$!
trap 'kill $host 2>/dev/null; wait $host 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs "$api/api/health" >/dev/null 2>&1 && break
    kill -0 $host 2>/dev/null || { cat "$hostlog" >&2; exit 1; }
    sleep 0.2
done

log "Staging the sample data (retail: on arrival; sensors: its cron ticks every 15 s)"
$mysimbdp stage put --tenant retail data/retail/*.csv
$mysimbdp stage put --tenant retail --into features data/retail/orders-2026-11-20.csv
$mysimbdp stage put --tenant sensors data/sensors/*.ndjson

log "Streaming 500 live readings through the sensors stream pipeline"
$mysimbdp stream start --tenant sensors
python3 scripts/gen-data.py readings --rows 500 --seed 42 | $mysimbdp stream produce --tenant sensors --topic readings --key-field sensor_id

log "Waiting for the staged files"
for _ in $(seq 150); do
    staged=$(find tenants/*/staging tenants/*/work -type f 2>/dev/null | wc -l)
    [ "$staged" = 0 ] && break
    sleep 0.2
done
$mysimbdp batch status --recent 5

log "What is queryable now"
$mysimbdp query --tenant retail --collection orders 'customer.country:fi AND size:large' --limit 2
$mysimbdp query --tenant retail --collection customer-features 'orders:[2 TO *]' --limit 1
$mysimbdp query --tenant sensors --collection readings 'status:check-battery' --limit 2
$mysimbdp stream status
$mysimbdp stats

if [ "$stay" = 1 ]; then
    log "The host keeps running: operator page $api/ , metrics $api/metrics . Ctrl-C stops it."
    echo "Try: $mysimbdp query --tenant retail --collection orders 'total_eur:[500 TO *]'" >&2
    echo "     $mysimbdp stage put --tenant retail data/retail/orders-2026-11-21.csv   (recognised as already ingested)" >&2
    wait $host
fi
