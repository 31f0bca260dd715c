#!/usr/bin/env bash
# Builds lamina and the GPU test binaries on this machine (CUDA 13.0 toolkit, sm_90a, the
# reference BLAS the GPU machine has) and packs them, stripped and xz-compressed, into
# DIR/bins.tar.xz (about 3 MB instead of about 70), with the one library the GPU machine may lack
# (libmpi_cxx) beside it. A device call then carries DIR instead of spending minutes of device time
# on a build:
#   tests/cuda/device_pack.sh devpack                      # here (add devpack/ to .git/info/exclude)
#   LAMINA_DEVICE_PACK=devpack tests/cuda/device_check.sh $OUT   # there, carrying .deps and devpack
# The binaries link the Debian libraries that ../shared/tools/device-deps.sh unpacks into .deps.
set -euo pipefail
out=${1:?usage: device_pack.sh DIR}
build=${LAMINA_PACK_BUILD:-build-devpack}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBLA_VENDOR=Generic -DLAMINA_CUDA=ON \
  -DLAMINA_CUDA_ARCH=90a >/dev/null
tests=$(ls tests/cuda/*_test.cc | sed 's#tests/cuda/\(.*\)_test.cc#test_cuda_\1#')
gpu_dist="test_dist_nccl_communicator test_dist_pretrain_equivalence test_dist_device_staging_mpi"
cmake --build "$build" -j"$(nproc)" --target lamina $tests $gpu_dist
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
strip -o "$stage/lamina" "$build/lamina"
for t in $tests $gpu_dist; do strip -o "$stage/$t" "$(find "$build/tests" -name "$t" -type f -perm -u+x | head -n 1)"; done
mkdir -p "$out/lib"
tar cf - -C "$stage" . | xz -9 -T0 >"$out/bins.tar.xz"
cp -L "$(ldconfig -p | awk '/libmpi_cxx.so.40 /{print $NF; exit}')" "$out/lib/"
echo "packed $(ls "$stage" | wc -l) binaries into $out/bins.tar.xz ($(du -h "$out/bins.tar.xz" | cut -f1))"
