#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) and fuzzes each for a while.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   SECONDS per target (default 60)
#   scripts/fuzz.sh --ci                    every target 60 s (about 6 min)
#   FUZZ_PARALLEL=2 scripts/fuzz.sh 600     run that many targets at once
#   FUZZ_BUILD_DIR=...                      build tree (default build-fuzz)
#   FUZZ_IGNORE_KNOWN=toml-unreachable[,idle-in-update]
#                                           skip the checks for known, reported
#                                           bugs (tests/fuzz/regressions/*/README.md)
#
# Each target first replays tests/fuzz/regressions/<target>/* (inputs that
# once crashed) and its seeds, then fuzzes with a work corpus under
# $FUZZ_BUILD_DIR/corpus/<target> (kept between runs, outside the repo),
# seeded from tests/fuzz/corpus/<target>. Crash, leak, timeout and OOM inputs
# go to $FUZZ_BUILD_DIR/artifacts/<run>/<target>/. Exits non-zero if any
# target fails, printing the reproducer; rerun one with
#   $FUZZ_BUILD_DIR/tests/fuzz/<target> <reproducer>
# and keep it as tests/fuzz/regressions/<target>/<name> once understood.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}
PARALLEL=${FUZZ_PARALLEL:-1}
SECONDS_PER_TARGET=60
ALL_TARGETS=(fuzz_parser fuzz_encoder fuzz_sasl fuzz_session fuzz_config fuzz_fetch_reader)
TARGETS=()

for arg in "$@"; do
  case $arg in
    --ci) SECONDS_PER_TARGET=60 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    ''|*[!0-9]*)
      if [[ " ${ALL_TARGETS[*]} " == *" $arg "* ]]; then TARGETS+=("$arg")
      else echo "fuzz.sh: unknown argument '$arg'" >&2; exit 2; fi ;;
    *) SECONDS_PER_TARGET=$arg ;;
  esac
done
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL_TARGETS[@]}")

# Per target: longest input, dictionary, and the timeout for one input.
max_len() {
  case $1 in
    fuzz_parser) echo 20000 ;;   # room for an 8 KiB SASL line and more
    fuzz_encoder) echo 8192 ;;
    fuzz_sasl) echo 4096 ;;
    fuzz_session) echo 8192 ;;
    fuzz_config) echo 16384 ;;   # the shipped config is ~5 KiB
    fuzz_fetch_reader) echo 4096 ;;
  esac
}
dict() {
  case $1 in
    fuzz_parser|fuzz_session) echo "$ROOT/tests/fuzz/pop3.dict" ;;
    fuzz_encoder) echo "$ROOT/tests/fuzz/message.dict" ;;
    fuzz_sasl) echo "$ROOT/tests/fuzz/sasl.dict" ;;
    fuzz_config) echo "$ROOT/tests/fuzz/toml.dict" ;;
    fuzz_fetch_reader) echo "$ROOT/tests/fuzz/imap.dict" ;;
  esac
}

# --- build ------------------------------------------------------------------
export FUZZ_IGNORE_KNOWN=${FUZZ_IGNORE_KNOWN:-}
ignore_toml=OFF
[[ $FUZZ_IGNORE_KNOWN == *toml-unreachable* ]] && ignore_toml=ON
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$BUILD" -DPOPBRIDGE_FUZZ=ON -DPOPBRIDGE_TESTS=OFF \
  -DPOPBRIDGE_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPOPBRIDGE_FUZZ_IGNORE_TOML_UNREACHABLE=$ignore_toml >/dev/null
RUN_ID=$(date +%Y%m%d-%H%M%S)
LOGS=$BUILD/logs/$RUN_ID
mkdir -p "$LOGS"
if ! cmake --build "$BUILD" --target "${TARGETS[@]}" -j "$(nproc)" >"$LOGS/build.log" 2>&1; then
  tail -30 "$LOGS/build.log"
  echo "fuzz.sh: build failed, see $LOGS/build.log" >&2
  exit 1
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# Runs one target; writes $LOGS/<target>.status ("ok" or the reproducer paths).
run_target() {
  local t=$1 bin=$BUILD/tests/fuzz/$1
  local work=$BUILD/corpus/$t seeds=$ROOT/tests/fuzz/corpus/$t
  local regress=$ROOT/tests/fuzz/regressions/$t
  local artifacts=$BUILD/artifacts/$RUN_ID/$t/
  mkdir -p "$work" "$artifacts"
  local common=(-max_len="$(max_len "$t")" -timeout=60 -rss_limit_mb=2048 -artifact_prefix="$artifacts")

  # 1. Known crashers and the seeds must pass (each file run once).
  local replay=()
  [[ -d $regress ]] && while IFS= read -r -d '' f; do replay+=("$f"); done \
    < <(find "$regress" -type f ! -name '*.md' -print0 | sort -z)
  if [[ ${#replay[@]} -gt 0 ]]; then
    if ! "$bin" "${common[@]}" "${replay[@]}" >"$LOGS/$t.replay.log" 2>&1; then
      local failed; failed=$(grep -o 'Running: .*' "$LOGS/$t.replay.log" | tail -1 | sed 's/Running: //')
      echo "FAILED replaying ${failed:-a regression} (log $LOGS/$t.replay.log)" >"$LOGS/$t.status"
      return
    fi
  fi

  # 2. Fuzz.
  local args=("${common[@]}" -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1)
  local d; d=$(dict "$t"); [[ -f $d ]] && args+=(-dict="$d")
  if "$bin" "${args[@]}" "$work" "$seeds" >"$LOGS/$t.log" 2>&1; then
    echo ok >"$LOGS/$t.status"
  else
    local found; found=$(grep -ho 'Test unit written to .*' "$LOGS/$t.log" | sed 's/Test unit written to //' || true)
    echo "FAILED${found:+: $found} (log $LOGS/$t.log)" >"$LOGS/$t.status"
  fi
}

echo "fuzzing ${TARGETS[*]} for ${SECONDS_PER_TARGET}s each, $PARALLEL at a time; logs in $LOGS"
running=0
for t in "${TARGETS[@]}"; do
  run_target "$t" &
  running=$((running + 1))
  if (( running >= PARALLEL )); then wait -n || true; running=$((running - 1)); fi
done
wait

# --- summary ------------------------------------------------------------------
status=0
printf '%-14s %12s %8s %8s  %s\n' target execs cov ft result
for t in "${TARGETS[@]}"; do
  log=$LOGS/$t.log
  execs=$(grep -ho 'stat::number_of_executed_units: [0-9]*' "$log" 2>/dev/null | awk '{print $2}' | tail -1)
  cov=$(grep -ho 'cov: [0-9]*' "$log" 2>/dev/null | tail -1 | awk '{print $2}')
  ft=$(grep -ho 'ft: [0-9]*' "$log" 2>/dev/null | tail -1 | awk '{print $2}')
  result=$(cat "$LOGS/$t.status" 2>/dev/null || echo "did not run")
  printf '%-14s %12s %8s %8s  %s\n' "$t" "${execs:--}" "${cov:--}" "${ft:--}" "$result"
  [[ $result == ok ]] || status=1
done
exit $status
