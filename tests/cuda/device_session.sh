#!/usr/bin/env bash
# One lent GPU session's measurements, in stages that each fit a device command's 10 minutes.
# Here, first:
#   ../shared/tools/device-deps.sh && tests/cuda/device_pack.sh devpack   # devpack/ in .git/info/exclude
# There (each call carrying .deps and devpack):
#   tests/cuda/device_session.sh $OUT check     # device_check.sh with the packed binaries: parity, the
#                                               # timing test (op table, attention A/Bs), sanitizers,
#                                               # the data-parallel GPU tests (~4 minutes)
#   tests/cuda/device_session.sh $OUT profile   # bench train --profile_ops on bert-base at seq 128 x 256
#                                               # and 512 x 64: every op of the step as the GPU ran it,
#                                               # largest first; then the step with run.gemm_autotune
#                                               # (~2 minutes)
#   tests/cuda/device_session.sh $OUT compare   # launch/bench/compare.sh at seq 128 x 256 and 512 x 64:
#                                               # Post-LN (both attention paths), Pre-LN, T-Fixup against
#                                               # torch eager and compile, with peak memory (~6 minutes)
#   tests/cuda/device_session.sh $OUT gelu      # compare.sh at seq 128 x 256 on bert-base-gelu-tanh
#                                               # (GELU in the GEMM epilogues) against torch's gelu_new
# The machine's start counts against the ~15 device minutes: call `check` and `profile` together
# first, then `compare`, and `gelu` only with 3 minutes left.
# Logs go to OUT; each stage prints its summary. Exits non-zero when a stage fails.
set -uo pipefail
out=${1:?usage: device_session.sh OUTDIR check|compare|gelu|profile}
stage=${2:?usage: device_session.sh OUTDIR check|compare|gelu|profile}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
pack=${LAMINA_DEVICE_PACK:-devpack}
mkdir -p "$out"
build=${LAMINA_DEVICE_BUILD:-/tmp/lamina-build}
deps=$PWD/.deps/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$deps:$deps/blas:$PWD/$pack/lib:${LD_LIBRARY_PATH:-}
# Every stage but the check runs the packed lamina binary.
[[ $stage == check || -x $build/tests/lamina ]] || tests/cuda/device_unpack.sh "$pack" "$build" || exit 1
case $stage in
  check)
    LAMINA_DEVICE_PACK=$pack LAMINA_DEVICE_BUILD=$build tests/cuda/device_check.sh "$out"
    ;;
  compare | gelu)
    if [[ $stage == compare ]]; then
      runs=("bert-base 256 128" "bert-base 64 512")
    else
      runs=("bert-base-gelu-tanh 256 128")
    fi
    status=0
    for run in "${runs[@]}"; do
      read -r model micro seq <<<"$run"
      log=$out/compare_${model}_${seq}.log
      LAMINA_EXE=$build/tests/lamina launch/bench/compare.sh "launch/configs/model/$model.json" "$micro" "$seq" \
        >"$log" 2>&1 || status=1
      echo "== $model, seq $seq x micro-batch $micro"
      grep -E "^lamina \(|^torch |^throughput|^peak memory|Error|error" "$log"
    done
    exit $status
    ;;
  profile)
    status=0
    bench() {  # LOG [FLAG...] at $micro x $seq: the same timed steps each time, so throughputs compare
      "$build/tests/lamina" bench train --config launch/configs/model/bert-base.json --micro_batch "$micro" \
        --seq_len "$seq" --device cuda --steps 8 --warmup 3 "${@:2}" >"$1" 2>&1 || status=1
    }
    for run in "256 128" "64 512"; do
      read -r micro seq <<<"$run"
      bench "$out/profile_bert-base_${seq}.log" --profile_ops
      echo "== bert-base, seq $seq x micro-batch $micro"
      grep -E "^throughput|^peak memory|rror" "$out/profile_bert-base_${seq}.log"
      sed -n '/^ops of/,$p' "$out/profile_bert-base_${seq}.log" | head -42
      # The same step with run.gemm_autotune: its whole-step A/B.
      bench "$out/autotune_bert-base_${seq}.log" --set run.gemm_autotune=true
      echo "with run.gemm_autotune:"
      grep -E "^bench train|^throughput|rror" "$out/autotune_bert-base_${seq}.log"
    done
    exit $status
    ;;
  *)
    echo "device_session.sh: stage '$stage': expected check, compare, gelu or profile" >&2
    exit 2
    ;;
esac
