#!/usr/bin/env python3
"""Every run config lamina ships resolves (`lamina pretrain --config F --dry_run`, and `lamina info`
reads its model), every run of every shipped experiment resolves at every scale, and every
launch/configs/... path a script, a doc or the README names exists: a user's first command must
not fail on a file we forgot to ship, nor an experiment hours in on a key it got wrong."""

import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

ROOT = os.environ.get("LAMINA_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAMINA = os.environ.get("LAMINA_BINARY") or os.path.join(ROOT, "build", "lamina")
CONFIG_PATH = re.compile(r"launch/(?:experiments/)?configs/[A-Za-z0-9_./-]+\.json")
sys.path.insert(0, os.path.join(ROOT, "launch", "experiments"))
import driver  # noqa: E402  (the experiment runner's own reading of its files)


def run_configs():
    """The whole-run configs: launch/configs/*.json (its subfolders hold section files) and the
    experiments' base configs."""
    return sorted(glob.glob(os.path.join(ROOT, "launch", "configs", "*.json"))
                  + glob.glob(os.path.join(ROOT, "launch", "experiments", "configs", "*.json")))


def documents():
    patterns = ["README.md", "docs/*.md", "launch/*.sh", "launch/slurm/*", "launch/bench/*.sh",
                "launch/experiments/README.md"]
    return sorted({f for p in patterns for f in glob.glob(os.path.join(ROOT, p)) if os.path.isfile(f)})


class ShippedConfigs(unittest.TestCase):
    def test_every_run_config_resolves(self):
        configs = run_configs()
        self.assertGreaterEqual(len(configs), 10)
        for config in configs:
            with self.subTest(config=os.path.relpath(config, ROOT)):
                result = subprocess.run([LAMINA, "pretrain", "--config", config, "--dry_run"], cwd=ROOT,
                                        capture_output=True, text=True, timeout=60)
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertIn("resolves:", result.stderr)
                self.assertIn('"model"', result.stdout)
                info = subprocess.run([LAMINA, "info", "--config", config, "--seq_len", "32"], cwd=ROOT, capture_output=True, text=True,
                                      timeout=60)
                self.assertEqual(info.returncode, 0, info.stderr)  # a whole run config, as a model config
                self.assertIn("parameters", info.stdout)

    def test_every_experiment_run_resolves(self):
        """Each scale of each launch/experiments/*.json, read as the driver reads it, and each of its
        runs' overrides on its base config as lamina reads them (without data: the paths are not
        checked by a dry run). Two files that name the same run at a scale share it, so they must
        give it the same settings, or the second is refused after the first has run."""
        files = sorted(glob.glob(os.path.join(ROOT, "launch", "experiments", "*.json")))
        self.assertGreaterEqual(len(files), 10)
        runs_seen, shared = {}, 0
        with tempfile.TemporaryDirectory() as out:
            for file in files:
                with open(file, encoding="utf-8") as f:
                    scales = json.load(f)["scales"]
                for scale in scales:
                    experiment = driver.load_experiment(file, scale, "/shared-data", out)
                    for run in experiment.runs:
                        name = f"{os.path.basename(file)} {scale} {run.name}"
                        with self.subTest(run=name):
                            settings = run.settings(experiment.kind)  # what the driver records and compares
                            first = runs_seen.setdefault((scale, run.name), (name, settings))
                            if first[0] != name:
                                shared += 1
                                self.assertEqual(first[1], settings, f"{name} differs from {first[0]}")
                            args = [arg for o in run.overrides for arg in ("--set", o)]
                            result = subprocess.run([LAMINA, "pretrain", "--config", run.base, "--dry_run"] + args,
                                                    cwd=ROOT, capture_output=True, text=True, timeout=60)
                            self.assertEqual(result.returncode, 0, result.stderr)
        self.assertGreater(len(runs_seen), 100)
        self.assertGreater(shared, 0)  # convergence's Post-LN runs are warmup's

    def test_finetune_configs_are_read(self):
        configs = sorted(glob.glob(os.path.join(ROOT, "launch", "configs", "finetune", "*.json")))
        self.assertEqual(len(configs), 2)
        for config in configs:
            with self.subTest(config=os.path.relpath(config, ROOT)):
                # No checkpoint given: every key of the file parsed, then the missing one named.
                result = subprocess.run([LAMINA, "finetune", "--config", config], cwd=ROOT, capture_output=True,
                                        text=True, timeout=60)
                self.assertEqual(result.returncode, 1)
                self.assertIn("--checkpoint DIR is required", result.stderr)

    def test_dry_run_refuses_a_bad_config(self):
        config = os.path.join(ROOT, "launch", "configs", "lamb64k-preln-phase2.json")
        result = subprocess.run([LAMINA, "pretrain", "--config", config, "--dry_run", "--set", "batch.micro_batch=100"],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("batch.global_batch (32768) must be a multiple of batch.micro_batch (100)", result.stderr)

    def test_every_named_config_exists(self):
        named = 0
        for document in documents():
            with open(document, encoding="utf-8", errors="replace") as f:
                for number, line in enumerate(f, 1):
                    for path in CONFIG_PATH.findall(line):
                        named += 1
                        self.assertTrue(os.path.isfile(os.path.join(ROOT, path)),
                                        f"{os.path.relpath(document, ROOT)}:{number} names {path}, which does not exist")
        self.assertGreater(named, 5)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1] + ["-v"])
