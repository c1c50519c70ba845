"""Overhead of distillation over the student's own training step.

Runs, round-robin in one invocation (each in its own process, same student, data, batch, steps and threads):

- ``plain``: ``transformers.Trainer`` on the student alone (the reference: ratio 1.0);
- ``teacher_forward``: the teacher's no-grad forward on the same batches (only to compute the floors);
- ``live``: ``AnnealingTrainer`` (Hinton KD) with the live teacher;
- ``cached``: the same with precomputed teacher outputs (``teacher_outputs=``), no teacher in memory;
- ``ddml2`` / ``ddml3``: ``MutualLearningTrainer`` with K = 2 / 3 copies of the student and the live teacher;
- ``ddml2_cached``: K = 2 with the cache.

Each result is a ratio of median step times to ``plain``'s, printed next to its floor: 1 for the cached run,
1 + (teacher forward / student step) for the live run, K + (teacher forward / student step) for DDML (K student
steps plus one teacher forward). Peak RSS is each contender's own process.

    python benchmarks/overhead.py --setup tiny
    python benchmarks/overhead.py --setup minilm --teacher runs/finetune_quickstart
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import _common as C  # noqa: E402

CONTENDERS = ["plain", "teacher_forward", "live", "cached", "ddml2", "ddml3", "ddml2_cached"]
PACKAGES = ["torch", "transformers", "accelerate", "datasets", "distil-trainers"]


def training_args(cls, spec, opts, **extra):
    return cls(
        output_dir=str(Path(spec["workdir"]) / "out"), per_device_train_batch_size=opts.batch_size,
        max_steps=opts.warmup + opts.steps + 1, learning_rate=1e-4, lr_scheduler_type="constant",
        save_strategy="no", report_to="none", logging_strategy="no", disable_tqdm=True, use_cpu=True,
        seed=spec["seed"], dataloader_num_workers=0, **extra,
    )


def with_copies(ds, prefixes):
    """Each model's own copy of the token columns (MutualLearningTrainer reads ``<name>_input_ids``)."""
    for p in prefixes:
        for c in ("input_ids", "attention_mask"):
            ds = ds.add_column(p + c, ds[c][:])
    return ds.remove_columns(["input_ids", "attention_mask"] + [c for c in ["token_type_ids"] if c in ds.column_names])


def child(name: str, spec: dict, opts) -> None:
    import torch
    from transformers import Trainer, TrainingArguments, default_data_collator

    from distil_trainers import AnnealingArguments, AnnealingTrainer, MutualLearningArguments, MutualLearningTrainer

    torch.set_num_threads(opts.threads)
    torch.manual_seed(spec["seed"])
    train = C.load_split(spec, "train")
    cache_dir = str(Path(spec["workdir"]) / "teacher_cache")
    result = {"name": name}

    if name == "teacher_forward":
        teacher = C.load_model(spec, "teacher").eval()
        batches = C.tensor_batches(train, opts.batch_size, spec["seed"], opts.warmup + opts.steps + 1)
        times, cpu = [], []
        with torch.no_grad():
            for batch in batches:
                start, start_cpu = time.perf_counter(), time.process_time()
                teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
        result.update(step_s=statistics.median(times[opts.warmup :]), min_step_s=min(times[opts.warmup :]),
                      cpu_step_s=statistics.median(cpu[opts.warmup :]))
        C.emit(result)
        return

    kd = dict(annealing="kd", temperature=2.0, alpha=0.5, beta=0.5)
    if name == "plain":
        student = C.load_model(spec, "student")
        trainer = Trainer(model=student, args=training_args(TrainingArguments, spec, opts), train_dataset=train,
                          data_collator=default_data_collator)
    elif name in ("live", "cached"):
        student = C.load_model(spec, "student")
        teacher = {"teacher_model": C.load_model(spec, "teacher")} if name == "live" else {"teacher_outputs": cache_dir}
        trainer = AnnealingTrainer(model=student, args=training_args(AnnealingArguments, spec, opts, **kd),
                                   train_dataset=train, data_collator=default_data_collator, **teacher)
    elif name.startswith("ddml"):
        k = int(name[4])
        names = [f"s{i}" for i in range(k)]
        students = {n: C.load_model(spec, "student") for n in names}
        student = students["s0"]
        cached = name.endswith("_cached")
        ds = with_copies(train, [f"{n}_" for n in names] + ([] if cached else ["teacher_"]))
        teacher = {"teacher_outputs": cache_dir} if cached else {"teacher_model": C.load_model(spec, "teacher")}
        trainer = MutualLearningTrainer(
            students=students, args=training_args(MutualLearningArguments, spec, opts, temperature=2.0),
            train_dataset=ds, data_collator=default_data_collator, **teacher,
        )
    else:
        raise ValueError(f"unknown contender {name!r}")
    timer = C.StepTimer()
    trainer.train()
    steps = timer.step_seconds(opts.warmup)
    result.update(step_s=statistics.median(steps), min_step_s=min(steps), steps_timed=len(steps),
                  cpu_step_s=statistics.median(timer.cpu_seconds(opts.warmup)))
    C.emit(result)


def report(results: dict, cache_info: dict, spec: dict, opts, header: dict) -> dict:
    med = {n: C.median_of(r, opts.metric) for n, r in results.items()}
    rss = {n: C.median_of(r, "peak_rss_mb") for n, r in results.items()}
    plain, tf = med.get("plain"), med.get("teacher_forward")
    share = tf / plain if plain and tf else None
    floors = {"plain": 1.0, "live": 1 + share if share else None, "cached": 1.0,
              "ddml2": 2 + share if share else None, "ddml3": 3 + share if share else None, "ddml2_cached": 2.0}
    rows = []
    for n in CONTENDERS:
        if n == "teacher_forward" or n not in med:
            continue
        ratio = med[n] / plain if med[n] and plain else None
        errors = [r["error"] for r in results[n] if "error" in r]
        rows.append({"contender": n, "median_step_ms": med[n] and 1000 * med[n], "ratio": ratio, "floor": floors[n],
                     "samples_per_s": med[n] and opts.batch_size / med[n], "peak_rss_mb": rss[n], "errors": errors})
    print("\n" + json.dumps(header))
    print(f"teacher forward / student step = {share:.3f}" if share else "teacher forward share: n/a")
    print(f"cache build: {cache_info['build_s']:.1f} s wall for {cache_info['examples']} examples")
    print(f"step time: {opts.metric} (median over steps, then over repetitions)")
    print(f"{'contender':<14}{'ms/step':>10}{'ratio':>8}{'floor':>8}{'samples/s':>11}{'peak RSS MB':>13}")
    for r in rows:
        fmt = lambda v, f: format(v, f) if v is not None else "n/a"  # noqa: E731
        print(f"{r['contender']:<14}{fmt(r['median_step_ms'], '10.1f')}{fmt(r['ratio'], '8.2f')}"
              f"{fmt(r['floor'], '8.2f')}{fmt(r['samples_per_s'], '11.1f')}{fmt(r['peak_rss_mb'], '13.0f')}"
              + (f"  errors: {r['errors']}" if r["errors"] else ""))
    return {"header": header, "teacher_forward_share": share, "cache": cache_info, "rows": rows, "raw": results}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", choices=["tiny", "minilm"], default="tiny")
    parser.add_argument("--teacher", help="minilm: a fine-tuned MiniLM-L6 Davidson classifier (default: untrained head)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--reps", type=int, default=3, help="round-robin repetitions")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-eval", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: all cores)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--metric", choices=["cpu_step_s", "step_s"], default="cpu_step_s",
                        help="step time compared: the process's CPU time (default; robust on a shared machine) or "
                        "wall-clock time")
    parser.add_argument("--workdir", help="where to write models/data (default: a temporary directory)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    import os

    opts.threads = opts.threads or os.cpu_count()
    if opts.child:
        child(opts.child, json.loads(Path(opts.spec).read_text()), opts)
        return

    workdir = Path(opts.workdir) if opts.workdir else Path(tempfile.mkdtemp(prefix="bench_overhead_"))
    spec = C.prepare(opts.setup, workdir, opts.n_train, opts.n_eval, opts.max_length, opts.teacher)
    import torch

    from distil_trainers.teachers.cache import precompute_teacher_outputs

    torch.set_num_threads(opts.threads)
    train = C.load_split(spec, "train")
    start = time.perf_counter()
    precompute_teacher_outputs(C.load_model(spec, "teacher"), train, workdir / "teacher_cache", batch_size=64)
    cache_info = {"build_s": time.perf_counter() - start, "examples": len(train)}
    header = {"benchmark": "overhead", **{k: spec[k] for k in ("setup", "dataset", "teacher_desc", "student_desc")},
              "batch_size": opts.batch_size, "max_length": opts.max_length, "steps": opts.steps, "warmup": opts.warmup,
              "reps": opts.reps, "threads": opts.threads, "metric": opts.metric, "versions": C.versions(PACKAGES)}
    print(json.dumps(header), flush=True)
    names = [n for n in opts.contenders.split(",") if n]
    extra = ["--steps", str(opts.steps), "--warmup", str(opts.warmup), "--batch-size", str(opts.batch_size),
             "--threads", str(opts.threads)]
    results = C.round_robin(Path(__file__), names, workdir / "spec.json", opts.reps, extra)
    out = report(results, cache_info, spec, opts, header)
    if opts.json:
        Path(opts.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
