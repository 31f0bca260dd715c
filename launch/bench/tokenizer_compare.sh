#!/usr/bin/env bash
# Tokenizer throughput, lamina vs HF `tokenizers`, on the same text:
#   launch/bench/tokenizer_compare.sh [--vocab FILE] [--input FILE] [--threads N] [--max-mb M] [--repeats R]
# Defaults: the BERT uncased vocab and the first 50 MB of wiki_AA from ../shared/data, all hardware
# threads. LAMINA_BINARY picks the binary (default build/lamina); PYTHON the interpreter.
# Prints both benchmarks' RESULT lines, then lamina/HF throughput ratios per thread count.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
data="$root/../shared/data"
vocab="$data/vocab/bert-base-uncased-vocab.txt"
input="$data/enwiki-2015-wikiextractor/wiki_AA.txt.xz"
threads=$(nproc)
max_mb=50
repeats=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --vocab) vocab="$2"; shift 2 ;;
    --input) input="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --max-mb) max_mb="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
lamina="${LAMINA_BINARY:-$root/build/lamina}"
python="${PYTHON:-python3}"

lamina_out=$("$lamina" bench tokenize --vocab="$vocab" --input="$input" --threads="$threads" --max_mb="$max_mb" \
  --repeats="$repeats")
echo "$lamina_out"
hf_out=$("$python" "$root/launch/bench/tokenizer_baseline.py" --vocab "$vocab" --input "$input" --threads "$threads" \
  --max-mb "$max_mb" --repeats "$repeats")
echo "$hf_out"

# field NAME LINE: the value of NAME=... in a RESULT line.
field() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }
for n in $(grep '^RESULT' <<<"$lamina_out" | sed 's/.*threads=\([0-9]*\).*/\1/'); do
  l=$(grep "^RESULT.* threads=$n " <<<"$lamina_out")
  h=$(grep "^RESULT.* threads=$n " <<<"$hf_out" || true)
  if [[ -z "$h" ]]; then continue; fi
  if [[ "$(field tokens "$l")" != "$(field tokens "$h")" ]]; then
    echo "WARNING: token counts differ at $n threads: lamina $(field tokens "$l"), HF $(field tokens "$h")"
  fi
  awk -v n="$n" -v l="$(field mb_per_s "$l")" -v h="$(field mb_per_s "$h")" \
    'BEGIN { printf "RATIO threads=%d lamina_mb_per_s=%.2f hf_mb_per_s=%.2f lamina_over_hf=%.2f\n", n, l, h, l / h }'
done
