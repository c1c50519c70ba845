"""The comparisons of the papers the recipes follow, at CPU scale, with several seeds.

Reads a job file (default ``benchmarks/paper_results.yaml``: one job per paper comparison = a script (a paper pipeline
module ``distil_trainers.papers.<module>``, run with ``-m``, or a recipe file), its config, CLI overrides, seeds, the rows to report and the paper's reported numbers for them), runs every (job, seed) as a
subprocess into ``<runs-dir>/<job>/seed<N>`` one after the other, then aggregates: for every reported row, the mean
and sample standard deviation (ddof=1) of accuracy and macro-F1 over the seeds that finished, beside the paper's
numbers. Writes ``benchmarks/results/paper_results.json`` and ``paper_results.md`` (one table per paper, the exact
commands, the seeds and the wall times) and prints the Markdown.

* Runs go seed by seed (seed 1 of every job, then seed 2...), so a stopped invocation leaves whole seeds.
* A run whose ``results.json`` already exists is skipped, so an interrupted invocation resumes where it stopped (the
  recipes also reuse their finished stages inside a run directory) — unless the job's settings changed since that run
  (its ``paper_run.json`` records the recipe arguments): then it runs again and its old results are not used.
* A failed run is reported (its log is ``<run dir>/run.log``) and the others go on; the exit code is 1 if any run of
  this invocation failed (or could not start because a job it requires had not finished that seed).
* Nothing is made up: a row missing from some seeds is averaged over the seeds that have it and flagged; a job with no
  finished seed shows "not run".

Usage (from the repository root):

    python benchmarks/paper_results.py                              # every job, the job file's seeds
    python benchmarks/paper_results.py --jobs ddml_davidson,ddml_davidson_kd --seeds 1,2
    python benchmarks/paper_results.py --dry-run                    # print the commands, run nothing
    python benchmarks/paper_results.py --aggregate-only             # tables from the runs already on disk
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JOB_FILE = ROOT / "benchmarks" / "paper_results.yaml"
DEFAULT_RUNS_DIR = "runs/paper"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "paper_results"
LAUNCHERS = ("python", "accelerate")
METRICS = ("accuracy", "f1_macro")
METRIC_TITLES = {"accuracy": "accuracy", "f1_macro": "macro-F1"}
# Arguments the driver sets itself for every run.
RESERVED = ("seed", "output_dir", "config")
RESULTS_FILE = "results.json"
RECORD_FILE = "paper_run.json"
LOG_FILE = "run.log"
# The efficiency rows of the rationale recipe: the columns reported (title, scale, decimals).
EFFICIENCY_COLUMNS = {
    "latency_ms_per_example": ("latency (ms / example)", 1.0, 1),
    "examples_per_second": ("examples / s", 1.0, 2),
    "weight_bytes": ("weights (MiB)", 1 / 2**20, 1),
    "peak_memory_bytes": ("peak memory (MiB)", 1 / 2**20, 1),
}


# How the peak memory was measured (`distil_trainers.papers.efficiency.PeakMemory`), as the column title says it.
PEAK_MEMORY_METHODS = {
    "rss_delta": "RSS growth above the loaded model",
    "cuda_max_allocated": "CUDA max allocated",
}


def efficiency_titles(entries: list[dict]) -> list[str]:
    """Column titles of the efficiency table; the peak-memory one names how it was measured."""
    methods = sorted({m for e in entries for m in e.get("peak_memory_methods", [])})
    titles = []
    for key, (title, _, _) in EFFICIENCY_COLUMNS.items():
        if key == "peak_memory_bytes" and methods:
            title = title[:-1] + ", " + ", ".join(PEAK_MEMORY_METHODS.get(m, m) for m in methods) + ")"
        titles.append(title)
    return titles


class JobFileError(ValueError):
    """The job file is not valid (every problem found is in the message)."""


# ----------------------------------------------------------------------------------------------------------------------
# The job file
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    name: str
    paper: str
    title: str
    recipe: Path  # the script's file (of ``module`` when the job runs a module)
    config: Path
    launcher: str
    overrides: dict[str, Any]
    seeds: list[int]
    rows: list[dict[str, Any]]
    paper_rows: list[dict[str, Any]] = field(default_factory=list)
    deltas: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)
    module: str | None = None  # a module run with ``-m`` (a paper pipeline), instead of the recipe file


@dataclass
class JobFile:
    path: Path
    papers: dict[str, dict[str, str]]
    jobs: list[Job]

    def job(self, name: str) -> Job:
        return next(j for j in self.jobs if j.name == name)


def _path(value: Any) -> Path:
    path = Path(str(value))
    return path if path.is_absolute() else ROOT / path


def _seed_list(value: Any, where: str, problems: list[str]) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    ):
        problems.append(f"{where}: seeds must be a non-empty list of integers, got {value!r}")
        return []
    if len(set(value)) != len(value):
        problems.append(f"{where}: seeds repeat: {value}")
    return list(value)


def module_file(module: str) -> Path | None:
    """The file of an importable module (e.g. ``distil_trainers.papers.ddml_pipeline``) of this checkout, or None."""
    import importlib.util

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the runs import this checkout's package (see _child_env)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin else None


def _check_ref(ref: Any, where: str, problems: list[str]) -> None:
    if not isinstance(ref, dict) or not isinstance(ref.get("model"), str):
        problems.append(f"{where}: each entry needs a `model` (got {ref!r})")


def load_job_file(path: str | os.PathLike = DEFAULT_JOB_FILE, select: Sequence[str] | None = None) -> JobFile:
    """Read and check the job file; with ``select``, keep only those jobs (in the file's order). Every problem found
    (unknown keys, missing recipe or config, reserved overrides, unknown papers or jobs...) is collected and raised
    as one :class:`JobFileError`, before anything runs."""
    path = Path(path)
    if not path.is_file():
        raise JobFileError(f"Job file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise JobFileError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        raise JobFileError(f"{path}: expected a mapping with a `jobs` list.")
    problems: list[str] = []
    default_seeds = _seed_list(data.get("seeds", [1, 2, 3]), "seeds", problems)
    papers = data.get("papers") or {}
    if not isinstance(papers, dict):
        problems.append("papers: expected a mapping {key: {short, citation}}")
        papers = {}
    for key, paper in papers.items():
        if not isinstance(paper, dict) or not paper.get("citation"):
            problems.append(f"papers.{key}: needs a `citation`")
    known = {
        "name",
        "paper",
        "title",
        "recipe",
        "module",
        "config",
        "launcher",
        "overrides",
        "seeds",
        "rows",
        "paper_rows",
        "deltas",
        "notes",
        "requires",
    }
    jobs: list[Job] = []
    names: list[str] = []
    for index, raw in enumerate(data["jobs"]):
        where = f"job {index + 1}"
        if not isinstance(raw, dict):
            problems.append(f"{where}: expected a mapping")
            continue
        name = raw.get("name")
        if not isinstance(name, str) or not name or any(c in name for c in "/\\ ,"):
            problems.append(f"{where}: needs a `name` without spaces, commas or slashes (got {name!r})")
            continue
        where = f"job {name!r}"
        if name in names:
            problems.append(f"{where}: the name is used twice")
        names.append(name)
        unknown = sorted(set(raw) - known)
        if unknown:
            problems.append(f"{where}: unknown keys {unknown} (known: {sorted(known)})")
        if raw.get("paper") not in papers:
            problems.append(f"{where}: paper {raw.get('paper')!r} is not a key of `papers` ({sorted(papers)})")
        module, script = raw.get("module"), _path(raw.get("recipe", ""))
        if module is not None and raw.get("recipe"):
            problems.append(f"{where}: give a `recipe` (a file) or a `module` (run with -m), not both")
        elif module is not None:
            script = module_file(str(module)) or Path(str(module))
            if module_file(str(module)) is None:
                problems.append(f"{where}: module {module} is not importable")
        for key in ("recipe", "config"):
            if key == "recipe" and module is not None:
                continue
            if not raw.get(key):
                problems.append(f"{where}: needs a `{key}`" + (" (or a `module`)" if key == "recipe" else ""))
            elif not _path(raw[key]).is_file():
                problems.append(f"{where}: {key} {raw[key]} does not exist ({_path(raw[key])})")
        launcher = raw.get("launcher", "python")
        if launcher not in LAUNCHERS:
            problems.append(f"{where}: launcher must be one of {LAUNCHERS}, got {launcher!r}")
        overrides = raw.get("overrides") or {}
        if not isinstance(overrides, dict):
            problems.append(f"{where}: overrides must be a mapping {{argument: value}}")
            overrides = {}
        for key, value in overrides.items():
            if key in RESERVED:
                problems.append(f"{where}: overrides may not set {key!r} (the driver sets seed, output_dir, config)")
            if value is None:
                problems.append(f"{where}: override {key!r} has no value")
        seeds = _seed_list(raw["seeds"], f"{where}", problems) if "seeds" in raw else list(default_seeds)
        rows = raw.get("rows")
        if not isinstance(rows, list) or not rows:
            problems.append(f"{where}: needs `rows`, the recipe rows to report")
            rows = []
        for row in rows:
            _check_ref(row, f"{where} rows", problems)
            paper = row.get("paper") if isinstance(row, dict) else None
            if paper is not None and (not isinstance(paper, dict) or not paper.get("source")):
                problems.append(f"{where} row {row.get('model')!r}: paper needs a `source` (table / page)")
        paper_rows = raw.get("paper_rows") or []
        for row in paper_rows:
            if not isinstance(row, dict) or not row.get("what") or not row.get("source"):
                problems.append(f"{where} paper_rows: each needs `what` and `source` (got {row!r})")
        deltas = raw.get("deltas") or []
        for delta in deltas:
            if not isinstance(delta, dict) or not delta.get("label") or not delta.get("a") or not delta.get("b"):
                problems.append(f"{where} deltas: each needs `label`, `a` and `b` (got {delta!r})")
                continue
            for ref in [*delta["a"], *delta["b"]]:
                _check_ref(ref, f"{where} delta {delta['label']!r}", problems)
        notes = raw.get("notes") or []
        requires = raw.get("requires") or []
        for other in requires:
            if other not in names[:-1]:
                problems.append(f"{where}: requires {other!r}, which is not a job listed before it")
        jobs.append(
            Job(
                name=name,
                paper=str(raw.get("paper")),
                title=str(raw.get("title") or name),
                recipe=script,
                module=None if module is None else str(module),
                config=_path(raw.get("config", "")),
                launcher=launcher,
                overrides=dict(overrides),
                seeds=seeds,
                rows=[r for r in rows if isinstance(r, dict)],
                paper_rows=list(paper_rows),
                deltas=[d for d in deltas if isinstance(d, dict)],
                notes=[str(n) for n in notes],
                requires=list(requires),
            )
        )
    for job in jobs:  # deltas may name another job
        for delta in job.deltas:
            for ref in [*delta.get("a", []), *delta.get("b", [])]:
                if isinstance(ref, dict) and ref.get("job") not in (None, *names):
                    problems.append(f"job {job.name!r} delta {delta.get('label')!r}: unknown job {ref['job']!r}")
    if select:
        unknown = [s for s in select if s not in names]
        if unknown:
            problems.append(f"--jobs: unknown jobs {unknown}; the job file has {names}")
    if problems:
        raise JobFileError(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
    if select:
        jobs = [j for j in jobs if j.name in select]
    return JobFile(path=path, papers=papers, jobs=jobs)


# ----------------------------------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------------------------------


def shown(path: Path) -> str:
    """``path`` relative to the repository root when it is inside it (the runs' working directory), else absolute."""
    path = Path(path)
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def run_dir(runs_dir: Path, job: str, seed: int | str) -> Path:
    return Path(runs_dir) / job / f"seed{seed}"


def _value_args(value: Any, substitute) -> list[str]:
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in _value_args(v, substitute)]
    if isinstance(value, dict):
        return [json.dumps(value)]
    if isinstance(value, str):
        return [substitute(value)]
    return [str(value)]


def recipe_args(job: Job, seed: int | str, runs_dir: Path, absolute: bool = False) -> list[str]:
    """The recipe's arguments for one seed: ``--config``, the overrides (``{seed}``, ``{runs_dir}``, ``{job}``
    replaced), ``--seed`` and ``--output_dir``. Paths are shown relative to the repository root (the runs' working
    directory) unless ``absolute``."""

    def where(path: Path) -> str:
        return str(Path(path).resolve()) if absolute else shown(path)

    def substitute(text: str) -> str:
        return text.replace("{seed}", str(seed)).replace("{runs_dir}", where(runs_dir)).replace("{job}", job.name)

    args = ["--config", where(job.config)]
    for key, value in job.overrides.items():
        args += [f"--{key}", *_value_args(value, substitute)]
    return [*args, "--seed", str(seed), "--output_dir", where(run_dir(runs_dir, job.name, seed))]


def launcher_args(job: Job, threads: int, display: bool = False) -> list[str]:
    if job.launcher == "accelerate":
        head = ["accelerate", "launch"] if display else [sys.executable, "-m", "accelerate.commands.launch"]
        return [*head, "--num_processes", "1", "--num_cpu_threads_per_process", str(threads)]
    return ["python"] if display else [sys.executable]


def command(job: Job, seed: int | str, runs_dir: Path, threads: int, display: bool = False) -> list[str]:
    script = ["-m", job.module] if job.module else [shown(job.recipe)]
    return [*launcher_args(job, threads, display), *script, *recipe_args(job, seed, runs_dir)]


def command_text(job: Job, seed: int | str, runs_dir: Path, threads: int) -> str:
    return shlex.join(command(job, seed, runs_dir, threads, display=True))


def parser_classes(recipe: Path) -> list[str]:
    """Names of the argument dataclasses a recipe parses, read from its ``TrlParser((A, B, ...))`` /
    ``HfArgumentParser(...)`` call (without importing it)."""
    tree = ast.parse(Path(recipe).read_text(), filename=str(recipe))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Tuple):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name.endswith("Parser"):
                return [elt.id for elt in node.args[0].elts if isinstance(elt, ast.Name)]
    raise JobFileError(f"{recipe}: no TrlParser((...)) / HfArgumentParser((...)) call found.")


# ----------------------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # the recipes import this checkout's package, not whichever copy is installed
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return ""
    return "\n".join("      " + line for line in text[-lines:])


def _recorded_args(directory: Path) -> list[str] | None:
    """The recipe arguments a finished run was started with (from its ``paper_run.json``), or None if unknown."""
    try:
        return json.loads((directory / RECORD_FILE).read_text()).get("recipe_args")
    except (OSError, ValueError):
        return None


def run_jobs(
    jobs: Sequence[Job],
    runs_dir: Path,
    seeds: Sequence[int] | None = None,
    threads: int | None = None,
    dry_run: bool = False,
    out=sys.stdout,
) -> list[dict[str, Any]]:
    """Run every (job, seed) not finished yet, one after the other; returns the runs that failed or could not start."""
    threads = threads or os.cpu_count() or 1
    # seed by seed: after the first pass every job has one finished seed (and a job's `requires` run earlier)
    order = sorted({s for job in jobs for s in (seeds or job.seeds)})
    plan = [(job, seed) for seed in order for job in jobs if seed in (seeds or job.seeds)]
    failures: list[dict[str, Any]] = []
    env = _child_env()

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    for index, (job, seed) in enumerate(plan, 1):
        tag = f"[{index}/{len(plan)}] {job.name} seed {seed}"
        directory = run_dir(runs_dir, job.name, seed)
        if (directory / RESULTS_FILE).is_file():
            previous = _recorded_args(directory)
            if previous is None or previous == recipe_args(job, seed, runs_dir):
                say(f"{tag}: done already ({shown(directory / RESULTS_FILE)}), skipped")
                continue
            say(f"{tag}: the job's settings changed since {shown(directory / RESULTS_FILE)} was written: run again")
            if not dry_run:
                (directory / RESULTS_FILE).unlink()
        if dry_run:
            say(f"{tag}: {command_text(job, seed, runs_dir, threads)}")
            continue
        blocked = [r for r in job.requires if not (run_dir(runs_dir, r, seed) / RESULTS_FILE).is_file()]
        if blocked:
            say(f"{tag}: NOT RUN, it needs {', '.join(blocked)} seed {seed} to have finished first")
            failures.append({"job": job.name, "seed": seed, "reason": f"requires {blocked}"})
            continue
        directory.mkdir(parents=True, exist_ok=True)
        log = directory / LOG_FILE
        say(f"{tag}: running (log: {shown(log)})")
        started = time.time()
        try:
            with open(log, "a") as handle:  # a rerun of a failed or stopped seed adds to its log
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
                handle.write(f"==== {stamp}\n$ {command_text(job, seed, runs_dir, threads)}\n\n")
                handle.flush()
                code = subprocess.run(
                    command(job, seed, runs_dir, threads),
                    cwd=ROOT,
                    env=env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    check=False,
                ).returncode
        except OSError as error:  # the launcher itself could not start
            code = f"could not start: {error}"
        wall = time.time() - started
        finished = code == 0 and (directory / RESULTS_FILE).is_file()
        record = {
            "job": job.name,
            "seed": seed,
            "command": command_text(job, seed, runs_dir, threads),
            "recipe_args": recipe_args(job, seed, runs_dir),
            "returncode": code,
            "finished": finished,
            "wall_seconds": wall,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        }
        (directory / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if finished:
            say(f"{tag}: ok in {format_duration(wall)}")
        else:
            reason = f"exit {code}" if code != 0 else f"exit 0 but no {RESULTS_FILE}"
            say(f"{tag}: FAILED ({reason}) after {format_duration(wall)}; end of {shown(log)}:\n{_tail(log)}")
            failures.append({"job": job.name, "seed": seed, "reason": reason, "log": shown(log)})
    return failures


# ----------------------------------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------------------------------


def normalise_results(data: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(rows, efficiency)`` of a recipe's ``results.json``. Rows get ``model``, ``task`` and the metrics (fractions).

    Two shapes: ``{"rows": [{"model", "task" | "subtask", "accuracy", "f1_macro", ...}]}`` (every classifier recipe)
    and the rationale recipe's ``{"dataset", "teacher": {...}, "student": {...}, "student_label_only": {...},
    "efficiency": [{"name", ...}]}``."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    efficiency = [e for e in data.get("efficiency") or [] if isinstance(e, dict) and "name" in e]
    if isinstance(data.get("rows"), list):
        rows = []
        for row in data["rows"]:
            if isinstance(row, dict) and "model" in row:
                task = row.get("task", row.get("subtask"))
                rows.append({**row, "task": None if task is None else str(task)})
        return rows, efficiency
    rows = [
        {"model": key, "task": data.get("dataset"), **value}
        for key, value in data.items()
        if isinstance(value, dict) and any(m in value for m in METRICS)
    ]
    if not rows:
        raise ValueError("neither a `rows` list nor model entries with accuracy / f1_macro")
    return rows, efficiency


def _matches(row: dict[str, Any], ref: dict[str, Any]) -> bool:
    if row.get("model") != ref["model"]:
        return False
    task = ref.get("task")
    return task is None or str(row.get("task", "")).lower() == str(task).lower()


def load_seed_results(runs_dir: Path, job: Job, seeds: Sequence[int]) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """The finished seeds of a job: ``{seed: {"rows", "efficiency", "wall_seconds", "recipe_args"}}`` and the
    problems met (unreadable results; results made by another command than the job file's now, which are left out
    so that a mean never mixes two settings)."""
    found: dict[int, dict[str, Any]] = {}
    problems: list[str] = []
    for seed in seeds:
        directory = run_dir(runs_dir, job.name, seed)
        path = directory / RESULTS_FILE
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
            rows, efficiency = normalise_results(data)
        except (ValueError, OSError) as error:
            problems.append(f"seed {seed}: {shown(path)} could not be read ({error}); left out")
            continue
        record = {}
        if (directory / RECORD_FILE).is_file():
            try:
                record = json.loads((directory / RECORD_FILE).read_text())
            except (ValueError, OSError):
                record = {}
        wall = record.get("wall_seconds")
        if wall is None:
            wall = data.get("wall_seconds") or (data["wall_minutes"] * 60 if data.get("wall_minutes") else None)
        expected = recipe_args(job, seed, runs_dir)
        if record.get("recipe_args") is not None and record["recipe_args"] != expected:
            problems.append(
                f"seed {seed}: made by another command than the job file's now ({shlex.join(record['recipe_args'])});"
                f" left out of the means (running the job again reruns it)"
            )
            continue
        found[seed] = {"rows": rows, "efficiency": efficiency, "wall_seconds": wall}
    return found, problems


def _stats(values: dict[int, dict[str, float]], keys: Sequence[str]) -> dict[str, Any]:
    from distil_trainers.papers.reports import aggregate_seeds

    runs = [{k: v[k] for k in keys if isinstance(v.get(k), (int, float))} for _, v in sorted(values.items())]
    stats = aggregate_seeds(runs) if runs else {}
    return {k: stats.get(k) for k in keys}


def aggregate_job(job: Job, runs_dir: Path, seeds: Sequence[int], all_results: dict[str, dict]) -> dict[str, Any]:
    """One job's entry of the report (``all_results``: every job's :func:`load_seed_results`, for cross-job deltas)."""
    found, problems = all_results[job.name]
    rows = []
    for spec in job.rows:
        per_seed: dict[int, dict[str, float]] = {}
        flags: list[str] = []
        task = spec.get("task")
        for seed, result in found.items():
            matches = [r for r in result["rows"] if _matches(r, spec)]
            if len(matches) > 1:
                flags.append(f"{len(matches)} rows match in seed {seed}; left out")
            elif matches:
                per_seed[seed] = {m: matches[0].get(m) for m in METRICS}
                task = task or matches[0].get("task")
                big = [m for m in METRICS if isinstance(matches[0].get(m), (int, float)) and matches[0][m] > 1.0]
                if big:
                    flags.append(f"seed {seed}: {big} above 1, not a fraction")
        missing = [s for s in found if s not in per_seed]
        if missing and per_seed:
            flags.append(f"missing in seed(s) {', '.join(map(str, missing))}: mean over the {len(per_seed)} other(s)")
        elif missing:
            flags.append(f"in none of the {len(found)} finished seed(s)")
        rows.append(
            {
                "model": spec["model"],
                "task": task,
                "label": spec.get("label") or spec["model"],
                "seeds": sorted(per_seed),
                "n": len(per_seed),
                **_stats(per_seed, METRICS),
                "paper": spec.get("paper"),
                "flags": flags,
            }
        )
    deltas = []
    for spec in job.deltas:
        metric = spec.get("metric", "f1_macro")
        per_seed = {}
        for seed in found:
            sides = []
            for refs in (spec["a"], spec["b"]):
                values = []
                for ref in refs:
                    source = all_results.get(ref.get("job", job.name), ({}, []))[0].get(seed)
                    hits = [r for r in source["rows"] if _matches(r, ref)] if source else []
                    if len(hits) == 1 and isinstance(hits[0].get(metric), (int, float)):
                        values.append(float(hits[0][metric]))
                sides.append(sum(values) / len(values) if len(values) == len(refs) else None)
            if None not in sides:
                per_seed[seed] = {"delta": sides[0] - sides[1]}
        deltas.append(
            {
                "label": spec["label"],
                "metric": metric,
                "seeds": sorted(per_seed),
                "n": len(per_seed),
                "delta": _stats(per_seed, ["delta"])["delta"],
                "paper": spec.get("paper"),
            }
        )
    efficiency = []
    names: list[str] = []
    for result in found.values():
        names += [e["name"] for e in result["efficiency"] if e["name"] not in names]
    for name in names:
        per_seed = {}
        for seed, result in found.items():
            entries = [e for e in result["efficiency"] if e["name"] == name]
            if entries:
                per_seed[seed] = entries[0]
        efficiency.append(
            {
                "name": name,
                "seeds": sorted(per_seed),
                "n": len(per_seed),
                "parameters": next((e.get("parameters") for e in per_seed.values() if e.get("parameters")), None),
                "peak_memory_methods": sorted({e["peak_memory_method"] for e in per_seed.values() if e.get("peak_memory_method")}),
                **_stats(per_seed, list(EFFICIENCY_COLUMNS)),
            }
        )
    walls = {s: r["wall_seconds"] for s, r in found.items()}
    return {
        "paper": job.paper,
        "title": job.title,
        "recipe": job.module or shown(job.recipe),
        "config": shown(job.config),
        "command": command_text(job, "N", runs_dir, os.cpu_count() or 1),
        "seeds_requested": list(seeds),
        "seeds_finished": sorted(found),
        "status": "not run" if not found else ("partial" if len(found) < len(seeds) else "ok"),
        "wall_seconds": walls,
        "rows": rows,
        "paper_rows": job.paper_rows,
        "deltas": deltas,
        "efficiency": efficiency,
        "notes": job.notes,
        "problems": problems,
    }


def aggregate(job_file: JobFile, runs_dir: Path, seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """The report of every job of ``job_file``: per job the seeds of the job file plus ``seeds``."""
    wanted = {job.name: sorted(set(job.seeds) | set(seeds or [])) for job in job_file.jobs}
    all_results = {job.name: load_seed_results(runs_dir, job, wanted[job.name]) for job in job_file.jobs}
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "job_file": shown(job_file.path),
        "runs_dir": shown(runs_dir),
        "metrics": "fractions in the JSON; percentages in the Markdown",
        "std": "sample standard deviation over seeds (ddof=1); none with one seed",
        "papers": job_file.papers,
        "jobs": {job.name: aggregate_job(job, runs_dir, wanted[job.name], all_results) for job in job_file.jobs},
    }


# ----------------------------------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------------------------------


def _ours(stats: dict[str, Any] | None, scale: float = 100.0, digits: int = 2) -> str:
    from distil_trainers.papers.reports import format_mean_std

    if not stats:
        return "-"
    return format_mean_std(stats["mean"], stats["std"], scale=scale, digits=digits)


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _md_row(*cells: Any) -> str:
    """One Markdown table row, ``|`` in a cell escaped."""
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def markdown(report: dict[str, Any], invocation: str | None = None) -> str:
    lines = [
        f"<!-- written by benchmarks/paper_results.py from {report['runs_dir']} on {report['generated']} -->",
        "",
        "Metrics in %: mean ± sample standard deviation (ddof=1) over the n seeds that finished (one seed: its value "
        "alone). The paper columns quote the number each paper reports for its own setting (full data, its models, "
        "GPUs) at the place given; '-' = not reported. These runs are at CPU scale: read the comparison between "
        "methods within a table, not the absolute numbers against the paper's.",
    ]
    if invocation:
        lines += ["", f"Produced by `{invocation}`."]
    jobs = report["jobs"]
    for key, paper in report["papers"].items():
        members = [(name, job) for name, job in jobs.items() if job["paper"] == key]
        if not members:
            continue
        lines += ["", f"### {paper.get('short', key)}", "", paper["citation"], ""]
        lines += [
            "| setting | model | task | n | accuracy | macro-F1 | paper: model | paper accuracy | paper macro-F1 "
            "| where in the paper |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        flags = []
        for name, job in members:
            for row in job["rows"]:
                paper_ref = row["paper"] or {}
                if job["status"] == "not run":
                    ours = ["not run", "not run"]
                    n = "-"
                else:
                    ours = [_ours(row[m]) for m in METRICS]
                    n = f"{row['n']}/{len(job['seeds_finished'])}" + (" ⚠" if row["flags"] else "")
                lines.append(
                    _md_row(
                        name,
                        row["label"],
                        row["task"] or "-",
                        n,
                        *ours,
                        paper_ref.get("what", "-"),
                        _number(paper_ref.get("accuracy")),
                        _number(paper_ref.get("f1_macro")),
                        paper_ref.get("source", "-"),
                    )
                )
                flags += [f"`{name}` / {row['label']} / {row['task'] or '-'}: {f}" for f in row["flags"]]
            for extra in job["paper_rows"]:
                lines.append(
                    _md_row(
                        name,
                        "(paper only)",
                        extra.get("task", "-"),
                        "-",
                        "-",
                        "-",
                        extra["what"],
                        _number(extra.get("accuracy")),
                        _number(extra.get("f1_macro")),
                        extra["source"],
                    )
                )
        if flags:
            lines += ["", "⚠ " + "; ".join(flags) + "."]
        deltas = [(name, d) for name, job in members for d in job["deltas"]]
        if deltas:
            lines += [
                "",
                "Paired differences (per seed, then mean ± std over the seeds that have both sides), in points:",
                "",
                "| setting | difference | metric | n | ours | paper | where in the paper |",
                "|---|---|---|---|---|---|---|",
            ]
            for name, delta in deltas:
                paper_ref = delta["paper"] or {}
                ours = (
                    _ours(delta["delta"]) if delta["n"] else ("not run" if not jobs[name]["seeds_finished"] else "-")
                )
                lines.append(
                    _md_row(
                        name,
                        delta["label"],
                        METRIC_TITLES.get(delta["metric"], delta["metric"]),
                        delta["n"],
                        ours,
                        _number(paper_ref.get("value")),
                        paper_ref.get("source", "-"),
                    )
                )
        for name, job in members:
            if job["efficiency"]:
                lines += [
                    "",
                    f"Efficiency (`{name}`, mean ± std over seeds):",
                    "",
                    "| model | n | params | " + " | ".join(efficiency_titles(job["efficiency"])) + " |",
                    "|---|---|---|" + "---|" * len(EFFICIENCY_COLUMNS),
                ]
                for entry in job["efficiency"]:
                    params = f"{entry['parameters'] / 1e6:.1f}M" if entry.get("parameters") else "-"
                    cells = [_ours(entry[k], scale=s, digits=d) for k, (_, s, d) in EFFICIENCY_COLUMNS.items()]
                    lines.append(f"| {_cell(entry['name'])} | {entry['n']} | {params} | " + " | ".join(cells) + " |")
        lines += ["", "Runs (from the repository root; N = the seed):", ""]
        for name, job in members:
            if job["status"] == "not run":
                state = f"not run (seeds {', '.join(map(str, job['seeds_requested']))})"
            else:
                walls = [job["wall_seconds"].get(s) for s in job["seeds_finished"]]
                known = [w for w in walls if w is not None]
                total = f", {format_duration(sum(known))} in all" if len(known) > 1 else ""
                state = (
                    f"{len(job['seeds_finished'])} of {len(job['seeds_requested'])} seeds finished "
                    f"({', '.join(map(str, job['seeds_finished']))}), wall time per seed "
                    f"{', '.join(format_duration(w) for w in walls)}{total}"
                )
            lines.append(f"- `{name}` ({job['title']}): {state}.")
            lines.append(f"  `{job['command']}`")
            for problem in job["problems"]:
                lines.append(f"  ⚠ {problem}")
        for name, job in members:
            for note in job["notes"]:
                lines += ["", f"Note (`{name}`): {note}"]
    return "\n".join(lines) + "\n"


def write_outputs(report: dict[str, Any], out: Path, invocation: str | None = None) -> tuple[Path, Path, str]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(report, invocation)
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path.write_text(text)
    return json_path, md_path, text


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error


def main(argv: Sequence[str] | None = None, out=sys.stdout) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", default=None, help="Comma-separated job names to run (default: all).")
    parser.add_argument("--seeds", type=_int_list, default=None, help="Comma-separated seeds (default: each job's).")
    parser.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="Where the runs go (relative to the repo root).")
    parser.add_argument("--job-file", default=str(DEFAULT_JOB_FILE), help="The job file (YAML).")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="Output path without suffix (.json and .md written).")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of accelerate-launched runs (cores).")
    parser.add_argument("--dry-run", action="store_true", help="Print the commands; run and write nothing.")
    parser.add_argument("--aggregate-only", action="store_true", help="Only aggregate the runs already on disk.")
    args = parser.parse_args(argv)
    select = [s for s in args.jobs.split(",") if s] if args.jobs else None
    try:
        job_file = load_job_file(_path(args.job_file))
        selected = load_job_file(_path(args.job_file), select).jobs
    except JobFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    runs_dir = _path(args.runs_dir)
    failures: list[dict[str, Any]] = []
    if not args.aggregate_only:
        failures = run_jobs(selected, runs_dir, args.seeds, args.threads, args.dry_run, out=out)
    if args.dry_run:
        return 0
    report = aggregate(job_file, runs_dir, args.seeds)
    report["failed_runs"] = failures
    invocation = "python benchmarks/paper_results.py" + "".join(
        f" {flag} {value}"
        for flag, value in (("--jobs", args.jobs), ("--seeds", ",".join(map(str, args.seeds or [])) or None))
        if value
    )
    json_path, md_path, text = write_outputs(report, _path(args.out), invocation)
    print("\n" + text, file=out)
    print(f"Wrote {shown(json_path)} and {shown(md_path)}.", file=out)
    if failures:
        print(
            f"{len(failures)} run(s) failed or could not start: "
            + ", ".join(f"{f['job']} seed {f['seed']} ({f['reason']})" for f in failures),
            file=out,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
