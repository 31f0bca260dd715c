#!/usr/bin/env python3
"""Runs the experiment of one claim with lamina, then analyses it.

    launch/experiments/run.sh CLAIM [--scale cpu|gpu|paper] [--out DIR] [--lamina PATH]
        [--data_root DIR] [--parallel N] [--publish DIR] [--dry_run] [--analyse_only]

CLAIM names launch/experiments/CLAIM.json or is the path of an experiment file (format:
launch/experiments/README.md). The grid, the runs' settings and the verdict's criterion are fixed
in that file before anything runs, so a result cannot steer its own test. Python only orchestrates
(lamina trains) and plots; every run lives in OUT/runs/NAME/ and resumes from its newest checkpoint
when the driver is started again, so a claim survives killed sessions. Exit status: 0 done, 1 a run
or the analysis failed, 2 a bad experiment file or command line, 128+N stopped by signal N.
"""

import argparse
import csv
import datetime
import fcntl
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import analyses

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = os.path.join(ROOT, "launch", "experiments")
KINDS = ("pretrain", "grad-norms")
PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")
LAYERS_CSV_MAX_STEP = 101  # layers.csv keeps the early steps only, where the claims look
LOG_TAIL_LINES = 25
DIVERGED_MESSAGE = "consecutive steps with a non-finite loss"  # lamina's error when it gives up a run


class SpecError(Exception):
    """A bad experiment file or command line: reported without a traceback, exit status 2."""


class RunError(Exception):
    """A run or the analysis failed: reported without a traceback, exit status 1."""


# ----------------------------------------------------------------------------------------------
# Experiment files: every key is checked, and every error names the file and the key's JSON path.


class Node:
    """A JSON value with its path in the file, so that each check can name what it rejects."""

    def __init__(self, file, value, path=""):
        self.file, self.value, self.path = file, value, path

    def fail(self, message):
        raise SpecError(f"{self.file}: {self.path or '(top level)'}: {message}")

    def key(self, name):
        return Node(self.file, self.value[name], f"{self.path}.{name}" if self.path else name)

    def item(self, index):
        return Node(self.file, self.value[index], f"{self.path}[{index}]")

    def fields(self, required, optional=()):
        """The object's members by key; unknown and missing keys are errors."""
        if not isinstance(self.value, dict):
            self.fail("expected an object")
        for name in self.value:
            if name not in required and name not in optional:
                self.key(name).fail(f"unknown key (known here: {', '.join(sorted((*required, *optional)))})")
        for name in required:
            if name not in self.value:
                Node(self.file, None, f"{self.path}.{name}" if self.path else name).fail("missing")
        return {name: self.key(name) for name in self.value}

    def string(self):
        if not isinstance(self.value, str) or not self.value:
            self.fail("expected a non-empty string")
        return self.value

    def integer(self, minimum):
        if isinstance(self.value, bool) or not isinstance(self.value, int) or self.value < minimum:
            self.fail(f"expected an integer >= {minimum}")
        return self.value

    def items(self, what):
        """The members of a non-empty list."""
        if not isinstance(self.value, list) or not self.value:
            self.fail(f"expected a non-empty list of {what}")
        return [self.item(i) for i in range(len(self.value))]

    def override(self):
        """A `--set key=value` override."""
        text = self.string()
        if "=" not in text or text.startswith("="):
            self.fail(f"override {text!r} is not key=value")
        return text

    def overrides(self):
        if not isinstance(self.value, list):
            self.fail("expected a list of key=value overrides")
        return [self.item(i).override() for i in range(len(self.value))]


@dataclass
class Run:
    """One lamina invocation of the grid: its name, its axis values and its full settings."""

    name: str
    axes: dict
    base: str
    overrides: list
    grad_norms: dict | None = None
    finetune: dict | None = None  # the scale's finetune section, placeholders expanded

    def settings(self, kind):
        """What defines the run; two claims share a run dir only when these are equal."""
        settings = {"kind": kind, "base": self.base, "overrides": self.overrides}
        if self.grad_norms:
            settings["grad_norms"] = self.grad_norms
        return settings


@dataclass
class Data:
    """The dataset of a scale: prepared by the driver (`prepare` set) or an existing directory."""

    dir: str
    prepare: dict | None = None
    vocab: str | None = None


@dataclass
class Experiment:
    """An experiment file, checked, with the runs of one scale resolved."""

    file: str
    name: str
    content: dict
    kind: str
    analysis: str
    criterion: dict
    scale: str
    data: Data | None
    parallel: int
    threads: int
    out: str
    runs: list = field(default_factory=list)
    lamina: str = ""


def experiment_path(claim):
    """CLAIM as given: a path to a JSON file, or the name of one in launch/experiments/."""
    if claim.endswith(".json") or os.sep in claim:
        return claim
    return os.path.relpath(os.path.join(EXPERIMENTS, claim + ".json"))


def load_experiment(file, scale, data_root, out):
    """Checks the whole file (every scale), then resolves the runs of `scale` under `out`."""
    try:
        with open(file, encoding="utf-8") as f:
            content = json.load(f)
    except OSError as e:
        raise SpecError(f"{file}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise SpecError(f"{file}: not valid JSON: {e}") from None
    top = Node(file, content).fields(
        ("claim", "title", "paper", "kind", "analysis", "criterion", "scales"))
    for name in ("claim", "title", "paper"):
        top[name].string()
    kind = top["kind"].string()
    if kind not in KINDS:
        top["kind"].fail(f"expected one of {', '.join(KINDS)}")
    analysis = check_analysis(top["analysis"], top["criterion"], kind)
    scales = top["scales"]
    if not isinstance(scales.value, dict) or not scales.value:
        scales.fail("expected a non-empty object of scale name -> scale")
    here = os.path.dirname(os.path.abspath(file))
    parsed = {name: parse_scale(scales.key(name), here, kind) for name in scales.value}
    if scale not in parsed:
        scales.fail(f"no scale {scale!r} (the file has {', '.join(parsed)})")
    spec = parsed[scale]
    data = resolve_data(spec["data"], here, data_root, out)
    values = {"shared": data_root, "data": data.dir if data else None, "vocab": data.vocab if data else None}
    runs = grid_runs(spec, values)
    return Experiment(file=file, name=os.path.splitext(os.path.basename(file))[0], content=content,
                      kind=kind, analysis=analysis, criterion=top["criterion"].value, scale=scale,
                      data=data, parallel=spec["parallel"], threads=spec["threads"], out=out, runs=runs)


def check_analysis(name_node, criterion_node, kind):
    """The analysis exists, suits the kind of runs, and its criterion has exactly its keys."""
    name = name_node.string()
    if name not in analyses.ANALYSES:
        name_node.fail(f"unknown analysis (known: {', '.join(sorted(analyses.ANALYSES))})")
    spec = analyses.ANALYSES[name]
    if spec.kind != kind:
        name_node.fail(f"analysis {name!r} needs kind {spec.kind!r}, the file has {kind!r}")
    members = criterion_node.fields(tuple(spec.criterion))
    for key, check in spec.criterion.items():
        problem = check(members[key].value)
        if problem:
            members[key].fail(problem)
    return name


def parse_scale(node, here, kind):
    """A scale's settings, with its base config checked to exist; placeholders stay unexpanded."""
    optional = ("set", "data", "parallel", "threads") + (("grad_norms",) if kind == "grad-norms" else ("finetune",))
    required = ("base", "grids") + (("grad_norms",) if kind == "grad-norms" else ())
    members = node.fields(required, optional)
    base = os.path.normpath(os.path.join(here, members["base"].string()))
    if not os.path.isfile(base):
        members["base"].fail(f"no such file {base}")
    available = ("shared",)
    if "data" in members:
        available += ("data", "vocab") if parse_data(members["data"]) else ("data",)
    spec = {"base": base, "node": node,
            "set": members["set"].overrides() if "set" in members else [],
            "data": members.get("data"),
            "parallel": members["parallel"].integer(1) if "parallel" in members else 1,
            "threads": members["threads"].integer(1) if "threads" in members else 1,
            "grad_norms": parse_grad_norms(members["grad_norms"]) if "grad_norms" in members else None,
            "finetune": parse_finetune(members["finetune"]) if "finetune" in members else None,
            "grids": [parse_block(block, available) for block in members["grids"].items("grid blocks")]}
    for i, text in enumerate(spec["set"]):
        check_placeholders(members["set"].item(i), text, available)
    return spec


def parse_grad_norms(node):
    members = node.fields(("layers", "batches", "seeds"))
    return {"layers": [item.integer(1) for item in members["layers"].items("depths")],
            "batches": members["batches"].integer(1), "seeds": members["seeds"].integer(1)}


FINETUNE_TASKS = ("mrpc", "rte")


def parse_finetune(node):
    """A scale's finetune section: every checkpoint of every run is finetuned on each task
    (`lamina finetune-sweep`) with these settings."""
    members = node.fields(("glue", "tasks", "lrs", "seeds", "epochs", "batch", "max_seq", "device"))
    check_placeholders(members["glue"], members["glue"].string(), ("shared",))
    tasks = [item.string() for item in members["tasks"].items("task names")]
    for i, task in enumerate(tasks):
        if task not in FINETUNE_TASKS:
            members["tasks"].item(i).fail(f"expected one of {', '.join(FINETUNE_TASKS)}")
    lrs = members["lrs"].items("learning rates")
    for item in lrs:
        if problem := is_positive_number(item.value):
            item.fail(problem)
    if members["device"].string() not in ("cpu", "cuda", "auto"):
        members["device"].fail("expected cpu, cuda or auto")
    return {"glue": members["glue"].value, "tasks": tasks, "lrs": [item.value for item in lrs],
            "seeds": members["seeds"].integer(1), "epochs": members["epochs"].integer(1),
            "batch": members["batch"].integer(1), "max_seq": members["max_seq"].integer(3),
            "device": members["device"].value}


def is_positive_number(value):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return None if ok else "expected a positive number"


def parse_block(node, available):
    """A grid block, checked: {axis: {value name: [overrides]}}."""
    if not isinstance(node.value, dict) or not node.value:
        node.fail("expected a non-empty object of axis -> values")
    block = {}
    for axis in node.value:
        values = node.key(axis)
        if not isinstance(values.value, dict) or not values.value:
            values.fail("expected a non-empty object of value-name -> list of overrides")
        block[axis] = {}
        for value in values.value:
            overrides = values.key(value).overrides()
            for i, text in enumerate(overrides):
                check_placeholders(values.key(value).item(i), text, available)
            block[axis][value] = overrides
    return block


def parse_data(node):
    """Checks a scale's data section; returns whether it prepares a corpus (which gives {vocab})."""
    members = node.fields((), ("prepare", "path"))
    if len(members) != 1:
        node.fail("expected exactly one of 'prepare' (a corpus to prepare) or 'path' (a dataset directory)")
    if "path" in members:
        check_placeholders(members["path"], members["path"].string(), ("shared",))
        return False
    prepare = members["prepare"].fields(("input", "vocab", "seq_len"), ("max_bytes", "max_docs", "val_docs"))
    inputs = [prepare["input"]] if isinstance(prepare["input"].value, str) else prepare["input"].items("files")
    for item in inputs + [prepare["vocab"]]:
        check_placeholders(item, item.string(), ("shared",))
    prepare["seq_len"].integer(3)
    for name in ("max_bytes", "max_docs", "val_docs"):
        if name in prepare:
            prepare[name].integer(0)
    return True


def check_placeholders(node, text, available):
    """Each {name} in `text` has a value here: {shared} always, {data} with a data section, {vocab}
    with a prepared one."""
    for name in PLACEHOLDER.findall(text):
        if name not in available:
            node.fail(f"placeholder {{{name}}} is not available here (available: "
                      f"{', '.join('{%s}' % a for a in available)}; {{data}} needs a 'data' section, "
                      f"{{vocab}} one with 'prepare')")


def expand(text, values):
    """`text` with its placeholders ({data}, {shared}, {vocab}), checked when parsed, replaced."""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def resolve_data(node, here, data_root, out):
    """The scale's dataset: OUT/data/<hash of the prepare section> for a prepared one, so that claims
    with the same section share it."""
    if node is None:
        return None

    def resolve(text):
        return os.path.normpath(os.path.join(here, expand(text, {"shared": data_root})))

    if "path" in node.value:
        return Data(dir=resolve(node.value["path"]))
    section = node.value["prepare"]
    digest = hashlib.sha256(json.dumps(section, sort_keys=True).encode()).hexdigest()[:12]
    inputs = section["input"] if isinstance(section["input"], list) else [section["input"]]
    prepare = {**section, "input": [resolve(text) for text in inputs], "vocab": resolve(section["vocab"])}
    return Data(dir=os.path.join(out, "data", digest), prepare=prepare, vocab=prepare["vocab"])


def run_name(axes):
    name = "__".join(f"{axis}-{axes[axis]}" for axis in sorted(axes))
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def grid_runs(spec, values):
    """The union of the blocks' cartesian products, deduplicated by run name. Overrides come in a
    fixed order (the scale's `set`, then the axes sorted by name), so a block's axis order is moot."""
    runs = {}
    for b, block in enumerate(spec["grids"]):
        combos = [{}]
        for axis in sorted(block):
            combos = [{**combo, axis: value} for combo in combos for value in block[axis]]
        for axes in combos:
            overrides = spec["set"] + [o for axis in sorted(axes) for o in block[axis][axes[axis]]]
            finetune = spec["finetune"] and {**spec["finetune"], "glue": expand(spec["finetune"]["glue"], values)}
            run = Run(name=run_name(axes), axes=axes, base=spec["base"],
                      overrides=[expand(o, values) for o in overrides], grad_norms=spec["grad_norms"],
                      finetune=finetune)
            if run.name in runs and runs[run.name] != run:
                spec["node"].key("grids").item(b).fail(f"run {run.name} is defined again with other settings")
            runs[run.name] = run
    return sorted(runs.values(), key=lambda r: r.name)


# ----------------------------------------------------------------------------------------------
# Files of a run directory.


def write_json(path, value):
    """Writes atomically (temporary name, then rename), so a reader never sees half a file."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_records(path):
    """The records of a metrics.jsonl; a torn last line (lamina killed mid-write) is skipped."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines):
                raise RunError(f"{path}:{number}: not a JSON object") from None
    return records


def done_file(exp, run):
    return os.path.join(run_dir(exp, run), "done.json")


def run_dir(exp, run):
    return os.path.join(exp.out, "runs", run.name)


def recorded_settings_match(exp, record, settings, what):
    """Whether RECORD (a run's overrides.json, a finetuning job's settings.json) exists; an error
    when it records other settings than `settings`: the file gives `what` to a job that ran
    with others."""
    if not os.path.exists(record):
        return False
    existing = read_json(record)
    if existing != settings:
        raise SpecError(f"{exp.file}: {what} has other settings than {record} records:\n"
                        f"  {record}: {json.dumps(existing)}\n  {exp.file}: {json.dumps(settings)}")
    return True


def claim_run_dir(exp, run, create):
    """Checks that the run dir, if it exists, was made for these settings; creates it when asked.
    A mismatch means two experiments give one run name to different runs."""
    path = run_dir(exp, run)
    settings = run.settings(exp.kind)
    record = os.path.join(path, "overrides.json")
    if recorded_settings_match(exp, record, settings, f"run {run.name}"):
        return
    if os.path.isdir(path) and os.listdir(path):
        raise SpecError(f"{path} exists without overrides.json: not a run of this driver; move it away")
    if create:
        os.makedirs(path, exist_ok=True)
        write_json(record, settings)


def read_attempts(path):
    """RUNDIR/attempts.jsonl as {attempt number: (start time, wall seconds or None)}: each attempt
    writes a line when it starts and another when it ends, which a killed driver never writes."""
    attempts = {}
    for record in read_records(os.path.join(path, "attempts.jsonl")):
        attempts[record["attempt"]] = (record["start"], record.get("wall_s"))
    return attempts


def attempts_wall(path):
    """Seconds over all attempts of a run. An attempt cut short with the driver (no end record) is
    taken to have lasted until the next attempt began or log.txt was last written."""
    attempts = read_attempts(path)
    log = os.path.join(path, "log.txt")
    log_end = os.path.getmtime(log) if os.path.exists(log) else 0.0
    numbers = sorted(attempts)
    total = 0.0
    for i, n in enumerate(numbers):
        start, wall = attempts[n]
        if wall is None:
            end = min(attempts[numbers[i + 1]][0], log_end) if i + 1 < len(numbers) else log_end
            wall = max(0.0, end - start)
        total += wall
    return total, len(numbers)


def divergence_step(records):
    """The step where the final run of skipped (non-finite) updates began, or None if the last
    train record was a good step."""
    train = [r for r in records if r.get("kind") == "train"]
    if not train or not train[-1].get("skipped"):
        return None
    first = train[-1]
    for record in reversed(train):
        if not record.get("skipped"):
            break
        first = record
    return first["step"]


def reached_last_eval(path):
    """Whether a run evaluated at its last step: the only proof of a finished pretrain run, as a
    SIGTERM makes lamina checkpoint and exit 0 early."""
    config = os.path.join(path, "config.json")
    if not os.path.exists(config):
        return False
    steps = read_json(config)["run"]["steps"]
    return any(r.get("kind") == "eval" and r.get("step") == steps
               for r in read_records(os.path.join(path, "metrics.jsonl")))


def log_tail(path, lines=LOG_TAIL_LINES):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log.txt)\n"


# ----------------------------------------------------------------------------------------------
# Running: lamina processes under signals forwarded from the driver.


class Children:
    """The live child processes. Within `with`, SIGINT/SIGTERM to the driver become SIGTERM to each
    child (lamina then checkpoints and exits 0) and stop new starts."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.live, self.signal, self.previous = set(), None, {}

    def __enter__(self):
        self.previous = {number: signal.signal(number, self.on_signal) for number in self.SIGNALS}
        return self

    def __exit__(self, error_type, *_):
        """Restores the handlers; after an unexpected error, stops the children at a checkpoint
        rather than leave them running unwatched."""
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        if error_type is not None:
            for process in self.live:
                process.terminate()
            for process in self.live:
                process.wait()

    def on_signal(self, number, _frame):
        if self.signal is None:
            print(f"\n{signal.Signals(number).name}: stopping the runs (each checkpoints first)", file=sys.stderr)
        self.signal = number
        for process in list(self.live):
            if process.poll() is None:
                process.terminate()

    def spawn(self, command, **kwargs):
        process = subprocess.Popen(command, cwd=ROOT, **kwargs)
        self.live.add(process)
        return process

    def reap(self, process):
        self.live.discard(process)


def lamina_env(threads):
    return dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))


def prepare_command(exp):
    p = exp.data.prepare
    command = [exp.lamina, "prepare", "--input", ",".join(p["input"]), "--vocab", p["vocab"],
               "--out", exp.data.dir + ".tmp", "--seq_len", str(p["seq_len"])]
    for name in ("max_bytes", "max_docs", "val_docs"):
        if name in p:
            command += [f"--{name}", str(p[name])]
    return command + ["--progress=false"]


def prepare_data(exp, children):
    """Prepares the dataset once: into DIR.tmp, marked done, then renamed, so that a killed prepare
    is redone rather than half-used."""
    data = exp.data
    if data is None or data.prepare is None or os.path.exists(os.path.join(data.dir, "done")):
        return
    tmp = data.dir + ".tmp"
    for stale in (tmp, data.dir):
        shutil.rmtree(stale, ignore_errors=True)
    os.makedirs(os.path.dirname(data.dir), exist_ok=True)
    log = data.dir + ".log"
    print(f"prepare {data.dir} (log {log})", flush=True)
    started = time.monotonic()
    with open(log, "w", encoding="utf-8") as f:
        process = children.spawn(prepare_command(exp), stdout=f, stderr=subprocess.STDOUT)
        code = process.wait()
        children.reap(process)
    if children.signal:
        raise SystemExit(128 + children.signal)
    if code != 0:
        raise RunError(f"lamina prepare failed (exit {code}):\n{log_tail(log)}")
    write_json(os.path.join(tmp, "done"), data.prepare)
    os.rename(tmp, data.dir)
    print(f"prepared {data.dir} in {time.monotonic() - started:.1f} s", flush=True)


@dataclass
class Job:
    """One lamina invocation: a run of the grid (pretrain or grad-norms), or, after a run has
    finished, the finetuning of each of its checkpoints on one task (finetune-sweep) in
    RUNDIR/finetune/TASK/."""

    run: Run
    task: str | None = None

    @property
    def name(self):
        return f"{self.run.name} / finetune {self.task}" if self.task else self.run.name


def experiment_jobs(exp):
    """The runs, then their finetuning jobs (which wait for their run)."""
    jobs = [Job(run) for run in exp.runs]
    return jobs + [Job(run, task) for run in exp.runs if run.finetune for task in run.finetune["tasks"]]


def job_dir(exp, job):
    return os.path.join(run_dir(exp, job.run), "finetune", job.task) if job.task else run_dir(exp, job.run)


def job_done_file(exp, job):
    return os.path.join(job_dir(exp, job), "done.json")


def finetune_settings(job):
    f = job.run.finetune
    return {"task": job.task, **{k: v for k, v in f.items() if k != "tasks"}}  # the job's own task, not the list


def claim_job_dir(exp, job, create):
    """claim_run_dir for runs; a finetuning job's directory records its settings in settings.json
    the same way, so that a changed finetune section is refused rather than mixed in."""
    if not job.task:
        claim_run_dir(exp, job.run, create)
        return
    path, settings = job_dir(exp, job), finetune_settings(job)
    record = os.path.join(path, "settings.json")
    if not recorded_settings_match(exp, record, settings, f"the finetuning of {job.run.name} on {job.task}") and create:
        os.makedirs(path, exist_ok=True)
        write_json(record, settings)


def job_ready(exp, job):
    """A run can start at once; a finetuning job once its run is done."""
    return not job.task or os.path.exists(done_file(exp, job.run))


def job_command(exp, job):
    run = job.run
    if job.task:
        f = run.finetune
        return [exp.lamina, "finetune-sweep", "--run", run_dir(exp, run), "--task", job.task, "--data", f["glue"],
                "--out", job_dir(exp, job), "--lr", ",".join(repr(float(lr)) for lr in f["lrs"]),
                "--seeds", str(f["seeds"]), "--epochs", str(f["epochs"]), "--batch", str(f["batch"]),
                "--max_seq", str(f["max_seq"]), "--device", f["device"], "--predict_test=false"]
    if exp.kind == "grad-norms":
        g = run.grad_norms
        return ([exp.lamina, "grad-norms", "--config", run.base]
                + [arg for o in run.overrides for arg in ("--set", o)]
                + ["--layers", ",".join(map(str, g["layers"])), "--batches", str(g["batches"]),
                   "--seeds", str(g["seeds"]), "--json"])
    return ([exp.lamina, "pretrain", "--config", run.base, "--out", run_dir(exp, run), "--resume", "auto"]
            + [arg for o in run.overrides for arg in ("--set", o)])


@dataclass
class Attempt:
    job: Job
    number: int
    index: int
    process: subprocess.Popen
    start: float
    lock: int
    files: list


class Scheduler:
    """Runs the unfinished jobs, `parallel` at a time, each as soon as it is ready (a finetuning
    job once its run is done), runs before finetuning. A failed job stops new starts; the running
    ones are let finish. A signal stops everything at the next checkpoint."""

    def __init__(self, exp, jobs, children):
        self.exp, self.pending, self.children = exp, list(jobs), children
        self.total, self.started, self.running, self.failed = len(jobs), 0, [], []

    def run(self):
        while self.pending or self.running:
            while len(self.running) < self.exp.parallel and not (self.failed or self.children.signal):
                ready = next((job for job in self.pending if job_ready(self.exp, job)), None)
                if ready is None:
                    break
                self.pending.remove(ready)
                self.start(ready)
            for attempt in [a for a in self.running if a.process.poll() is not None]:
                self.running.remove(attempt)
                self.finish(attempt)
            if not self.running and (self.failed or self.children.signal):
                break
            if not self.running and self.pending and not any(job_ready(self.exp, job) for job in self.pending):
                raise RunError(f"nothing can start: {', '.join(job.name for job in self.pending)} wait for runs "
                               "that did not finish")
            time.sleep(0.2)
        if self.children.signal:
            raise SystemExit(128 + self.children.signal)
        if self.failed:
            raise RunError(f"{len(self.failed)} job(s) failed: {', '.join(self.failed)}")

    def start(self, job):
        path = job_dir(self.exp, job)
        claim_job_dir(self.exp, job, create=True)
        try:
            lock = lock_run(path)
        except RunError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            self.failed.append(job.name)
            return
        number = len(read_attempts(path)) + 1
        command = job_command(self.exp, job)
        log = open(os.path.join(path, "log.txt"), "a", encoding="utf-8")
        log.write(f"=== attempt {number}, {now_iso()}: {shlex.join(command)}\n")
        log.flush()
        grad_norms = self.exp.kind == "grad-norms" and not job.task
        stdout = open(os.path.join(path, "grad_norms.json.part"), "w", encoding="utf-8") if grad_norms else log
        process = self.children.spawn(command, stdout=stdout, stderr=log, env=lamina_env(self.exp.threads),
                                      pass_fds=(lock,))
        os.ftruncate(lock, 0)
        os.write(lock, f"{process.pid}\n".encode())
        self.started += 1
        attempt = Attempt(job, number, self.started, process, time.time(), lock, [log, stdout])
        append_jsonl(os.path.join(path, "attempts.jsonl"), {"attempt": number, "start": attempt.start})
        self.running.append(attempt)
        print(f"[{attempt.index}/{self.total}] start {job.name} (attempt {number})", flush=True)

    def finish(self, attempt):
        job, code = attempt.job, attempt.process.returncode
        path = job_dir(self.exp, job)
        self.children.reap(attempt.process)
        for f in set(attempt.files):
            f.close()
        os.close(attempt.lock)
        wall = time.time() - attempt.start
        append_jsonl(os.path.join(path, "attempts.jsonl"),
                     {"attempt": attempt.number, "start": attempt.start, "wall_s": round(wall, 3), "exit": code})
        status, detail = self.outcome(job, path, code)
        prefix = f"[{attempt.index}/{self.total}] {status} {job.name} in {wall:.1f} s"
        if status in ("finished", "diverged"):
            total, attempts = attempts_wall(path)
            write_json(os.path.join(path, "done.json"),
                       {"status": status, "wall_s": round(total, 3), "attempts": attempts, **detail})
            print(f"{prefix} ({total:.1f} s over {attempts} attempt(s)){detail_text(detail)}", flush=True)
        elif status == "stopped":
            print(f"{prefix}: resumes from its last checkpoint", flush=True)
        else:
            self.failed.append(job.name)
            print(f"{prefix}: exit {code}{detail_text(detail)}; the end of {path}/log.txt:\n"
                  f"{log_tail(os.path.join(path, 'log.txt'))}", file=sys.stderr, flush=True)

    def outcome(self, job, path, code):
        """(status, details): finished, diverged (a result), stopped (by our signal) or failed."""
        if job.task:
            if code == 0 and os.path.exists(os.path.join(path, "sweep.json")):
                return "finished", {}
            return ("stopped" if self.children.signal else "failed"), {}
        if self.exp.kind == "grad-norms":
            part = os.path.join(path, "grad_norms.json.part")
            if code == 0:
                try:
                    write_json(os.path.join(path, "grad_norms.json"), check_grad_norms(read_json(part)))
                    os.remove(part)
                    return "finished", {}
                except (ValueError, KeyError, TypeError) as e:
                    return "failed", {"why": f"its output is not grad-norms JSON ({e})"}
            return ("stopped" if self.children.signal else "failed"), {}
        if code == 0 and reached_last_eval(path):
            return "finished", {}
        if code != 0 and DIVERGED_MESSAGE in log_tail(os.path.join(path, "log.txt")):
            step = divergence_step(read_records(os.path.join(path, "metrics.jsonl")))
            if step is not None:
                return "diverged", {"step": step}
        if self.children.signal:
            return "stopped", {}
        return "failed", ({"why": "it exited 0 before its last evaluation"} if code == 0 else {})


def check_grad_norms(value):
    """The output of `lamina grad-norms --json`, checked for what the analysis reads."""
    if not isinstance(value, dict) or not isinstance(value.get("depths"), list) or not value["depths"]:
        raise ValueError("no 'depths' list")
    for depth in value["depths"]:
        for group in ("ffn_w1", "ffn_w2"):
            if len(depth["grad_norm"][group]) != depth["layers"]:
                raise ValueError(f"depth {depth['layers']}: {group} has {len(depth['grad_norm'][group])} values")
    return value


def detail_text(detail):
    if "step" in detail:
        return f", diverged at step {detail['step']}"
    return f": {detail['why']}" if "why" in detail else ""


def lock_run(path):
    """Holds RUNDIR/lock for as long as the driver or its lamina child lives (the child inherits the
    descriptor), so two drivers never run one run at once, even after this driver is killed."""
    lock = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(lock, 64).decode().strip() or "?"
        os.close(lock)
        raise RunError(f"{path} is being run by another process (lamina pid {holder})") from None
    return lock


def append_jsonl(path, record):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# Analysis, summary and publishing.


def load_run_data(exp, run):
    """A finished run's results, as the analyses read them."""
    path = run_dir(exp, run)
    done = read_json(os.path.join(path, "done.json"))
    records = read_records(os.path.join(path, "metrics.jsonl"))

    def by_kind(kind):
        return sorted((r for r in records if r.get("kind") == kind), key=lambda r: r["step"])
    config_path = os.path.join(path, "config.json")
    grad_norms_path = os.path.join(path, "grad_norms.json")
    tasks = run.finetune["tasks"] if run.finetune else []
    finetune = {task: read_json(os.path.join(job_dir(exp, Job(run, task)), "sweep.json")) for task in tasks}
    return analyses.RunData(
        name=run.name, axes=run.axes, status=done["status"], wall_s=done["wall_s"],
        diverged_step=done.get("step"),
        config=read_json(config_path) if os.path.exists(config_path) else {},
        evals=by_kind("eval"), layers=by_kind("layers"),
        grad_norms=read_json(grad_norms_path) if os.path.exists(grad_norms_path) else None, finetune=finetune)


def machine():
    """Where the runs ran, for the summary: timings mean little without it."""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                   platform.processor())
    info = {"uname": capture(["uname", "-a"]) or " ".join(platform.uname()), "cpu": cpu, "cores": os.cpu_count()}
    if shutil.which("nvidia-smi"):
        info["gpus"] = capture(["nvidia-smi", "-L"]).splitlines()
    return info


def capture(command):
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def git_state():
    status = capture(["git", "status", "--porcelain", "--untracked-files=no"])
    return {"commit": capture(["git", "rev-parse", "HEAD"]), "dirty": bool(status) if status is not None else None}


def write_evals_csv(path, runs):
    axes = sorted({axis for run in runs for axis in run.axes})
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["run", *axes, "step", "mlm_loss", "mlm_accuracy"])
        for run in runs:
            for r in run.evals:
                writer.writerow([run.name, *(run.axes.get(a, "") for a in axes), r["step"],
                                 r.get("mlm_loss"), r.get("mlm_accuracy")])


def write_layers_csv(path, runs):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "step", "layer", "group", "grad_norm", "update_norm"])
        for run in runs:
            for r in run.layers:
                if r["step"] > LAYERS_CSV_MAX_STEP:
                    break
                for group, norms in r["grad_norm"].items():
                    updates = r.get("update_norm", {}).get(group, [None] * len(norms))
                    for layer, (g, u) in enumerate(zip(norms, updates), 1):
                        writer.writerow([run.name, r["step"], layer, group, g, u])


def jsonable(value):
    """Non-finite floats as null, as lamina writes them (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def analyse(exp, invocation_start):
    """Reads every run, runs the claim's analysis into OUT/CLAIM/ and writes summary.json."""
    missing = [job.name for job in experiment_jobs(exp) if not os.path.exists(job_done_file(exp, job))]
    if missing:
        raise RunError(f"{len(missing)} job(s) not finished: {', '.join(missing)}")
    runs = [load_run_data(exp, run) for run in exp.runs]
    claim_dir = os.path.join(exp.out, exp.name)
    os.makedirs(claim_dir, exist_ok=True)
    try:
        result = analyses.ANALYSES[exp.analysis].function(runs, exp.criterion, claim_dir)
    except analyses.AnalysisError as e:
        raise RunError(f"{exp.file}: analysis {exp.analysis}: {e}") from None
    if exp.kind == "pretrain":
        write_evals_csv(os.path.join(claim_dir, "evals.csv"), runs)
    if any(run.layers for run in runs):
        write_layers_csv(os.path.join(claim_dir, "layers.csv"), runs)
    content = exp.content
    summary = {
        "claim": content["claim"], "title": content["title"], "paper": content["paper"], "scale": exp.scale,
        "experiment": content,
        "runs": [{"name": r.name, "axes": r.axes, "status": r.status, "final_val_loss": r.final_loss,
                  "wall_s": r.wall_s, **({"diverged_step": r.diverged_step} if r.diverged_step else {})}
                 for r in runs],
        "figures": result.figures, "verdict": result.verdict, "reason": result.reason,
        "plots": result.plots, "machine": machine(),
        "runs_wall_s": round(sum(r.wall_s for r in runs), 3),
        "invocation_wall_s": round(time.monotonic() - invocation_start, 3),
        "lamina": git_state(), "date": now_iso(),
    }
    write_json(os.path.join(claim_dir, "summary.json"), jsonable(summary))
    print(f"\nclaim {content['claim']}: {content['title']} ({exp.scale} scale)")
    print("\n".join(result.table))
    print(f"\nverdict: {result.verdict}: {result.reason}\nwritten: {claim_dir}/summary.json")
    return claim_dir, result


def publish(claim_dir, plots, name, target_root):
    """Copies the summary, the plots and evals.csv into TARGET/CLAIM/, replacing it whole (a temp
    dir renamed into place), so a reader sees the old results or the new ones, never a mixture."""
    target = os.path.join(target_root, name)
    tmp, old = f"{target}.tmp.{os.getpid()}", f"{target}.old.{os.getpid()}"
    os.makedirs(tmp)
    for file in ["summary.json", "evals.csv", *plots]:
        if os.path.exists(os.path.join(claim_dir, file)):
            shutil.copy2(os.path.join(claim_dir, file), tmp)
    if os.path.exists(target):
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    print(f"published: {target}")


# ----------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="run.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("claim", help="NAME of launch/experiments/NAME.json, or a path to an experiment file")
    parser.add_argument("--scale", default="cpu", help="the scale of the file to run (default cpu)")
    parser.add_argument("--out", help="output root (default runs/experiments/SCALE)")
    parser.add_argument("--lamina", help="the lamina binary (default $LAMINA_BINARY, else build/lamina)")
    parser.add_argument("--data_root", help="{shared} (default $LAMINA_DATA, else ../shared/data)")
    parser.add_argument("--parallel", type=int, help="runs at once (default: the scale's 'parallel')")
    parser.add_argument("--publish", metavar="DIR", help="copy the summary, plots and evals.csv into DIR/CLAIM/")
    parser.add_argument("--dry_run", action="store_true", help="print every run's command line, run nothing")
    parser.add_argument("--analyse_only", action="store_true", help="analyse the finished runs, run nothing")
    args = parser.parse_args(argv)
    if args.parallel is not None and args.parallel < 1:
        parser.error("--parallel must be >= 1")
    return args


def setup(args):
    """The experiment with the command line's paths applied."""
    out = os.path.abspath(args.out or os.path.join(ROOT, "runs", "experiments", args.scale))
    data_root = os.path.abspath(args.data_root or os.environ.get("LAMINA_DATA")
                                or os.path.join(ROOT, "..", "shared", "data"))
    exp = load_experiment(experiment_path(args.claim), args.scale, data_root, out)
    exp.lamina = os.path.abspath(args.lamina or os.environ.get("LAMINA_BINARY")
                                 or os.path.join(ROOT, "build", "lamina"))
    if args.parallel:
        exp.parallel = args.parallel
    return exp


def dry_run(exp):
    env = f"OPENBLAS_NUM_THREADS={exp.threads} OMP_NUM_THREADS={exp.threads}"
    if exp.data and exp.data.prepare:
        state = "prepared" if os.path.exists(os.path.join(exp.data.dir, "done")) else "to prepare"
        print(f"data ({state}): {shlex.join(prepare_command(exp))}")
    jobs = experiment_jobs(exp)
    for job in jobs:
        claim_job_dir(exp, job, create=False)
        state = "finished" if os.path.exists(job_done_file(exp, job)) else "to run"
        print(f"{job.name} ({state}): {env} {shlex.join(job_command(exp, job))}")
    print(f"{len(jobs)} jobs, {exp.parallel} at a time, output under {exp.out}")


def execute(exp):
    if not os.access(exp.lamina, os.X_OK):
        raise SpecError(f"no lamina binary at {exp.lamina}: build it (launch/setup.sh) or pass --lamina")
    jobs = experiment_jobs(exp)
    for job in jobs:
        claim_job_dir(exp, job, create=False)
    todo = []
    for job in jobs:
        if os.path.exists(job_done_file(exp, job)):
            print(f"skip {job.name} ({read_json(job_done_file(exp, job))['status']})")
        else:
            todo.append(job)
    with Children() as children:
        if any(not job.task for job in todo):
            prepare_data(exp, children)
        Scheduler(exp, todo, children).run()


def main(argv):
    started = time.monotonic()
    args = parse_args(argv)
    try:
        exp = setup(args)
        if args.dry_run:
            dry_run(exp)
            return 0
        if not args.analyse_only:
            execute(exp)
        claim_dir, result = analyse(exp, started)
        if args.publish:
            publish(claim_dir, result.plots, exp.name, args.publish)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
