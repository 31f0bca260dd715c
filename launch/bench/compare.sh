#!/usr/bin/env bash
# lamina against the PyTorch baseline on the same GPU, config, micro-batch and sequence length.
#   launch/bench/compare.sh [CONFIG] [MICRO_BATCH] [SEQ_LEN]
# (defaults: launch/configs/model/bert-base.json 256 128). Needs a CUDA build and torch+transformers.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
config=${1:-$root/launch/configs/model/bert-base.json}
micro=${2:-256}
seq=${3:-128}
lamina=${LAMINA_EXE:-$root/build/lamina}
# lamina with each of its CUDA attention implementations (run.attention).
ours_gemm=$("$lamina" bench train --config "$config" --micro_batch "$micro" --seq_len "$seq" --device cuda --steps 20 \
  --warmup 5 --set run.attention=gemm)
echo "$ours_gemm"
ours_flash=$("$lamina" bench train --config "$config" --micro_batch "$micro" --seq_len "$seq" --device cuda --steps 20 \
  --warmup 5 --set run.attention=flash)
echo "$ours_flash"
eager=$(python3 "$root/launch/bench/torch_baseline.py" --config "$config" --micro-batch "$micro" --seq-len "$seq")
echo "$eager"
compiled=$(python3 "$root/launch/bench/torch_baseline.py" --config "$config" --micro-batch "$micro" --seq-len "$seq" --compile)
echo "$compiled"
seqs() { grep -oE '[0-9.]+ seq/s' | head -n 1 | cut -d' ' -f1; }
g=$(echo "$ours_gemm" | seqs); f=$(echo "$ours_flash" | seqs); e=$(echo "$eager" | seqs); c=$(echo "$compiled" | seqs)
python3 -c "
for name, v in (('gemm', $g), ('flash', $f)):
    print(f'lamina ({name} attention) / torch eager: {v / $e:.2f}x   / torch.compile: {v / $c:.2f}x')"
