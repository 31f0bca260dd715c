#!/usr/bin/env python3
"""Each subcommand's --help lists its own flags (every flag its source reads, no other subcommand's,
no build paths), `lamina --help` lists the subcommands, and a flag of another subcommand on a
command line is an error rather than silently ignored."""

import glob
import os
import re
import subprocess
import sys
import unittest

ROOT = os.environ.get("LAMINA_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAMINA = os.environ.get("LAMINA_BINARY") or os.path.join(ROOT, "build", "lamina")


def lamina(*args):
    return subprocess.run([LAMINA, *args], capture_output=True, text=True, timeout=60)


def subcommands_by_file():
    """{cmd_*.cc: ([subcommand names], {flags its source reads directly})}."""
    found = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "launch", "cmd_*.cc"))):
        with open(path, encoding="utf-8") as f:
            source = f.read()
        names = re.findall(r'LAMINA_SUBCOMMAND\("([^"]+)"', source)
        found[os.path.basename(path)] = (names, set(re.findall(r"GetFlag\(FLAGS_([a-z_0-9]+)\)", source)))
    return found


class CliFlags(unittest.TestCase):
    def test_overview_lists_the_subcommands(self):
        result = lamina("--help")
        self.assertEqual(result.returncode, 0)
        for names, _ in subcommands_by_file().values():
            for name in names:
                self.assertIn(f"  {name} ", result.stderr)
        self.assertNotIn("Flags from", result.stderr)

    def test_each_subcommand_lists_its_own_flags(self):
        files = subcommands_by_file()
        self.assertGreaterEqual(sum(len(n) for n, _ in files.values()), 15)
        for file, (names, read) in files.items():
            for name in names:
                with self.subTest(subcommand=name):
                    result = lamina(*name.split(), "--help")
                    self.assertEqual(result.returncode, 0, result.stderr)
                    self.assertTrue(result.stdout.startswith(f"lamina {name}: "), result.stdout[:200])
                    self.assertNotIn("Flags from", result.stdout)
                    self.assertNotIn(ROOT, result.stdout)
                    listed = set(re.findall(r"^  --([a-z_0-9]+) ", result.stdout, re.M))
                    self.assertLessEqual(read, listed, f"{file} reads flags its --help does not list")
        fill_mask = lamina("fill-mask", "--help").stdout
        self.assertIn("--top_k", fill_mask)
        self.assertNotIn("--epochs", fill_mask)
        self.assertLess(len(fill_mask.splitlines()), 40)

    def test_a_flag_of_another_subcommand_is_an_error(self):
        result = lamina("pretrain", "--config", "c.json", "--lr", "5", "--top_k", "3")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--lr is not a flag of `lamina pretrain`", result.stderr)
        result = lamina("fill-mask", "--epochs=5", "the [MASK] .")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--epochs is not a flag of `lamina fill-mask`", result.stderr)
        result = lamina("prepare", "--noprogress", "--nojson")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--json is not a flag of `lamina prepare`", result.stderr)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1] + ["-v"])
