#!/usr/bin/env bash
# Builds popbridge and runs every test: the unit tests and the integration
# tests (a private Dovecot, the popbridge binary, real POP3 clients), first
# in an AddressSanitizer + UBSan build, then again in a release build.
#
#   bash scripts/test.sh                 everything
#   bash scripts/test.sh -L integration  only the integration tests (ctest args pass through)
#
# BUILD_DIR (default build) and ASAN_BUILD_DIR (default build-asan) are the
# CMake build directories; SKIP_SANITIZERS=1 skips the second pass. With
# CI=true, warnings are errors (-DPOPBRIDGE_WERROR=ON).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh

common_args=()
if [ "${CI:-}" = true ]; then
  common_args+=(-DPOPBRIDGE_WERROR=ON)
fi

run_pass() {  # NAME BUILD_DIR CMAKE_ARGS... -- CTEST_ARGS...
  local name=$1 dir=$2
  shift 2
  local cmake_args=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do cmake_args+=("$1"); shift; done
  shift
  echo "==== $name: build in $dir"
  cmake -S . -B "$dir" "${common_args[@]}" "${cmake_args[@]}"
  cmake --build "$dir" -j "$(nproc)"
  echo "==== $name: tests"
  (cd "$dir" && ctest --output-on-failure "$@")
}

if [ -z "${SKIP_SANITIZERS:-}" ]; then
  # Any sanitizer report makes popbridge or a test program exit non-zero,
  # which fails the test that ran it.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  run_pass "ASan+UBSan" "${ASAN_BUILD_DIR:-build-asan}" \
    -DCMAKE_BUILD_TYPE=Debug -DPOPBRIDGE_SANITIZE=ON -DPOPBRIDGE_BENCH=OFF -- "$@"
  unset ASAN_OPTIONS UBSAN_OPTIONS
fi
run_pass "release" "${BUILD_DIR:-build}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -- "$@"
