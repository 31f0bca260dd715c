#!/usr/bin/env python3
"""HF `tokenizers` (Rust) throughput on the same text as `lamina bench tokenize`, same figures.

Reads whole lines (plain or .xz) until --max-mb MB (1e6 bytes, each line counted with its
newline), like the lamina benchmark, then times
  - 1 thread:  encode_batch over all lines with RAYON_NUM_THREADS=1 (run in a child process,
               since rayon reads the variable once), i.e. the Rust code single-threaded;
  - N threads: encode_batch with RAYON_NUM_THREADS=N (HF's batched parallel path).
Tokenizer: BertWordPieceTokenizer(vocab, lowercase=True), add_special_tokens=False: the
reference lamina's tokenizer is tested against. The figures include building the Encoding
objects (offsets, attention masks...), which `tokenizers` always does.

usage: tokenizer_baseline.py --vocab FILE --input FILE [FILE...] [--threads N] [--max-mb M] [--repeats R]
"""
import argparse
import lzma
import os
import subprocess
import sys
import time


def read_lines(paths, max_bytes):
    lines, total = [], 0
    for path in paths:
        with open(path, "rb") as probe:
            is_xz = probe.read(6) == b"\xfd7zXZ\x00"
        with (lzma.open(path, "rb") if is_xz else open(path, "rb")) as f:
            for raw in f:
                if total >= max_bytes:
                    return lines, total
                line = raw.rstrip(b"\n")
                if line.endswith(b"\r"):
                    line = line[:-1]
                total += len(line) + 1
                lines.append(line.decode("utf-8", errors="replace"))
        if total >= max_bytes:
            break
    return lines, total


def measure(args, threads):
    """Runs in a child whose RAYON_NUM_THREADS is `threads`; prints one RESULT line."""
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(args.vocab, lowercase=True)
    lines, total = read_lines(args.input, int(args.max_mb * 1e6))
    tok.encode_batch(lines[: max(1, len(lines) // 10)], add_special_tokens=False)  # warm-up
    best, tokens = None, 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        encodings = tok.encode_batch(lines, add_special_tokens=False)
        seconds = time.perf_counter() - start
        tokens = sum(len(e.ids) for e in encodings)
        del encodings
        best = seconds if best is None else min(best, seconds)
    mb_s, tok_s = total / 1e6 / best, tokens / best
    print(f"RESULT impl=hf_tokenizers threads={threads} seconds={best:.3f} tokens={tokens} mb_per_s={mb_s:.2f} "
          f"tokens_per_s={tok_s:.0f} mb_per_s_per_thread={mb_s / threads:.2f} "
          f"tokens_per_s_per_thread={tok_s / threads:.0f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--input", nargs="+", required=True)
    ap.add_argument("--threads", type=int, default=0, help="0 = one per hardware thread")
    ap.add_argument("--max-mb", type=float, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_threads:
        measure(args, args.child_threads)
        return
    threads = args.threads or os.cpu_count()
    import tokenizers

    lines, total = read_lines(args.input, int(args.max_mb * 1e6))
    print(f"text: {len(lines)} lines, {total / 1e6:.1f} MB from {len(args.input)} file(s); "
          f"tokenizers {tokenizers.__version__}", flush=True)
    single = None
    for n in sorted({1, threads}):
        env = dict(os.environ, RAYON_NUM_THREADS=str(n), TOKENIZERS_PARALLELISM="true")
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child-threads", str(n)], env=env,
                             check=True, capture_output=True, text=True).stdout.strip()
        fields = dict(kv.split("=") for kv in out.split()[1:])
        single = single or float(fields["mb_per_s"])
        print(f"{out} scaling={float(fields['mb_per_s']) / single:.2f}", flush=True)


if __name__ == "__main__":
    main()
