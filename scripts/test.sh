#!/usr/bin/env bash
# Builds popbridge and runs every test: the unit tests and the integration
# tests (a private Dovecot, the popbridge binary, real POP3 clients).
#
#   bash scripts/test.sh                 everything
#   bash scripts/test.sh -L integration  only the integration tests (ctest args pass through)
#
# BUILD_DIR (default build) is the CMake build directory. With CI=true,
# warnings are errors (-DPOPBRIDGE_WERROR=ON).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh

BUILD_DIR=${BUILD_DIR:-build}
cmake_args=(-S . -B "$BUILD_DIR")
if [ "${CI:-}" = true ]; then
  cmake_args+=(-DPOPBRIDGE_WERROR=ON)
fi

cmake "${cmake_args[@]}"
cmake --build "$BUILD_DIR" -j "$(nproc)"

cd "$BUILD_DIR"
ctest --output-on-failure "$@"
