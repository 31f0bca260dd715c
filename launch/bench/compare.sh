#!/usr/bin/env bash
# lamina against the PyTorch baseline on the same GPU, micro-batch and sequence length.
#   launch/bench/compare.sh [CONFIG] [MICRO_BATCH] [SEQ_LEN] [VARIANT_CONFIG...]
# (defaults: launch/configs/model/bert-base.json 256 128). CONFIG is a Post-LN model config: torch
# (HF BertForMaskedLM, eager and torch.compile) and lamina (each CUDA attention implementation) both
# train it. Each VARIANT_CONFIG (Pre-LN, T-Fixup: the same matrix work) is trained by lamina with
# its default attention and compared with the same torch figures; with the default CONFIG and no
# variants given, the shipped bert-base-preln and bert-base-tfixup are the variants.
# Prints seq/s and peak memory of each, then the ratios. LAMINA_EXE picks the lamina binary.
# Needs a CUDA build and torch+transformers.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
default_config=$root/launch/configs/model/bert-base.json
config=${1:-$default_config}
micro=${2:-256}
seq=${3:-128}
variants=("${@:4}")
if [[ ${#variants[@]} -eq 0 && $config == "$default_config" ]]; then
  variants=("$root/launch/configs/model/bert-base-preln.json" "$root/launch/configs/model/bert-base-tfixup.json")
fi
lamina=${LAMINA_EXE:-$root/build/lamina}
for f in "$config" "${variants[@]}"; do
  [[ -f $f ]] || { echo "compare.sh: no model config at $f" >&2; exit 2; }
done
[[ -x $lamina ]] || { echo "compare.sh: no lamina binary at $lamina (build first, or set LAMINA_EXE)" >&2; exit 2; }

bench() {  # CONFIG [--set KEY=VALUE...]
  local c=$1
  shift
  "$lamina" bench train --config "$c" --micro_batch "$micro" --seq_len "$seq" --device cuda --steps 20 --warmup 5 "$@"
}
seqs() { grep -oE '[0-9.]+ seq/s' | head -n 1 | cut -d' ' -f1; }
mib() { grep -oE 'peak memory( allocated per rank)?: [0-9.]+ MiB|peak memory [0-9.]+ MiB' | grep -oE '[0-9.]+' | head -n 1; }

names=() results=()
run_lamina() {  # NAME CONFIG [--set ...]
  local name=$1 out
  shift
  out=$(bench "$@")
  echo "$out"
  names+=("$name")
  results+=("$(echo "$out" | seqs) $(echo "$out" | mib)")
}
run_lamina "$(basename "$config" .json), gemm attention" "$config" --set run.attention=gemm
run_lamina "$(basename "$config" .json), flash attention" "$config" --set run.attention=flash
for v in "${variants[@]}"; do
  run_lamina "$(basename "$v" .json)" "$v"
done
eager=$(python3 "$root/launch/bench/torch_baseline.py" --config "$config" --micro-batch "$micro" --seq-len "$seq")
echo "$eager"
compiled=$(python3 "$root/launch/bench/torch_baseline.py" --config "$config" --micro-batch "$micro" --seq-len "$seq" --compile)
echo "$compiled"
e="$(echo "$eager" | seqs) $(echo "$eager" | mib)"
c="$(echo "$compiled" | seqs) $(echo "$compiled" | mib)"

echo
echo "micro-batch $micro x seq $seq; torch is HF BertForMaskedLM ($(basename "$config"))"
for i in "${!names[@]}"; do
  python3 - "${names[$i]}" ${results[$i]} $e $c <<'EOF'
import sys
name, ours, ours_mib, eager, eager_mib, compiled, compiled_mib = sys.argv[1], *map(float, sys.argv[2:])
print(f"lamina ({name}): {ours:.1f} seq/s = {ours / eager:.2f}x torch eager, {ours / compiled:.2f}x torch.compile; "
      f"peak memory {ours_mib:.0f} MiB (torch eager {eager_mib:.0f}, compile {compiled_mib:.0f})")
EOF
done
