"""The analyses of the claim experiments: one function per kind of claim, named by an experiment
file's "analysis" key (ANALYSES below).

Each gets the finished runs (RunData: axis values, status, resolved config, eval and layer records
or the grad-norms output), the file's criterion (fixed before anything ran) and the claim's output
directory; it returns a Result: JSON-able figures, a verdict ("reproduced", "partly reproduced",
"not reproduced", or "inconclusive" where the runs cannot tell the arms apart) with its reason in one sentence, a plain-text table, and the PNGs it wrote there
(dpi 100 and modest sizes keep each well under 200 KB). Runs are grouped by their axis values, never
by name patterns; which arm is Post-LN or has no warmup is read from the run's resolved config
(model.norm, schedule.warmup_steps), so an axis may be named as the file likes.
"""

import math
import statistics
from dataclasses import dataclass, field

REPRODUCED, PARTLY, NOT_REPRODUCED = "reproduced", "partly reproduced", "not reproduced"
INCONCLUSIVE = "inconclusive"  # the runs cannot tell the arms apart (e.g. no model beats chance)
SEED = "seed"  # the axis whose runs are repeats of one arm
DPI = 100


class AnalysisError(Exception):
    """The runs cannot answer the claim as the file set it up (e.g. no arm without warmup)."""


@dataclass
class RunData:
    """A finished (or diverged) run as the analyses read it."""

    name: str
    axes: dict
    status: str
    wall_s: float
    diverged_step: int | None = None
    config: dict = field(default_factory=dict)
    evals: list = field(default_factory=list)
    layers: list = field(default_factory=list)
    grad_norms: dict | None = None
    finetune: dict = field(default_factory=dict)  # task -> finetune-sweep's sweep.json

    @property
    def final_loss(self):
        """The validation MLM loss at the last step; +inf for a diverged run, whose loss is lost."""
        if self.status != "finished" or not self.evals or self.evals[-1].get("mlm_loss") is None:
            return math.inf
        return self.evals[-1]["mlm_loss"]

    def curve(self):
        """(steps, val losses) with the non-finite evaluations dropped."""
        points = [(r["step"], r["mlm_loss"]) for r in self.evals if r.get("mlm_loss") is not None]
        return [s for s, _ in points], [v for _, v in points]

    def setting(self, dotted, default=None):
        node = self.config
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return default if node is None else node


@dataclass
class Result:
    figures: dict
    verdict: str
    reason: str
    table: list
    plots: list


@dataclass
class Analysis:
    function: object
    kind: str  # the experiment kind whose runs it reads
    criterion: dict  # key -> check(value) returning a problem or None


# ----------------------------------------------------------------------------------------------
# Shared helpers.


def arms(runs, *exclude):
    """Runs grouped by their axis values other than `exclude` (seeds are always pooled), as
    {((axis, value), ...): [runs]} in sorted order."""
    groups = {}
    for run in runs:
        groups.setdefault(group_key(run, *exclude), []).append(run)
    return dict(sorted(groups.items(), key=lambda item: [(a, natural(v)) for a, v in item[0]]))


def group_key(run, *exclude):
    return tuple(sorted((a, v) for a, v in run.axes.items() if a not in exclude + (SEED,)))


def natural(value):
    """Sort key of an axis value: numbers ("6", "1e-3") by value, before names."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def label(key):
    return ", ".join(f"{a}={v}" for a, v in key) or "all runs"


def stats(runs):
    """Final val loss over an arm's seeds; the mean is +inf when any seed diverged."""
    finals = [r.final_loss for r in runs]
    finite = [f for f in finals if math.isfinite(f)]
    return {"finals": {seed_of(r): f for r, f in zip(runs, finals)},
            "mean": sum(finals) / len(finals),
            "min": min(finite) if finite else math.inf, "max": max(finite) if finite else math.inf,
            "diverged": sum(r.status == "diverged" for r in runs), "seeds": len(runs)}


def seed_of(run):
    return run.axes.get(SEED, run.name)


def mean_curve(runs):
    """The mean val loss over runs at the steps that every run evaluated."""
    curves = [dict(zip(*run.curve())) for run in runs]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    return steps, [sum(c[s] for c in curves) / len(curves) for s in steps]


def verdict(passed, total):
    return REPRODUCED if passed == total else PARTLY if passed else NOT_REPRODUCED


def table(headers, rows):
    """Plain-text columns, numbers with 4 significant digits."""
    cells = [[cell_text(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(row):
        return "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells]


def cell_text(value):
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "inf" if value > 0 else "nan"
    return "-" if value is None else str(value)


def is_number(value):
    return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "expected a number"


def is_range(value):
    ok = (isinstance(value, list) and len(value) == 2 and not any(is_number(v) for v in value)
          and value[0] < value[1])
    return None if ok else "expected [low, high] with low < high"


def names_of(*roles):
    def check(value):
        ok = isinstance(value, dict) and set(value) == set(roles) and all(isinstance(v, str) for v in value.values())
        return None if ok else f"expected an object mapping each of {', '.join(roles)} to an axis value"
    return check


def pyplot():
    """matplotlib's pyplot on the Agg backend, imported only when plotting."""
    try:
        import matplotlib
    except ImportError:
        raise AnalysisError("the plots need matplotlib: python3 -m pip install matplotlib "
                            "(launch/setup.sh installs it)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def subplots(plt, panels, width=5.0, height=3.6, columns=3, sharey=False):
    rows, cols = math.ceil(panels / columns), min(panels, columns)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                             sharey=sharey, layout="constrained")
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:panels])


def save(plt, fig, out_dir, name):
    fig.savefig(f"{out_dir}/{name}", dpi=DPI)
    plt.close(fig)
    return name


def draw_arm(ax, runs, colour, name):
    """Each seed thin, the mean over seeds bold; a diverged seed gets an x at its divergence."""
    for run in runs:
        steps, losses = run.curve()
        ax.plot(steps, losses, color=colour, linewidth=0.7, alpha=0.45)
        if run.status == "diverged":  # at its last loss, or at the top when it never evaluated
            y, where = (losses[-1], ax.transData) if losses else (0.97, ax.get_xaxis_transform())
            ax.plot([run.diverged_step], [y], "x", color=colour, markersize=8, mew=2, transform=where)
    ax.plot(*mean_curve(runs), color=colour, linewidth=2.2, label=name)


def loss_axes(ax, title):
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel("val MLM loss")
    ax.grid(alpha=0.3)


# ----------------------------------------------------------------------------------------------
# Claim 0: gradient norms at initialisation (Xiong et al. 2020, figure 3).


def grad_norms_at_init(runs, criterion, out_dir):
    """Post-LN's FFN gradients grow towards the last layer and do not shrink with depth; Pre-LN's
    are even across layers and shrink like 1/sqrt(L). Checked on every (variant, init) run whose
    norm is post or pre; other norms (T-Fixup) are measured and drawn only."""
    figures, rows, passed, checked = {}, [], 0, 0
    for run in runs:
        f = depth_figures(run.grad_norms)
        f["check"], f["why"] = check_grad_norms(f, criterion)
        figures[run.name] = f
        checked += f["check"] != "not checked"
        passed += f["check"] == "pass"
        rows.append([run.name, f["norm"], f["init"], f["ratio_last_first"], f["slope_last_layer"], f["check"]])
    if not checked:
        raise AnalysisError("no run has model.norm post or pre")
    failing = [f"{name} ({f['why']})" for name, f in figures.items() if f["check"] == "fail"]
    reason = (f"{passed} of {checked} Post-LN/Pre-LN runs match the paper's shape"
              + (f"; failing: {'; '.join(failing)}" if failing else ""))
    plt = pyplot()
    plots = [plot_norm_vs_layer(plt, runs, out_dir), plot_last_layer_vs_depth(plt, runs, figures, out_dir)]
    return Result({"runs": figures}, verdict(passed, checked), reason,
                  table(["run", "norm", "init", "last/first", "slope vs L", "check"], rows), plots)


def depth_figures(output):
    """FFN norms per layer per depth, the last/first-layer ratio at the largest depth (W1 and W2
    geometrically averaged) and the log-log slope of the last layer's norm against depth."""
    depths = sorted(output["depths"], key=lambda d: d["layers"])
    ffn = {d["layers"]: {g: d["grad_norm"][g] for g in ("ffn_w1", "ffn_w2")} for d in depths}
    if not all(isinstance(v, (int, float)) and 0 < v < math.inf for f in ffn.values() for g in f.values() for v in g):
        raise AnalysisError(f"{output.get('norm')}/{output.get('init')}: an FFN gradient norm is zero or not finite")
    deepest = ffn[depths[-1]["layers"]]
    ratio = math.sqrt(deepest["ffn_w1"][-1] / deepest["ffn_w1"][0] * deepest["ffn_w2"][-1] / deepest["ffn_w2"][0])
    ls = list(ffn)
    w1, w2 = ([ffn[L][g][-1] for L in ls] for g in ("ffn_w1", "ffn_w2"))
    both = [math.sqrt(a * b) for a, b in zip(w1, w2)]
    return {"norm": output.get("norm"), "init": output.get("init"), "depths": ffn,
            "ratio_last_first": ratio, "slope_last_layer": loglog_slope(ls, both),
            "slope_w1": loglog_slope(ls, w1), "slope_w2": loglog_slope(ls, w2)}


def loglog_slope(xs, ys):
    """Least-squares slope of log y against log x; None with fewer than two points."""
    if len(xs) < 2:
        return None
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def check_grad_norms(f, c):
    """("pass" | "fail" | "not checked", why) for one run against the criterion."""
    ratio, slope = f["ratio_last_first"], f["slope_last_layer"]
    if f["norm"] not in ("post", "pre"):
        return "not checked", f"norm {f['norm']}"
    if slope is None:
        return "fail", "one depth only: no slope"
    if f["norm"] == "post":
        ok = ratio > c["postln_min_ratio"] and abs(slope) < c["postln_max_abs_slope"]
        want = f"ratio > {c['postln_min_ratio']}, |slope| < {c['postln_max_abs_slope']}"
    else:
        (r0, r1), (s0, s1) = c["preln_ratio_range"], c["preln_slope_range"]
        ok = r0 < ratio < r1 and s0 < slope < s1
        want = f"{r0} < ratio < {r1}, {s0} < slope < {s1}"
    return ("pass" if ok else "fail"), f"ratio {ratio:.3g}, slope {slope:.3g}; wanted {want}"


def plot_norm_vs_layer(plt, runs, out_dir):
    """A panel per (variant, init) run: the FFN W2 gradient norm per layer, a line per depth."""
    fig, axes = subplots(plt, len(runs), width=4.2, height=3.2, sharey=True)
    for ax, run in zip(axes, runs):
        depths = sorted(run.grad_norms["depths"], key=lambda d: d["layers"])
        colours = plt.cm.viridis([i / max(1, len(depths) - 1) for i in range(len(depths))])
        for d, colour in zip(depths, colours):
            norms = d["grad_norm"]["ffn_w2"]
            ax.plot(range(1, len(norms) + 1), norms, color=colour, marker=".", label=f"L={d['layers']}")
        ax.set_yscale("log")
        ax.set_title(run_title(run), fontsize=10)
        ax.set_xlabel("layer")
        ax.set_ylabel("FFN W2 grad norm")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save(plt, fig, out_dir, "norm_vs_layer.png")


def run_title(run):
    return " / ".join(str(run.axes[a]) for a in ("variant", "init") if a in run.axes) or run.name


def plot_last_layer_vs_depth(plt, runs, figures, out_dir):
    """The last layer's FFN norms against depth (log-log), with a 1/sqrt(L) reference."""
    fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
    colours = plt.cm.tab10.colors
    first_points = []
    for i, run in enumerate(runs):
        ffn = figures[run.name]["depths"]
        ls = sorted(ffn)
        colour = colours[i % len(colours)]
        ax.plot(ls, [ffn[L]["ffn_w2"][-1] for L in ls], "-o", color=colour, ms=3, label=run_title(run))
        ax.plot(ls, [ffn[L]["ffn_w1"][-1] for L in ls], "--", color=colour)
        first_points.append((ls[0], ffn[ls[0]]["ffn_w2"][-1]))
    l0 = min(p[0] for p in first_points)
    y0 = math.exp(sum(math.log(p[1]) for p in first_points) / len(first_points))
    l1 = max(L for f in figures.values() for L in f["depths"])
    ax.plot([l0, l1], [y0, y0 * math.sqrt(l0 / l1)], ":", color="black", label="1/sqrt(L)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    depths = sorted({L for f in figures.values() for L in f["depths"]})
    ax.set_xticks(depths, [str(L) for L in depths])
    ax.minorticks_off()
    ax.set_xlabel("layers L")
    ax.set_ylabel("last-layer FFN grad norm (W2 solid, W1 dashed)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save(plt, fig, out_dir, "last_layer_vs_depth.png")


# ----------------------------------------------------------------------------------------------
# Claim 1: Post-LN needs warmup.


def warmup(runs, criterion, out_dir):
    """At each learning rate (each combination of the axes other than warmup and seed), the arm
    without warmup ends worse than the best warmup arm by more than criterion.margin. A setting
    without both kinds of arm (an ablation block, say) is reported but not judged."""
    cells, groups, rows = [], [], []
    for key, group in arms(runs, "warmup").items():
        arm_stats = {}
        for arm_key, arm_runs in warmup_arms(group).items():
            s = arm_stats[arm_key] = stats(arm_runs)
            w, steps = dict(arm_key).get("warmup"), arm_runs[0].setting("schedule.warmup_steps", 0)
            cells.append({"group": dict(key), "warmup": w, "warmup_steps": steps, **s})
            rows.append([label(key), w, steps, s["seeds"], s["mean"], s["min"], s["max"], s["diverged"]])
        groups.append(compare_warmup(key, group, arm_stats, criterion["margin"]))
    judged = [g for g in groups if g["compared"]]
    if not judged:
        raise AnalysisError("no setting has both an arm with schedule.warmup_steps 0 and one with warmup")
    passed = sum(g["reproduced"] for g in judged)
    reason = (f"without warmup the final val loss is worse than the best warmup arm's by more than "
              f"{criterion['margin']} at {passed} of {len(judged)} settings ("
              + "; ".join(f"{label(tuple(g['group'].items()))}: gap {cell_text(g['gap'])}" for g in judged) + ")"
              + (f"; {len(groups) - len(judged)} setting(s) without both arms not judged"
                 if len(judged) < len(groups) else ""))
    plots = [plot_warmup(runs, out_dir)]
    layer_plot = plot_warmup_layers(runs, [g["group"] for g in judged], out_dir)
    if layer_plot:
        plots.append(layer_plot)
    return Result({"cells": cells, "groups": groups}, verdict(passed, len(judged)), reason,
                  table(["setting", "warmup", "steps", "seeds", "mean", "min", "max", "diverged"], rows), plots)


def compare_warmup(key, group, arm_stats, margin):
    """One setting's no-warmup arm against its best warmup arm (a diverged seed makes a mean +inf)."""
    no_warmup = [k for k, rs in arms(group).items() if rs[0].setting("schedule.warmup_steps", 0) == 0]
    with_warmup = [k for k in arm_stats if k not in no_warmup]
    if len(no_warmup) != 1 or not with_warmup:
        return {"group": dict(key), "compared": False, "reproduced": None}
    best = min(with_warmup, key=lambda k: arm_stats[k]["mean"])
    none_mean, best_mean = arm_stats[no_warmup[0]]["mean"], arm_stats[best]["mean"]
    gap = none_mean - best_mean if math.isfinite(best_mean) else None
    return {"group": dict(key), "compared": True, "no_warmup_mean": none_mean,
            "best_warmup": dict(best).get("warmup"), "best_warmup_mean": best_mean, "gap": gap,
            "reproduced": gap is not None and gap > margin}


def warmup_arms(runs):
    """The arms of one setting, by their warmup length."""
    return dict(sorted(arms(runs).items(), key=lambda item: item[1][0].setting("schedule.warmup_steps", 0)))


def plot_warmup_layers(runs, judged_groups, out_dir):
    """The layer norms of the lowest seed of each warmup arm, in the last judged setting (the
    largest learning rate when lr is the only other axis)."""
    if not judged_groups:
        return None
    key = tuple(sorted(judged_groups[-1].items()))
    chosen = []
    for arm_runs in warmup_arms([r for r in runs if group_key(r, "warmup") == key]).values():
        with_layers = sorted((r for r in arm_runs if r.layers), key=lambda r: natural(seed_of(r)))
        if with_layers:
            chosen.append(with_layers[0])
    if not chosen:
        return None
    return plot_layer_norms(chosen, lambda run: f"warmup {run.setting('schedule.warmup_steps', 0)} steps",
                            f"{label(key)}, seed {seed_of(chosen[0])}", out_dir, "warmup_layers.png")


def plot_warmup(runs, out_dir):
    """A panel per learning rate: val loss against step, a colour per warmup arm."""
    plt = pyplot()
    groups = arms(runs, "warmup")
    fig, axes = subplots(plt, len(groups))
    for ax, (key, group) in zip(axes, groups.items()):
        for i, (arm_key, arm_runs) in enumerate(warmup_arms(group).items()):
            steps = arm_runs[0].setting("schedule.warmup_steps", 0)
            draw_arm(ax, arm_runs, plt.cm.tab10.colors[i % 10], f"warmup {dict(arm_key).get('warmup')} ({steps} steps)")
        loss_axes(ax, label(key))
        ax.legend(fontsize=7)
    return save(plt, fig, out_dir, "warmup_curves.png")


# ----------------------------------------------------------------------------------------------
# Claim 2: Pre-LN without warmup reaches Post-LN's final loss in fewer steps.


def convergence(runs, criterion, out_dir):
    """The best Pre-LN arm's mean val loss first reaches the best Post-LN arm's final loss at a
    fraction of the steps no larger than criterion.max_ratio."""
    post, pre = best_arm(runs, "post"), best_arm(runs, "pre")
    l_post, total = post["mean"], post["runs"][0].setting("run.steps")
    if not math.isfinite(l_post) or not math.isfinite(pre["mean"]):
        raise AnalysisError("every Post-LN or every Pre-LN arm has a diverged seed: nothing to compare")
    crossing = first_below(*mean_curve(pre["runs"]), l_post)
    per_seed = [{"run": r.name, "crossing_step": first_below(*r.curve(), l_post)} for r in pre["runs"]]
    for p in per_seed:
        p["ratio"] = p["crossing_step"] / total if p["crossing_step"] is not None else None
    ratios = [p["ratio"] for p in per_seed if p["ratio"] is not None]
    ratio = crossing / total if crossing is not None else None
    figures = {"postln_best": summary_of(post), "preln_best": summary_of(pre), "l_post": l_post,
               "total_steps": total, "crossing_step": crossing, "crossing_ratio": ratio,
               "per_seed": per_seed, "per_seed_ratio_range": [min(ratios), max(ratios)] if ratios else None}
    if ratio is None:
        result, reason = NOT_REPRODUCED, f"the best Pre-LN arm never reaches Post-LN's final loss {l_post:.4g}"
    else:
        result = REPRODUCED if ratio <= criterion["max_ratio"] else PARTLY
        reason = (f"the best Pre-LN arm reaches Post-LN's final loss {l_post:.4g} at step {crossing} of {total} "
                  f"(ratio {ratio:.3g}; criterion <= {criterion['max_ratio']}, the paper about 0.6)")
    rows = [[norm, label(k), s["seeds"], s["mean"], s["diverged"], "best" if k == best["key"] else ""]
            for norm, best in (("post", post), ("pre", pre)) for k, s in best["all"].items()]
    lines = table(["norm", "arm", "seeds", "mean final", "diverged", "best"], rows)
    lines.append(f"crossing: step {cell_text(crossing)} of {total} (ratio {cell_text(ratio)}), "
                 f"per seed {[p['crossing_step'] for p in per_seed]}")
    return Result(figures, result, reason, lines, [plot_convergence(post, pre, l_post, crossing, out_dir)])


def best_arm(runs, norm):
    """Of the arms whose model.norm is `norm`, the one with the lowest mean final val loss."""
    all_arms = {k: rs for k, rs in arms(runs).items() if rs[0].setting("model.norm") == norm}
    if not all_arms:
        raise AnalysisError(f"no run has model.norm {norm}")
    all_stats = {k: stats(rs) for k, rs in all_arms.items()}
    key = min(all_stats, key=lambda k: all_stats[k]["mean"])
    return {"key": key, "runs": all_arms[key], "mean": all_stats[key]["mean"], "all": all_stats}


def summary_of(arm):
    return {"arm": dict(arm["key"]), "mean_final": arm["mean"], "steps": arm["runs"][0].setting("run.steps"),
            "finals": stats(arm["runs"])["finals"]}


def first_below(steps, losses, target):
    return next((s for s, v in zip(steps, losses) if v <= target), None)


def plot_convergence(post, pre, l_post, crossing, out_dir):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    draw_arm(ax, post["runs"], "C0", f"Post-LN {label(post['key'])}")
    draw_arm(ax, pre["runs"], "C1", f"Pre-LN {label(pre['key'])}")
    ax.axhline(l_post, color="gray", linestyle="--", linewidth=1, label=f"Post-LN final {l_post:.3f}")
    if crossing is not None:
        ax.axvline(crossing, color="C1", linestyle=":", linewidth=1, label=f"Pre-LN reaches it: step {crossing}")
    loss_axes(ax, "best Post-LN vs best Pre-LN")
    ax.legend(fontsize=7)
    return save(plt, fig, out_dir, "convergence.png")


# ----------------------------------------------------------------------------------------------
# Claim 4: T-Fixup trains without LayerNorm and without warmup.


def tfixup(runs, criterion, out_dir):
    """T-Fixup ends no worse than Pre-LN + margin, and Post-LN without warmup ends worse than
    T-Fixup by more than the margin; in every group of the other axes (e.g. depth)."""
    roles, margin = criterion["variants"], criterion["margin"]
    groups, rows = [], []
    for key, group in arms(runs, "variant").items():
        by_variant = {}
        for run in group:
            by_variant.setdefault(run.axes.get("variant"), []).append(run)
        missing = [f"{role} ({value})" for role, value in roles.items() if value not in by_variant]
        if missing:
            raise AnalysisError(f"{label(key)}: no runs of {', '.join(missing)}")
        s = {v: stats(rs) for v, rs in sorted(by_variant.items())}
        t, p, q = (s[roles[r]]["mean"] for r in ("tfixup", "preln", "postln"))
        groups.append({"group": dict(key), "variants": s, "tfixup_within_margin_of_preln": t <= p + margin,
                       "postln_worse_than_tfixup": math.isfinite(t) and q - t > margin})
        rows += [[label(key), v, x["seeds"], x["mean"], x["min"], x["max"], x["diverged"]] for v, x in s.items()]
    held = [all(g[c] for g in groups) for c in ("tfixup_within_margin_of_preln", "postln_worse_than_tfixup")]
    reason = (f"T-Fixup within {margin} of Pre-LN: {'yes' if held[0] else 'no'}; Post-LN without warmup "
              f"worse than T-Fixup by more than {margin}: {'yes' if held[1] else 'no'} (in every group)")
    plots = [plot_tfixup_curves(runs, out_dir)]
    layer_plot = plot_tfixup_layers(runs, roles, out_dir)
    if layer_plot:
        plots.append(layer_plot)
    return Result({"groups": groups}, verdict(sum(held), 2), reason,
                  table(["group", "variant", "seeds", "mean", "min", "max", "diverged"], rows), plots)


def plot_tfixup_curves(runs, out_dir):
    plt = pyplot()
    groups = arms(runs, "variant")
    fig, axes = subplots(plt, len(groups))
    for ax, (key, group) in zip(axes, groups.items()):
        variants = sorted({r.axes.get("variant") for r in group})
        for i, v in enumerate(variants):
            draw_arm(ax, [r for r in group if r.axes.get("variant") == v], plt.cm.tab10.colors[i % 10], v)
        loss_axes(ax, label(key))
        ax.legend(fontsize=7)
    return save(plt, fig, out_dir, "tfixup_curves.png")


def layer_runs(runs, roles):
    """Per variant (the criterion's roles first), the lowest seed's run with layer records, in the
    last group of the other axes (the deepest, when there is a depth axis)."""
    with_layers = [r for r in runs if r.layers]
    if not with_layers:
        return []
    last_group = list(arms(with_layers, "variant"))[-1]
    order = list(roles.values())
    chosen = {}
    for run in sorted(with_layers, key=lambda r: natural(seed_of(r))):
        if group_key(run, "variant") == last_group:
            variant = run.axes.get("variant")
            chosen.setdefault((order.index(variant) if variant in order else len(order), variant), run)
    return [chosen[k] for k in sorted(chosen)]


def plot_tfixup_layers(runs, roles, out_dir):
    """The layer norms of one seed of each variant (layer_runs)."""
    chosen = layer_runs(runs, roles)
    if not chosen:
        return None
    return plot_layer_norms(chosen, lambda run: run.axes.get("variant"),
                            f"{label(group_key(chosen[0], 'variant'))}, seed {seed_of(chosen[0])}",
                            out_dir, "tfixup_layers.png")


def plot_layer_norms(chosen, title_of, suptitle, out_dir, name):
    """A row per run: the FFN W2 gradient norm and update norm of every layer against step
    (log-log, so the first steps, where Post-LN without warmup goes wrong, get room)."""
    plt = pyplot()
    fig, axes = plt.subplots(len(chosen), 2, figsize=(8, 2.2 * len(chosen)), squeeze=False, layout="constrained")
    fig.suptitle(suptitle, fontsize=10)
    for row, run in zip(axes, chosen):
        layers = len(run.layers[0]["grad_norm"]["ffn_w2"])
        colours = plt.cm.viridis([i / max(1, layers - 1) for i in range(layers)])
        steps = [r["step"] for r in run.layers]
        for ax, what in zip(row, ("grad_norm", "update_norm")):
            for layer in range(layers):
                ax.plot(steps, [r[what]["ffn_w2"][layer] for r in run.layers], color=colours[layer], linewidth=1)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{title_of(run)}: FFN W2 {what.replace('_', ' ')}", fontsize=9)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        mappable = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(1, max(layers, 2)))
        fig.colorbar(mappable, ax=list(row), label="layer")
    return save(plt, fig, out_dir, name)


# ----------------------------------------------------------------------------------------------
# Claim 3: finetuned on MRPC and RTE, Pre-LN is ahead of Post-LN at the same pretraining step.

METRIC_TITLES = {"accuracy": "dev accuracy", "f1": "dev F1"}


def downstream(runs, criterion, out_dir):
    """Per task, averaged over the pretraining checkpoints, Pre-LN's median finetuned dev accuracy
    (over finetuning seeds, at each checkpoint's best lr) exceeds Post-LN's by more than
    criterion.margin. A task where no checkpoint of any run beats its majority-class baseline
    (criterion.baselines) by the margin cannot tell the variants apart: it is reported, not judged."""
    margin, baselines = criterion["margin"], criterion["baselines"]
    by_norm = {}
    for key, arm_runs in arms(runs).items():
        by_norm.setdefault(arm_runs[0].setting("model.norm"), []).append((key, arm_runs))
    for norm in ("post", "pre"):
        if len(by_norm.get(norm, [])) != 1:
            raise AnalysisError(f"expected exactly one arm with model.norm {norm}, found {len(by_norm.get(norm, []))}")
    tasks = sorted({task for run in runs for task in run.finetune})
    if not tasks:
        raise AnalysisError("no run has finetuning results (the scale needs a 'finetune' section)")
    if not set(tasks) <= set(baselines):
        raise AnalysisError(f"criterion.baselines has no baseline for {', '.join(sorted(set(tasks) - set(baselines)))}")
    curves, rows, judged = {}, [], {}
    for task in tasks:
        curves[task] = {label(key): arm_points(arm_runs, task) for key, arm_runs in arms(runs).items()}
        for arm, points in curves[task].items():
            rows += [[task, arm, p["step"], p["best_lr"], p["accuracy"]["median"], p["accuracy"]["min"],
                      p["accuracy"]["max"], p.get("f1", {}).get("median")] for p in points]
        best = max((p["accuracy"]["median"] for points in curves[task].values() for p in points), default=-math.inf)
        post, pre = (mean_median(curves[task][label(by_norm[n][0][0])]) for n in ("post", "pre"))
        judged[task] = {"baseline": baselines[task], "best_median": best,
                        "testable": best > baselines[task] + margin,
                        "postln_mean_median": post, "preln_mean_median": pre, "gap": pre - post}
        judged[task]["reproduced"] = judged[task]["testable"] and pre - post > margin
    testable = [t for t in tasks if judged[t]["testable"]]
    passed = sum(judged[t]["reproduced"] for t in testable)
    parts = [f"{t}: Pre-LN {judged[t]['preln_mean_median']:.3f} vs Post-LN {judged[t]['postln_mean_median']:.3f} "
             f"(best of any checkpoint {judged[t]['best_median']:.3f}, baseline {judged[t]['baseline']:.3f}"
             f"{'' if judged[t]['testable'] else ': not above it by the margin, not judged'})" for t in tasks]
    reason = (f"mean over the checkpoints of the median finetuned dev accuracy, margin {margin}: " + "; ".join(parts))
    result = verdict(passed, len(testable)) if testable else INCONCLUSIVE
    plots = [plot_downstream(runs, curves, baselines, criterion.get("f1_baselines", {}), out_dir)]
    return Result({"tasks": judged, "curves": curves}, result, reason,
                  table(["task", "arm", "step", "best lr", "acc median", "min", "max", "F1 median"], rows), plots)


def arm_points(arm_runs, task):
    """A pretraining arm's finetuning points on `task`: per checkpoint step, the sweep's best lr
    and the statistics over finetuning seeds of each final-epoch metric. Pretraining seeds, where
    an arm has several, are pooled by taking the median of their medians."""
    by_step = {}
    for run in arm_runs:
        for p in run.finetune.get(task, {}).get("points", []):
            by_step.setdefault(p["step"], []).append(p)
    points = []
    for step, ps in sorted(by_step.items()):
        point = {"step": step, "best_lr": ps[0]["best_lr"] if len(ps) == 1 else [p["best_lr"] for p in ps]}
        for metric in ("accuracy", "f1"):
            if metric in ps[0]["final"]:
                point[metric] = {"median": statistics.median(p["final"][metric]["median"] for p in ps),
                                 "min": min(p["final"][metric]["min"] for p in ps),
                                 "max": max(p["final"][metric]["max"] for p in ps),
                                 "n": sum(p["final"][metric]["n"] for p in ps)}
        points.append(point)
    return points


def mean_median(points):
    return sum(p["accuracy"]["median"] for p in points) / len(points) if points else -math.inf


def plot_downstream(runs, curves, baselines, f1_baselines, out_dir):
    """A panel per task and metric: the median over finetuning seeds against pretraining step, the
    seeds' range as error bars, a line per arm, the majority-class baseline dashed; and a panel of
    the arms' pretraining val loss."""
    plt = pyplot()
    panels = [(task, metric) for task in curves for metric in ("accuracy", "f1")
              if any(metric in p for points in curves[task].values() for p in points)]
    fig, axes = subplots(plt, len(panels) + 1, width=4.6, height=3.4, columns=4)
    for ax, (task, metric) in zip(axes, panels):
        for i, (arm, points) in enumerate(curves[task].items()):
            steps = [p["step"] for p in points]
            mid = [p[metric]["median"] for p in points]
            low = [p[metric]["median"] - p[metric]["min"] for p in points]
            high = [p[metric]["max"] - p[metric]["median"] for p in points]
            ax.errorbar(steps, mid, yerr=[low, high], color=plt.cm.tab10.colors[i % 10], marker="o", capsize=3,
                        label=arm)
        base = baselines[task] if metric == "accuracy" else f1_baselines.get(task)
        if base is not None:
            ax.axhline(base, color="gray", linestyle="--", linewidth=1, label=f"majority class {base:.3f}")
        ax.set_title(f"{task.upper()} {METRIC_TITLES[metric]}", fontsize=10)
        ax.set_xlabel("pretraining step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for i, (key, arm_runs) in enumerate(arms(runs).items()):
        draw_arm(axes[-1], arm_runs, plt.cm.tab10.colors[i % 10], label(key))
    loss_axes(axes[-1], "pretraining")
    axes[-1].legend(fontsize=7)
    return save(plt, fig, out_dir, "downstream.png")


def task_baselines(value):
    ok = (isinstance(value, dict) and value and set(value) <= {"mrpc", "rte"}
          and all(not is_number(v) and 0 < v < 1 for v in value.values()))
    return None if ok else "expected an object mapping mrpc and/or rte to a baseline in (0, 1)"


# ----------------------------------------------------------------------------------------------
# Claim 5: without warmup, Pre-LN and T-Fixup stand larger batches and learning rates.


def large_batch(runs, criterion, out_dir):
    """Per variant, global batch and optimizer, the largest lr of the grid at which the run still
    trains: it did not diverge and its final val loss is within criterion.margin of the best final
    loss of that (variant, batch, optimizer) over the grid. At the largest batch, Pre-LN and
    T-Fixup (criterion.variants) should train at a larger lr than Post-LN without warmup. Where
    every variant still trains at the grid's largest lr at the largest batch, the grid never
    reached the instability: inconclusive (a smaller lr that ends behind its best, in a short run,
    is undertrained, not unstable)."""
    roles, margin = criterion["variants"], criterion["margin"]
    cells = {}
    for run in runs:
        key = (run.axes.get("variant"), run.setting("batch.global_batch"), run.setting("optimizer.name"))
        cells.setdefault(key, []).append(run)
    missing = [f"{role} ({value})" for role, value in roles.items() if value not in {k[0] for k in cells}]
    if missing:
        raise AnalysisError(f"no runs of {', '.join(missing)}")
    figures, rows, failures = [], [], 0
    for (variant, batch, optimizer), cell_runs in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        by_lr = {}
        for run in cell_runs:
            by_lr.setdefault(run.setting("schedule.lr"), []).append(run)
        finals = {lr: stats(rs)["mean"] for lr, rs in sorted(by_lr.items())}
        best = min(finals.values())
        trains = {lr: math.isfinite(f) and f <= best + margin for lr, f in finals.items()}
        failures += sum(not ok for ok in trains.values())
        largest = max((lr for lr, ok in trains.items() if ok), default=None)
        figures.append({"variant": variant, "global_batch": batch, "optimizer": optimizer,
                        "warmup_steps": cell_runs[0].setting("schedule.warmup_steps", 0),
                        "steps": cell_runs[0].setting("run.steps"), "finals": {repr(lr): f for lr, f in finals.items()},
                        "trains": {repr(lr): ok for lr, ok in trains.items()}, "largest_lr": largest})
        rows += [[batch, optimizer, variant, lr, finals[lr], "yes" if trains[lr] else "no",
                  "largest" if lr == largest else ""] for lr in finals]
    top = max(f["global_batch"] for f in figures)
    at_top = {}
    for f in figures:
        if f["global_batch"] == top:
            at_top.setdefault(f["variant"], []).append(f)
    def largest_at_top(role):
        return max((f["largest_lr"] or 0.0 for f in at_top.get(roles[role], [])), default=0.0)
    post = largest_at_top("postln")
    held = {role: largest_at_top(role) > post for role in ("preln", "tfixup")}
    grid_top = max(float(lr) for f in figures if f["global_batch"] == top for lr in f["finals"])
    if all(f["largest_lr"] == grid_top for fs in at_top.values() for f in fs):
        result = INCONCLUSIVE
        reason = (f"at global batch {top} every variant still trains at the grid's largest lr {cell_text(grid_top)} "
                  f"(within {margin} of its best): the grid never reached the instability the claim is about"
                  f"; {failures} smaller-lr cell(s) end more than {margin} behind their best")
    else:
        result = verdict(sum(held.values()), 2)
        reason = (f"at global batch {top}, the largest lr that still trains (within {margin} of the best): "
                  + ", ".join(f"{role} {cell_text(largest_at_top(role))}" for role in ("postln", "preln", "tfixup"))
                  + (f", Post-LN with warmup {cell_text(largest_at_top('postln_warmup'))}" if "postln_warmup" in roles
                     else "") + f"; {failures} (variant, batch, optimizer, lr) cell(s) do not train")
    plots = [plot_largest_lr(figures, out_dir), plot_large_batch_curves(runs, top, out_dir)]
    return Result({"cells": figures, "largest_batch": top, "held": held}, result, reason,
                  table(["batch", "optimizer", "variant", "lr", "final val loss", "trains", ""], rows), plots)


def plot_largest_lr(figures, out_dir):
    """Left: the largest lr that still trains against the global batch, a line per variant and
    optimizer. Right panels: final val loss against lr, one per (batch, optimizer)."""
    plt = pyplot()
    settings = sorted({(f["global_batch"], f["optimizer"]) for f in figures})
    fig, axes = subplots(plt, 1 + len(settings), width=4.4, height=3.4, columns=4)
    variants = sorted({f["variant"] for f in figures})
    colour = {v: plt.cm.tab10.colors[i % 10] for i, v in enumerate(variants)}
    for variant in variants:
        for optimizer, marker in zip(sorted({f["optimizer"] for f in figures}), "os^v"):
            points = sorted((f["global_batch"], f["largest_lr"]) for f in figures
                            if f["variant"] == variant and f["optimizer"] == optimizer and f["largest_lr"])
            if points:
                axes[0].plot(*zip(*points), marker=marker, color=colour[variant], label=f"{variant} ({optimizer})")
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("global batch (sequences)")
    axes[0].set_ylabel("largest lr that trains")
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    for ax, (batch, optimizer) in zip(axes[1:], settings):
        for f in figures:
            if (f["global_batch"], f["optimizer"]) == (batch, optimizer):
                lrs = sorted(float(lr) for lr in f["finals"])
                ys = [f["finals"][repr(lr)] for lr in lrs]
                ax.plot(lrs, [y if math.isfinite(y) else float("nan") for y in ys], marker="o",
                        color=colour[f["variant"]], label=f["variant"])
                for lr, y in zip(lrs, ys):
                    if not math.isfinite(y):
                        ax.plot([lr], [0.97], "x", color=colour[f["variant"]], markersize=8, mew=2,
                                transform=ax.get_xaxis_transform())
        ax.set_xscale("log")
        ax.set_title(f"batch {batch}, {optimizer}", fontsize=10)
        ax.set_xlabel("peak lr")
        ax.set_ylabel("final val MLM loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save(plt, fig, out_dir, "largest_lr.png")


def plot_large_batch_curves(runs, batch, out_dir):
    """Val loss against sequences seen (step x global batch; every sequence has the dataset's
    seq_len) at the largest batch: a panel per optimizer, a colour per variant, each lr a line
    (darker = larger)."""
    plt = pyplot()
    chosen = [r for r in runs if r.setting("batch.global_batch") == batch]
    optimizers = sorted({r.setting("optimizer.name") for r in chosen})
    fig, axes = subplots(plt, len(optimizers), width=5.5, height=3.8)
    variants = sorted({r.axes.get("variant") for r in chosen})
    for ax, optimizer in zip(axes, optimizers):
        for i, variant in enumerate(variants):
            arm = sorted((r for r in chosen if r.axes.get("variant") == variant and r.setting("optimizer.name") == optimizer),
                         key=lambda r: r.setting("schedule.lr"))
            for j, run in enumerate(arm):
                steps, losses = run.curve()
                ax.plot([s * batch for s in steps], losses, color=plt.cm.tab10.colors[i % 10], alpha=0.35 + 0.65 * (j + 1) / len(arm),
                        linewidth=1.2, label=f"{variant} lr {run.setting('schedule.lr'):g}")
        loss_axes(ax, f"batch {batch}, {optimizer}")
        ax.set_xlabel("sequences seen")
        ax.legend(fontsize=6, ncol=2)
    return save(plt, fig, out_dir, "large_batch_curves.png")


ANALYSES = {
    "grad_norms_at_init": Analysis(grad_norms_at_init, "grad-norms", {
        "postln_min_ratio": is_number, "postln_max_abs_slope": is_number,
        "preln_ratio_range": is_range, "preln_slope_range": is_range}),
    "warmup": Analysis(warmup, "pretrain", {"margin": is_number}),
    "convergence": Analysis(convergence, "pretrain", {"max_ratio": is_number}),
    "tfixup": Analysis(tfixup, "pretrain", {"margin": is_number, "variants": names_of("tfixup", "preln", "postln")}),
    "large_batch": Analysis(large_batch, "pretrain", {
        "margin": is_number, "variants": names_of("postln", "postln_warmup", "preln", "tfixup")}),
    "downstream": Analysis(downstream, "pretrain", {"margin": is_number, "baselines": task_baselines,
                                                    "f1_baselines": task_baselines}),
}
