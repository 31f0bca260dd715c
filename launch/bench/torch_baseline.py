#!/usr/bin/env python3
"""The PyTorch baseline `lamina bench train` is compared with: HF BertForMaskedLM with the same model
config, bf16 autocast, SDPA attention, fused AdamW, random ids with 15% of positions labelled, eager
and torch.compile, at the same micro-batch and sequence length. Prints the same figures as
`lamina bench train` (seq/s, tokens/s, ms/step, MFU, peak memory).

  python3 launch/bench/torch_baseline.py --config launch/configs/model/bert-base.json \
      --micro-batch 256 --seq-len 128 [--steps 20] [--warmup 5] [--compile]
"""
import argparse
import json
import time


def flops_per_token(c, seq, mask_rate=0.15):
    # The same count as lamina's model/flops.cc: matmuls only, 3x forward.
    h, f, layers, v = c["hidden"], c["ffn"], c["layers"], c["vocab_size"]
    encoder = layers * (2 * (4 * h * h + 2 * h * f) + 4 * seq * h)
    head = mask_rate * 2 * (h * h + h * v)
    return 3 * (encoder + head)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="lamina model config (bare, or a run config with a model section)")
    ap.add_argument("--micro-batch", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak for MFU (H100 SXM: 989)")
    args = ap.parse_args()

    import torch
    from transformers import BertConfig, BertForMaskedLM

    with open(args.config) as f:
        c = json.load(f)
    c = c.get("model", c)
    if isinstance(c, str):
        raise SystemExit("give the model config file itself, not a run config that names it")
    if c.get("norm", "post") != "post":
        raise SystemExit("the HF baseline is Post-LN BERT only (norm: post)")
    # lamina's model.activation: the erf GELU (HF "gelu") or its tanh form (HF "gelu_new").
    hidden_act = {"gelu": "gelu", "gelu_tanh": "gelu_new"}.get(c.get("activation", "gelu"))
    if hidden_act is None:
        raise SystemExit(f"model.activation {c['activation']!r}: expected gelu or gelu_tanh")
    cfg = BertConfig(vocab_size=c["vocab_size"], hidden_size=c["hidden"], num_hidden_layers=c["layers"],
                     num_attention_heads=c["heads"], intermediate_size=c["ffn"],
                     max_position_embeddings=c["max_positions"], type_vocab_size=c["type_vocab"],
                     hidden_dropout_prob=c["hidden_dropout"], attention_probs_dropout_prob=c["attention_dropout"],
                     layer_norm_eps=c["layer_norm_eps"], hidden_act=hidden_act,
                     attn_implementation="sdpa")
    dev = torch.device("cuda")
    model = BertForMaskedLM(cfg).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
    step_model = torch.compile(model) if args.compile else model
    b, t = args.micro_batch, args.seq_len
    ids = torch.randint(5, cfg.vocab_size, (b, t), device=dev)
    labels = torch.full((b, t), -100, device=dev)
    pick = torch.rand(b, t, device=dev) < 0.15
    labels[pick] = ids[pick]

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(args.steps):
        step()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / args.steps
    seqs = b / (ms / 1e3)
    mfu = flops_per_token(c, t) * seqs * t / (args.peak_tflops * 1e12)
    mode = "compiled" if args.compile else "eager"
    print(f"torch {torch.__version__} {mode}: micro-batch {b} x seq {t}: {ms:.2f} ms/step, {seqs:.1f} seq/s, "
          f"{seqs * t:.0f} tokens/s, MFU {100 * mfu:.1f}%, peak memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
