"""Generate teacher rationales for a registered dataset split and print the teacher's report.

Examples::

    # the packaged SmolLM2-135M-Instruct GGUF through llama.cpp, 50 Davidson test posts
    python -m distil_trainers.teachers.rationales --dataset davidson --split test --max-samples 50 \\
        --backend llamacpp --cache runs/rationales/davidson_test_smollm2.jsonl

    # the same file dequantized by transformers, batches of 8 with left padding
    python -m distil_trainers.teachers.rationales --dataset davidson --split test --max-samples 50 \\
        --backend transformers --cache runs/rationales/davidson_test_smollm2_hf.jsonl

    # a served teacher (vLLM: `vllm serve meta-llama/Llama-3.3-70B-Instruct`) through its OpenAI-compatible API
    python -m distil_trainers.teachers.rationales --dataset davidson --split train --backend openai \\
        --base-url http://127.0.0.1:8000/v1 --concurrency 16 --cache runs/rationales/davidson_train_llama70b.jsonl

A rerun with the same ``--cache`` resumes where the last run stopped. Failed requests and answers cut at
``--max-new-tokens`` are recorded in the cache (the report counts them); ``--retry_failed`` asks again for exactly
those.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .arguments import TeacherArguments
from .generation import RationaleCache, cache_fingerprint, generate_rationales, teacher_report


def _json(text: str | None):
    return json.loads(text) if text else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distil_trainers.teachers.rationales",
                                description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="davidson", help="a name from distil_trainers.data.list_datasets()")
    p.add_argument("--split", default="test", help="split to label")
    p.add_argument("--max-samples", type=int, default=None, help="stratified subsample of the split (seeded)")
    p.add_argument("--seed", type=int, default=42, help="seed of the dataset split and subsample")
    p.add_argument("--backend", choices=("llamacpp", "transformers", "openai"), default="llamacpp")
    p.add_argument(
        "--model",
        default=None,
        help="GGUF file (llamacpp), Hub id / directory / .gguf file (transformers) or served model name (openai); "
        "default: the packaged SmolLM2-135M-Instruct GGUF",
    )
    p.add_argument("--base-url", default=None, help="OpenAI-compatible API root including /v1 (openai backend)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (openai backend)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request (openai backend)")
    p.add_argument("--max-retries", type=int, default=3, help="retries of a request (openai backend)")
    p.add_argument("--sampling", type=_json, default=None,
                   help='more request fields that change the answers, JSON (openai backend), e.g. \'{"seed": 0}\'')
    p.add_argument("--load-in-4bit", action="store_true", help="bitsandbytes NF4 loading (transformers, GPU)")
    p.add_argument("--dtype", default=None, help="weights dtype, or 4-bit compute dtype (transformers)")
    p.add_argument("--device-map", default=None, help="from_pretrained device_map: auto, 0, cpu, ... (transformers)")
    p.add_argument("--max-memory", type=_json, default=None,
                   help='from_pretrained max_memory, JSON, e.g. \'{"0": "20GiB", "cpu": "60GiB"}\' (transformers)')
    p.add_argument("--n-ctx", type=int, default=4096, help="context length (llamacpp)")
    p.add_argument("--task-description", default=None, help="first part of the instructions")
    p.add_argument("--cache", required=True, help="JSONL cache file (resumed when it exists)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--retry_failed", "--retry-failed", dest="retry_failed", action="store_true",
                   help="ask again for the posts whose request failed or whose answer was cut at --max-new-tokens")
    p.add_argument("--output", default=None, help="save the rationale dataset here (save_to_disk)")
    p.add_argument("--report-json", default=None, help="write the report (with tokens/s) to this JSON file")
    return p


def teacher_arguments(args: argparse.Namespace) -> TeacherArguments:
    """The command line as :class:`~distil_trainers.teachers.rationales.arguments.TeacherArguments` (checked there)."""
    if args.backend == "openai" and not args.base_url:
        raise SystemExit("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
    model = args.model
    if model is None and args.backend == "transformers":  # the packaged GGUF, dequantized by transformers
        from .backends import packaged_smollm2_gguf

        model = packaged_smollm2_gguf()
    return TeacherArguments(
        teacher_backend=args.backend, teacher_model=model, teacher_base_url=args.base_url,
        teacher_concurrency=args.concurrency, teacher_timeout=args.timeout, teacher_max_retries=args.max_retries,
        teacher_sampling=args.sampling, teacher_temperature=args.temperature, teacher_load_in_4bit=args.load_in_4bit,
        teacher_dtype=args.dtype, teacher_device_map=args.device_map, teacher_max_memory=args.max_memory,
        teacher_max_new_tokens=args.max_new_tokens, teacher_batch_size=args.batch_size, teacher_n_ctx=args.n_ctx,
        teacher_task_description=args.task_description, retry_failed=args.retry_failed,
    )  # fmt: skip


def make_backend(args: argparse.Namespace):
    return teacher_arguments(args).build_backend()


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    teacher = teacher_arguments(args)
    from ...data import load_dataset_by_name

    limit = {args.split: args.max_samples} if args.max_samples else None
    split = load_dataset_by_name(args.dataset, seed=args.seed, max_samples_per_split=limit)[args.split]
    names = split.features["label"].names
    prompt = teacher.prompt(names)
    backend = teacher.build_backend()
    rationales = generate_rationales(split, backend, prompt, args.cache, **teacher.generation_kwargs())
    report = teacher_report(rationales, names)
    header = cache_fingerprint(prompt, backend, args.max_new_tokens, args.temperature)
    records = RationaleCache(args.cache, header).records  # one record per id: the latest answer after retries
    wanted = set(rationales["id"][:])
    tokens = sum(r["num_tokens"] for i, r in records.items() if i in wanted)
    seconds = sum(r["seconds"] for i, r in records.items() if i in wanted)
    report.update(
        teacher=backend.describe(),
        dataset=f"{args.dataset}/{args.split}",
        generated_tokens=tokens,
        generation_seconds=round(seconds, 2),
        tokens_per_second=round(tokens / seconds, 1) if seconds else None,
    )
    if args.output:
        rationales.save_to_disk(args.output)
    text = json.dumps(report, indent=2)
    print(text)
    if args.report_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.report_json)), exist_ok=True)
        with open(args.report_json, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
