#!/usr/bin/env bash
# Registers, spills (stack bytes), static shared memory and the warps per SM the registers allow
# for every kernel of the CUDA backend, read from the compiled objects with cuobjdump: what a
# kernel change does to occupancy, checked without a GPU. With --sass NAME, the machine code of the
# kernels whose mangled name contains NAME instead (e.g. to see whether loads are in flight
# together before their first use).
#   tests/cuda/kernel_resources.sh [BUILD_DIR] [--sass NAME]      (default BUILD_DIR: build)
# The CUDA toolkit here has no cuobjdump (nor the nvdisasm it runs for --sass); the PyPI wheels
# nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm carry them, and this script unpacks them into
# BUILD_DIR/cuobjdump on first use.
set -euo pipefail
build=${1:-build}
objects=$(find "$build/model" -path '*lamina_model.dir/cuda/*.cu.o' | sort)
[ -n "$objects" ] || { echo "no CUDA objects under $build/model: build with -DLAMINA_CUDA=ON first" >&2; exit 1; }
tool=$(command -v cuobjdump || true)
if [ -z "$tool" ]; then
  tool=$build/cuobjdump/nvidia/cu13/bin/cuobjdump
  if [ ! -x "$tool" ]; then
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    python3 -m pip download --quiet --no-deps --dest "$stage" nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
    for wheel in "$stage"/*.whl; do python3 -m zipfile -e "$wheel" "$build/cuobjdump"; done
    chmod +x "$tool" "$(dirname "$tool")/nvdisasm"
  fi
fi
if [ "${2:-}" = --sass ]; then
  name=${3:?usage: kernel_resources.sh [BUILD_DIR] --sass NAME}
  for o in $objects; do
    "$tool" -sass "$o" | awk -v n="$name" '/Function :/ {f = index($0, n) > 0} f'
  done
  exit 0
fi
# 64K registers per SM, allocated per warp in units of 256 (8 per thread), at most 64 warps per SM
# (sm_90): an upper bound, which whole blocks and shared memory may lower.
printf '%-5s %-6s %-7s %-9s %s\n' regs stack shared warps/SM kernel
for o in $objects; do
  "$tool" -res-usage "$o" | awk '
    /Function / { name = $2; sub(/:$/, "", name) }
    /REG:/ {
      for (i = 1; i <= NF; i++) { split($i, kv, ":"); v[kv[1]] = kv[2] }
      regs = v["REG"]; per_warp = int((regs * 32 + 255) / 256) * 256
      warps = int(65536 / per_warp); if (warps > 64) warps = 64
      printf "%-5d %-6d %-7d %-9d %s\n", regs, v["STACK"], v["SHARED"], warps, name
    }'
done | c++filt | awk '{ line = $0; gsub(/\(anonymous namespace\)::/, "", line); sub(/\(.*/, "", line); print line }' |
  sort -k5
