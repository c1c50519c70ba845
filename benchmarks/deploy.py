"""A student you can deploy: CPU latency, throughput, size and F1 of the teacher, the student, and the student exported
to ONNX (fp32) and ONNX with int8 weights, in one table.

Given a teacher folder and a student folder (saved sequence classifiers with their tokenizers; nothing is trained
here), the student is exported with :func:`distil_trainers.export.export_student` (``onnx`` and ``onnx-int8``, each
as PyTorch's default exporter writes it and with onnxruntime's fused transformer operators, ``optimize=True``; into
``--workdir``), and every contender classifies the same posts of a registered dataset's split:

- **latency, batch 1**: the median wall time (ms) of classifying one post, over the first ``--latency-posts`` posts,
  tokenisation included (text in, logits out);
- **throughput, batch 64**: posts per second of one pass over all the posts (``--max-posts`` of the split) in batches
  of ``--batch-size``, padded to the longest post of each batch, tokenisation included;
- **macro-F1 and accuracy** of that pass's predictions, and the student variants' agreement (argmax) with the PyTorch
  student;
- parameters, and the size of the weight file(s) on disk.

PyTorch and onnxruntime each run on ``--threads`` threads (default 2). Before every measurement a contender
classifies ``--warmup`` single posts and one batch; contenders are measured round-robin ``--reps`` times and the
medians over the repetitions are reported (each repetition's value is in the ``--json`` output).
``--json`` keeps a run (its command, machine and every repetition's values). ``--write-results`` writes the section
of ``benchmarks/RESULTS.md`` from every kept run in ``--results-dir`` (``deploy_*.json``; this run kept there): one
summary row per run (F1 and speed-up of the student and of its int8 export with fused operators against the
teacher), then each run's table with the command that made it. ``--report`` does that from the kept runs alone,
measuring nothing.

    python benchmarks/deploy.py --teacher runs/finetune_quickstart --student runs/annealing_quickstart/student \\
        --dataset davidson --split test --max-posts 500 --latency-posts 200
    python benchmarks/deploy.py --report --write-results    # the section from benchmarks/results/deploy_*.json
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

START, END = "<!-- deploy:start -->", "<!-- deploy:end -->"
RESULTS_DIR = ROOT / "benchmarks" / "results"
SECTION_TITLE = "## A student you can deploy (`benchmarks/deploy.py`)"
SUMMARY_INT8 = ("student ONNX int8, fused", "student ONNX int8")  # the summary's int8 row: the first present
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


class TorchRunner:
    """A saved classifier run by PyTorch (fp32) on the texts, as the exported ones are: tokenizer, then the model."""

    def __init__(self, path: Path, max_length: int):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
        self.config = self.model.config
        self.max_length = min(max_length, getattr(self.config, "max_position_embeddings", max_length) or max_length)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.file_bytes = sum(f.stat().st_size for pattern in WEIGHT_PATTERNS for f in path.glob(pattern))

    def logits(self, texts: list[str], batch_size: int):
        import numpy as np

        out = []
        with self.torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                encoded = self.tokenizer(texts[start : start + batch_size], padding=True, truncation=True,
                                         max_length=self.max_length, return_tensors="pt")  # fmt: skip
                out.append(self.model(**encoded).logits.float().numpy())
        return np.concatenate(out)


class OnnxRunner:
    """A folder written by ``export_student``, run by onnxruntime through ``load_exported``."""

    def __init__(self, path: Path, max_length: int, threads: int, params: int, spin: bool):
        import onnxruntime

        from distil_trainers.export import load_exported

        options = onnxruntime.SessionOptions()
        if not spin:  # idle threads sleep instead of busy-waiting, as PyTorch's do with OMP_WAIT_POLICY=PASSIVE
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.classifier = load_exported(path, threads=threads, session_options=options)
        self.config = self.classifier.config
        self.max_length = min(max_length, self.classifier.max_length or max_length)
        self.params = params  # the student's: the same weights, in another format
        self.file_bytes = sum(f.stat().st_size for f in path.glob("*.onnx*"))

    def logits(self, texts: list[str], batch_size: int):
        return self.classifier.logits(texts, batch_size=batch_size, max_length=self.max_length)


def measure(runner, texts: list[str], latency_posts: int, batch_size: int, warmup: int) -> dict[str, Any]:
    """One repetition: warm-up, batch-1 latency over the first posts, then one batched pass over all of them."""
    for text in texts[:warmup]:
        runner.logits([text], 1)
    runner.logits(texts[:batch_size], batch_size)
    times = []
    for text in texts[:latency_posts]:
        start = time.perf_counter()
        runner.logits([text], 1)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    logits = runner.logits(texts, batch_size)
    seconds = time.perf_counter() - start
    return {"latency_ms": 1000 * statistics.median(times), "throughput": len(texts) / seconds,
            "predictions": logits.argmax(-1).tolist()}  # fmt: skip


def quality(dataset, config, predictions: list[int]) -> dict[str, float]:
    """Macro-F1 and accuracy of a model's predictions (class ids in its own order) on the dataset's labels."""
    from distil_trainers.data import align_labels, model_label_names
    from distil_trainers.metrics import classification_metrics

    aligned = align_labels(dataset, config.id2label)  # the dataset's labels in the model's class order
    names = model_label_names(config.id2label)
    metrics = classification_metrics(aligned["label"][:], predictions, label_names=names,
                                     num_labels=None if names else config.num_labels)  # fmt: skip
    return {"f1_macro": metrics["f1_macro"], "accuracy": metrics["accuracy"]}


def cpu_flags() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
                return ", ".join(f for f in wanted if f in flags) or "none of avx2/avx512/vnni/amx"
    return "unknown"


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "n/a"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _speedups(teacher: dict[str, Any], row: dict[str, Any]) -> tuple[str, str]:
    """The row against the teacher: the teacher's latency over the row's (batch 1), the row's throughput over the
    teacher's (batch 64)."""
    return f"{teacher['latency_ms'] / row['latency_ms']:.2f}×", f"{row['throughput'] / teacher['throughput']:.2f}×"


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The Markdown table; the speed-ups are against the first row (the teacher): its latency over the row's, the
    row's throughput over its."""
    out = ["| model | runtime | parameters (M) | file (MB) | latency, batch 1 (ms, median) | throughput, batch 64 "
           "(posts/s) | × teacher, batch 1 | × teacher, batch 64 | macro-F1 | accuracy | agrees with the student |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    reference = rows[0]
    for row in rows:
        agreement = "" if row["agreement"] is None else f"{100 * row['agreement']:.1f}%"
        out.append(
            f"| {row['name']} | {row['runtime']} | {row['params'] / 1e6:.1f} | {row['file_mb']:.1f} | "
            f"{row['latency_ms']:.1f} | {row['throughput']:.1f} | {' | '.join(_speedups(reference, row))} | "
            f"{100 * row['f1_macro']:.1f} | {100 * row['accuracy']:.1f} | {agreement} |"
        )
    return out


def run_text(result: dict[str, Any]) -> list[str]:
    """One kept run: its command and machine, what was measured, and its table."""
    header = result["header"]
    versions = ", ".join(f"{k} {v}" for k, v in header["versions"].items())
    return [
        f"`{header['command']}` ({header['date']}; {header['cores']} cores ({header['cpu_flags']}), "
        f"{header['threads']} threads, idle threads {header['idle_threads']}, load average "
        f"{header['load_average_before']} before, {header['load_average_after']} after; {versions})",
        "",
        f"{header['dataset']}: {header['posts']} posts; latency over the first {header['latency_posts']}; medians of "
        f"{header['reps']} round-robin repetitions; teacher `{header['teacher']}`, student `{header['student']}`.",
        "",
        *table(result["rows"]),
    ]  # fmt: skip




def summary(results: list[dict[str, Any]]) -> list[str]:
    """One row per kept run: macro-F1 of the teacher, the student and its int8 export (fused operators where the run has
    them), and the speed-ups (batch 1, batch 64) of the student and of the int8 export against the teacher."""
    out = ["| dataset | student | macro-F1: teacher / student / int8 | student × teacher, batch 1 / 64 | "
           "int8 × teacher, batch 1 / 64 |", "|---|---|---|---|---|"]  # fmt: skip
    for result in results:
        rows = {row["name"]: row for row in result["rows"]}
        teacher, student = rows["teacher"], rows["student"]
        int8 = next(rows[name] for name in SUMMARY_INT8 if name in rows)
        f1 = " / ".join(f"{100 * row['f1_macro']:.1f}" for row in (teacher, student, int8))
        out.append(f"| {result['header']['dataset']} | `{result['header']['student']}` | {f1} | "
                   f"{' / '.join(_speedups(teacher, student))} | {' / '.join(_speedups(teacher, int8))} "
                   f"({int8['name'][len('student ') :]}) |")  # fmt: skip
    return out


def kept_runs(results_dir: Path, skip: Path | None = None) -> list[dict[str, Any]]:
    """Every kept run (``deploy_*.json``) in ``results_dir`` but ``skip``, by file name. ValueError names a file that
    lacks a row the summary reads (the teacher, the student, an int8 export)."""
    runs = []
    for path in sorted(results_dir.glob("deploy_*.json")):
        if skip is not None and path.resolve() == skip.resolve():
            continue
        run = json.loads(path.read_text())
        names = {row["name"] for row in run.get("rows", [])}
        missing = [need for need in ("teacher", "student") if need not in names]
        if not names & set(SUMMARY_INT8):
            missing.append(" or ".join(SUMMARY_INT8))
        if missing:
            raise ValueError(f"{path} is not a complete run of this script: no row {', '.join(missing)}")
        runs.append(run)
    return runs


def section(results: list[dict[str, Any]]) -> str:
    """The RESULTS.md section: the summary, then every run."""
    lines = [SECTION_TITLE, "",
             "CPU latency (batch 1), throughput (batch 64), size and F1 of the teacher, the student and the student "
             "exported to ONNX and ONNX int8 (`distil_trainers.export`), each also with onnxruntime's fused "
             "transformer operators (`optimize=True`); tokenisation included. Written by `python benchmarks/deploy.py "
             "--report --write-results` from the kept runs (`benchmarks/results/deploy_*.json`); int8: the int8 "
             "export with fused operators.", "", *summary(results)]  # fmt: skip
    for result in results:
        lines += ["", f"### {result['header']['dataset']}", "", *run_text(result)]
    return "\n".join(lines)


def write_results_md(path: Path, text: str) -> None:
    from _common import replace_marked_section  # imports torch: not at start-up, where OMP_WAIT_POLICY is set first

    replace_marked_section(path, START, END, text)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", help="saved teacher folder (config, weights, tokenizer)")
    parser.add_argument("--student", help="saved student folder (config, weights, tokenizer)")
    parser.add_argument("--dataset", default="davidson", help="registered dataset name")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-dir", default=None, help="default: DISTIL_TRAINERS_DATA_DIR or ../shared/data")
    parser.add_argument("--seed", type=int, default=42, help="seed of the dataset's split and subsampling")
    parser.add_argument("--max-posts", type=int, default=None, help="at most this many posts (seeded, stratified)")
    parser.add_argument("--latency-posts", type=int, default=200, help="posts timed one at a time (the first ones)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128, help="truncation length (tokens), every contender")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch and onnxruntime threads")
    parser.add_argument("--spin", action="store_true",
                        help="let idle threads busy-wait (OpenMP's and onnxruntime's default); by default they sleep "
                        "(OMP_WAIT_POLICY=PASSIVE, no onnxruntime spinning): a shared machine needs it")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=3, help="single posts classified before each measurement")
    parser.add_argument("--reps", type=int, default=3, help="round-robin repetitions")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "bench_deploy"), help="where the exports go")
    parser.add_argument("--json", default=None, help="also write every repetition's values here")
    parser.add_argument("--write-results", action="store_true", help="write the section of --results-md from every "
                        "kept run in --results-dir (this one too)")  # fmt: skip
    parser.add_argument("--results-md", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where the kept runs (deploy_*.json) are")
    parser.add_argument("--report", action="store_true", help="measure nothing: print (and with --write-results "
                        "write) the section from the kept runs")  # fmt: skip
    args = parser.parse_args(argv)
    def read_kept(skip: Path | None = None) -> list[dict[str, Any]]:
        try:
            return kept_runs(Path(args.results_dir), skip)
        except ValueError as error:
            parser.error(str(error))

    if args.report:
        results = read_kept()
        if not results:
            parser.error(f"no kept runs (deploy_*.json) in {args.results_dir}")
        text = section(results)
        print(text)
        if args.write_results:
            write_results_md(Path(args.results_md), text)
            print(f"Written to {args.results_md}")
        return {"runs": results}
    if not (args.teacher and args.student):
        parser.error("--teacher and --student are required (or --report)")
    kept = Path(args.json) if args.json else None
    if args.write_results and (kept is None or kept.parent.resolve() != Path(args.results_dir).resolve()
                               or not fnmatch.fnmatch(kept.name, "deploy_*.json")):  # fmt: skip
        parser.error(f"--write-results writes the section from the kept runs: keep this one too, with --json "
                     f"{args.results_dir}/deploy_<name>.json")
    if args.write_results:
        read_kept(skip=kept)  # the others, before minutes of exporting (this run's file is written anew)
    for folder in (args.teacher, args.student):  # before minutes of exporting
        if not (Path(folder) / "config.json").is_file():
            parser.error(f"{folder} is not a saved model folder (no config.json)")
    command = "python benchmarks/deploy.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if not args.spin:  # read once, when torch loads its OpenMP runtime
        if "torch" in sys.modules and os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
            print("warning: torch was imported before OMP_WAIT_POLICY=PASSIVE could be set", file=sys.stderr)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import torch
    from transformers.utils import logging as hf_logging

    from distil_trainers.data import load_dataset_by_name
    from distil_trainers.export import export_student

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    teacher_dir, student_dir, workdir = Path(args.teacher), Path(args.student), Path(args.workdir)
    limit = {args.split: args.max_posts} if args.max_posts else None
    splits = load_dataset_by_name(args.dataset, args.data_dir, seed=args.seed, max_samples_per_split=limit)
    dataset = splits[args.split]
    texts = list(dataset["text"][:])

    exports: dict[str, float] = {}
    for fmt in ("onnx", "onnx-int8"):
        for optimize in (False, True):
            name = f"{fmt}-fused" if optimize else fmt
            start = time.perf_counter()
            export_student(student_dir, workdir / f"student-{name}", format=fmt, optimize=optimize, overwrite=True)
            exports[name] = time.perf_counter() - start
            print(f"exported the student to {name} in {exports[name]:.1f} s", flush=True)

    student = TorchRunner(student_dir, args.max_length)

    def onnx(folder: str):
        return OnnxRunner(workdir / folder, args.max_length, args.threads, student.params, args.spin)

    runners = {
        "teacher": (TorchRunner(teacher_dir, args.max_length), "PyTorch fp32"),
        "student": (student, "PyTorch fp32"),
        "student ONNX": (onnx("student-onnx"), "onnxruntime fp32"),
        "student ONNX int8": (onnx("student-onnx-int8"), "onnxruntime int8 (dynamic)"),
        "student ONNX, fused": (onnx("student-onnx-fused"), "onnxruntime fp32, fused operators"),
        "student ONNX int8, fused": (onnx("student-onnx-int8-fused"), "onnxruntime int8 (dynamic), fused operators"),
    }  # fmt: skip
    load_before = load_average()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in runners}
    for rep in range(args.reps):
        for name, (runner, _) in runners.items():
            result = measure(runner, texts, args.latency_posts, args.batch_size, args.warmup)
            runs[name].append(result)
            print(f"  rep {rep + 1}/{args.reps} {name:<24} {result['latency_ms']:8.1f} ms/post (batch 1) "
                  f"{result['throughput']:8.1f} posts/s (batch {args.batch_size})", flush=True)  # fmt: skip

    reference = runs["student"][0]["predictions"]
    rows = []
    for name, (runner, runtime) in runners.items():
        predictions = runs[name][0]["predictions"]
        rows.append({
            "name": name, "runtime": runtime, "params": runner.params, "file_mb": runner.file_bytes / 2**20,
            "latency_ms": statistics.median(r["latency_ms"] for r in runs[name]),
            "throughput": statistics.median(r["throughput"] for r in runs[name]),
            "latency_ms_per_rep": [r["latency_ms"] for r in runs[name]],
            "throughput_per_rep": [r["throughput"] for r in runs[name]],
            **quality(dataset, runner.config, predictions),
            "agreement": None if name == "teacher" else sum(a == b for a, b in zip(predictions, reference))
            / len(reference),
        })  # fmt: skip
    versions = {name: _version(name) for name in ("torch", "transformers", "onnxruntime", "onnx", "distil-trainers")}
    header = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
        "cores": os.cpu_count(), "cpu_flags": cpu_flags(), "threads": args.threads,
        "idle_threads": "busy-wait" if args.spin else f"sleep (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
        "onnxruntime allow_spinning 0)",
        "load_average_before": load_before, "load_average_after": load_average(), "versions": versions,
        "posts": len(texts), "latency_posts": min(args.latency_posts, len(texts)), "reps": args.reps,
        "dataset": f"{args.dataset} {args.split}", "teacher": str(teacher_dir), "student": str(student_dir),
        "export_seconds": exports,
    }  # fmt: skip
    result = {"header": header, "rows": rows}
    print("\n".join(run_text(result)))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.write_results:
        text = section(kept_runs(Path(args.results_dir)))
        write_results_md(Path(args.results_md), text)
        print(f"Written to {args.results_md}")
    return result


if __name__ == "__main__":
    main()
