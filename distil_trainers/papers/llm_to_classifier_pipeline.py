# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""
From an LLM to a small classifier: an LLM labels the training texts with class distributions, an encoder student is
distilled from them, and both are compared with a student and a TF-IDF model trained on the gold labels.

A paper pipeline (multi-stage, resumable, with reports): ``recipes/llm_to_classifier.py`` distils one student
from an LLM; this module runs the whole comparison.

1. Load the dataset named by ``dataset_name`` (a registered one, your own csv / tsv / json / jsonl / parquet file or
   folder of split files with ``text_column`` and ``label_column``, a ``save_to_disk`` folder or a Hub id; string
   labels become class names). Without a test split the report uses the validation split.
2. The LLM (``teacher_backend``: ``llamacpp`` with a GGUF file, default the packaged SmolLM2-135M-Instruct;
   ``transformers`` with a Hub id or folder; ``openai`` with an OpenAI-compatible ``teacher_base_url`` such as vLLM)
   reads every train and test text as a zero-shot classifier (``distil_trainers.teachers.LLMClassifier``): the
   probabilities of each class's ``label_words`` after the prompt, renormalised over the classes. With
   ``calibration`` these are divided by the distribution of content-free inputs and/or sharpened or softened by a
   temperature fitted on ``calibration_samples`` labelled validation examples. Both the raw and the calibrated
   distributions are cached in ``<output_dir>/llm_teacher/`` (each text is scored once; a rerun reuses them).
   A ``transformers`` teacher folder saved by ``RationaleSFTTrainer`` (a rationale-distilled student, merged with
   ``recipes/rationale_distill.py --save_merged true``) is asked its own label-view prompt, with the class names as
   label words (``teacher_prompt: auto``, read from its ``classifier_prompt.json``).
3. The student (``student_layers`` of ``student_base``) is distilled from the cache with ``AnnealingTrainer``:
   ``annealing: kd, alpha: 0`` and ``use_gold_labels: false`` train on the texts and the LLM's soft labels alone;
   ``use_gold_labels: true`` with ``alpha > 0`` (or ``annealing: bam``) adds the gold labels.
4. Baselines: the same student fine-tuned on the gold labels alone for the same number of steps, TF-IDF + logistic
   regression.
5. Report on the test split: accuracy, macro P/R/F1 and agreement with the LLM's prediction (the argmax of the
   distribution the student learnt) of the LLM, the calibrated LLM, both students and TF-IDF + LR, with each model's
   inference cost (parameters, posts/s at batch 1 and 32, weights and peak memory) in
   ``<output_dir>/results.{json,md}``. The student's model card (``student/README.md``) says which LLM labelled the
   data, with which prompt, label words and calibration.

Usage:

    # quickstart on CPU: Davidson (600 train / 300 test), SmolLM2-135M-Instruct via llama.cpp, 3-layer MiniLM student
    python -m distil_trainers.papers.llm_to_classifier_pipeline \\
        --config recipes/configs/llm_to_classifier_pipeline_quickstart.yaml

    # your own data: a csv with the columns text,label (string labels are the classes and, by default, the label
    # words; here the labels pos / neg are scored as the words positive / negative); describe the task for the prompt
    python -m distil_trainers.papers.llm_to_classifier_pipeline \\
        --config recipes/configs/llm_to_classifier_pipeline_quickstart.yaml \\
        --dataset_name my.csv --task_description "Is the review positive or negative?" \\
        --label_words '{"pos": ["positive"], "neg": ["negative"]}' --output_dir runs/llm_my_data

    # a larger LLM served by vLLM (exact label-word scores through echoed log-probabilities)
    vllm serve Qwen/Qwen2.5-7B-Instruct &
    python -m distil_trainers.papers.llm_to_classifier_pipeline \\
        --config recipes/configs/llm_to_classifier_pipeline_quickstart.yaml \\
        --teacher_backend openai --teacher_base_url http://localhost:8000/v1 --teacher_mode echo

    # the rationale-distilled SmolLM2 student as the teacher (its own label prompt, from its classifier_prompt.json)
    python recipes/rationale_distill.py --config recipes/configs/rationale_quickstart.yaml --save_merged true
    python -m distil_trainers.papers.llm_to_classifier_pipeline \
        --config recipes/configs/llm_to_classifier_pipeline_quickstart.yaml \
        --teacher_backend transformers --teacher_model runs/rationale_quickstart/merged \
        --output_dir runs/llm_to_classifier_rationale_student

    # the gold labels too (Hinton KD: 0.5 CE + 0.5 KL), and push the student with its card
    python -m distil_trainers.papers.llm_to_classifier_pipeline \\
        --config recipes/configs/llm_to_classifier_pipeline_quickstart.yaml \\
        --use_gold_labels true --alpha 0.5 --beta 0.5 --push_to_hub true --hub_model_id <user>/minilm3-llm-davidson
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
from trl import TrlParser

from distil_trainers import AnnealingArguments, AnnealingTrainer
from distil_trainers.cards import (
    card_context,
    datasets_of,
    hub_id_of,
    llm_teacher_summary,
    rows_to_card_metrics,
    write_model_card,
)
from distil_trainers.data import DatasetArguments
from distil_trainers.hub import push_recipe_models, split_push_argument
from distil_trainers.metrics import classification_metrics
from distil_trainers.models import resolve_model_name_or_path
from distil_trainers.papers.baselines import run_baselines
from distil_trainers.papers.efficiency import count_parameters, efficiency_table, forward_predictor, measure
from distil_trainers.papers.workflow import (
    build_classifier,
    data_fingerprint,
    describe_report_splits,
    evaluate_model,
    fingerprint,
    finish_stage,
    load_tasks,
    main_process_only,
    stage_arguments,
    start_stage,
    tokenize_suite,
    train_or_resume,
    training_fingerprint,
)  # fmt: skip
from distil_trainers.teachers import (
    DEFAULT_CONTENT_FREE_INPUTS,
    LLMCalibration,
    LLMClassifier,
    SavedClassifierPrompt,
    default_classifier_prompt,
    precompute_llm_teacher_outputs,
)  # fmt: skip
from distil_trainers.teachers.locks import one_writer
from distil_trainers.trainers.base import TaskAwareTrainer

logger = logging.getLogger(__name__)

BACKENDS = ("llamacpp", "transformers", "openai")
CALIBRATIONS = ("none", "contextual", "temperature", "contextual+temperature")
METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")


@dataclass
class LLMToClassifierArguments(DatasetArguments):
    dataset_name: list[str] = field(default_factory=lambda: ["davidson"], metadata={"help": "The dataset (one)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Subsample the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Subsample validation and test splits."})
    teacher_backend: str = field(default="llamacpp", metadata={"help": "LLM backend.", "choices": list(BACKENDS)})
    teacher_model: str | None = field(default=None, metadata={
        "help": "llamacpp: a GGUF file (default: the packaged SmolLM2-135M-Instruct); transformers: a Hub id or folder; "
                "openai: the served model name (default: the server's first)."})
    teacher_base_url: str | None = field(default=None, metadata={"help": "openai: the API root, e.g. "
                                                                         "http://localhost:8000/v1."})
    teacher_mode: str = field(default="echo", metadata={"help": "openai: 'echo' (exact) or 'chat' (top-k first token)."})
    teacher_n_ctx: int = field(default=2048, metadata={"help": "llamacpp: context length in tokens."})
    teacher_threads: int | None = field(default=None, metadata={"help": "llamacpp: CPU threads (default: all)."})
    teacher_batch_size: int = field(default=8, metadata={"help": "Texts per LLM call."})
    teacher_prompt: str = field(default="auto", metadata={
        "help": "'auto': the classifier_prompt.json saved in the teacher_model folder when it has one (a student "
                "trained by RationaleSFTTrainer: its own label prompt, label words and normalisation), else the "
                "zero-shot prompt; 'zero-shot': always the zero-shot prompt; or the path of a classifier_prompt.json."})
    task_description: str | None = field(default=None, metadata={
        "help": "The prompt's instruction (default: the registered dataset's, else a generic one)."})
    label_words: dict | str | None = field(default=None, metadata={
        "help": "{class name: word or [words]} (YAML mapping or JSON); default: the dataset's, else the class names."})
    normalization: str = field(default="mean", metadata={"help": "Label-word log-probability: 'mean' or 'sum' over "
                                                                  "its tokens."})
    calibration: str = field(default="contextual+temperature", metadata={"help": "Calibration of the LLM.",
                                                                         "choices": list(CALIBRATIONS)})
    calibration_samples: int = field(default=100, metadata={"help": "Labelled validation examples the temperature "
                                                                     "is fitted on."})
    student_base: str = field(default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "Student encoder."})
    student_layers: list[int] | None = field(default_factory=lambda: [0, 2, 4], metadata={
        "help": "Encoder layers of student_base the student keeps (none: all)."})
    use_gold_labels: bool = field(default=False, metadata={"help": "Train the student on the gold labels too (the "
                                                                    "loss needs a label term then)."})
    run_baselines: bool = field(default=True, metadata={"help": "Student on gold labels alone, TF-IDF + LR."})
    efficiency_samples: int = field(default=64, metadata={"help": "Test texts timed per model and batch size "
                                                                  "(0: no timing)."})

    def __post_init__(self):
        super().__post_init__()
        if len(self.dataset_name) != 1:
            raise ValueError(f"This recipe uses one dataset; dataset_name names {self.dataset_name}.")
        checks = [(self.teacher_backend in BACKENDS, f"teacher_backend must be one of {BACKENDS}"),
                  (self.calibration in CALIBRATIONS, f"calibration must be one of {CALIBRATIONS}"),
                  (self.teacher_backend != "openai" or self.teacher_base_url, "teacher_backend openai needs "
                   "teacher_base_url (e.g. http://localhost:8000/v1)"),
                  (self.teacher_backend != "transformers" or self.teacher_model, "teacher_backend transformers "
                   "needs teacher_model (a Hub id or folder)"),
                  (self.calibration_samples > 0, "calibration_samples must be > 0")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message + ".")
        if isinstance(self.label_words, str):
            self.label_words = yaml.safe_load(self.label_words)
        if self.teacher_prompt not in ("auto", "zero-shot"):
            if not Path(self.teacher_prompt).exists():
                raise FileNotFoundError(f"teacher_prompt {self.teacher_prompt!r}: no such file (a classifier_prompt.json"
                                        ", or 'auto' / 'zero-shot').")
            SavedClassifierPrompt.load(self.teacher_prompt)  # a malformed file fails here, before any model loads

    def saved_prompt(self) -> SavedClassifierPrompt | None:
        """The prompt the teacher was trained to answer (``teacher_prompt``), or None for the zero-shot prompt."""
        model = self.teacher_model if self.teacher_backend == "transformers" else None  # a folder of weights
        return SavedClassifierPrompt.resolve(self.teacher_prompt, model)


class ScoreOnce(LLMClassifier):
    """An LLMClassifier that scores each distinct text once (the raw and the calibrated caches share the scores)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.memo: dict[str, torch.Tensor] | None = {}  # None: score every call (timing)

    def class_log_probs(self, texts, *, batch_size=None, show_progress=False):
        texts = [str(t) for t in texts]
        if self.memo is None:
            return super().class_log_probs(texts, batch_size=batch_size, show_progress=show_progress)
        new = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if new:
            self.memo.update(zip(new, super().class_log_probs(new, batch_size=batch_size, show_progress=show_progress)))
        if not texts:
            return torch.empty(0, len(self.class_names), dtype=torch.float64)
        return torch.stack([self.memo[t] for t in texts])


def llm_backend(recipe: LLMToClassifierArguments):
    """The LLM's log-probability backend, and its size as :func:`~distil_trainers.papers.efficiency.measure` takes it."""
    from distil_trainers.teachers import LlamaCppLogprobBackend, OpenAILogprobBackend, TransformersLogprobBackend

    if recipe.teacher_backend == "openai":
        return OpenAILogprobBackend(recipe.teacher_base_url, recipe.teacher_model, mode=recipe.teacher_mode), {}
    if recipe.teacher_backend == "transformers":
        backend = TransformersLogprobBackend(resolve_model_name_or_path(recipe.teacher_model))
        return backend, {"model": backend.model}
    import llama_cpp

    from distil_trainers.teachers.rationales import packaged_smollm2_gguf

    path = recipe.teacher_model or packaged_smollm2_gguf()
    backend = LlamaCppLogprobBackend(path, n_ctx=recipe.teacher_n_ctx, n_threads=recipe.teacher_threads)
    return backend, {"parameters": int(llama_cpp.llama_model_n_params(backend.llm.model)), "weights_path": path}


def main(recipe: LLMToClassifierArguments, args: AnnealingArguments) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args, push = split_push_argument(args)  # the student is pushed once, with its card, after the report
    args = dataclasses.replace(args, eval_strategy="no", load_best_model_at_end=False)  # evaluated once, at the end
    if not recipe.use_gold_labels and AnnealingTrainer.learns_from_labels(args):
        raise ValueError("use_gold_labels false trains on the LLM's soft labels alone: the loss must have no label "
                         "term (annealing kd with alpha 0, or annealing mse); or set use_gold_labels true.")
    set_seed(args.seed)
    out = Path(args.output_dir)
    spec = recipe.task_specs()[0]
    suite = load_tasks([spec], recipe.data_dir, args.seed, recipe.max_train_samples, recipe.max_eval_samples,
                       validation_size=recipe.validation_size)
    task = suite.tasks[0]
    split = suite.report_splits()[task.name]
    train, test = task.splits["train"], task.splits[split]
    print(f"[data] {task.name}: { {s: len(d) for s, d in task.splits.items()} }; classes {task.label_names}; "
          f"report on {describe_report_splits({task.name: split})}")

    # ---- the LLM labels the texts (raw and calibrated caches) ----------------------------------------------------
    saved = recipe.saved_prompt()
    if saved is not None:
        saved.check_classes(task.label_names)  # before the LLM loads
    backend, llm_size = llm_backend(recipe)
    llm_params = count_parameters(llm_size["model"]) if "model" in llm_size else llm_size.get("parameters")
    known = task.name if task.source is None else None  # a registered dataset: its prompt and label words
    try:
        prompt = default_classifier_prompt(known)
    except ValueError:  # none written for it
        known, prompt = None, default_classifier_prompt(None)
    if recipe.task_description:
        prompt = dataclasses.replace(prompt, task_description=recipe.task_description)
    words, normalization = recipe.label_words, recipe.normalization
    if saved is not None:  # the teacher's own label prompt (a rationale-distilled student)
        prompt, words, normalization = saved.prompt, saved.label_words, saved.normalization
        print(f"[teacher] the prompt saved with the teacher ({saved.source or 'classifier_prompt.json'}): label words "
              f"{words}, normalization {normalization}")
    scorer = ScoreOnce(backend, task.label_names, words, prompt, task=known,
                       normalization=normalization, batch_size=recipe.teacher_batch_size)
    parts = {"train": train, split: test}
    # several processes: the first to take the lock scores the texts and saves both caches, the others then load them
    with one_writer(out / "llm_teacher"):
        raw = precompute_llm_teacher_outputs(scorer, parts, out / "llm_teacher" / "raw",
                                             batch_size=recipe.teacher_batch_size)
        texts = {i: t for ds in parts.values() for i, t in zip(ds["id"][:], ds["text"][:])}
        scorer.memo.update({texts[i]: row.double() for i, row in zip(raw.ids, raw.tensors["logits"])})
        caches = {"LLM": raw}
        if recipe.calibration != "none":
            dev = task.splits["validation"] if split == "test" else train  # never the examples reported on
            dev = dev.shuffle(seed=args.seed).select(range(min(recipe.calibration_samples, len(dev))))
            calibration = LLMCalibration(
                content_free_inputs=None if recipe.calibration == "temperature" else DEFAULT_CONTENT_FREE_INPUTS,
                dev_dataset=dev if "temperature" in recipe.calibration else None)
            caches["LLM, calibrated"] = precompute_llm_teacher_outputs(
                scorer, parts, out / "llm_teacher" / "calibrated", calibration=calibration,
                batch_size=recipe.teacher_batch_size)
            if caches["LLM, calibrated"].meta["texts_per_second"] != raw.meta["texts_per_second"]:  # freshly built:
                caches["LLM, calibrated"].meta["texts_per_second"] = raw.meta["texts_per_second"]  # scores are raw's
                caches["LLM, calibrated"].save(out / "llm_teacher" / "calibrated")
    cache = list(caches.values())[-1]  # the student learns the calibrated distribution when there is one
    sample = test["text"][: recipe.efficiency_samples]
    efficiency = []
    if sample:  # the LLM's cost, then it leaves memory before the students train
        scorer.memo = None  # time real scoring
        efficiency += time_model("LLM", lambda b: scorer.class_log_probs(b, batch_size=len(b)), sample, **llm_size)
    if hasattr(backend, "close"):
        backend.close()
    scorer = backend = llm_size = None

    # ---- students -------------------------------------------------------------------------------------------------
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name_or_path(recipe.student_base))
    student_base = resolve_model_name_or_path(recipe.student_base)
    run_key = fingerprint(recipe.student_base, recipe.student_layers, recipe.use_gold_labels, data_fingerprint(suite),
                          training_fingerprint(args), cache.fingerprint)  # the cache's covers the LLM and its prompt

    def stage(name, train_fn):
        directory = out / name
        if start_stage(args, directory, fingerprint(name, run_key)):
            print(f"[{name}] reusing the finished model in {directory}")
            return AutoModelForSequenceClassification.from_pretrained(directory)
        set_seed(args.seed)
        trainer = train_fn(build_classifier(student_base, suite, layers=recipe.student_layers), directory)
        train_or_resume(trainer, directory)
        distilled = name == "student"
        finish_stage(trainer, directory, {
            "method": args.annealing if distilled else "baseline", "steps": trainer.state.global_step,
            "gold_labels": recipe.use_gold_labels or not distilled,
            "teacher": cache.meta["teacher"] if distilled else None}, tokenizer=tokenizer)
        return trainer.model

    tokenized = tokenize_suite(suite, {"": tokenizer}, args.max_length)
    # the texts stay beside their tokens: the trainer checks them against the cache's hashes
    distil_data = tokenized.tokenized[task.name]["train"].add_column("text", train["text"][:])
    if not recipe.use_gold_labels:
        distil_data = distil_data.remove_columns("labels")  # the texts alone: no gold label reaches the student
    student = stage("student", lambda model, d: AnnealingTrainer(
        model=model, teacher_outputs=cache, args=dataclasses.replace(args, output_dir=str(d)),
        train_dataset=distil_data, processing_class=tokenizer))
    label = "student (LLM soft labels" + (" + gold labels)" if recipe.use_gold_labels else ")")
    models = {label: student}
    if recipe.run_baselines:
        steps = json.loads((out / "student" / "training_complete.json").read_text())["steps"]
        models["student (gold labels)"] = stage("student_gold", lambda model, d: TaskAwareTrainer(
            model=model, args=stage_arguments(args, d, max_steps=steps, learning_rate=args.learning_rate),
            train_dataset=tokenized.tokenized[task.name]["train"], processing_class=tokenizer))

    # ---- report: quality and inference cost on the same test texts --------------------------------------------------
    gold, test_texts = test["label"][:], test["text"][:]
    predicted = {name: c.tensors["logits"][c.rows(test["id"][:])].argmax(-1) for name, c in caches.items()}
    teacher_says = predicted[list(caches)[-1]]  # what the student was taught: the agreement column compares with it
    rows = []

    def add(name, params, metrics, predictions):
        agreement = float((torch.as_tensor(predictions) == teacher_says).double().mean())
        rows.append({"model": name, "params": params, "task": task.name, **metrics, "agreement_with_llm": agreement})

    for name, predictions in predicted.items():
        add(name, llm_params, classification_metrics(gold, predictions.numpy(), task.label_names), predictions)
    for name, model in models.items():
        metrics = evaluate_model(model, tokenized, split, tokenizer, batch_size=args.per_device_eval_batch_size,
                                 output_dir=str(out / "eval"))[task.name]
        forward = forward_predictor(model.eval(), tokenizer, args.max_length)
        with torch.no_grad():
            predictions = torch.cat([forward(test_texts[i : i + 64]).argmax(-1) for i in range(0, len(test), 64)])
        add(name, count_parameters(model), metrics, predictions)
    tfidf = None
    if recipe.run_baselines:
        tfidf = run_baselines(["logreg"], train, test, folds=None, seed=args.seed)[0]
        lr = tfidf.pipeline.named_steps["classifier"]
        add("TF-IDF + LR (gold labels)", int(lr.coef_.size + lr.intercept_.size), tfidf.test,
            tfidf.pipeline.predict(test_texts))
    if sample:
        efficiency += time_model("student", forward_predictor(student.eval(), tokenizer, args.max_length), sample,
                                 model=student)
        if tfidf is not None:
            efficiency += time_model("TF-IDF + LR", tfidf.pipeline.predict, sample, parameters=rows[-1]["params"],
                                     weight_bytes=len(pickle.dumps(tfidf.pipeline)))  # vocabulary included
    cost = {row.name: row for row in efficiency}
    for row in rows:  # the calibrated LLM costs what the LLM does, the gold-label student what the student does
        kind = next((k for k in ("LLM", "student", "TF-IDF + LR") if row["model"].startswith(k)), None)
        for batch in (1, 32):
            if f"{kind} (batch {batch})" in cost:
                row[f"posts_per_second_batch{batch}"] = cost[f"{kind} (batch {batch})"].examples_per_second
                row["weights_mib"] = (cost[f"{kind} (batch {batch})"].weight_bytes or 0) / 2**20 or None

    llm = cache.meta["llm"]
    header = (f"LLM teacher {llm['model']} ({llm['backend']['backend']}, calibration {recipe.calibration}) -> "
              f"{label}, on {task.name}, {describe_report_splits({task.name: split})}"
              + (" (subsampled)" if recipe.max_eval_samples else ""))
    table = results_table(rows)
    if efficiency:
        table += "\n\n" + efficiency_table(efficiency)
    summary = {"config": header, "dataset": task.name, "split": split, "teacher": cache.meta["teacher"],
               "llm": llm, "calibration": cache.meta["calibration"], "rows": rows,
               "efficiency": [row.to_dict() for row in efficiency]}
    card = card_context(student, args, teacher=cache.meta["teacher"], datasets=datasets_of(suite),
                        base_model=hub_id_of(recipe.student_base),
                        student_description=f"encoder layers {recipe.student_layers} of {recipe.student_base}"
                        if recipe.student_layers else None,
                        metrics=rows_to_card_metrics(rows, label, split=split, compare=[r["model"] for r in rows]),
                        llm_teacher=llm_teacher_summary(cache.meta, gold_labels=recipe.use_gold_labels,
                                                        prompt_source=saved.source if saved else None))
    with main_process_only(args) as writer:
        if writer:
            print("\n" + header + "\n\n" + table + "\n")
            (out / "results.md").write_text(header + "\n\n" + table + "\n")
            (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
            write_model_card(card, out / "student")
    if push:
        push_recipe_models(args, {None: out / "student"}, {None: card})
    return summary


def time_model(kind: str, predict, texts: list[str], **size) -> list:
    """:func:`~distil_trainers.papers.efficiency.measure` of ``predict`` at batch 1 and batch 32."""
    return [measure(f"{kind} (batch {b})", predict, texts, batch_size=b, **size) for b in (1, 32)]


def results_table(rows: list[dict]) -> str:
    """Quality and cost per model: metrics and agreement with the LLM's argmax in %, parameters, posts/s, the weights'
    size (MiB)."""
    lines = ["| model | params | " + " | ".join(METRICS) + " | agrees with LLM | posts/s (batch 1) | posts/s (batch 32) "
             "| weights MiB |", "|---|---:|" + "---:|" * (len(METRICS) + 4)]
    for row in rows:
        params = row.get("params")
        cells = ["-" if not params else f"{params / 1e6:.1f}M" if params >= 100_000 else f"{params:,}"]
        cells += [f"{100 * row[m]:.2f}" for m in (*METRICS, "agreement_with_llm")]
        cells += [f"{row[k]:.1f}" if row.get(k) else "-" for k in
                  ("posts_per_second_batch1", "posts_per_second_batch32", "weights_mib")]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = TrlParser((LLMToClassifierArguments, AnnealingArguments))
    recipe_args, training_args = parser.parse_args_and_config()
    main(recipe_args, training_args)
