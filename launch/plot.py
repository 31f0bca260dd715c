#!/usr/bin/env python3
"""Plots training loss and validation MLM loss against step for one or more lamina runs.

    launch/plot.py RUN_DIR... [--out FILE.png] [--smooth N] [--title TEXT] [--logy]

Reads RUN_DIR/metrics.jsonl (records with "kind": "train" and "loss", and "kind": "eval" and
"mlm_loss"; see docs/pretraining.md) and, when present, RUN_DIR/config.json for the legend
(model.norm, the learning rate and the batch size). The training loss is a trailing moving average
over N records (the raw curve is drawn faintly behind it). Runs without eval records appear only
in the training panel. A run whose loss became non-finite is marked with an x at the first
non-finite step. Needs matplotlib (pip install matplotlib); only for plots, never for training.
"""

import argparse
import json
import math
import os
import sys


def read_records(path):
    """The JSON objects of a metrics file; a torn last line (a crash mid-write) is skipped."""
    records = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: torn
                continue
            sys.exit(f"{path}:{number}: not a JSON object")
        if isinstance(record, dict):
            records.append(record)
    return records


def series(records, kind, keys):
    """(steps, values) of the records of `kind` holding the first of `keys`, one value per step
    (the last record of a step wins), sorted by step. Non-finite values are kept as NaN."""
    by_step = {}
    for r in records:
        if r.get("kind", "train") != kind or not isinstance(r.get("step"), int):
            continue
        for key in keys:
            if key in r:
                value = r[key]
                by_step[r["step"]] = float(value) if isinstance(value, (int, float)) else math.nan
                break
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def smooth(values, window):
    """Trailing moving average over `window` values; NaN once a non-finite value is in the window."""
    out, total, count, bad = [], 0.0, 0, 0
    for i, v in enumerate(values):
        if math.isfinite(v):
            total, count = total + v, count + 1
        else:
            bad += 1
        if i >= window:
            old = values[i - window]
            if math.isfinite(old):
                total, count = total - old, count - 1
            else:
                bad -= 1
        out.append(total / count if count and not bad else math.nan)
    return out


def lookup(config, paths):
    """The first value found at one of the dotted `paths` of a nested dict, or None."""
    for path in paths:
        node = config
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None


def run_label(run_dir):
    name = os.path.basename(os.path.normpath(run_dir))
    config_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(config_path):
        return name
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        print(f"warning: {config_path}: {e}", file=sys.stderr)
        return name
    parts = []
    norm = lookup(config, ["model.norm"])
    if norm is not None:
        parts.append(f"{norm}-LN" if norm in ("post", "pre") else f"norm={norm}")
    lr = lookup(config, ["schedule.lr", "optimizer.lr", "lr"])
    if lr is not None:
        parts.append(f"lr={lr:g}" if isinstance(lr, (int, float)) else f"lr={lr}")
    warmup = lookup(config, ["schedule.warmup_steps"])
    if warmup is not None:
        parts.append(f"warmup={warmup}")
    batch = lookup(config, ["batch.global_batch"])
    if batch is not None:
        parts.append(f"batch={batch}")
    return f"{name} ({', '.join(parts)})" if parts else name


def first_non_finite(steps, values):
    for s, v in zip(steps, values):
        if not math.isfinite(v):
            return s
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories holding metrics.jsonl")
    parser.add_argument("--out", default="loss.png", help="output image (default: loss.png)")
    parser.add_argument("--smooth", type=int, default=20, help="moving-average window over train records (1 = raw)")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--logy", action="store_true", help="logarithmic loss axis")
    args = parser.parse_args()
    if args.smooth < 1:
        parser.error("--smooth must be >= 1")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_eval) = plt.subplots(1, 2, figsize=(14, 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    any_eval = False
    for i, run in enumerate(args.runs):
        path = os.path.join(run, "metrics.jsonl")
        if not os.path.exists(path):
            sys.exit(f"{path}: not found")
        records = read_records(path)
        color = colors[i % len(colors)]
        label = run_label(run)
        steps, loss = series(records, "train", ["loss"])
        if steps:
            if args.smooth > 1:
                ax_train.plot(steps, loss, color=color, alpha=0.2, linewidth=0.8)
            ax_train.plot(steps, smooth(loss, args.smooth), color=color, linewidth=1.6, label=label)
            bad = first_non_finite(steps, loss)
            if bad is not None:
                finite = [v for v in loss if math.isfinite(v)]
                ax_train.plot([bad], [finite[-1] if finite else 0], marker="x", markersize=12, color=color,
                              linestyle="none", label=f"{os.path.basename(os.path.normpath(run))}: non-finite at {bad}")
        else:
            print(f"warning: {path}: no train records", file=sys.stderr)
        eval_steps, eval_loss = series(records, "eval", ["mlm_loss", "loss"])
        if eval_steps:
            any_eval = True
            ax_eval.plot(eval_steps, eval_loss, color=color, marker="o", markersize=3.5, linewidth=1.4, label=label)

    ax_train.set_title(f"training loss (moving average of {args.smooth})" if args.smooth > 1 else "training loss")
    ax_eval.set_title("validation MLM loss")
    for ax in (ax_train, ax_eval):
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        if args.logy:
            ax.set_yscale("log")
    ax_train.legend(fontsize=8)
    if any_eval:
        ax_eval.legend(fontsize=8)
    else:
        ax_eval.text(0.5, 0.5, "no eval records", ha="center", va="center", transform=ax_eval.transAxes, color="gray")
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
