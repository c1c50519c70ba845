"""distil_trainers against other knowledge-distillation libraries on identical work.

Vanilla logit KD, loss = 0.5 * CE(y) + 0.5 * T^2 * KL(p_T || p_S) at T = 2, the same teacher, student, data,
batch, steps and optimizer (AdamW, lr 1e-4, no weight decay, constant rate, no clipping) for every contender:

- ``ours`` / ``ours_cached``: ``AnnealingTrainer(annealing="kd")``, with the live teacher / with precomputed outputs;
- ``textbrewer``: TextBrewer's ``GeneralDistiller`` (``kd_loss_type="ce"``; its soft CE has no T^2, so its weight is
  0.5 * T^2: the same gradient);
- ``torchdistill``: torchdistill's ``DistillationBox`` with its ``KDLoss`` (alpha = beta = 0.5, batchmean).

Mutual learning, K = 2 students (copies of the student):

- ``ours_ddml`` / ``ours_ddml_cached``: ``MutualLearningTrainer`` (teacher, labels and the peer, one teacher forward per
  batch; with the cache, no teacher forward at all);
- ``kdlib_dml``: KD-Lib's ``DML`` (no teacher; every student re-runs every peer's forward: O(K^2) forwards);
- ``independent_kd``: K separate KD runs with ``AnnealingTrainer`` (each with its own teacher forward), the naive
  way to get K distilled students; its step time is the sum of the K runs' median step times.

Every contender runs in its own process (peak RSS is its own), round-robin over ``--reps`` repetitions; steps are
timed between consecutive optimizer steps (after ``--warmup``); the first student's macro-F1 on the evaluation split
is measured after training with the same function for everyone.

    python benchmarks/peers.py --setup tiny
    python benchmarks/peers.py --setup minilm --teacher runs/finetune_quickstart
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import _common as C  # noqa: E402

KD = ["ours", "ours_cached", "textbrewer", "torchdistill"]
MUTUAL = ["ours_ddml", "ours_ddml_cached", "kdlib_dml", "independent_kd"]
PACKAGES = ["torch", "transformers", "accelerate", "distil-trainers", "textbrewer", "torchdistill", "kd-lib"]
TEMPERATURE, ALPHA, LR = 2.0, 0.5, 1e-4


def _args(cls, spec, opts, workdir, **extra):
    return cls(
        output_dir=str(workdir / "out"), per_device_train_batch_size=opts.batch_size, max_steps=opts.warmup + opts.steps
        + 1, learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, save_strategy="no",
        report_to="none", logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=spec["seed"], **extra,
    )


def _optimizer(params):
    import torch

    return torch.optim.AdamW(params, lr=LR, weight_decay=0.0)


def run_ours(spec, opts, cached: bool):
    from transformers import default_data_collator

    from distil_trainers import AnnealingArguments, AnnealingTrainer

    workdir = Path(spec["workdir"])
    student = C.load_model(spec, "student")
    teacher = {"teacher_outputs": str(workdir / "teacher_cache")} if cached else {"teacher_model": C.load_model(spec, "teacher")}
    args = _args(AnnealingArguments, spec, opts, workdir, annealing="kd", temperature=TEMPERATURE, alpha=ALPHA,
                 beta=1 - ALPHA)
    trainer = AnnealingTrainer(model=student, args=args, train_dataset=C.load_split(spec, "train"),
                               data_collator=default_data_collator, **teacher)
    trainer.train()
    return [student]


def run_textbrewer(spec, opts, batches):
    from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig

    student, teacher = C.load_model(spec, "student"), C.load_model(spec, "teacher")

    def adaptor(batch, outputs):
        return {"logits": outputs.logits, "losses": outputs.loss}

    # one checkpoint, written after the last step (outside the timed steps)
    train_config = TrainingConfig(device="cpu", output_dir=str(Path(spec["workdir"]) / "tb_out"),
                                  log_dir=str(Path(spec["workdir"]) / "tb_log"), ckpt_steps=len(batches))
    distill_config = DistillationConfig(temperature=TEMPERATURE, hard_label_weight=ALPHA, kd_loss_type="ce",
                                        kd_loss_weight=(1 - ALPHA) * TEMPERATURE**2)
    distiller = GeneralDistiller(train_config, distill_config, teacher, student, adaptor, adaptor)
    with distiller:
        distiller.train(_optimizer(student.parameters()), batches, num_steps=len(batches), callback=None)
    return [student]


def run_torchdistill(spec, opts, batches):
    import torch
    from torchdistill.core.distillation import DistillationBox
    from torchdistill.core.interfaces.registry import register_forward_proc_func

    @register_forward_proc_func
    def hf_logits(model, sample_batch, targets=None, supp_dict=None, **kwargs):
        return model(**sample_batch).logits

    student, teacher = C.load_model(spec, "student"), C.load_model(spec, "teacher").eval()
    io = {"student_module_path": ".", "student_module_io": "output", "teacher_module_path": ".",
          "teacher_module_io": "output"}
    train_config = {
        "num_epochs": 1,
        "teacher": {"forward_proc": "hf_logits", "requires_grad": False},
        "student": {"forward_proc": "hf_logits", "requires_grad": True},
        "optimizer": {"key": "AdamW", "kwargs": {"lr": LR, "weight_decay": 0.0}},
        "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"kd": {"criterion": {"key": "KDLoss", "kwargs": {
            **io, "temperature": TEMPERATURE, "alpha": ALPHA, "beta": 1 - ALPHA, "reduction": "batchmean"}}, "weight": 1.0}}}},
    }
    box = DistillationBox(teacher, student, {}, train_config, torch.device("cpu"), None, False, 1.0)
    box.pre_epoch_process(epoch=0)
    for batch in batches:
        targets = batch["labels"]
        loss = box.forward_process({k: v for k, v in batch.items() if k != "labels"}, targets, supp_dict={})
        box.post_forward_process(loss=loss)
    return [student]


def run_ours_ddml(spec, opts, cached: bool):
    from transformers import default_data_collator

    from distil_trainers import MutualLearningArguments, MutualLearningTrainer

    workdir = Path(spec["workdir"])
    names = [f"s{i}" for i in range(opts.k)]
    students = {n: C.load_model(spec, "student") for n in names}
    ds = C.load_split(spec, "train")
    for prefix in [f"{n}_" for n in names] + ([] if cached else ["teacher_"]):
        for c in ("input_ids", "attention_mask"):
            ds = ds.add_column(prefix + c, ds[c][:])
    ds = ds.remove_columns(["input_ids", "attention_mask"])
    teacher = {"teacher_outputs": str(workdir / "teacher_cache")} if cached else {"teacher_model": C.load_model(spec, "teacher")}
    args = _args(MutualLearningArguments, spec, opts, workdir, temperature=TEMPERATURE)
    trainer = MutualLearningTrainer(students=students, args=args, train_dataset=ds, data_collator=default_data_collator,
                                    **teacher)
    trainer.train()
    return list(students.values())


def run_kdlib(spec, opts, batches):
    # KD-Lib 0.0.32's package __init__ imports `transformers.AdamW`, which transformers 5 removed; its DML module itself
    # needs only torch, so it is loaded from its file.
    import KD_Lib  # noqa: F401  (locates the installed package without running KD_Lib.KD's __init__)
    import torch
    import torch.nn.functional as F
    from torch import nn

    path = Path(importlib.util.find_spec("KD_Lib").submodule_search_locations[0]) / "KD" / "vision" / "DML" / "dml.py"
    module_spec = importlib.util.spec_from_file_location("kdlib_dml", path)
    dml = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(dml)

    class Packed(nn.Module):
        """KD-Lib calls model(data): data packs input_ids and attention_mask."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, data):
            return self.model(input_ids=data[:, 0], attention_mask=data[:, 1]).logits

    def kl(out_i, out_j):  # deep mutual learning's KL(p_j || p_i)
        return F.kl_div(F.log_softmax(out_i, -1), F.softmax(out_j, -1), reduction="batchmean")

    students = [C.load_model(spec, "student") for _ in range(opts.k)]
    cohort = [Packed(s) for s in students]
    loader = [(torch.stack([b["input_ids"], b["attention_mask"]], 1), b["labels"]) for b in batches]

    class Loader(list):
        dataset = range(len(batches) * opts.batch_size)

    distiller = dml.DML(cohort, Loader(loader), Loader(loader[:1]), [_optimizer(s.parameters()) for s in students],
                        loss_fn=kl, device="cpu", log=False)
    distiller.train_students(epochs=1, plot_losses=False, save_model=False)
    return students


def run_independent(spec, opts):
    timer_total, cpu_total, students = 0.0, 0.0, []
    for _ in range(opts.k):
        timer = C.StepTimer()
        students += run_ours(spec, opts, cached=False)
        timer.handle.remove()
        timer_total += statistics.median(timer.step_seconds(opts.warmup))
        cpu_total += statistics.median(timer.cpu_seconds(opts.warmup))
    return students, timer_total, cpu_total


def child(name: str, spec: dict, opts) -> None:
    import torch

    torch.set_num_threads(opts.threads)
    torch.manual_seed(spec["seed"])
    batches = C.tensor_batches(C.load_split(spec, "train"), opts.batch_size, spec["seed"], opts.warmup + opts.steps + 1)
    result = {"name": name}
    timer = C.StepTimer()
    start = time.perf_counter()
    if name == "ours":
        students = run_ours(spec, opts, cached=False)
    elif name == "ours_cached":
        students = run_ours(spec, opts, cached=True)
    elif name == "textbrewer":
        students = run_textbrewer(spec, opts, batches)
    elif name == "torchdistill":
        students = run_torchdistill(spec, opts, batches)
    elif name == "ours_ddml":
        students = run_ours_ddml(spec, opts, cached=False)
    elif name == "ours_ddml_cached":
        students = run_ours_ddml(spec, opts, cached=True)
    elif name == "kdlib_dml":
        students = run_kdlib(spec, opts, batches)
    elif name == "independent_kd":
        timer.handle.remove()
        students, step_s, cpu_s = run_independent(spec, opts)
        result.update(step_s=step_s, cpu_step_s=cpu_s)
    else:
        raise ValueError(f"unknown contender {name!r}")
    result["wall_s"] = time.perf_counter() - start
    if "step_s" not in result:
        steps = timer.step_seconds(opts.warmup)
        result.update(step_s=statistics.median(steps), min_step_s=min(steps), steps_timed=len(steps),
                      cpu_step_s=statistics.median(timer.cpu_seconds(opts.warmup)))
    result["macro_f1"] = C.macro_f1(students[0], C.load_split(spec, "eval"))
    C.emit(result)


def report(results: dict, header: dict, opts) -> dict:
    print("\n" + json.dumps(header))
    print(f"step time: {opts.metric} (median over steps, then over repetitions)")
    rows = []
    for group, reference in ((KD, "ours"), (MUTUAL, "ours_ddml")):
        ref = C.median_of(results.get(reference, []), opts.metric)
        print(f"\n{'contender':<18}{'ms/step':>10}{'samples/s':>11}{'ratio':>8}{'macro-F1':>10}{'peak RSS MB':>13}"
              f"   (ratio = samples/s relative to {reference})")
        for n in group:
            if n not in results:
                continue
            step = C.median_of(results[n], opts.metric)
            f1 = C.median_of(results[n], "macro_f1")
            rss = C.median_of(results[n], "peak_rss_mb")
            errors = [r["error"] for r in results[n] if "error" in r]
            sps = opts.batch_size / step if step else None
            ratio = ref / step if step and ref else None
            rows.append({"contender": n, "group": reference, "median_step_ms": step and 1000 * step,
                         "samples_per_s": sps, "ratio_vs_ours": ratio, "macro_f1": f1, "peak_rss_mb": rss,
                         "errors": errors})
            fmt = lambda v, f: format(v, f) if v is not None else "n/a"  # noqa: E731
            print(f"{n:<18}{fmt(step and 1000 * step, '10.1f')}{fmt(sps, '11.1f')}{fmt(ratio, '8.2f')}"
                  f"{fmt(f1, '10.3f')}{fmt(rss, '13.0f')}" + (f"  errors: {errors}" if errors else ""))
    return {"header": header, "rows": rows, "raw": results}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", choices=["tiny", "minilm"], default="tiny")
    parser.add_argument("--teacher", help="minilm: a fine-tuned MiniLM-L6 Davidson classifier (default: untrained head)")
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-eval", type=int, default=500)
    parser.add_argument("--k", type=int, default=2, help="students in the mutual-learning runs")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--contenders", default=",".join(KD + MUTUAL))
    parser.add_argument("--metric", choices=["cpu_step_s", "step_s"], default="cpu_step_s",
                        help="step time compared: the process's CPU time (default; robust on a shared machine) or "
                        "wall-clock time")
    parser.add_argument("--workdir")
    parser.add_argument("--json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    opts.threads = opts.threads or os.cpu_count()
    if opts.child:
        child(opts.child, json.loads(Path(opts.spec).read_text()), opts)
        return

    workdir = Path(opts.workdir) if opts.workdir else Path(tempfile.mkdtemp(prefix="bench_peers_"))
    spec = C.prepare(opts.setup, workdir, opts.n_train, opts.n_eval, opts.max_length, opts.teacher)
    import torch

    from distil_trainers.teachers.cache import precompute_teacher_outputs

    torch.set_num_threads(opts.threads)
    precompute_teacher_outputs(C.load_model(spec, "teacher"), C.load_split(spec, "train"), workdir / "teacher_cache")
    header = {"benchmark": "peers", **{k: spec[k] for k in ("setup", "dataset", "teacher_desc", "student_desc")},
              "batch_size": opts.batch_size, "max_length": opts.max_length, "steps": opts.steps, "warmup": opts.warmup,
              "reps": opts.reps, "k": opts.k, "threads": opts.threads, "temperature": TEMPERATURE, "alpha": ALPHA, "metric": opts.metric,
              "versions": C.versions(PACKAGES)}
    print(json.dumps(header), flush=True)
    names = [n for n in opts.contenders.split(",") if n]
    extra = ["--steps", str(opts.steps), "--warmup", str(opts.warmup), "--batch-size", str(opts.batch_size),
             "--threads", str(opts.threads), "--k", str(opts.k)]
    results = C.round_robin(Path(__file__), names, workdir / "spec.json", opts.reps, extra)
    out = report(results, header, opts)
    if opts.json:
        Path(opts.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
