#!/usr/bin/env python3
"""Every run config lamina ships resolves (`lamina pretrain --config F --dry_run`, and `lamina info`
reads its model), and every
launch/configs/... path a script, a doc or the README names exists: a user's first command must
not fail on a file we forgot to ship."""

import glob
import os
import re
import subprocess
import sys
import unittest

ROOT = os.environ.get("LAMINA_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAMINA = os.environ.get("LAMINA_BINARY") or os.path.join(ROOT, "build", "lamina")
CONFIG_PATH = re.compile(r"launch/(?:experiments/)?configs/[A-Za-z0-9_./-]+\.json")


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
