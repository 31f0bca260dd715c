#!/usr/bin/env python3
"""Tests the claim-experiment driver (launch/experiments/driver.py).

With the real lamina ($LAMINA_BINARY) and data ($LAMINA_DATA or ../shared/data): the toy experiment
(launch/experiments/toy.json, two 12-step runs) completes with a summary and plots, a second
invocation runs nothing, a run killed with SIGKILL (lamina and the driver) resumes from its
checkpoint with each step logged once, and a run driven to non-finite losses is recorded as
diverged. With a fake lamina (a script that writes what lamina writes): divergence is a result, a
crashed run fails the driver without stopping the other, SIGTERM stops without marking anything
finished, --dry_run and --analyse_only run nothing, a run name reused for other settings is
refused, and grad-norms output is saved, analysed and published. Bad experiment files are rejected
with exit status 2 and the file and key named.
"""

import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

SOURCE = (os.environ.get("LAMINA_SOURCE_DIR")
          or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DRIVER = os.path.join(SOURCE, "launch", "experiments", "driver.py")
TOY = os.path.join(SOURCE, "launch", "experiments", "toy.json")
TOY_BASE = os.path.join(SOURCE, "launch", "experiments", "configs", "toy.json")
LAMINA = os.environ.get("LAMINA_BINARY") or os.path.join(SOURCE, "build", "lamina")
DATA = os.environ.get("LAMINA_DATA") or os.path.join(SOURCE, "..", "shared", "data")


def toy_run(warmup):
    """The name of toy.json's run with this warmup axis value."""
    return f"lr-1e-3__model-toy__seed-1__variant-postln__warmup-{warmup}"


TOY_RUNS = [toy_run("none"), toy_run("short")]


def driver(*args, lamina=LAMINA, timeout=120):
    return subprocess.run([sys.executable, DRIVER, *args, "--lamina", lamina, "--data_root", DATA],
                          capture_output=True, text=True, timeout=timeout)


def require_lamina_and_data():
    if not os.access(LAMINA, os.X_OK):
        raise unittest.SkipTest(f"no lamina binary at {LAMINA} (set LAMINA_BINARY)")
    for path in ("enwiki-2015-wikiextractor/wiki_AA.txt.xz", "vocab/bert-base-uncased-vocab.txt"):
        if not os.path.exists(os.path.join(DATA, path)):
            raise unittest.SkipTest(f"no {path} under {DATA} (set LAMINA_DATA)")


def records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f)
    return path


def toy_experiment():
    """toy.json with its base config as an absolute path, to be changed and written elsewhere."""
    experiment = read_json(TOY)
    experiment["scales"]["cpu"]["base"] = TOY_BASE
    return experiment


class ToyExperimentTest(unittest.TestCase):
    """The toy experiment with the real lamina, run once for the class."""

    @classmethod
    def setUpClass(cls):
        require_lamina_and_data()
        cls.tmp = tempfile.TemporaryDirectory()
        cls.out = os.path.join(cls.tmp.name, "out")
        cls.first = driver("toy", "--out", cls.out)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def run_dir(self, name):
        return os.path.join(self.out, "runs", name)

    def test_completes(self):
        self.assertEqual(self.first.returncode, 0, self.first.stderr)
        for name in TOY_RUNS:
            self.assertEqual(read_json(os.path.join(self.run_dir(name), "done.json"))["status"], "finished")
        summary = read_json(os.path.join(self.out, "toy", "summary.json"))
        self.assertEqual(sorted(r["name"] for r in summary["runs"]), TOY_RUNS)
        self.assertTrue(all(r["final_val_loss"] > 0 for r in summary["runs"]))
        self.assertEqual(len(summary["figures"]["groups"]), 1)
        self.assertIn(summary["verdict"], ("reproduced", "partly reproduced", "not reproduced"))
        # The loss curves, and the layer norms the toy's run.log_layer_norms records.
        self.assertEqual(summary["plots"], ["warmup_curves.png", "warmup_layers.png"])
        for plot in summary["plots"]:
            png = os.path.join(self.out, "toy", plot)
            with open(png, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
            self.assertLess(os.path.getsize(png), 200_000)
        with open(os.path.join(self.out, "toy", "evals.csv"), encoding="utf-8") as f:
            self.assertEqual(len(f.readlines()), 1 + 2 * 3)  # header, 3 evals per run
        self.assertIn("verdict:", self.first.stdout)

    def test_skips_finished_runs(self):
        self.assertEqual(self.first.returncode, 0, self.first.stderr)
        metrics = [os.path.join(self.run_dir(name), "metrics.jsonl") for name in TOY_RUNS]
        before = [os.stat(m).st_mtime_ns for m in metrics]
        second = driver("toy", "--out", self.out)
        self.assertEqual(second.returncode, 0, second.stderr)
        for name in TOY_RUNS:
            self.assertIn(f"skip {name} (finished)", second.stdout)
        self.assertNotIn("start", second.stdout)
        self.assertEqual([os.stat(m).st_mtime_ns for m in metrics], before)


class ResumeTest(unittest.TestCase):
    """A run whose lamina and driver are killed (a lost session) continues from its checkpoint."""

    def setUp(self):
        require_lamina_and_data()
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = tmp.name

    def test_resumes_killed_run(self):
        experiment = toy_experiment()
        scale = experiment["scales"]["cpu"]
        scale["set"].append("run.steps=24")  # a longer run leaves time to kill it mid-way
        scale["parallel"] = 1  # the first run (warmup none) is killed, the second not yet started
        file = write_json(os.path.join(self.tmp, "resume.json"), experiment)
        out = os.path.join(self.tmp, "out")
        run_dir = os.path.join(out, "runs", toy_run("none"))
        with open(os.path.join(self.tmp, "driver.txt"), "w") as log:
            first = subprocess.Popen([sys.executable, DRIVER, file, "--out", out, "--lamina", LAMINA,
                                      "--data_root", DATA], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: any(d.startswith("step_") and "." not in d
                                 for d in listdir(os.path.join(run_dir, "checkpoints"))), "a checkpoint")
            with open(os.path.join(run_dir, "lock"), encoding="utf-8") as f:
                os.kill(int(f.read()), signal.SIGKILL)
        finally:
            first.kill()
            first.wait()
        wait_for(lambda: lock_free(os.path.join(run_dir, "lock")), "lamina to exit")
        self.assertFalse(os.path.exists(os.path.join(run_dir, "done.json")))
        second = driver(file, "--out", out)
        self.assertEqual(second.returncode, 0, second.stderr)
        with open(os.path.join(run_dir, "log.txt"), encoding="utf-8") as f:
            self.assertIn("resumed from", f.read())
        done = read_json(os.path.join(run_dir, "done.json"))
        self.assertEqual((done["status"], done["attempts"]), ("finished", 2))
        metrics = records(run_dir)
        self.assertEqual([r["step"] for r in metrics if r["kind"] == "train"], list(range(1, 25)))
        self.assertEqual([r["step"] for r in metrics if r["kind"] == "eval"], [4, 8, 12, 16, 20, 24])


class DivergenceTest(unittest.TestCase):
    """A run that lamina gives up for non-finite losses is a result (diverged), not an error."""

    def setUp(self):
        require_lamina_and_data()
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = tmp.name

    def test_diverged_run(self):
        experiment = toy_experiment()
        experiment["scales"]["cpu"]["grids"][0]["warmup"]["none"] += [
            "schedule.lr=1e30", "optimizer.clip_norm=0", "run.max_bad_steps=3"]
        file = write_json(os.path.join(self.tmp, "diverge.json"), experiment)
        out = os.path.join(self.tmp, "out")
        result = driver(file, "--out", out)
        self.assertEqual(result.returncode, 0, result.stderr)
        done = read_json(os.path.join(out, "runs", TOY_RUNS[0], "done.json"))
        self.assertEqual(done["status"], "diverged")
        self.assertIn(done["step"], range(1, 10))  # the first skipped update
        summary = read_json(os.path.join(out, "diverge", "summary.json"))
        self.assertEqual(summary["figures"]["cells"][0]["diverged"], 1)
        self.assertEqual(summary["verdict"], "reproduced")


def listdir(path):
    return os.listdir(path) if os.path.isdir(path) else []


def wait_for(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def lock_free(path):
    """Whether no process holds the run's lock (lamina holds it until it exits)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


# A stand-in for lamina: `pretrain` writes config.json, metrics.jsonl and checkpoint directories
# for 8 steps, behaving as --set fake.mode=finish|diverge|crash|hang says; `grad-norms` prints
# norms shaped as the papers say (Post-LN: growing towards the last layer, flat in depth; Pre-LN:
# even, falling as 1/sqrt(L)); `finetune-sweep` writes a sweep.json with a point per checkpoint,
# Pre-LN 4 points ahead of Post-LN.
FAKE_LAMINA = textwrap.dedent("""\
    import json, os, signal, sys, time
    command, args = sys.argv[1], sys.argv[2:]
    flag = lambda name: args[args.index(name) + 1]
    sets = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--set")
    if command == "grad-norms":
        post = sets["model.norm"] == "post"
        depths = []
        for L in map(int, flag("--layers").split(",")):
            norms = [(1 + 3 * i / (L - 1)) if post else L ** -0.5 for i in range(L)]
            depths.append({"layers": L, "grad_norm": {"ffn_w1": norms, "ffn_w2": norms}, "hidden_norm": [1.0] * L})
        print(json.dumps({"norm": sets["model.norm"], "init": "bert", "batches": int(flag("--batches")),
                          "seeds": int(flag("--seeds")), "seq_len": 32, "micro_batch": 8, "depths": depths}))
        sys.exit(0)
    if command == "finetune-sweep":
        run, task, out = flag("--run"), flag("--task"), flag("--out")
        with open(os.path.join(run, "config.json")) as f:
            norm = json.load(f)["model"]["norm"]
        points = []
        for step in sorted(int(d.split("_")[1]) for d in os.listdir(os.path.join(run, "checkpoints"))):
            acc = (0.70 if norm == "pre" else 0.66) + step / 1000
            stat = lambda v: {"n": int(flag("--seeds")), "mean": v, "std": 0.01, "median": v, "min": v - 0.01,
                              "max": v + 0.01}
            final = {"accuracy": stat(acc), **({"f1": stat(acc + 0.1)} if task == "mrpc" else {})}
            points.append({"step": step, "best_lr": float(flag("--lr").split(",")[0]), "final": final})
        with open(os.path.join(out, "sweep.json"), "w") as f:
            json.dump({"task": task, "points": points}, f)
        sys.exit(0)
    out, mode, steps = flag("--out"), sets.get("fake.mode", "finish"), 8
    warmup = int(sets.get("schedule.warmup_steps", 0))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"model": {"norm": sets.get("model.norm", "post")},
                   "schedule": {"warmup_steps": warmup, "lr": float(sets.get("schedule.lr", 1e-3))},
                   "batch": {"global_batch": int(sets.get("batch.global_batch", 8))},
                   "optimizer": {"name": sets.get("optimizer.name", "adamw")}, "run": {"steps": steps}}, f)
    if mode == "hang":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # lamina checkpoints and exits 0
        time.sleep(60)
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:
        for step in range(1, steps + 1):
            if mode == "crash" and step == 3:
                print("boom: the fake crashed", file=sys.stderr)
                sys.exit(3)
            bad = mode == "diverge" and step >= 5
            f.write(json.dumps({"kind": "train", "step": step, "loss": None if bad else 8.0, "skipped": bad}) + "\\n")
            if bad and step == 7:
                print("3 consecutive steps with a non-finite loss", file=sys.stderr)
                sys.exit(1)
            if step % 4 == 0:
                f.write(json.dumps({"kind": "eval", "step": step, "mlm_loss": 9.0 - step / 8 - warmup / 100,
                                    "mlm_accuracy": 0.1}) + "\\n")
                os.makedirs(os.path.join(out, "checkpoints", f"step_{step:08d}"), exist_ok=True)
    """)


class FakeLaminaTest(unittest.TestCase):
    """Outcomes of runs, through a fake lamina: fast, and needs neither the binary nor data."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = tmp.name
        self.out = os.path.join(self.tmp, "out")
        self.fake = os.path.join(self.tmp, "fake_lamina")
        with open(self.fake, "w", encoding="utf-8") as f:
            f.write(f"#!{sys.executable}\n{FAKE_LAMINA}")
        os.chmod(self.fake, 0o755)

    def experiment(self, none_mode, short_mode="finish"):
        """The toy experiment without data, its two runs in the given fake modes."""
        experiment = toy_experiment()
        scale = experiment["scales"]["cpu"]
        del scale["data"]
        scale["set"] = ["run.device=cpu"]
        scale["grids"][0]["warmup"] = {"none": ["schedule.warmup_steps=0", f"fake.mode={none_mode}"],
                                       "short": ["schedule.warmup_steps=4", f"fake.mode={short_mode}"]}
        return write_json(os.path.join(self.tmp, "fake.json"), experiment)

    def done(self, warmup):
        path = os.path.join(self.out, "runs", toy_run(warmup), "done.json")
        return read_json(path) if os.path.exists(path) else None

    def test_diverged_run_is_a_result(self):
        result = driver(self.experiment("diverge"), "--out", self.out, lamina=self.fake)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual((self.done("none")["status"], self.done("none")["step"]), ("diverged", 5))
        summary = read_json(os.path.join(self.out, "fake", "summary.json"))
        self.assertEqual(summary["verdict"], "reproduced")
        diverged = [r for r in summary["runs"] if r["status"] == "diverged"]
        self.assertEqual(len(diverged), 1)
        self.assertIsNone(diverged[0]["final_val_loss"])

    def test_crashed_run_fails_the_driver(self):
        result = driver(self.experiment("crash"), "--out", self.out, lamina=self.fake)
        self.assertEqual(result.returncode, 1)
        self.assertIn("boom: the fake crashed", result.stderr)
        self.assertIsNone(self.done("none"))
        self.assertEqual(self.done("short")["status"], "finished")  # the other run was let finish
        self.assertNotIn("Traceback", result.stderr)

    def test_sigterm_stops_without_finishing(self):
        file = self.experiment("hang", "hang")
        process = subprocess.Popen([sys.executable, DRIVER, file, "--out", self.out, "--lamina", self.fake],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        configs = [os.path.join(self.out, "runs", toy_run(w), "config.json")
                   for w in ("none", "short")]
        wait_for(lambda: all(os.path.exists(c) for c in configs), "both runs to start")
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=30)
        self.assertEqual(process.returncode, 128 + signal.SIGTERM)
        self.assertEqual(stdout.count("resumes from its last checkpoint"), 2)
        self.assertIsNone(self.done("none"))
        self.assertIsNone(self.done("short"))

    def test_dry_run_and_analyse_only_run_nothing(self):
        file = self.experiment("finish")
        result = driver(file, "--out", self.out, "--dry_run", lamina=self.fake)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.count(f"{self.fake} pretrain --config {TOY_BASE}"), 2)
        self.assertIn("--set schedule.warmup_steps=4 --set fake.mode=finish", result.stdout)
        result = driver(file, "--out", self.out, "--analyse_only", lamina=self.fake)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"2 job(s) not finished: {toy_run('none')}, ", result.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.out, "runs")))

    def test_run_name_with_other_settings_is_refused(self):
        self.assertEqual(driver(self.experiment("finish"), "--out", self.out, lamina=self.fake).returncode, 0)
        result = driver(self.experiment("finish", short_mode="diverge"), "--out", self.out, lamina=self.fake)
        self.assertEqual(result.returncode, 2)
        self.assertIn(f"run {toy_run('short')} has other settings than", result.stderr)
        self.assertIn("overrides.json", result.stderr)

    def test_grad_norms(self):
        experiment = toy_experiment()
        experiment.update(kind="grad-norms", analysis="grad_norms_at_init", criterion={
            "postln_min_ratio": 2.0, "postln_max_abs_slope": 0.2,
            "preln_ratio_range": [0.8, 1.25], "preln_slope_range": [-0.7, -0.3]})
        experiment["scales"]["cpu"] = {
            "base": TOY_BASE, "set": ["run.device=cpu"], "grad_norms": {"layers": [2, 4, 8], "batches": 1, "seeds": 1},
            "grids": [{"variant": {"postln": ["model.norm=post"], "preln": ["model.norm=pre"]},
                       "init": {"bert": ["model.init=bert"]}}]}
        file = write_json(os.path.join(self.tmp, "norms.json"), experiment)
        result = driver(file, "--out", self.out, "--publish", os.path.join(self.tmp, "pub"), lamina=self.fake)
        self.assertEqual(result.returncode, 0, result.stderr)
        saved = read_json(os.path.join(self.out, "runs", "init-bert__variant-postln", "grad_norms.json"))
        self.assertEqual([d["layers"] for d in saved["depths"]], [2, 4, 8])
        summary = read_json(os.path.join(self.tmp, "pub", "norms", "summary.json"))
        self.assertEqual(summary["verdict"], "reproduced", summary["reason"])
        figures = summary["figures"]["runs"]["init-bert__variant-preln"]
        self.assertAlmostEqual(figures["slope_last_layer"], -0.5)
        for png in ("norm_vs_layer.png", "last_layer_vs_depth.png"):
            self.assertTrue(os.path.exists(os.path.join(self.tmp, "pub", "norms", png)))


    def downstream_experiment(self, lrs=(1e-4,)):
        experiment = toy_experiment()
        experiment.update(analysis="downstream", criterion={
            "margin": 0.01, "baselines": {"mrpc": 0.684, "rte": 0.527}, "f1_baselines": {"mrpc": 0.812}})
        scale = experiment["scales"]["cpu"]
        del scale["data"]
        scale["set"] = ["run.device=cpu"]
        scale["grids"] = [{"variant": {"postln": ["model.norm=post", "schedule.warmup_steps=4"],
                                       "preln": ["model.norm=pre"]}}]
        scale["finetune"] = {"glue": "{shared}/glue", "tasks": ["mrpc", "rte"], "lrs": list(lrs), "seeds": 3,
                             "epochs": 3, "batch": 32, "max_seq": 64, "device": "cpu"}
        return write_json(os.path.join(self.tmp, "down.json"), experiment)

    def test_finetuning_follows_each_run(self):
        file = self.downstream_experiment()
        result = driver(file, "--out", self.out, "--dry_run", lamina=self.fake)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.count("finetune-sweep --run"), 4)
        self.assertIn("--task rte --data", result.stdout)
        self.assertIn("--lr 0.0001 --seeds 3 --epochs 3 --batch 32 --max_seq 64 --device cpu --predict_test=false",
                      result.stdout)
        result = driver(file, "--out", self.out, "--publish", os.path.join(self.tmp, "pub"), lamina=self.fake)
        self.assertEqual(result.returncode, 0, result.stderr)
        for variant in ("postln", "preln"):
            for task in ("mrpc", "rte"):
                done = read_json(os.path.join(self.out, "runs", f"variant-{variant}", "finetune", task, "done.json"))
                self.assertEqual(done["status"], "finished")
        summary = read_json(os.path.join(self.tmp, "pub", "down", "summary.json"))
        self.assertEqual(summary["verdict"], "reproduced", summary["reason"])
        self.assertAlmostEqual(summary["figures"]["tasks"]["rte"]["gap"], 0.04)
        points = summary["figures"]["curves"]["mrpc"]["variant=preln"]
        self.assertEqual([p["step"] for p in points], [4, 8])
        self.assertAlmostEqual(points[1]["f1"]["median"], 0.808)
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "pub", "down", "downstream.png")))
        again = driver(file, "--out", self.out, lamina=self.fake)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(again.stdout.count("skip "), 6)
        changed = driver(self.downstream_experiment(lrs=(1e-4, 2e-4)), "--out", self.out, lamina=self.fake)
        self.assertEqual(changed.returncode, 2)
        self.assertIn("the finetuning of variant-postln on mrpc has other settings than", changed.stderr)

    def test_downstream_below_the_baseline_is_inconclusive(self):
        experiment = read_json(self.downstream_experiment())
        experiment["criterion"]["baselines"] = {"mrpc": 0.9, "rte": 0.9}
        file = write_json(os.path.join(self.tmp, "down.json"), experiment)
        result = driver(file, "--out", self.out, lamina=self.fake)
        self.assertEqual(result.returncode, 0, result.stderr)
        summary = read_json(os.path.join(self.out, "down", "summary.json"))
        self.assertEqual(summary["verdict"], "inconclusive", summary["reason"])
        self.assertIn("not above it by the margin, not judged", summary["reason"])


    def test_large_batch(self):
        experiment = toy_experiment()
        experiment.update(analysis="large_batch", criterion={"margin": 0.05, "variants": {
            "postln": "postln", "postln_warmup": "postln_warmup", "preln": "preln", "tfixup": "tfixup"}})
        variants = {"postln": ["model.norm=post"], "postln_warmup": ["model.norm=post", "schedule.warmup_steps=2"],
                    "preln": ["model.norm=pre"], "tfixup": ["model.norm=none"]}
        small = {"batch": {"8": ["batch.global_batch=8"]}, "optimizer": {"adamw": ["optimizer.name=adamw"]}}
        large = {"batch": {"64": ["batch.global_batch=64"]}, "optimizer": {"lamb": ["optimizer.name=lamb"]}}
        stable = {k: v for k, v in variants.items() if k != "postln"}
        scale = experiment["scales"]["cpu"]
        del scale["data"]
        scale["set"] = ["run.device=cpu"]
        scale["grids"] = [
            {**small, "lr": {"1": ["schedule.lr=1"], "2": ["schedule.lr=2"]}, "variant": variants},
            {**large, "lr": {"1": ["schedule.lr=1"]}, "variant": variants},
            {**large, "lr": {"2": ["schedule.lr=2"]}, "variant": stable},
            {**large, "lr": {"2": ["schedule.lr=2"]}, "variant": {"postln": ["model.norm=post", "fake.mode=diverge"]}}]
        file = write_json(os.path.join(self.tmp, "large.json"), experiment)
        result = driver(file, "--out", self.out, lamina=self.fake)
        self.assertEqual(result.returncode, 0, result.stderr)
        summary = read_json(os.path.join(self.out, "large", "summary.json"))
        self.assertEqual(summary["verdict"], "reproduced", summary["reason"])
        self.assertIn("at global batch 64, the largest lr that still trains (within 0.05 of the best): postln 1, "
                      "preln 2, tfixup 2, Post-LN with warmup 2; 1 (variant, batch, optimizer, lr) cell(s) do not "
                      "train", summary["reason"])
        cells = {(c["variant"], c["global_batch"]): c for c in summary["figures"]["cells"]}
        self.assertEqual(cells[("postln", 64)]["trains"], {"1.0": True, "2.0": False})
        self.assertEqual(cells[("postln", 8)]["largest_lr"], 2.0)
        for png in ("largest_lr.png", "large_batch_curves.png"):
            self.assertTrue(os.path.exists(os.path.join(self.out, "large", png)))
        # Without the diverging run every variant trains at the grid's largest lr: inconclusive.
        scale["grids"] = scale["grids"][:3] + [{**large, "lr": {"2": ["schedule.lr=2"]},
                                                "variant": {"postln": ["model.norm=post", "fake.mode=finish"]}}]
        file = write_json(os.path.join(self.tmp, "large.json"), experiment)
        result = driver(file, "--out", os.path.join(self.tmp, "out2"), lamina=self.fake)
        self.assertEqual(result.returncode, 0, result.stderr)
        summary = read_json(os.path.join(self.tmp, "out2", "large", "summary.json"))
        self.assertEqual(summary["verdict"], "inconclusive", summary["reason"])
        self.assertIn("every variant still trains at the grid's largest lr 2", summary["reason"])


class BadExperimentFileTest(unittest.TestCase):
    """Each mistake is an error naming the file and the key's JSON path, exit status 2, no traceback."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = tmp.name

    def check(self, change, expected):
        experiment = toy_experiment()
        change(experiment, experiment["scales"]["cpu"])
        file = write_json(os.path.join(self.tmp, "bad.json"), experiment)
        result = driver(file, "--dry_run", "--out", os.path.join(self.tmp, "out"), lamina="/nonexistent")
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        self.assertIn(f"{file}: {expected}", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_unknown_key(self):
        self.check(lambda e, s: e.update(colour="blue"), "colour: unknown key")
        self.check(lambda e, s: s.update(paralel=2), "scales.cpu.paralel: unknown key")
        self.check(lambda e, s: s["data"]["prepare"].update(seq=3), "scales.cpu.data.prepare.seq: unknown key")

    def test_empty_grid(self):
        self.check(lambda e, s: s.update(grids=[]), "scales.cpu.grids: expected a non-empty list")
        self.check(lambda e, s: s["grids"][0].update(lr={}),
                   "scales.cpu.grids[0].lr: expected a non-empty object of value-name -> list of overrides")

    def test_override_without_equals(self):
        self.check(lambda e, s: s["set"].append("run.device"), "scales.cpu.set[3]: override 'run.device' is not key=value")
        self.check(lambda e, s: s["grids"][0]["lr"].update({"2e-3": ["schedule.lr"]}),
                   "scales.cpu.grids[0].lr.2e-3[0]: override")

    def test_missing_base(self):
        self.check(lambda e, s: s.pop("base"), "scales.cpu.base: missing")
        self.check(lambda e, s: s.update(base="configs/nonexistent.json"), "scales.cpu.base: no such file")

    def test_bad_criterion_and_placeholder(self):
        self.check(lambda e, s: e.update(criterion={}), "criterion.margin: missing")
        self.check(lambda e, s: e.update(analysis="warmpu"), "analysis: unknown analysis")
        self.check(lambda e, s: s["set"].append("data.train={dta}"), "scales.cpu.set[3]: placeholder {dta}")
        self.check(lambda e, s: e.update(scales={"gpu": s}), "scales: no scale 'cpu'")

    def test_bad_finetune_section(self):
        finetune = {"glue": "{shared}/glue", "tasks": ["mrpc"], "lrs": [1e-4], "seeds": 1, "epochs": 1, "batch": 8,
                    "max_seq": 32, "device": "cpu"}
        self.check(lambda e, s: s.update(finetune={**finetune, "tasks": ["sst2"]}),
                   "scales.cpu.finetune.tasks[0]: expected one of mrpc, rte")
        self.check(lambda e, s: s.update(finetune={**finetune, "lrs": [0]}),
                   "scales.cpu.finetune.lrs[0]: expected a positive number")
        self.check(lambda e, s: s.update(finetune={k: v for k, v in finetune.items() if k != "seeds"}),
                   "scales.cpu.finetune.seeds: missing")


if __name__ == "__main__":
    unittest.main()
