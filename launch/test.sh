#!/usr/bin/env bash
# Sets up and builds (launch/setup.sh), then runs the whole test suite through ctest.
# Extra arguments go to setup.sh (cmake configure options).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/launch/setup.sh" "$@"
build_dir=${LAMINA_BUILD_DIR:-build}
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" --timeout 900
