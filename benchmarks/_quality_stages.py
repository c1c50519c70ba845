"""The stages of the full-data benchmark (``benchmarks/quality.py``): what each stage of one dataset and seed does
(:class:`SeedJob`); ``_quality_runner.py`` runs them."""

from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common as C
from _quality_runner import Stage
from _quality_settings import (
    BASELINES,
    FIXED_ROWS,
    LABEL_FREE,
    METHODS,
    MINILM3,
    NOT_IN_FINGERPRINT,
    PACKAGES,
    TEACHER,
    TIMING_ROUNDS,
    DatasetData,
    Variant,
    variants_of,
)
from paper_results import shown

# Extra transformers.TrainerCallback objects given to every trainer this script builds (for instance to stop a run
# at a given step, as the tests do to check resuming).
CALLBACKS: list[Any] = []


# ----------------------------------------------------------------------------------------------------------------------
# Trainers
# ----------------------------------------------------------------------------------------------------------------------


def _trainer_classes():
    """The trainers of the stages, imported on first use (the imports are heavy). Length-grouped batches come from the
    library: ``TaskAwareTrainer`` measures the DDML students' prefixed ``<name>_input_ids`` too."""
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    from distil_trainers import AnnealingTrainer, MutualLearningTrainer
    from distil_trainers.trainers.task_aware import TaskAwareTrainer

    class LabelTrainer(TaskAwareTrainer):
        """Fine-tuning on the labels (the teacher, the student alone), with the class-weighted cross-entropy of
        TaskAwareTrainer when ``class_weights`` is given ('balanced': n / (C n_c) from the training labels)."""

        def __init__(self, *args, class_weights: str | list | None = None, **kwargs):
            super().__init__(*args, class_weights=None if class_weights in (None, "none") else class_weights, **kwargs)

    _CLASSES = {"label": LabelTrainer, "annealing": AnnealingTrainer, "mutual": MutualLearningTrainer}
    return _CLASSES


_CLASSES: dict | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------------------------------


class SeedJob:
    """The stages of one dataset and seed, and what each of them does."""

    def __init__(self, data: DatasetData, seed: int, variants: list[Variant], methods: list[str], runs_dir: Path,
                 results_dir: Path, assumptions: dict, bf16_ok: bool, quiet: bool = False):
        from distil_trainers.models import resolve_model_name_or_path
        from distil_trainers.papers.workflow import fingerprint

        self.fingerprint = fingerprint
        self.data, self.seed, self.quiet = data, seed, quiet
        self.s = data.settings
        self.variants = [v for v in variants if bf16_ok or not v.bf16]
        self.methods = methods
        self.assumptions = assumptions
        self.bf16_ok = bf16_ok
        self.base = resolve_model_name_or_path(self.s["teacher_base"])
        self.run_dir = Path(runs_dir) / data.key / f"seed{seed}"
        self.res_dir = Path(results_dir) / data.key / f"seed{seed}"
        self._tokenizer = None
        # what every trained model depends on; each stage adds its own settings
        fixed = {k: v for k, v in self.s.items() if k not in NOT_IN_FINGERPRINT and k not in (
            "methods", "ddml_students", "ddml_learning_rates", "variants", "teacher", "students", "throughput",
            "eval_batch_size", "student_layers")}
        self.common = {"data": data.data_fp, "seed": seed, "settings": fixed, "base": self.s["teacher_base"]}
        self.teacher_key = fingerprint("teacher", self.common, self.s["teacher"], self.teacher_bf16)
        self.cache_key = fingerprint("cache", self.teacher_key)
        self.eval_settings = {"throughput": self.s["throughput"], "eval_batch_size": self.s["eval_batch_size"]}

    # ---- helpers -----------------------------------------------------------------------------------------------

    def kept_tokenizer_dir(self, name: str) -> Path:
        """Where an own-vocabulary student's learnt tokenizer is kept: beside the results (committed with them), not
        the runs, since ``tokenizers`` does not learn the same vocabulary twice from the same texts
        (huggingface/tokenizers#1794) and the DDML rows repeat only with it. A tokenizer an earlier run left in
        ``<runs>/<dataset>/tokenizers/`` is copied there first, so that rows made with it keep it."""
        kept = self.res_dir.parent / "tokenizers" / name
        older = self.run_dir.parent / "tokenizers" / name
        if not (kept / "tokenizer_config.json").is_file() and (older / "tokenizer_config.json").is_file():
            shutil.copytree(older, kept, dirs_exist_ok=True)
        return kept

    @property
    def teacher_bf16(self) -> bool:
        return bool(self.s["teacher"].get("bf16")) and self.bf16_ok

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.base)
        return self._tokenizer

    @property
    def label_kwargs(self) -> dict:
        names = self.data.label_names
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {n: i for i, n in enumerate(names)}}

    @property
    def train_split(self):
        return self.data.task.splits["train"]

    @property
    def test_split(self):
        return self.data.task.splits[self.data.report_split]

    def ddml_students(self) -> list[str]:
        return [MINILM3, *self.s["ddml_students"]]

    def method_rows(self, method: str) -> list[str]:
        if method in ("ddml", "kd_c0"):
            return [f"{method}_{name}" for name in self.ddml_students()]
        return [method]

    def student_variants(self, method: str) -> list[Variant]:
        """The variants ``method`` runs in: a method without a label term only where there are no class weights, the
        class-weighted teacher only where class weights are the one change (bf16, grouped batches and the student's
        init never change the teacher)."""
        if method in LABEL_FREE:
            return [v for v in self.variants if v.class_weights == "none"]
        if method == TEACHER:
            return [v for v in self.variants if v.class_weights != "none" and v == Variant(v.class_weights)]
        return self.variants

    def student_key(self, method: str, variant: Variant) -> str:
        if method == TEACHER:  # the unweighted teacher's settings and key, with the variant's class weights
            return self.fingerprint("teacher", self.common, self.s["teacher"], self.teacher_bf16,
                                    {"class_weights": variant.class_weights})
        upstream = self.teacher_key if method == "ffn" else None if method == "alone" else self.cache_key
        if variant.from_teacher:  # the student starts from the teacher's weights
            upstream = (upstream, self.teacher_key)
        ddml = {"students": self.s["ddml_students"], "lr": self.s["ddml_learning_rates"]} if method in (
            "ddml", "kd_c0") else None
        return self.fingerprint("student", method, self.common, self.s["student_layers"], variant.settings(),
                                self.s["students"], self.s["methods"].get(method), ddml, upstream)

    def _examples(self, epochs: float) -> float:
        steps = self.s.get("max_steps")
        return float(steps * self.s["batch_size"]) if steps else float(epochs * len(self.train_split))

    def _estimate_train(self, group: str, rate_key: str, epochs: float, bf16: bool) -> tuple[str, float, float]:
        examples = self._examples(epochs)
        rate = float(self.assumptions["train_samples_per_second"][rate_key])
        if bf16:
            rate *= float(self.assumptions.get("bf16_speedup", 1.0))
        return group, examples, examples / rate

    def _estimate_eval(self, group: str, model: str) -> tuple[str, float, float]:
        rate = float(self.assumptions["inference_samples_per_second"][model])
        n = len(self.test_split)
        t = self.s["throughput"]
        n1, n64 = min(n, t["batch1_texts"]), min(n, t["batch64_texts"])

        def timing(samples_per_second: float) -> float:
            return n1 / (samples_per_second / 2) + n64 / samples_per_second

        if model == "teacher":
            return group, float(n), n / rate + timing(rate)
        teacher = float(self.assumptions["inference_samples_per_second"]["teacher"])
        return group, float(n), n / rate + TIMING_ROUNDS * (timing(rate) + timing(teacher))  # timed beside the teacher

    # ---- the stages ----------------------------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        f = self.fingerprint
        out: list[Stage] = []
        for row, name in BASELINES.items():
            key = f("baseline", name, self.common, self.eval_settings)
            out.append(Stage(f"baseline_{row}", "baseline", key, self.res_dir / f"baseline_{row}.json",
                             lambda row=row, name=name: self.run_baseline(row, name), row=row,
                             estimate=("baselines (majority, TF-IDF LR, TF-IDF SVM)", float(len(self.train_split)),
                                       float(self.assumptions.get("baseline_seconds", 30)))))
        teacher_dir = self.run_dir / "teacher"
        out.append(Stage("train_teacher", "train", self.teacher_key, self.res_dir / "train_teacher.json",
                         self.train_teacher, artifact=teacher_dir,
                         estimate=self._estimate_train("teacher fine-tuning", "teacher", self.s["teacher"]["epochs"],
                                                       self.teacher_bf16)))
        out.append(Stage("eval_teacher", "eval", f("eval", "teacher", self.teacher_key, self.eval_settings),
                         self.res_dir / "eval_teacher.json", lambda: self.evaluate("teacher", teacher_dir),
                         needs=("train_teacher",), row="teacher",
                         estimate=self._estimate_eval("evaluation: teacher", "teacher")))
        cache_methods = [m for m in self.methods if m in ("kd", "bam", "ddml", "kd_c0")]
        if cache_methods:
            rate = float(self.assumptions["inference_samples_per_second"]["teacher"])
            out.append(Stage("teacher_cache", "cache", self.cache_key, self.res_dir / "teacher_cache.json",
                             self.build_cache, artifact=self.run_dir / "teacher_cache", needs=("train_teacher",),
                             estimate=("teacher-output cache", float(len(self.train_split)),
                                       len(self.train_split) / rate)))
        for variant in self.variants:
            for method in self.methods:
                if variant not in self.student_variants(method):
                    continue
                key = self.student_key(method, variant)
                train_name = f"{variant.name}/train_{method}"
                stage_dir = self.run_dir / variant.name / method
                needs = () if method in ("alone", TEACHER) else ("train_teacher",) if method == "ffn" else (
                    "teacher_cache",)
                if variant.from_teacher and "train_teacher" not in needs:
                    needs = (*needs, "train_teacher")  # cut from the teacher's folder
                if method == TEACHER:
                    estimate = self._estimate_train(f"teacher fine-tuning [{variant.name}]", "teacher",
                                                    self.s["teacher"]["epochs"], self.teacher_bf16)
                else:
                    estimate = self._estimate_train(f"train {method} [{variant.name}]", method,
                                                    self.s["students"]["epochs"], variant.bf16)
                out.append(Stage(
                    train_name, "train", key, self.res_dir / variant.name / f"train_{method}.json",
                    lambda method=method, variant=variant: self.train_student(method, variant), artifact=stage_dir,
                    needs=needs, method=method, variant=variant.name, estimate=estimate))
                for row in self.method_rows(method):
                    if method == TEACHER:
                        student, model = None, "teacher"
                    elif method in ("ddml", "kd_c0"):
                        student = row[len(method) + 1:]
                        model = "student" if student == MINILM3 else "wpbert"
                    else:
                        student, model = None, "student"
                    out.append(Stage(
                        f"{variant.name}/eval_{row}", "eval", f("eval", row, key, self.eval_settings),
                        self.res_dir / variant.name / f"eval_{row}.json",
                        lambda row=row, d=stage_dir, st=student: self.evaluate(row, d, st),
                        needs=(train_name,), row=row, method=method, variant=variant.name,
                        estimate=self._estimate_eval(f"evaluation: {row} [{variant.name}]", model)))
        return out

    def every_stage(self) -> list[Stage]:
        """The stages of this seed for every method and every variant, whichever a run lists: the results a teacher
        or cache made again would leave behind can come from any of them."""
        every = copy.copy(self)
        every.methods = list(METHODS)
        axes = {"class_weights": ["none", "balanced"], "bf16": ["off", "on"], "group_by_length": ["off", "on"],
                "student_init": ["base", "teacher"]}
        every.variants = [v for v in variants_of(axes) if self.bf16_ok or not v.bf16]
        return every.stages()

    # ---- actions ---------------------------------------------------------------------------------------------------

    def run_baseline(self, row: str, name: str) -> dict:
        from distil_trainers.metrics import classification_metrics
        from distil_trainers.papers.baselines import make_baseline

        pipeline = make_baseline(name, seed=self.seed, class_weight=None if name == "majority" else "balanced")
        train, test = self.train_split, self.test_split
        start = time.perf_counter()
        pipeline.fit(list(train["text"][:]), list(train["label"][:]))
        fit_seconds = time.perf_counter() - start
        texts = list(test["text"][:])
        predicted = pipeline.predict(texts)
        metrics = classification_metrics(list(test["label"][:]), predicted, label_names=self.data.label_names,
                                          include_confusion=True)
        classifier = pipeline.named_steps["classifier"]
        params = sum(getattr(classifier, a).size for a in ("coef_", "intercept_") if hasattr(classifier, a)) or None
        vocabulary = len(getattr(pipeline.named_steps["tfidf"], "vocabulary_", {}) or {})
        speed = self.throughput(FIXED_ROWS[row], lambda batch: pipeline.predict(list(batch)), parameters=params)
        return {"row": row, "metrics": metrics, "params": params, "tfidf_vocabulary": vocabulary,
                "fit_seconds": fit_seconds, "test_examples": len(texts), **speed}

    def _training_args(self, cls, output_dir: Path, *, epochs: float, learning_rate: float, bf16: bool,
                       grouped: bool, class_weights: str = "none", **extra):
        import torch
        from transformers import TrainingArguments

        s = self.s
        values = dict(
            output_dir=str(output_dir), num_train_epochs=epochs, max_steps=s.get("max_steps") or -1,
            learning_rate=learning_rate, per_device_train_batch_size=s["batch_size"],
            per_device_eval_batch_size=s["eval_batch_size"], gradient_accumulation_steps=1,
            warmup_steps=s["warmup_ratio"], weight_decay=s["weight_decay"], lr_scheduler_type="linear",
            eval_strategy="no", save_strategy="steps", save_steps=s["save_steps"], save_total_limit=1,
            logging_steps=s["logging_steps"], report_to="none", seed=self.seed, use_cpu=not torch.cuda.is_available(),
            bf16=bf16, train_sampling_strategy="group_by_length" if grouped else "random", disable_tqdm=self.quiet,
            dataloader_num_workers=0,
        )
        if cls is not TrainingArguments:  # the distillation trainers' arguments
            values.update(max_length=s["max_length"], class_weights=None if class_weights == "none" else class_weights)
        values.update(extra)
        return cls(**values)

    def _fit(self, stage_dir: Path, key: str, args, build: Callable[[], Any], tokenizer=None) -> dict:
        """Train one model in ``stage_dir`` (or resume it from its last checkpoint, or reuse a finished one): the
        stage folders of distil_trainers.papers.workflow (``stage.json`` fingerprint, ``training_complete.json``)."""
        from transformers.trainer_utils import get_last_checkpoint

        from distil_trainers.papers.workflow import finish_stage, start_stage, train_or_resume

        if start_stage(args, stage_dir, key):
            info = json.loads((stage_dir / "training_complete.json").read_text())
            return {**info, "reused_finished_model": True}
        last = get_last_checkpoint(str(stage_dir))
        if last is not None:
            print(f"    resuming from {shown(Path(last))}", flush=True)
        trainer = build()
        for callback in CALLBACKS:
            trainer.add_callback(callback)
        start = time.perf_counter()
        train_or_resume(trainer, stage_dir)
        seconds = time.perf_counter() - start
        summary = next((h for h in reversed(trainer.state.log_history) if "train_runtime" in h), {})
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        info = {
            "global_step": trainer.state.global_step,
            "examples_seen": trainer.state.global_step * args.per_device_train_batch_size,
            "train_seconds": seconds,
            "train_samples_per_second": summary.get("train_samples_per_second"),
            "resumed_from_checkpoint": None if last is None else Path(last).name,
            "last_logged_loss": losses[-1] if losses else None,
            "bf16": args.bf16,
            "train_sampling_strategy": args.train_sampling_strategy,
        }
        finish_stage(trainer, stage_dir, info, tokenizer=tokenizer)
        for checkpoint in stage_dir.glob("checkpoint-*"):  # the finished model stays; its checkpoints are not needed
            shutil.rmtree(checkpoint, ignore_errors=True)
        return info

    def _tokenized_train(self, tokenizer):
        from distil_trainers.data import tokenize_for_models

        return tokenize_for_models(self.train_split, {"": tokenizer}, max_length=self.s["max_length"],
                                   desc="Tokenizing train")

    def train_teacher(self, variant: Variant | None = None) -> dict:
        """The teacher, fine-tuned from the base encoder on the labels; with a ``variant``, with its class weights (a
        reference row in that variant's folder; the students distil the unweighted one)."""
        from transformers import AutoModelForSequenceClassification, TrainingArguments, set_seed

        from distil_trainers.data import MultiTokenizerCollator

        stage_dir = self.run_dir / "teacher" if variant is None else self.run_dir / variant.name / TEACHER
        key = self.teacher_key if variant is None else self.student_key(TEACHER, variant)
        weights = "none" if variant is None else variant.class_weights
        t = self.s["teacher"]
        args = self._training_args(TrainingArguments, stage_dir, epochs=t["epochs"], learning_rate=t["learning_rate"],
                                   bf16=self.teacher_bf16, grouped=False)

        def build():
            set_seed(self.seed)
            model = AutoModelForSequenceClassification.from_pretrained(self.base, **self.label_kwargs)
            return _trainer_classes()["label"](
                model=model, args=args, train_dataset=self._tokenized_train(self.tokenizer),
                data_collator=MultiTokenizerCollator({"": self.tokenizer}), processing_class=self.tokenizer,
                class_weights=weights)

        return self._fit(stage_dir, key, args, build, tokenizer=self.tokenizer)

    def build_cache(self) -> dict:
        from transformers import AutoModelForSequenceClassification

        from distil_trainers.papers.workflow import mark_complete, prepare_stage
        from distil_trainers.teachers.cache import precompute_teacher_outputs

        cache_dir = self.run_dir / "teacher_cache"
        if prepare_stage(cache_dir, self.cache_key):
            return {**json.loads((cache_dir / "training_complete.json").read_text()), "reused_finished_cache": True}
        teacher = AutoModelForSequenceClassification.from_pretrained(self.run_dir / "teacher")
        tok, max_length = self.tokenizer, self.s["max_length"]

        def teacher_columns(batch):  # the teacher's tokens beside the text (the cache hashes both per example)
            encoded = tok(batch["text"], truncation=True, max_length=max_length)
            return {f"teacher_{k}": v for k, v in encoded.items()}

        view = self.train_split.map(teacher_columns, batched=True, desc="Tokenizing for the teacher")
        start = time.perf_counter()
        cache = precompute_teacher_outputs(teacher, view, cache_dir, tokenizer=tok,
                                           batch_size=self.s["eval_batch_size"], show_progress=not self.quiet)
        seconds = time.perf_counter() - start
        info = {"examples": len(cache), "build_seconds": seconds, "samples_per_second": len(cache) / seconds}
        mark_complete(cache_dir, info)
        return info

    def _student_model(self, variant: Variant):
        from transformers import set_seed

        from distil_trainers.models import make_student

        set_seed(self.seed)  # the same initial student (its new head included) for every method
        if variant.from_teacher:  # the fine-tuned teacher's layers, pooler and classification head
            return make_student(self.run_dir / "teacher", self.s["student_layers"])
        return make_student(self.base, self.s["student_layers"], **self.label_kwargs)

    def train_student(self, method: str, variant: Variant) -> dict:
        from transformers import TrainingArguments

        from distil_trainers import AnnealingArguments, MutualLearningArguments
        from distil_trainers.data import MultiTokenizerCollator

        if method == TEACHER:
            return self.train_teacher(variant)
        stage_dir = self.run_dir / variant.name / method
        key = self.student_key(method, variant)
        st = self.s["students"]
        common = dict(epochs=st["epochs"], learning_rate=st["learning_rate"], bf16=variant.bf16,
                      grouped=variant.group_by_length)
        params = dict(self.s["methods"].get(method) or {})
        classes = _trainer_classes()
        cache = str(self.run_dir / "teacher_cache")
        tok = self.tokenizer
        if method == "alone":
            args = self._training_args(TrainingArguments, stage_dir, **common)

            def build():
                return classes["label"](
                    model=self._student_model(variant), args=args, train_dataset=self._tokenized_train(tok),
                    data_collator=MultiTokenizerCollator({"": tok}), processing_class=tok,
                    class_weights=variant.class_weights)

            return self._fit(stage_dir, key, args, build, tokenizer=tok)
        if method in ("kd", "bam"):
            args = self._training_args(AnnealingArguments, stage_dir, class_weights=variant.class_weights, **common,
                                       **params)

            def build():
                return classes["annealing"](model=self._student_model(variant), teacher_outputs=cache, args=args,
                                            train_dataset=self.train_split, processing_class=tok)

            return self._fit(stage_dir, key, args, build, tokenizer=tok)
        if method == "ffn":
            from transformers import AutoModelForSequenceClassification

            from distil_trainers.features import model_dimensions
            from distil_trainers.papers.feature_kd_pipeline import default_ffn_matches

            teacher = AutoModelForSequenceClassification.from_pretrained(self.run_dir / "teacher")
            matches = default_ffn_matches(len(self.s["student_layers"]), model_dimensions(teacher).num_layers)
            args = self._training_args(AnnealingArguments, stage_dir, class_weights=variant.class_weights, **common,
                                       feature_matches=[m.to_dict() for m in matches], **params)

            def build():
                return classes["annealing"](model=self._student_model(variant), teacher_model=teacher,
                                            teacher_processing_class=tok, args=args, train_dataset=self.train_split,
                                            processing_class=tok)

            return self._fit(stage_dir, key, args, build, tokenizer=tok)
        # ddml, kd_c0: minilm3 + the students of ddml_students, from the cached teacher
        from distil_trainers.models.students import build_student

        args = self._training_args(MutualLearningArguments, stage_dir, class_weights=variant.class_weights, **common,
                                   student_learning_rates=dict(self.s["ddml_learning_rates"]), **params)

        def build():
            students = {MINILM3: self._student_model(variant)}
            tokenizers = {MINILM3: tok}
            texts = self.train_split["text"][:]
            for name, spec in self.s["ddml_students"].items():
                spec = {"tokenizer_from": self.base, **spec}
                # a vocabulary learnt from the texts belongs to them: keyed by the spec and the training examples
                vocab_key = self.fingerprint(spec, self.data.data_fp.get(f"{self.data.task.name}/train"))
                tokenizer_dir = self.kept_tokenizer_dir(f"{name}-{vocab_key}")
                students[name], tokenizers[name] = build_student(spec, self.data.label_names, texts,
                                                                 tokenizer_dir=tokenizer_dir)
            return classes["mutual"](students=students, teacher_outputs=cache, args=args,
                                     train_dataset=self.train_split, processing_classes=tokenizers)

        return self._fit(stage_dir, key, args, build)

    def throughput(self, name: str, predict: Callable, **measure_kwargs) -> dict:
        """CPU inference samples/s at batch 1 and batch 64 over the first test posts (raw text in: tokenisation
        included)."""
        import torch

        from distil_trainers.papers.efficiency import measure

        texts = list(self.test_split["text"][:])
        t = self.s["throughput"]
        out = {"torch_threads": torch.get_num_threads()}
        for batch, count in ((1, t["batch1_texts"]), (64, t["batch64_texts"])):
            sample = texts[: min(len(texts), int(count))]
            row = measure(f"{name} (batch {batch})", predict, sample, batch_size=batch, warmup=1,
                          show_progress=not self.quiet, **measure_kwargs)
            out[f"samples_per_second_b{batch}"] = row.examples_per_second
            out[f"latency_ms_b{batch}"] = row.latency_ms_per_example
            out[f"timed_texts_b{batch}"] = len(sample)
        return out

    def beside_teacher(self, row: str, predict: Callable, model) -> dict:
        """The student's throughput, and its ratio to the teacher's timed in the same stage: ``TIMING_ROUNDS`` rounds,
        the two models in turn (the order alternating), the ratio of each round then the median over the rounds, so
        that a machine that slows down for a while slows both sides of a ratio alike. The student's samples/s are the
        medians over the rounds. Without a teacher on disk (e.g. ``--methods alone`` first), the student alone."""
        import statistics

        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from distil_trainers.papers.efficiency import forward_predictor
        from distil_trainers.papers.workflow import is_complete

        teacher_dir = self.run_dir / "teacher"
        if not is_complete(teacher_dir, self.teacher_key):
            return self.throughput(row, predict, model=model)
        teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
        teacher_predict = forward_predictor(teacher, AutoTokenizer.from_pretrained(teacher_dir), self.s["max_length"])
        timers = {"student": lambda: self.throughput(row, predict, model=model),
                  "teacher": lambda: self.throughput(f"teacher beside {row}", teacher_predict, model=teacher)}
        rounds: list[dict[str, dict]] = []
        for i in range(TIMING_ROUNDS):
            order = ("student", "teacher") if i % 2 == 0 else ("teacher", "student")
            rounds.append({side: timers[side]() for side in order})
        out = {k: statistics.median(r["student"][k] for r in rounds) for k in rounds[0]["student"]}
        summary: dict[str, float] = {"rounds": TIMING_ROUNDS}
        for b in (1, 64):
            key = f"samples_per_second_b{b}"
            summary[f"vs_teacher_b{b}"] = statistics.median(r["student"][key] / r["teacher"][key] for r in rounds)
            summary[f"teacher_samples_per_second_b{b}"] = statistics.median(r["teacher"][key] for r in rounds)
        out["beside_teacher"] = summary
        return out

    def evaluate(self, row: str, stage_dir: Path, student: str | None = None) -> dict:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from distil_trainers.data import tokenize_for_models
        from distil_trainers.hub import student_folder
        from distil_trainers.metrics import classification_metrics
        from distil_trainers.papers.efficiency import count_parameters, forward_predictor
        from distil_trainers.papers.reports import predict_logits

        folder = student_folder(stage_dir, student) if student else stage_dir
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        split = self.test_split
        tokenized = tokenize_for_models(split, {"": tok}, max_length=self.s["max_length"], desc="Tokenizing test")
        logits, seconds = predict_logits(model, tokenized, tokenizer=tok, batch_size=self.s["eval_batch_size"],
                                         desc=f"Scoring {row}", show_progress=not self.quiet)
        metrics = classification_metrics(list(split["label"][:]), logits.argmax(-1),
                                         label_names=self.data.label_names, include_confusion=True)
        predict = forward_predictor(model, tok, self.s["max_length"])
        speed = self.throughput(row, predict, model=model) if row == "teacher" else self.beside_teacher(
            row, predict, model)
        return {"row": row, "model_dir": shown(folder), "metrics": metrics, "params": count_parameters(model),
                "test_examples": len(split), "predict_seconds": seconds, **speed}


# ----------------------------------------------------------------------------------------------------------------------
# Jobs
# ----------------------------------------------------------------------------------------------------------------------


def environment() -> dict:
    import torch

    return {
        "versions": C.versions(PACKAGES), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "platform": platform.platform(), "cpu": C.cpu_model(), "bf16": C.bf16_support(),
    }


def seed_jobs(data: DatasetData, methods: list[str], runs_dir: Path, results_dir: Path, assumptions: dict,
              bf16_ok: bool, quiet: bool) -> list[SeedJob]:
    variants = variants_of(data.settings["variants"])
    return [SeedJob(data, seed, variants, methods, runs_dir, results_dir, assumptions, bf16_ok, quiet)
            for seed in data.settings["seeds"]]


def describe(data: DatasetData) -> str:
    sizes = " / ".join(f"{split} {n:,}" for split, n in data.sizes.items())
    note = "" if data.report_split == "test" else "; no test split: scored on the validation split"
    return f"{sizes} posts; classes {', '.join(data.label_names)}{note}"
