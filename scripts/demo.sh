#!/usr/bin/env bash
# The popbridge demo: installs what is needed, builds popbridge, starts a
# private Dovecot (user demo, password demo, a few messages) and popbridge
# on 127.0.0.1:1110 in front of it, and prints how to point a POP3 client
# at it. Runs in the foreground until Ctrl-C, then stops both.
#
#   bash scripts/demo.sh [--port 1110]
#
# BUILD_DIR (default build) is the CMake build directory.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh

BUILD_DIR=${BUILD_DIR:-build}
# Only popbridge is built: the benchmark's load generator (and its zlib) is
# not needed for the demo.
cmake -S . -B "$BUILD_DIR" -DPOPBRIDGE_BENCH=OFF >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target popbridge

exec python3 scripts/demo.py --popbridge "$BUILD_DIR/proxy/popbridge" "$@"
