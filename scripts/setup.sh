#!/usr/bin/env bash
# Installs what building and running mysimbdp needs, only what is missing:
#   - the pinned Rust toolchain (rust-toolchain.toml) and the wasm32-wasip2 target;
#   - Debian packages: a C toolchain (librdkafka is built from source), python3;
#   - with --tests: what the tests use besides (chromium; Java, Maven, kcat,
#     Prometheus and the Kafka/OpenSearch jars through scripts/services.sh install).
# Idempotent. Set MYSIMBDP_NO_APT=1 to never call apt-get.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

tests=0
case "${1:-}" in
    --tests) tests=1 ;;
    "") ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (use --tests or nothing)" ;;
esac

apt_install() { # package...
    [ "$#" -gt 0 ] || return 0
    [ "${MYSIMBDP_NO_APT:-0}" = 1 ] && die "missing Debian packages: $* (MYSIMBDP_NO_APT=1 forbids installing them)"
    command -v apt-get >/dev/null 2>&1 || die "missing packages: $*; install them with your package manager"
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "missing packages: $*; run as root or: apt-get install $*"
        sudo=(sudo)
    fi
    log "apt-get install $*"
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >&2
}

missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "$tests" = 1 ]; then
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
fi
apt_install "${missing[@]}"

command -v rustup >/dev/null 2>&1 || die "rustup is missing: install it from https://rustup.rs (the toolchain itself is pinned in rust-toolchain.toml)"
toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
if ! rustup toolchain list | grep -q "^$toolchain"; then
    log "rustup toolchain install $toolchain"
    rustup toolchain install "$toolchain" --profile minimal --component rustfmt,clippy >&2
fi
if ! rustup target list --installed --toolchain "$toolchain" | grep -qx wasm32-wasip2; then
    log "rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2 --toolchain "$toolchain" >&2
fi

if [ "$tests" = 1 ]; then
    scripts/services.sh install >&2
fi
log "ready"
