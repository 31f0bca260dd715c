#!/usr/bin/env bash
# Builds the CUDA backend and the tests/cuda suites on a GPU machine, runs them, then runs them
# again under compute-sanitizer memcheck, and the tests of the kernels that share memory between
# warps (attention, and the row sums of the embedding, LayerNorm and bias gradients) under
# racecheck and synccheck; then the data-parallel tests that need a GPU. Exits non-zero if any
# of it fails. Run from the repository root with .deps/ prepared by
# ../shared/tools/device-deps.sh:   tests/cuda/device_check.sh OUTDIR [gtest filter]
# With LAMINA_DEVICE_PACK=DIR (made by tests/cuda/device_pack.sh on the development machine and
# carried along) it runs those binaries instead of building.
set -uo pipefail
out=${1:?usage: device_check.sh OUTDIR [filter]}
filter=${2:-*}
build=${LAMINA_DEVICE_BUILD:-/tmp/lamina-build}
mkdir -p "$out"
pack=${LAMINA_DEVICE_PACK:-}
deps=$PWD/.deps/usr/lib/x86_64-linux-gnu
export CMAKE_PREFIX_PATH=$PWD/.deps/usr LD_LIBRARY_PATH=$deps:$deps/blas:${LD_LIBRARY_PATH:-}${pack:+:$PWD/$pack/lib}
export CPATH=$PWD/.deps/usr/include:$PWD/.deps/usr/include/x86_64-linux-gnu
export LAMINA_SOURCE_DIR=$PWD GTEST_COLOR=no  # plain gtest lines for the greps below, under mpirun too
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
targets=$(ls tests/cuda/*_test.cc | sed 's#tests/cuda/\(.*\)_test.cc#test_cuda_\1#')
if [ -n "$pack" ]; then
  tests/cuda/device_unpack.sh "$pack" "$build" || exit 1
  echo "prebuilt binaries from $pack"
else
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBLA_VENDOR=Generic -DLAMINA_CUDA=ON \
    -DLAMINA_CUDA_ARCH=90a >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
  start=$(date +%s)
  cmake --build "$build" -j16 --target lamina $targets test_dist_nccl_communicator test_dist_pretrain_equivalence \
    test_dist_device_staging_mpi >"$out/build.log" 2>&1 ||
    { grep -E "error|FAILED" "$out/build.log" | head -40; exit 1; }
  echo "build: $(($(date +%s) - start)) s"
fi
status=0
for t in $targets; do
  LAMINA_CUDA_TIMING=1 "$build/tests/$t" --gtest_filter="$filter" >"$out/$t.log" 2>&1 || status=1
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[       OK|rel err|cosine|Failure|Expected|Which is|check failed" "$out/$t.log"
done
for t in $targets; do
  [ "$t" = test_cuda_timing ] && continue  # opt-in timings at full size: too slow under the sanitizer
  case $t in *_emulation) continue ;; esac  # CPU threads, no device code
  compute-sanitizer --tool memcheck --error-exitcode 9 "$build/tests/$t" --gtest_filter="$filter" \
    >"$out/$t.memcheck.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || status=1
  echo "memcheck $t: exit $rc ($(grep -c 'Invalid\|Error' "$out/$t.memcheck.log") error lines)"
  grep -E "ERROR SUMMARY" "$out/$t.memcheck.log"
done
for tool in racecheck synccheck; do
  compute-sanitizer --tool $tool --error-exitcode 9 "$build/tests/test_cuda_ops_parity" \
    --gtest_filter='*Attention*:*Embedding*:*LayerNorm*:*Linear*' >"$out/ops_parity.$tool.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || status=1
  echo "$tool shared-memory kernels: exit $rc $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/ops_parity.$tool.log" | tr '\n' ' ')"
done
# The data-parallel tests that need a GPU: NCCL with one rank, ZeRO-1, and two ranks sharing the
# GPU through the staged MPI path (mpirun as root needs these two variables).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
binary() { find "$build" -name "$1" -type f -perm -u+x | head -n 1; }
export LAMINA_BINARY=$(binary lamina)
"$(binary test_dist_nccl_communicator)" >"$out/nccl_communicator.log" 2>&1 || status=1
mpirun --oversubscribe -np 2 "$(binary test_dist_device_staging_mpi)" --gtest_color=no >"$out/device_staging.log" 2>&1 || status=1
"$(binary test_dist_pretrain_equivalence)" --gtest_filter='*OnTheGpu*' >"$out/pretrain_on_gpu.log" 2>&1 || status=1
for log in nccl_communicator device_staging pretrain_on_gpu; do
  echo "$log: $(grep -E '^\[  (PASSED|FAILED) ' "$out/$log.log" | tr '\n' ' ')"
done
exit $status
