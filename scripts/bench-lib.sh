# Shared by scripts/bench-*: builds keel and the load generator in release
# mode, runs a broker on a scratch directory and reports its CPU time and
# memory. Source it; do not run it.

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
  KEEL_BENCH=target/bench/release/keel-bench
  BENCH_PORT="${BENCH_PORT:-19399}"
  BOOTSTRAP="127.0.0.1:$BENCH_PORT"
  BENCH_DIR="$(mktemp -d "${TMPDIR:-/tmp}/keel-bench.XXXXXX")"
  trap bench_teardown EXIT
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

bench_teardown() {
  if [ -n "${KEEL_PID:-}" ] && kill -0 "$KEEL_PID" 2>/dev/null; then
    kill -TERM "$KEEL_PID"
    wait "$KEEL_PID" 2>/dev/null || true
  fi
  rm -rf "$BENCH_DIR"
}
