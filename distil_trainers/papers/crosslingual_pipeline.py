# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""
Cross-lingual multi-task knowledge distillation for Romanian emotion classification (Matei's cross-lingual study).

``dataset_name`` lists the tasks: the target first, then the source, then any auxiliary tasks. By default: target
RED v1 (Romanian tweets, 5 emotions); source TweetEval emotion (English tweets, its classes mapped onto RED v1's by
``source_label_map``); auxiliary SST-2 (English sentiment). Each may also be your own csv / tsv / json / jsonl /
parquet file or folder of split files (``text_column``, ``label_column``, one value or one per task), a
``save_to_disk`` folder or a Hub id. Variants, each reported on the target's test split (its validation split if it
has none, said in the report; accuracy, macro P/R/F1):

1. ``target_only``: the encoder fine-tuned on the target data alone (``num_train_epochs``).
2. ``gradual``: gradual fine-tuning (Xu et al. 2021): one stage per entry of ``stage_shares`` (the share of source
   examples in the stage's mix, falling to 0), ``stage_epochs`` each, every stage starting from the previous one.
3. ``adversarial``: the same stages plus an ADAN-style language discriminator behind a gradient-reversal layer
   (``adversarial_weight``, ``reversal_scale``, ``reversal_schedule``; ``AdversarialTrainer``); target-only stages
   have no second language and train without it.
4. ``mtkd``: born-again multi-task distillation with teacher annealing (BAM, Clark et al. 2019; another method with
   ``--annealing``): single-task teachers
   (the last cross-lingual model above for the target, a fine-tuned model per other task) teach a multi-task student of
   the same size (one encoder, one head per task), λ going 0 -> 1; ``born_again_generations`` > 1 distils each further
   generation from the previous multi-task one. Reported per task.

Every stage lives in ``<output_dir>/<stage>/`` with a fingerprint of its settings and data; reruns reuse finished
stages. The paper's backbone is ``dumitrescustefan/bert-base-romanian-cased-v1`` (``--base`` on a machine with the
Hub); the default here is the packaged all-MiniLM-L6-v2, an English model whose WordPiece vocabulary splits Romanian
words into many pieces (the pipeline prints how many), so absolute scores are low and only the comparison between
variants is meaningful.

Usage (a paper pipeline; one cross-lingual distillation run of a single method is ``recipes/crosslingual.py``):

    # quick, subsampled, on a 2-core CPU
    accelerate launch --num_processes 1 --num_cpu_threads_per_process 2 \\
        -m distil_trainers.papers.crosslingual_pipeline \\
        --config recipes/configs/crosslingual_pipeline_quick.yaml

    # your own target data (a csv with text,label; its classes are the target classes) and the default source
    python -m distil_trainers.papers.crosslingual_pipeline --config recipes/configs/crosslingual_pipeline_quick.yaml \\
        --dataset_name my_ro.csv tweeteval_emotion sst2 --output_dir runs/crosslingual_my_data

    # the paper's Romanian BERT (needs the Hub), full data
    accelerate launch -m distil_trainers.papers.crosslingual_pipeline \\
        --config recipes/configs/crosslingual_pipeline_quick.yaml \\
        --base dumitrescustefan/bert-base-romanian-cased-v1 --max_train_samples null --max_eval_samples null
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
from trl import TrlParser

from distil_trainers import AnnealingTrainer, MultiTaskModel
from distil_trainers.cards import card_context, datasets_of, hub_id_of, rows_to_card_metrics
from distil_trainers.data import DatasetArguments
from distil_trainers.data.processing import MultiTokenizerCollator
from distil_trainers.hub import push_recipe_models, split_push_argument
from distil_trainers.models import resolve_model_name_or_path
from distil_trainers.models.discriminator import LANGUAGE_COLUMN
from distil_trainers.models.routed import TaskRoutedTeacher
from distil_trainers.papers.crosslingual import (
    GradualMixSchedule,
    build_gradual_stages,
    map_label_names,
    stage_sizes_note,
)
from distil_trainers.papers.workflow import (
    TaskData,
    TaskSuite,
    build_classifier,
    count_parameters,
    data_fingerprint,
    describe_report_splits,
    evaluate_model,
    finetune_teacher,
    fingerprint,
    finish_stage,
    load_tasks,
    main_process_only,
    report_split_name,
    results_table,
    stage_arguments,
    start_stage,
    tokenize_suite,
    train_or_resume,
    training_fingerprint,
)
from distil_trainers.trainers.adversarial import AdversarialArguments, AdversarialTrainer

logger = logging.getLogger(__name__)

VARIANTS = ("target_only", "gradual", "adversarial", "mtkd")
LABELS = {
    "target_only": "target only",
    "gradual": "+ gradual fine-tuning",
    "adversarial": "+ gradual + adversarial",
}


DEFAULT_DATASETS = ["redv1", "tweeteval_emotion", "sst2"]


@dataclass
class RecipeArguments(DatasetArguments):
    dataset_name: list[str] = field(
        default_factory=lambda: list(DEFAULT_DATASETS),
        metadata={"help": "The tasks, target first, then source, then auxiliary tasks of the multi-task (MTKD) "
                          "model: registered names (distil_trainers.data.list_datasets()), csv / tsv / json / jsonl / "
                          "parquet files, folders of split files, save_to_disk folders or Hub ids."},
    )
    target_task: str | None = field(
        default=None, metadata={"help": "Deprecated (removed in the next release): the first --dataset_name."}
    )
    source_task: str | None = field(
        default=None, metadata={"help": "Deprecated (removed in the next release): the second --dataset_name."}
    )
    source_label_map: dict | str | None = field(
        default='{"anger": "anger", "joy": "joy", "optimism": "joy", "sadness": "sadness"}',
        metadata={"help": "Source class -> target class (null drops the class), a JSON string on the command line."},
    )
    auxiliary_tasks: list[str] | None = field(
        default=None,
        metadata={"help": "Deprecated (removed in the next release): --dataset_name after the first two."},
    )
    deprecated_flags = ("target_task", "source_task", "auxiliary_tasks")
    variants: list[str] = field(
        default_factory=lambda: list(VARIANTS), metadata={"help": f"Variants, from {VARIANTS}."}
    )
    stage_shares: list[float] = field(
        default_factory=lambda: [0.5, 0.25, 0.0],
        metadata={
            "help": "Gradual fine-tuning: share of source examples in each stage's mix (non-increasing, last 0)."
        },
    )
    stage_epochs: float = field(default=1.0, metadata={"help": "Epochs per gradual stage."})
    base: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={
            "help": "Pretrained encoder of every model (the paper: dumitrescustefan/bert-base-romanian-cased-v1)."
        },
    )
    teacher_epochs: float = field(default=2.0, metadata={"help": "Epochs of the single-task teachers of other tasks."})
    mtkd_epochs: float = field(default=2.0, metadata={"help": "Epochs of each multi-task (MTKD) student generation."})
    born_again_generations: int = field(default=1, metadata={"help": "Multi-task student generations (>= 1)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Subsample each task's train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Subsample validation and test splits."})

    def __post_init__(self):
        given = [flag for flag in self.deprecated_flags if getattr(self, flag) is not None]
        if given:
            current = list(self.dataset_name) if isinstance(self.dataset_name, list) else [self.dataset_name]
            current += DEFAULT_DATASETS[len(current):2]  # a target and a source to fill in
            names = [self.target_task or current[0], self.source_task or current[1],
                     *(current[2:] if self.auxiliary_tasks is None else self.auxiliary_tasks)]  # fmt: skip
            self.take_deprecated(given, names, DEFAULT_DATASETS)
        super().__post_init__()
        if len(self.dataset_name) < 2:
            raise ValueError(f"dataset_name needs a target and a source dataset, got {self.dataset_name}.")
        if isinstance(self.source_label_map, str):
            self.source_label_map = json.loads(self.source_label_map)
        if not self.source_label_map:
            raise ValueError("source_label_map is required: where each source class goes among the target classes.")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise ValueError(f"variants must be a non-empty subset of {VARIANTS}, got {self.variants}.")
        GradualMixSchedule(tuple(self.stage_shares))  # checked now, before any data is loaded
        if self.born_again_generations < 1:
            raise ValueError(f"born_again_generations must be >= 1, got {self.born_again_generations}.")


def pieces_per_word(tokenizer, texts: list[str]) -> float:
    words = sum(len(t.split()) for t in texts)
    pieces = sum(len(tokenizer.tokenize(t)) for t in texts)
    return pieces / max(words, 1)


def staged_training(
    name: str,
    recipe: RecipeArguments,
    args: AdversarialArguments,
    stages,
    suite: TaskSuite,
    tokenizer,
    output_dir: Path,
    adversarial_weight: float,
    key_parts,
):
    """Train the stages one after the other, each from the previous stage's weights; finished stages are reused."""
    model = None
    key = key_parts
    for index, stage in enumerate(stages, 1):
        stage_dir = output_dir / name / f"stage{index}"
        if LANGUAGE_COLUMN in stage.column_names and len(set(stage[LANGUAGE_COLUMN][:])) < 2:
            stage = stage.remove_columns(LANGUAGE_COLUMN)  # one language only: nothing to discriminate
        stage_args = dataclasses.replace(
            args,
            output_dir=str(stage_dir),
            num_train_epochs=recipe.stage_epochs,
            adversarial_weight=adversarial_weight if LANGUAGE_COLUMN in stage.column_names else 0.0,
        )
        key = fingerprint(name, index, key, training_fingerprint(stage_args), list(stage["id"][:]))
        if start_stage(args, stage_dir, key):
            print(f"[{name}] reusing stage {index} from {stage_dir}")
            model = AutoModelForSequenceClassification.from_pretrained(stage_dir)
            continue
        if model is None:
            model = build_classifier(resolve_model_name_or_path(recipe.base), suite)
        trainer = AdversarialTrainer(model=model, args=stage_args, train_dataset=stage, processing_class=tokenizer)
        train_or_resume(trainer, stage_dir)
        finish_stage(trainer, stage_dir, {"variant": name, "stage": index})
        model = trainer.model
    return model


def main(recipe: RecipeArguments, args: AdversarialArguments) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    # with --push_to_hub only the run's final model is pushed, once, after the report (no stage pushes while training)
    args, push = split_push_argument(args)
    set_seed(args.seed)
    start = time.time()
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    base = resolve_model_name_or_path(recipe.base)
    tokenizer = AutoTokenizer.from_pretrained(base)

    everything = load_tasks(
        recipe.task_specs(), recipe.data_dir, args.seed, recipe.max_train_samples, recipe.max_eval_samples,
        validation_size=recipe.validation_size,
    )
    target, source = everything.tasks[0], everything.tasks[1]  # the order of dataset_name
    for task in everything.tasks:
        missing = "" if task.has_test else "; no test split: the report uses the validation split"
        print(f"[data] {task.name}: { ({s: len(d) for s, d in task.splits.items()}) }; classes {task.label_names}"
              f"{missing}")
    report_splits = everything.report_splits()
    source_mapped = map_label_names(source.splits, recipe.source_label_map, target.label_names)
    ro_ppw = pieces_per_word(tokenizer, list(target.splits["train"]["text"][:500]))
    en_ppw = pieces_per_word(tokenizer, list(source.splits["train"]["text"][:500]))
    vocab_note = f"tokenizer pieces per word: target {ro_ppw:.2f}, source {en_ppw:.2f}"
    print(f"[vocabulary] {vocab_note}")

    target_suite = tokenize_suite(TaskSuite(tasks=[target]), {"": tokenizer}, args.max_length)
    source_suite = tokenize_suite(
        TaskSuite(tasks=[TaskData(source.name, source_mapped, target.label_names, source.source)]),
        {"": tokenizer},
        args.max_length,
    )
    models = {}
    folders = {}  # where each variant's final model is saved
    # ---- 1. target only ----
    if "target_only" in recipe.variants:
        stage_args = stage_arguments(
            args, output_dir / "target_only", num_train_epochs=args.num_train_epochs, learning_rate=args.learning_rate
        )
        models["target_only"] = finetune_teacher(target_suite, base, tokenizer, output_dir / "target_only", stage_args)
        folders["target_only"] = output_dir / "target_only"

    # ---- 2. / 3. gradual fine-tuning, without and with the language discriminator ----
    stages = build_gradual_stages(
        source_suite.tokenized[source.name]["train"],
        target_suite.tokenized[target.name]["train"],
        recipe.stage_shares,
        seed=args.seed,
    )
    stage_note = stage_sizes_note(stages)
    shares = [(n["source"], n["target"], round(n["source_share"], 2)) for n in stage_note]
    print(f"[gradual] stages (source, target, share): {shares}")
    key_parts = (recipe.base, args.max_length, recipe.source_label_map, data_fingerprint(everything))
    for variant, weight in (("gradual", 0.0), ("adversarial", args.adversarial_weight)):
        if variant in recipe.variants:
            models[variant] = staged_training(
                variant, recipe, args, stages, target_suite, tokenizer, output_dir, weight, key_parts
            )
            folders[variant] = output_dir / variant / f"stage{len(stages)}"

    rows = []
    for variant, model in models.items():
        metrics = evaluate_model(
            model,
            target_suite,
            report_splits[target.name],
            tokenizer,
            batch_size=args.per_device_eval_batch_size,
            output_dir=str(output_dir / "eval"),
        )[target.name]
        rows.append({"model": LABELS[variant], "params": count_parameters(model), "task": target.name, **metrics})
    print(results_table(rows, metrics=("accuracy", "precision_macro", "recall_macro", "f1_macro")))

    # ---- 4. MTKD: single-task teachers -> born-again multi-task students with teacher annealing ----
    if "mtkd" in recipe.variants:
        if not models:
            raise ValueError("mtkd needs a target-task teacher: include another variant before it.")
        target_teacher_variant = list(models)[-1]
        teachers = {target.name: models[target_teacher_variant]}
        for task in everything.tasks[1:]:
            suite = tokenize_suite(TaskSuite(tasks=[task]), {"": tokenizer}, args.max_length)
            teacher_args = stage_arguments(
                args, output_dir / f"teacher_{task.name}", num_train_epochs=recipe.teacher_epochs,
                learning_rate=args.learning_rate,
            )
            teachers[task.name] = finetune_teacher(
                suite, base, tokenizer, output_dir / f"teacher_{task.name}", teacher_args
            )
        multi = tokenize_suite(everything, {"": tokenizer}, args.max_length)
        teacher = TaskRoutedTeacher({name: teachers[name] for name in multi.names})
        key = fingerprint("mtkd", key_parts, target_teacher_variant, recipe.mtkd_epochs, training_fingerprint(args))
        for generation in range(1, recipe.born_again_generations + 1):
            gen_dir = output_dir / "mtkd" / f"g{generation}"
            gen_args = dataclasses.replace(
                args,
                output_dir=str(gen_dir),
                num_train_epochs=recipe.mtkd_epochs,
                adversarial_weight=0.0,  # the method is --annealing (default bam, the paper's), never overwritten
            )
            key = fingerprint(key, generation)
            if start_stage(args, gen_dir, key):
                print(f"[mtkd] reusing generation {generation} from {gen_dir}")
                student = MultiTaskModel.from_pretrained(gen_dir)
            else:
                student = build_classifier(base, multi)  # born-again: the teachers' size
                trainer = AnnealingTrainer(
                    model=student,
                    teacher_model=teacher,
                    args=gen_args,
                    train_dataset=multi.train_dataset(),
                    processing_class=tokenizer,
                    data_collator=MultiTokenizerCollator({"": tokenizer}),
                )
                train_or_resume(trainer, gen_dir)
                finish_stage(trainer, gen_dir, {"method": args.annealing, "generation": generation,
                                                "tasks": multi.label_spec()})
                student = trainer.model
            metrics = evaluate_model(
                student,
                multi,
                report_splits,
                tokenizer,
                batch_size=args.per_device_eval_batch_size,
                output_dir=str(output_dir / "eval"),
            )
            for task_name in multi.names:
                rows.append(
                    {
                        "model": f"+ MTKD (born-again g{generation}, multi-task)",
                        "params": count_parameters(student),
                        "task": task_name,
                        **metrics[task_name],
                    }
                )
            teacher = student  # the next generation learns from this one
            models["mtkd"], folders["mtkd"] = student, gen_dir
            mtkd_teachers = f"{target_teacher_variant} (RED target), " + ", ".join(
                f"single-task {name}" for name in multi.names[1:]
            )
            mtkd = (gen_args, multi, f"+ MTKD (born-again g{generation}, multi-task)",
                    f"generation {generation - 1}" if generation > 1 else mtkd_teachers)  # fmt: skip
        for task in everything.tasks[1:]:
            suite = tokenize_suite(TaskSuite(tasks=[task]), {"": tokenizer}, args.max_length)
            metrics = evaluate_model(
                teachers[task.name],
                suite,
                report_splits[task.name],
                tokenizer,
                batch_size=args.per_device_eval_batch_size,
                output_dir=str(output_dir / "eval"),
            )
            rows.append(
                {
                    "model": "single-task teacher",
                    "params": count_parameters(teachers[task.name]),
                    "task": task.name,
                    **metrics[task.name],
                }
            )

    wall = (time.time() - start) / 60
    table = results_table(rows, metrics=("accuracy", "precision_macro", "recall_macro", "f1_macro"))
    header = (
        f"Cross-lingual emotion classification, target {target.name}; {describe_report_splits(report_splits)}"
        f"{' (subsampled)' if recipe.max_eval_samples else ''}; base {recipe.base}; {vocab_note}; "
        f"gradual stages (source, target): {[(n['source'], n['target']) for n in stage_note]}; "
        f"adversarial_weight {args.adversarial_weight}; wall time {wall:.1f} min"
    )
    summary = {
        "recipe": dataclasses.asdict(recipe),
        "splits": report_splits,
        "rows": rows,
        "stages": stage_note,
        "wall_minutes": wall,
        "pieces_per_word": {"target": ro_ppw, "source": en_ppw},
    }
    with main_process_only(args) as writer:
        if writer:
            print("\n" + header + "\n\n" + table + "\n")
            (output_dir / "results.md").write_text(header + "\n\n" + table + "\n")
            (output_dir / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    if push:
        final = list(models)[-1]
        if final == "mtkd":
            gen_args, multi, label, teacher_text = mtkd
            card = card_context(
                models[final], gen_args, method=gen_args.annealing, teacher=teacher_text, datasets=datasets_of(multi),
                metrics=rows_to_card_metrics(rows, label, split=report_split_name(report_splits),
                                             compare=("single-task teacher",)),
                base_model=hub_id_of(recipe.base),
            )  # fmt: skip
        else:
            others = tuple(LABELS[v] for v in models if v != final)
            card = card_context(
                models[final], args, method="finetune", datasets=datasets_of(target_suite),
                metrics=rows_to_card_metrics(rows, LABELS[final], split=report_splits[target.name], compare=others),
                base_model=hub_id_of(recipe.base),
            )  # fmt: skip
        push_recipe_models(args, {None: folders[final]}, {None: card})
    return {"rows": rows, "stages": stage_note}


if __name__ == "__main__":
    parser = TrlParser((RecipeArguments, AdversarialArguments))
    recipe_args, training_args = parser.parse_args_and_config()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(recipe_args, training_args)
