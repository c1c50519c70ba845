"""Tests of benchmarks/paper_results.py, the driver of the papers' comparisons at CPU scale: aggregation of synthetic
results.json files of both shapes against means and standard deviations computed here with `statistics`, resuming,
failed runs, job-file validation, and the shipped job file (every config exists, every override is an argument the
recipe parses). No training: the runs are a tiny fake recipe script."""

from __future__ import annotations

import importlib.util
import io
import json
import statistics
import sys
from pathlib import Path

import pytest
import yaml
from conftest import load_recipe, load_script

ROOT = Path(__file__).resolve().parents[1]


def _load_driver():
    spec = importlib.util.spec_from_file_location("paper_results", ROOT / "benchmarks" / "paper_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


pr = _load_driver()

FAKE_RECIPE = """
import argparse, json, sys
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--config")
parser.add_argument("--seed", type=int)
parser.add_argument("--output_dir")
parser.add_argument("--fail_seeds", default="")
parser.add_argument("--calls", default=None)
args = parser.parse_args()
if args.calls:
    with open(args.calls, "a") as handle:
        handle.write(f"{args.seed}\\n")
if str(args.seed) in args.fail_seeds.split(","):
    print("boom: this seed fails on purpose", file=sys.stderr)
    sys.exit(3)
out = Path(args.output_dir)
out.mkdir(parents=True, exist_ok=True)
accuracy, f1 = 0.5 + args.seed / 100, 0.4 + args.seed ** 2 / 1000
rows = [{"model": "student", "task": "toy", "accuracy": accuracy, "f1_macro": f1},
        {"model": "teacher", "task": "toy", "accuracy": accuracy + 0.1, "f1_macro": f1 + 0.05}]
(out / "results.json").write_text(json.dumps({"rows": rows}))
"""


def fake_accuracy(seed):
    return 0.5 + seed / 100


def fake_f1(seed):
    return 0.4 + seed**2 / 1000


@pytest.fixture
def workspace(tmp_path):
    """A fake recipe, a config, and helpers to write a job file and run the driver on it."""
    recipe = tmp_path / "fake_recipe.py"
    recipe.write_text(FAKE_RECIPE)
    config = tmp_path / "fake.yaml"
    config.write_text("nothing: here\n")
    calls = tmp_path / "calls.txt"

    def job(name="toy", **changes):
        base = {
            "name": name,
            "paper": "toy",
            "recipe": str(recipe),
            "config": str(config),
            "launcher": "python",
            "overrides": {"calls": str(calls)},
            "rows": [
                {"model": "student", "task": "toy", "paper": {"what": "s", "f1_macro": 41.0, "source": "Table 1"}},
                {"model": "teacher", "task": "toy"},
            ],
        }
        base.update(changes)
        return base

    def write(jobs, seeds=(1, 2, 3)):
        path = tmp_path / "jobs.yaml"
        papers = {"toy": {"short": "Toy et al.", "citation": "Toy et al. (2099). A toy paper."}}
        path.write_text(yaml.safe_dump({"seeds": list(seeds), "papers": papers, "jobs": jobs}))
        return path

    def run(job_file, *args):
        out = io.StringIO()
        code = pr.main(
            ["--job-file", str(job_file), "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out" / "pr"),
             *args],
            out=out,
        )  # fmt: skip
        return code, out.getvalue()

    def called():
        return [int(line) for line in calls.read_text().split()] if calls.exists() else []

    class W:
        pass

    w = W()
    w.tmp, w.recipe, w.config, w.job, w.write, w.run, w.called = tmp_path, recipe, config, job, write, run, called
    w.runs = tmp_path / "runs"
    return w


def write_results(runs: Path, job: str, seed: int, data) -> None:
    directory = runs / job / f"seed{seed}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(data))


def expected(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


# ----------------------------------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------------------------------


def test_aggregates_rows_style_results_against_statistics(workspace):
    rows = [
        {"model": "student", "task": "toy", "paper": {"what": "s", "f1_macro": 41.0, "source": "Table 1"}},
        {"model": "baseline", "task": "A"},  # the HASOC recipe writes `subtask`
        {"model": "sometimes", "task": "toy"},
    ]
    job_file = workspace.write([workspace.job(rows=rows)])
    values = {
        1: {"acc": 0.81, "f1": 0.62, "b": 0.70},
        2: {"acc": 0.84, "f1": 0.58, "b": 0.72},
        3: {"acc": 0.79, "f1": 0.66, "b": 0.69},
    }
    for seed, v in values.items():
        result_rows = [
            {"model": "student", "task": "toy", "accuracy": v["acc"], "f1_macro": v["f1"], "params": 10},
            {"model": "student", "task": "other", "accuracy": 0.1, "f1_macro": 0.1},  # another task: not mixed in
            {"model": "baseline", "subtask": "A", "accuracy": v["b"], "f1_macro": v["b"] - 0.2},
        ]
        if seed != 3:
            result_rows.append({"model": "sometimes", "task": "toy", "accuracy": 0.5 + seed / 10, "f1_macro": 0.3})
        write_results(workspace.runs, "toy", seed, {"rows": result_rows})

    code, printed = workspace.run(job_file, "--aggregate-only")
    assert code == 0
    report = json.loads((workspace.tmp / "out" / "pr.json").read_text())
    job = report["jobs"]["toy"]
    assert job["status"] == "ok" and job["seeds_finished"] == [1, 2, 3]
    by_model = {r["model"]: r for r in job["rows"]}

    student = by_model["student"]
    for metric, key in (("accuracy", "acc"), ("f1_macro", "f1")):
        mean, std = expected([values[s][key] for s in (1, 2, 3)])
        assert student[metric]["mean"] == pytest.approx(mean)
        assert student[metric]["std"] == pytest.approx(std)
        assert student[metric]["n"] == 3
        assert f"{100 * mean:.2f} ± {100 * std:.2f}" in printed
    assert student["n"] == 3 and not student["flags"]
    assert student["paper"]["f1_macro"] == 41.0

    baseline = by_model["baseline"]
    mean, std = expected([values[s]["b"] - 0.2 for s in (1, 2, 3)])
    assert baseline["f1_macro"]["mean"] == pytest.approx(mean) and baseline["f1_macro"]["std"] == pytest.approx(std)

    # a row missing from seed 3: averaged over seeds 1 and 2 only, and flagged
    sometimes = by_model["sometimes"]
    mean, std = expected([0.6, 0.7])
    assert sometimes["seeds"] == [1, 2] and sometimes["n"] == 2
    assert sometimes["accuracy"]["mean"] == pytest.approx(mean) and sometimes["accuracy"]["std"] == pytest.approx(std)
    assert any("missing in seed(s) 3" in flag for flag in sometimes["flags"])
    assert "| toy | sometimes | toy | 2/3 ⚠ |" in printed
    assert "missing in seed(s) 3" in printed
    # the Markdown file is what was printed
    assert (workspace.tmp / "out" / "pr.md").read_text() in printed


def test_aggregates_the_rationale_recipes_dict_shape(workspace):
    rows = [{"model": "teacher"}, {"model": "student"}, {"model": "student_label_only"}]
    job_file = workspace.write([workspace.job(rows=rows)], seeds=(1, 2))
    data = {}
    for seed in (1, 2):
        data[seed] = {
            "dataset": "davidson",
            "eval_posts": 40,
            "teacher": {"n": 40, "parse_rate": 1.0, "accuracy": 0.10 + seed / 20, "f1_macro": 0.12 + seed / 50},
            "student": {"loss": 1.3, "accuracy": 0.70 + seed / 30, "f1_macro": 0.25 + seed / 40},
            "student_label_only": {"accuracy": 0.72, "f1_macro": 0.20 + seed / 100},
            "explanations": [{"text": "t", "output": "o"}],
            "efficiency": [
                {"name": "teacher (llamacpp): label + explanation", "parameters": None, "weight_bytes": 98_000_000,
                 "latency_ms_per_example": 400.0 + 10 * seed, "examples_per_second": 2.5 - seed / 10,
                 "peak_memory_bytes": 0, "peak_memory_method": "rss_delta"},
                {"name": "student: label scoring", "parameters": 139_400_000, "weight_bytes": 557_000_000,
                 "latency_ms_per_example": 1100.0 + 50 * seed, "examples_per_second": 0.9,
                 "peak_memory_bytes": 2**20 * seed, "peak_memory_method": "rss_delta"},
            ],
        }  # fmt: skip
        write_results(workspace.runs, "toy", seed, data[seed])

    code, printed = workspace.run(job_file, "--aggregate-only")
    assert code == 0
    job = json.loads((workspace.tmp / "out" / "pr.json").read_text())["jobs"]["toy"]
    by_model = {r["model"]: r for r in job["rows"]}
    for model in ("teacher", "student", "student_label_only"):
        assert by_model[model]["task"] == "davidson" and by_model[model]["n"] == 2
        for metric in ("accuracy", "f1_macro"):
            mean, std = expected([data[s][model][metric] for s in (1, 2)])
            assert by_model[model][metric]["mean"] == pytest.approx(mean)
            assert by_model[model][metric]["std"] == pytest.approx(std)
    efficiency = {e["name"]: e for e in job["efficiency"]}
    student = efficiency["student: label scoring"]
    mean, std = expected([1150.0, 1200.0])
    assert student["latency_ms_per_example"]["mean"] == pytest.approx(mean)
    assert student["latency_ms_per_example"]["std"] == pytest.approx(std)
    assert student["parameters"] == 139_400_000
    assert "Efficiency (`toy`" in printed and "| student: label scoring | 2 | 139.4M |" in printed
    assert student["peak_memory_methods"] == ["rss_delta"]
    assert "peak memory (MiB, RSS growth above the loaded model)" in printed


def test_a_job_with_no_finished_seed_prints_not_run(workspace):
    job_file = workspace.write([workspace.job()])
    code, printed = workspace.run(job_file, "--aggregate-only")
    assert code == 0
    job = json.loads((workspace.tmp / "out" / "pr.json").read_text())["jobs"]["toy"]
    assert job["status"] == "not run" and job["seeds_finished"] == []
    assert all(row["accuracy"] is None and row["f1_macro"] is None and row["n"] == 0 for row in job["rows"])
    assert "| toy | student | toy | - | not run | not run | s | - | 41.00 | Table 1 |" in printed
    assert "not run (seeds 1, 2, 3)" in printed
    assert workspace.called() == []


def test_deltas_are_paired_per_seed_and_may_name_another_job(workspace):
    deltas = [
        {"label": "student - teacher", "a": [{"model": "student"}], "b": [{"model": "teacher"}]},
        {"label": "vs other job", "a": [{"model": "student"}], "b": [{"job": "other", "model": "student"}]},
    ]
    job_file = workspace.write([workspace.job(deltas=deltas), workspace.job(name="other")])
    for seed in (1, 2, 3):
        write_results(workspace.runs, "toy", seed, {"rows": [
            {"model": "student", "task": "toy", "accuracy": 0.5, "f1_macro": 0.40 + seed / 100},
            {"model": "teacher", "task": "toy", "accuracy": 0.5, "f1_macro": 0.50 - seed / 50},
        ]})  # fmt: skip
    for seed in (1, 2):  # the other job misses seed 3: the cross-job difference has n = 2
        write_results(workspace.runs, "other", seed, {"rows": [
            {"model": "student", "task": "toy", "accuracy": 0.5, "f1_macro": 0.30 + seed / 10},
        ]})  # fmt: skip
    code, _ = workspace.run(job_file, "--aggregate-only")
    assert code == 0
    deltas = {
        d["label"]: d for d in json.loads((workspace.tmp / "out" / "pr.json").read_text())["jobs"]["toy"]["deltas"]
    }
    mean, std = expected([(0.40 + s / 100) - (0.50 - s / 50) for s in (1, 2, 3)])
    assert deltas["student - teacher"]["delta"]["mean"] == pytest.approx(mean)
    assert deltas["student - teacher"]["delta"]["std"] == pytest.approx(std)
    mean, std = expected([(0.40 + s / 100) - (0.30 + s / 10) for s in (1, 2)])
    assert deltas["vs other job"]["n"] == 2 and deltas["vs other job"]["delta"]["mean"] == pytest.approx(mean)


# ----------------------------------------------------------------------------------------------------------------------
# Running: resume, failures
# ----------------------------------------------------------------------------------------------------------------------


def test_finished_runs_are_skipped_so_an_interrupted_invocation_resumes(workspace):
    job_file = workspace.write([workspace.job()])
    write_results(workspace.runs, "toy", 1, {"rows": [{"model": "student", "task": "toy", "accuracy": 0.9,
                                                       "f1_macro": 0.8}]})  # fmt: skip
    code, printed = workspace.run(job_file, "--seeds", "1,2")
    assert code == 0
    assert workspace.called() == [2]  # seed 1 had its results.json: not run again
    assert "toy seed 1: done already" in printed and "skipped" in printed
    assert "toy seed 2: ok in" in printed
    record = json.loads((workspace.runs / "toy" / "seed2" / "paper_run.json").read_text())
    assert record["finished"] and record["returncode"] == 0 and record["wall_seconds"] >= 0
    assert record["recipe_args"][-4:] == ["--seed", "2", "--output_dir", str(workspace.runs / "toy" / "seed2")]
    # both seeds aggregated; the kept seed-1 numbers are used as they are
    job = json.loads((workspace.tmp / "out" / "pr.json").read_text())["jobs"]["toy"]
    student = next(r for r in job["rows"] if r["model"] == "student")
    mean, std = expected([0.9, fake_accuracy(2)])
    assert student["accuracy"]["mean"] == pytest.approx(mean) and student["accuracy"]["std"] == pytest.approx(std)

    code, printed = workspace.run(job_file, "--seeds", "1,2")  # everything done: nothing runs
    assert code == 0 and workspace.called() == [2]


def test_a_finished_run_is_run_again_when_the_job_settings_changed(workspace):
    job_file = workspace.write([workspace.job()])
    code, _ = workspace.run(job_file, "--seeds", "1")
    assert code == 0 and workspace.called() == [1]
    code, printed = workspace.run(job_file, "--seeds", "1")  # same settings: kept
    assert code == 0 and workspace.called() == [1] and "skipped" in printed
    changed = workspace.write([workspace.job(overrides={"calls": str(workspace.tmp / "calls.txt"), "fail_seeds": "9"})])
    # the stale seed is flagged and left out of the tables until it is run again: a mean never mixes two settings
    code, printed = workspace.run(changed, "--seeds", "1", "--aggregate-only")
    assert code == 0 and workspace.called() == [1]
    job = json.loads((workspace.tmp / "out" / "pr.json").read_text())["jobs"]["toy"]
    assert job["seeds_finished"] == [] and job["status"] == "not run"
    assert any("seed 1: made by another command" in p and "left out" in p for p in job["problems"])
    code, printed = workspace.run(changed, "--seeds", "1")
    assert code == 0 and workspace.called() == [1, 1]
    assert "settings changed" in printed
    record = json.loads((workspace.runs / "toy" / "seed1" / "paper_run.json").read_text())
    assert "--fail_seeds" in record["recipe_args"]


def test_a_failed_run_is_reported_and_the_other_seeds_still_run(workspace):
    failing = workspace.job(overrides={"calls": str(workspace.tmp / "calls.txt"), "fail_seeds": "2"})
    dependent = workspace.job(name="after", requires=["toy"])
    job_file = workspace.write([failing, dependent])
    code, printed = workspace.run(job_file)
    assert code == 1
    assert sorted(workspace.called()) == [1, 1, 2, 3, 3]  # toy 1, 2, 3 and after 1, 3; after 2 could not start
    assert "toy seed 2: FAILED (exit 3)" in printed and "boom: this seed fails on purpose" in printed
    assert "after seed 2: NOT RUN, it needs toy seed 2" in printed
    assert "2 run(s) failed or could not start" in printed
    assert "boom" in (workspace.runs / "toy" / "seed2" / "run.log").read_text()
    assert not (workspace.runs / "toy" / "seed2" / "results.json").exists()
    report = json.loads((workspace.tmp / "out" / "pr.json").read_text())
    assert report["jobs"]["toy"]["seeds_finished"] == [1, 3] and report["jobs"]["toy"]["status"] == "partial"
    student = next(r for r in report["jobs"]["toy"]["rows"] if r["model"] == "student")
    mean, std = expected([fake_f1(1), fake_f1(3)])
    assert student["f1_macro"]["mean"] == pytest.approx(mean) and student["f1_macro"]["std"] == pytest.approx(std)
    assert {(f["job"], f["seed"]) for f in report["failed_runs"]} == {("toy", 2), ("after", 2)}


def test_dry_run_prints_the_commands_and_runs_nothing(workspace):
    job_file = workspace.write([workspace.job(overrides={"calls": "{runs_dir}/{job}/calls-{seed}.txt"})])
    code, printed = workspace.run(job_file, "--dry-run", "--seeds", "4")
    assert code == 0 and workspace.called() == []
    assert not (workspace.tmp / "out" / "pr.json").exists()
    runs = workspace.runs
    assert f"--calls {runs}/toy/calls-4.txt --seed 4 --output_dir {runs}/toy/seed4" in printed
    assert printed.startswith("[1/1] toy seed 4: python ")


# ----------------------------------------------------------------------------------------------------------------------
# Job file validation
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"recipe": "recipes/no_such_recipe.py"}, "recipe recipes/no_such_recipe.py does not exist"),
        ({"config": "recipes/configs/no_such.yaml"}, "config recipes/configs/no_such.yaml does not exist"),
        ({"launcher": "torchrun"}, "launcher must be one of"),
        ({"overrides": {"seed": 3}}, "may not set 'seed'"),
        ({"paper": "unknown"}, "paper 'unknown' is not a key"),
        ({"rows": []}, "needs `rows`"),
        ({"requires": ["later"]}, "requires 'later', which is not a job listed before it"),
        ({"colour": "blue"}, "unknown keys ['colour']"),
        ({"recipe": None, "module": "distil_trainers.papers.no_such_pipeline"}, "is not importable"),
        ({"module": "distil_trainers.papers.ddml_pipeline"}, "not both"),
    ],
)
def test_an_invalid_job_file_is_one_clear_error_before_anything_runs(workspace, capsys, change, message):
    good = workspace.job(name="good")
    bad = workspace.job(name="bad", **change)
    job_file = workspace.write([good, bad, workspace.job(name="later")])
    with pytest.raises(pr.JobFileError, match="problem"):
        pr.load_job_file(job_file)
    code, _ = workspace.run(job_file)
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and "job 'bad'" in error
    assert workspace.called() == []  # the valid job did not run either
    assert not workspace.runs.exists()


def test_a_module_job_runs_its_module_with_dash_m(workspace):
    job = workspace.job(module="distil_trainers.papers.ddml_pipeline", config=str(workspace.config), overrides={})
    del job["recipe"]
    job_file = workspace.write([job])
    loaded = pr.load_job_file(job_file).job("toy")
    assert loaded.module == "distil_trainers.papers.ddml_pipeline"
    assert loaded.recipe == ROOT / "distil_trainers" / "papers" / "ddml_pipeline.py"  # its file: parser_classes
    assert pr.parser_classes(loaded.recipe) == ["DDMLRecipeArguments", "MutualLearningArguments"]
    code, printed = workspace.run(job_file, "--dry-run", "--seeds", "1")
    assert code == 0 and "seed 1: python -m distil_trainers.papers.ddml_pipeline --config " in printed
    command = pr.command(loaded, 1, workspace.runs, threads=2)
    assert command[:3] == [sys.executable, "-m", "distil_trainers.papers.ddml_pipeline"]


def test_unknown_job_names_are_refused(workspace, capsys):
    job_file = workspace.write([workspace.job()])
    code, _ = workspace.run(job_file, "--jobs", "toy,nope")
    assert code == 2 and "unknown jobs ['nope']" in capsys.readouterr().err
    assert workspace.called() == []


# ----------------------------------------------------------------------------------------------------------------------
# The shipped job file
# ----------------------------------------------------------------------------------------------------------------------


def test_the_shipped_job_file_parses_with_every_recipes_own_parser(tmp_path):
    from trl import TrlParser

    job_file = pr.load_job_file(pr.DEFAULT_JOB_FILE)  # raises if a recipe or config is missing
    assert {j.paper for j in job_file.jobs} == set(job_file.papers)
    modules = {}
    for job in job_file.jobs:
        assert job.recipe.is_file() and job.config.is_file()
        assert job.seeds == [1, 2, 3]
        assert job.config.parent == ROOT / "recipes" / "configs"
        if job.module:  # a paper pipeline, run with -m
            assert job.module.startswith("distil_trainers.papers.") and job.recipe.parent == ROOT / "distil_trainers" / "papers"
        else:
            assert job.recipe.parent == ROOT / "recipes"
        key = job.module or job.recipe.stem
        if key not in modules:
            modules[key] = load_script(job.module) if job.module else load_recipe(job.recipe.stem)
        module = modules[key]
        classes = [getattr(module, name) for name in pr.parser_classes(job.recipe)]
        argv = pr.recipe_args(job, 1, tmp_path / "runs", absolute=True)
        # unknown arguments (from the config or the overrides) raise here
        parsed = TrlParser(classes).parse_args_and_config(argv)
        fields = {name for obj in parsed for name in vars(obj)}
        assert set(job.overrides) <= fields, job.name
        training = next(obj for obj in parsed if hasattr(obj, "output_dir") and hasattr(obj, "seed"))
        assert training.seed == 1
        assert Path(training.output_dir) == (tmp_path / "runs" / job.name / "seed1").resolve()
        for key, value in job.overrides.items():
            got = next(getattr(obj, key) for obj in parsed if hasattr(obj, key))
            if isinstance(value, str):
                value = value.replace("{runs_dir}", str((tmp_path / "runs").resolve())).replace("{seed}", "1")
            assert got == value, (job.name, key, got, value)
        for required in job.requires:
            assert job_file.job(required).recipe == job.recipe


def test_the_shipped_hasoc_numbers_are_the_recipes_paper_numbers():
    hasoc = load_script("distil_trainers.papers.hasoc_pipeline")
    reported = {(subtask.upper(), values[0], values[1]) for (subtask, _), values in hasoc.PAPER_REPORTED.items()}
    job = pr.load_job_file(pr.DEFAULT_JOB_FILE).job("saseendran_hasoc")
    quoted = {
        (row["task"], row["paper"]["accuracy"], row["paper"]["f1_macro"]) for row in job.rows if row.get("paper")
    }
    assert quoted and quoted <= reported


def test_the_shipped_job_file_dry_run_lists_every_job_and_seed(tmp_path):
    out = io.StringIO()
    assert pr.main(["--dry-run", "--runs-dir", str(tmp_path / "runs")], out=out) == 0
    lines = out.getvalue().splitlines()
    job_file = pr.load_job_file(pr.DEFAULT_JOB_FILE)
    assert len(lines) == sum(len(j.seeds) for j in job_file.jobs)
    # seed by seed, and a job that reuses another's teacher comes after it
    assert lines[0].startswith(f"[1/{len(lines)}] {job_file.jobs[0].name} seed 1: accelerate launch")
    position = {line.split(": ")[0].split("] ")[1]: i for i, line in enumerate(lines)}
    for job in job_file.jobs:
        for required in job.requires:
            for seed in job.seeds:
                assert position[f"{required} seed {seed}"] < position[f"{job.name} seed {seed}"]
