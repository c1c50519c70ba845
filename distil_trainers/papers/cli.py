"""The ``distil-trainers`` command: reports, plots and model cards of finished runs, pushes to the Hub, ONNX exports.

    distil-trainers evaluate runs/ddml_quickstart --dataset davidson --split test
    distil-trainers evaluate runs/s1 runs/s2 runs/s3 --seeds 1 2 3 --dataset davidson   # mean ± std over seeds
    distil-trainers evaluate runs/annealing_multitask --max_samples 800 --max_length 64  # each head on its task
    distil-trainers push runs/annealing_quickstart/student --repo_id me/minilm3-bam-davidson --dataset davidson
    distil-trainers push runs/ddml_quickstart/ddml --repo_id me/ddml-davidson                # one repo per student
    distil-trainers export --model runs/annealing_quickstart/student --output runs/student-int8 --format onnx-int8

``evaluate`` writes ``report.json`` / ``report.md``, ``plots/*.png`` (training curves of every trained model,
confusion matrices, a bar chart per metric) and, with ``--write_cards``, a ``README.md`` model card beside every
saved student. A multi-task model (``MultiTaskModel``) gives one report row per (model, task), each head scored on
the registered dataset named like its task. ``--config evaluate.yaml`` reads the same arguments from a YAML file (the
command line overrides it).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class EvaluateArguments:
    """Arguments of ``distil-trainers evaluate`` (command line, or a YAML file given with ``--config``)."""

    run_dirs: list[str] = field(
        metadata={
            "help": "Finished run directories (the output_dir of a recipe). Several = the same run with "
            "different seeds: their models are aggregated as mean ± sample std (ddof=1)."
        }
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Registered dataset to evaluate the single-task models on (distil_trainers.data.list_datasets()). "
            "Not needed for multi-task models: each head is evaluated on the dataset named like its task."
        },
    )
    tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": "Heads of the multi-task models to evaluate (default: all); each on the registered dataset of "
            "that name. A task that is not one of a model's heads is an error."
        },
    )
    split: str = field(default="test", metadata={"help": "Split to evaluate on: train, validation or test."})
    seeds: list[int] | None = field(default=None, metadata={"help": "The seed of each run directory, in order."})
    data_dir: str | None = field(
        default=None, metadata={"help": "Data directory (default: DISTIL_TRAINERS_DATA_DIR or ../shared/data)."}
    )
    data_seed: int | None = field(
        default=None,
        metadata={
            "help": "Seed of the dataset's split and subsampling. Default: each run's seed from --seeds (the "
            "recipes split and subsample with their seed), else 42."
        },
    )
    max_samples: int | None = field(
        default=None,
        metadata={
            "help": "Evaluate on at most this many examples (seeded, stratified; as the run's max_eval_samples)."
        },
    )
    max_length: int = field(default=128, metadata={"help": "Truncation length of the texts (tokens)."})
    batch_size: int = field(default=64, metadata={"help": "Inference batch size."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Where report and plots go (default: <first run dir>/evaluation)."}
    )
    metrics: list[str] = field(
        default_factory=lambda: ["f1_macro", "accuracy"],
        metadata={"help": "Metrics with a comparison bar chart each."},
    )
    write_cards: bool = field(
        default=False,
        metadata={"help": "Write a README.md model card beside every saved student (not teachers and baselines)."},
    )
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "Hub id the students were cut from, for the cards' base_model (a saved folder does not say)."
        },
    )


def run_evaluation(args: EvaluateArguments) -> dict:
    """Report, plots and (optionally) cards of finished runs; returns the report."""
    from ..cards import saved_card_context, write_model_card
    from .plots import load_log_history, plot_comparison, plot_confusion_matrix, plot_training_curves
    from .reports import entry_label_names, evaluate_run_dirs, write_report

    report, details = evaluate_run_dirs(
        args.run_dirs,
        args.dataset,
        args.split,
        seeds=args.seeds,
        data_dir=args.data_dir,
        data_seed=args.data_seed,
        max_samples=args.max_samples,
        max_length=args.max_length,
        batch_size=args.batch_size,
        tasks=args.tasks,
    )
    out = Path(args.output_dir or Path(args.run_dirs[0]) / "evaluation")
    json_path, md_path = write_report(report, out / "report")
    plots = out / "plots"
    written = [json_path, md_path]
    for run_dir, found in details.items():
        tag = f"{Path(run_dir).name}_" if len(details) > 1 else ""
        for saved in found["models"]:
            # mutual learning logs every student in one history, beside students.json
            group = saved.path.parent if (saved.path.parent / "students.json").is_file() else saved.path
            relative = group.relative_to(run_dir).as_posix()
            slug = (relative if relative != "." else Path(run_dir).name).replace("/", "_")
            target = plots / f"curves_{tag}{slug}.png"
            if target in written:
                continue
            try:
                history = load_log_history(group)
            except FileNotFoundError:
                continue  # a model saved without its log history (e.g. a given teacher)
            if any("loss" in entry for entry in history):
                written.append(plot_training_curves(history, target, title=f"{Path(run_dir).name}: {slug}"))
    groups: dict[str | None, dict] = {}  # summary entries per task (None: the single-task models' dataset)
    for key, entry in report["summary"].items():
        task = entry.get("task")
        groups.setdefault(task, {})[entry.get("model", key) if task else key] = entry  # one chart per task
        model = entry.get("model", key)
        slug = model.replace("/", "_") + (f"_{task}" if task else "")
        written.append(
            plot_confusion_matrix(
                entry["confusion_matrix"],
                entry_label_names(report, entry),
                plots / f"confusion_{slug}.png",
                title=f"{model} ({task + ' ' if task else ''}{args.split})",
            )
        )
    for metric in args.metrics:
        for task, entries in groups.items():
            written.append(
                plot_comparison(
                    entries,
                    plots / (f"comparison_{metric}_{task}.png" if task else f"comparison_{metric}.png"),
                    metric=metric,
                    title=f"{metric} on {task or args.dataset} {args.split}",
                )
            )
    if args.write_cards:
        first = details[str(args.run_dirs[0])]
        teacher = next((m.name for m in first["models"] if m.role == "teacher"), None)
        for run_dir, found in details.items():
            for saved in found["models"]:
                if saved.role != "student":
                    continue
                peers = []
                listing = saved.path.parent / "students.json"
                if listing.is_file():
                    peers = [s for s in json.loads(listing.read_text())["students"] if s != saved.path.name]
                per_task = {
                    entry["task"]: entry
                    for entry in report["summary"].values()
                    if entry.get("model") == saved.name and entry.get("task")
                }
                context = saved_card_context(
                    saved.path,
                    name=f"{Path(run_dir).name}-{saved.name.replace('/', '-')}",
                    summary=report["summary"].get(saved.name),
                    task_summaries=per_task or None,
                    dataset=args.dataset,
                    split=args.split,
                    teacher=teacher,
                    base_model=args.base_model,
                    peers=peers,
                )
                written.append(write_model_card(context, saved.path))
    print(md_path.read_text())
    print("Written:\n" + "\n".join(f"  {p}" for p in written))
    return report


def push_folder(
    folder: str,
    repo_id: str,
    dataset: str | None = None,
    student_pattern: str | None = None,
    commit_message: str = "End of training",
    base_model: str | None = None,
    private: bool | None = None,
    dry_run: bool = False,
):
    """Push a saved model folder (or a mutual-learning output with ``students.json``: every student, each to its
    repository) with their model cards. Returns ``{student or None: repository}``."""
    from ..cards import saved_card_context
    from ..hub import DEFAULT_STUDENT_PATTERN, folder_files, push_saved_models, student_folder, student_repo_id

    folder_path = Path(folder)
    pattern = student_pattern or DEFAULT_STUDENT_PATTERN
    listing = folder_path / "students.json"
    if listing.is_file():
        students = json.loads(listing.read_text())["students"]
        folders = {s: student_folder(folder_path, s) for s in students}
        contexts = {
            s: saved_card_context(
                folders[s],
                name=student_repo_id(pattern, repo_id, s).split("/")[-1],
                dataset=dataset,
                base_model=base_model,
                peers=[p for p in students if p != s],
            )
            for s in students
        }
    else:
        folders = {None: folder_path}
        contexts = {
            None: saved_card_context(folder_path, name=repo_id.split("/")[-1], dataset=dataset, base_model=base_model)
        }
    repos = push_saved_models(
        folders, contexts, repo_id, commit_message, pattern, private=private, local_dir=folder_path, dry_run=dry_run
    )
    for key, repo in repos.items():
        files = folder_files(folders[key])
        print(f"{repo} <- {folders[key]} ({len(files)} files: {', '.join(files)})")
    print("(dry run: nothing was uploaded)" if dry_run else "Pushed: " + ", ".join(repos.values()))
    return repos


def export_command(argv: list[str]) -> int:
    """``distil-trainers export``: a saved classifier to ONNX or ONNX int8 (see
    :func:`distil_trainers.export.export_student`)."""
    import argparse

    from ..export import EXPORT_FORMATS, export_student

    parser = argparse.ArgumentParser(
        prog="distil-trainers export",
        description="Export a saved sequence classifier (config, weights, tokenizer) for CPU inference with "
        "onnxruntime; load the result with distil_trainers.export.load_exported(<output>). Needs "
        'pip install "distil-trainers[export]".',
    )
    parser.add_argument("--model", required=True, help="the saved model folder (a trainer's save_model output)")
    parser.add_argument("--output", required=True, help="folder to write model.onnx, config, tokenizer, export.json")
    parser.add_argument("--format", default="onnx", choices=EXPORT_FORMATS, help="onnx (fp32) or onnx-int8")
    parser.add_argument("--per_tensor", action="store_true", help="onnx-int8: one scale per weight, not per channel")
    parser.add_argument("--reduce_range", action="store_true", help="onnx-int8: 7-bit weights (CPUs without VNNI)")
    parser.add_argument("--optimize", action="store_true", help="fuse attention, embeddings and layer norms into "
                        "onnxruntime's transformer operators (BERT-family encoders; faster on CPU)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --output")
    options = parser.parse_args(argv)
    try:
        out = export_student(
            options.model,
            options.output,
            format=options.format,
            per_channel=not options.per_tensor,
            reduce_range=options.reduce_range,
            optimize=options.optimize,
            overwrite=options.overwrite,
        )
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    manifest = json.loads((out / "export.json").read_text())
    size = (out / manifest["file"]).stat().st_size / 2**20
    difference = manifest["check"]["max_abs_logit_difference_vs_pytorch"]
    print(f"{options.format}: {out / manifest['file']} ({size:.1f} MB); largest logit difference to PyTorch on the "
          f"check texts {difference:.2e}")
    if manifest.get("optimization"):
        fused = manifest["optimization"]["fused_operators"]
        print("fused operators: " + (", ".join(f"{op} {n}" for op, n in fused.items()) or "none"))
    print(f'Load it: from distil_trainers.export import load_exported; classify = load_exported("{out}")')
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    commands = ("evaluate", "push", "export")
    if not argv or argv[0] not in commands:
        print(__doc__)
        print(f"Commands: {', '.join(commands)}; `distil-trainers <command> --help` for its options.")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    if command == "evaluate":
        if rest and not rest[0].startswith("-"):  # positional run directories
            dirs = []
            while rest and not rest[0].startswith("-"):
                dirs.append(rest.pop(0))
            rest = ["--run_dirs", *dirs, *rest]
        from trl import TrlParser  # --config <yaml>, overridden by the command line

        (args,) = TrlParser(EvaluateArguments).parse_args_and_config(rest)
        run_evaluation(args)
        return 0
    if command == "export":
        return export_command(rest)
    import argparse

    from ..hub import HubPushError

    parser = argparse.ArgumentParser(prog="distil-trainers push", description=push_folder.__doc__)
    parser.add_argument("folder", help="a saved model folder, or a mutual-learning output folder")
    parser.add_argument("--repo_id", required=True, help="Hub repository (owner/name); students: the pattern's base")
    parser.add_argument("--dataset", help="registered dataset name the model was trained on (for the card)")
    parser.add_argument("--student_pattern", help="repository of each student, default '{repo_id}-{student}'")
    parser.add_argument("--commit_message", default="End of training")
    parser.add_argument("--base_model", help="Hub id of the pretrained model the students come from (for the card)")
    parser.add_argument("--private", action="store_true", help="create private repositories")
    parser.add_argument("--dry_run", action="store_true", help="write the cards and print the plan, upload nothing")
    options = parser.parse_args(rest)
    try:
        push_folder(
            options.folder,
            options.repo_id,
            options.dataset,
            options.student_pattern,
            options.commit_message,
            options.base_model,
            options.private or None,
            options.dry_run,
        )
    except HubPushError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
