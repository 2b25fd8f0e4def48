# Shared by scripts/bench-*: builds keel and the load generator in release
# mode, runs a broker or a three-node cluster on a scratch directory and
# reports CPU time and memory. Source it; do not run it.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bench_setup() {
  if ! command -v cmake >/dev/null || ! [ -e /usr/include/curl/curl.h ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake libcurl4-openssl-dev libsasl2-dev >/dev/null
    else
      echo "the load generator builds librdkafka: install cmake, libcurl4-openssl-dev and libsasl2-dev" >&2
      exit 1
    fi
  fi
  cargo build --release --quiet --bin keel
  cargo build --release --quiet --manifest-path bench/Cargo.toml --target-dir target/bench
  warn_if_freed_pages_go_to_the_host
  KEEL_BENCH=target/bench/release/keel-bench
  BENCH_PORT="${BENCH_PORT:-19399}"
  BOOTSTRAP="127.0.0.1:$BENCH_PORT"
  BENCH_DIR="$(mktemp -d "${TMPDIR:-/tmp}/keel-bench.XXXXXX")"
  trap bench_teardown EXIT
}

# A virtual machine that reports freed pages to its host (virtio-balloon
# free page reporting) pays a fault on the host for every page the page
# cache takes afresh: writes then measure the host, and three replicas pay
# it three times. Orders above 10 turn the reporting off (as root:
# echo 11 > the file below); docs/benchmarks.md says which figures had it.
warn_if_freed_pages_go_to_the_host() {
  local order=/sys/module/page_reporting/parameters/page_reporting_order
  if [ -r "$order" ] && [ "$(cat "$order")" -le 10 ]; then
    echo "note: this machine reports freed pages to its host (page_reporting_order $(cat "$order")); see docs/benchmarks.md" >&2
  fi
}

bench_start_broker() {
  target/release/keel --listen "$BOOTSTRAP" --data-dir "$BENCH_DIR/data" "$@" \
    2>"$BENCH_DIR/keel.log" &
  KEEL_PID=$!
  for _ in $(seq 1 200); do
    grep -q "keel is ready" "$BENCH_DIR/keel.log" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "keel did not start:" >&2
  cat "$BENCH_DIR/keel.log" >&2
  exit 1
}

# Prints the broker's CPU seconds (user + system) so far.
broker_cpu_seconds() {
  awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$KEEL_PID/stat"
}

broker_rss_mib() {
  awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$KEEL_PID/status"
}

broker_peak_rss_mib() {
  awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$KEEL_PID/status"
}

# Samples the broker's RSS every second into $BENCH_DIR/rss until stopped.
rss_sampler_start() {
  : >"$BENCH_DIR/rss"
  ( while kill -0 "$KEEL_PID" 2>/dev/null; do broker_rss_mib >>"$BENCH_DIR/rss"; echo >>"$BENCH_DIR/rss"; sleep 1; done ) &
  RSS_SAMPLER=$!
}

rss_sampler_report() {
  kill "$RSS_SAMPLER" 2>/dev/null || true
  awk 'NF { if (min == "" || $1 < min) min = $1; if ($1 > max) max = $1; n++ }
       END { printf "broker RSS over the run: min %d MiB, max %d MiB (%d samples)\n", min, max, n }' \
    "$BENCH_DIR/rss"
}

# Runs a measured step: prints the load generator's line and the broker's
# CPU time during it.
measure() {
  local before after
  before=$(broker_cpu_seconds)
  "$@"
  after=$(broker_cpu_seconds)
  echo "  broker cpu $(echo "$after - $before" | bc) s, broker peak RSS $(broker_peak_rss_mib) MiB"
}

# Runs the load generator (the arguments after BYTES, which it moves) and
# prints its line with the broker's CPU-seconds per GB; leaves the
# throughput in LAST_MB_PER_S and the CPU per GB in LAST_CPU_PER_GB.
measure_broker() {
  local bytes=$1
  shift
  local before after line
  before=$(broker_cpu_seconds)
  line=$("$@")
  after=$(broker_cpu_seconds)
  echo "  $line"
  LAST_MB_PER_S=$(mb_per_s "$line")
  LAST_CPU_PER_GB=$(echo "scale=3; ($after - $before) / ($bytes / 1000000000)" | bc)
  echo "  broker cpu $(echo "$after - $before" | bc) s, $LAST_CPU_PER_GB cpu-s/GB, broker peak RSS $(broker_peak_rss_mib) MiB"
}

# Measures the machine's ceiling for KIND (produce or fetch) over BYTES on
# the broker's disk; prints its line and leaves MB/s in LAST_CEILING.
measure_ceiling() {
  local line
  line=$("$KEEL_BENCH" "ceiling-$1" --bytes "$2" --dir "$BENCH_DIR/ceiling")
  echo "  $line"
  LAST_CEILING=$(mb_per_s "$line")
}

# The "N MB/s" figure of a load generator's line.
mb_per_s() {
  echo "$1" | sed -n 's/.* \([0-9.]*\) MB\/s.*/\1/p'
}

# The median of the numbers given.
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# Runs ROUNDS rounds of: the ceiling for KIND over BYTES, then the load
# generator with the remaining arguments, where {topic} stands for a topic
# of the round's own (TOPIC_PREFIX-ROUND). Prints each round and the
# medians: throughput, its fraction of the ceiling, broker CPU-s per GB.
rounds_against_ceiling() {
  local kind=$1 rounds=$2 bytes=$3 topic_prefix=$4
  shift 4
  local round ratio a args=() throughputs=() ceilings=() ratios=() cpus=()
  for round in $(seq 1 "$rounds"); do
    echo "round $round:"
    # Each step starts with no dirty pages left by the one before.
    sync
    measure_ceiling "$kind" "$bytes"
    args=()
    for a in "$@"; do args+=("${a//\{topic\}/$topic_prefix-$round}"); done
    sync
    measure_broker "$bytes" "$KEEL_BENCH" "${args[@]}"
    ratio=$(echo "scale=3; $LAST_MB_PER_S / $LAST_CEILING" | bc)
    echo "  keel at $ratio of the ceiling"
    throughputs+=("$LAST_MB_PER_S")
    ceilings+=("$LAST_CEILING")
    ratios+=("$ratio")
    cpus+=("$LAST_CPU_PER_GB")
  done
  echo "$kind, medians of $rounds rounds: keel $(median "${throughputs[@]}") MB/s, ceiling $(median "${ceilings[@]}") MB/s, fraction $(median "${ratios[@]}"), broker $(median "${cpus[@]}") cpu-s/GB"
}

bench_teardown() {
  if [ -n "${KEEL_PID:-}" ] && kill -0 "$KEEL_PID" 2>/dev/null; then
    kill -TERM "$KEEL_PID"
    wait "$KEEL_PID" 2>/dev/null || true
  fi
  rm -rf "$BENCH_DIR"
}

# Starts a three-node cluster (scripts/cluster) of the release build (or
# of $CLUSTER_KEEL_BIN) in $BENCH_DIR/cluster-NAME, every node with the
# remaining arguments, and waits until it has a controller. One cluster
# runs at a time.
cluster_start() {
  export KEEL_BIN="${CLUSTER_KEEL_BIN:-$PWD/target/release/keel}"
  export KEEL_CLUSTER_DIR="$BENCH_DIR/cluster-$1"
  export KEEL_CLUSTER_BASE_PORT="${KEEL_CLUSTER_BASE_PORT:-19490}"
  shift
  BOOTSTRAP="127.0.0.1:$((KEEL_CLUSTER_BASE_PORT + 1))"
  trap cluster_teardown EXIT
  scripts/cluster start 3 -- "$@" >/dev/null
  # A client that first asks while no controller is known waits long for
  # one (librdkafka's admin client); ask once the quorum has one.
  for _ in $(seq 1 100); do
    scripts/cluster status | grep -q controller && break
    sleep 0.1
  done
  sleep 1
}

# Stops the cluster and deletes its data.
cluster_stop() {
  scripts/cluster stop >/dev/null 2>&1 || true
  rm -rf "$KEEL_CLUSTER_DIR"
}

cluster_teardown() {
  scripts/cluster stop >/dev/null 2>&1 || true
  bench_teardown
}

cluster_cpu_seconds() {
  local total=0 pid
  for id in 1 2 3; do
    pid=$(cat "$KEEL_CLUSTER_DIR/node-$id.pid")
    total=$(awk -v t="$total" '{ printf "%.2f", t + ($14 + $15) / 100 }' "/proc/$pid/stat")
  done
  echo "$total"
}

# Node ID's Prometheus metrics.
node_metrics() {
  local port=$((KEEL_CLUSTER_BASE_PORT + 200 + $1))
  exec 3<>"/dev/tcp/127.0.0.1/$port" \
    && printf 'GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3 && cat <&3
}

# The sum over the three nodes of a metric's samples whose line starts
# with PATTERN (a metric name, optionally with labels).
cluster_metric_sum() {
  local id
  for id in 1 2 3; do node_metrics "$id"; done \
    | awk -v p="$1" 'index($0, p) == 1 { sum += $NF } END { printf "%d", sum }'
}

# The largest follower lag (records) any node reports for what it leads.
max_follower_lag() {
  local id lag max=0
  for id in 1 2 3; do
    lag=$(node_metrics "$id" | awk '$1 == "keel_follower_max_lag_records" { print $2 }')
    [ "${lag:-0}" -gt "$max" ] && max=$lag
  done
  echo "$max"
}

# Waits until every follower has caught up, so that one run's replication
# does not spill into the next run's figures.
settle() {
  for _ in $(seq 1 600); do
    [ "$(max_follower_lag)" -eq 0 ] && return 0
    sleep 0.1
  done
  echo "followers did not catch up within 60 s" >&2
}

# Runs the load generator with COUNT messages of 1 KiB; prints its line and
# the brokers' CPU per GB, and leaves the throughput in LAST_MB_PER_S and
# the CPU per GB in LAST_CPU_PER_GB.
measure_cluster() {
  local count=$1
  shift
  local before after line
  settle
  before=$(cluster_cpu_seconds)
  line=$("$KEEL_BENCH" --messages "$count" "$@")
  # Followers may still be copying what acks=1 did not wait for: their
  # work belongs to this run.
  settle
  after=$(cluster_cpu_seconds)
  echo "  $line"
  LAST_MB_PER_S=$(echo "$line" | sed -n 's/.* \([0-9.]*\) MB\/s.*/\1/p')
  LAST_CPU_PER_GB=$(echo "scale=3; ($after - $before) / ($count * 1024 / 1000000000)" | bc)
  echo "  brokers cpu $(echo "$after - $before" | bc) s, $LAST_CPU_PER_GB cpu-s/GB"
}
