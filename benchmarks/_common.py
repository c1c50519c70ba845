"""What the benchmark scripts share: preparing one teacher / student / dataset on disk that every contender reads,
timing training steps the same way for every library, peak memory, macro-F1, and running contenders round-robin in
child processes (each contender's peak RSS is its own process's)."""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
RESULT_PREFIX = "BENCH_RESULT "


# --------------------------------------------------------------------------------------------------------------------
# Setup written once, read by every contender
# --------------------------------------------------------------------------------------------------------------------


def _tiny_config(layers: int, hidden: int, num_labels: int = 3):
    from transformers import BertConfig

    return BertConfig(vocab_size=200, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                      intermediate_size=2 * hidden, max_position_embeddings=128, num_labels=num_labels)


def prepare(setup: str, workdir: Path, n_train: int, n_eval: int, max_length: int, teacher: str | None = None,
            seed: int = 42) -> dict[str, Any]:
    """Write ``train``/``eval`` datasets (padded to ``max_length``: every contender sees the same shapes), the
    ``teacher`` and the initial ``student`` under ``workdir``; return the spec the children read."""
    import datasets
    from transformers import BertForSequenceClassification

    workdir.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {"setup": setup, "workdir": str(workdir), "max_length": max_length, "seed": seed}
    if setup == "tiny":
        g = torch.Generator().manual_seed(seed)
        splits = {}
        for name, n in (("train", n_train), ("eval", n_eval)):
            ids = torch.randint(4, 200, (n, max_length), generator=g)
            labels = (ids[:, 0] % 3).tolist()
            splits[name] = datasets.Dataset.from_dict({
                "id": [f"{name}{i}" for i in range(n)], "input_ids": ids.tolist(),
                "attention_mask": [[1] * max_length] * n, "labels": labels,
            })
        torch.manual_seed(seed)
        BertForSequenceClassification(_tiny_config(4, 64)).save_pretrained(workdir / "teacher")
        torch.manual_seed(seed + 1)
        BertForSequenceClassification(_tiny_config(2, 32)).save_pretrained(workdir / "student")
        spec["dataset"] = "random tokens (label = first token mod 3)"
        spec["teacher_desc"], spec["student_desc"] = "BERT 4 layers, hidden 64", "BERT 2 layers, hidden 32"
    elif setup == "minilm":
        from transformers import AutoTokenizer

        from distil_trainers.models.paths import resolve_model_name_or_path
        from distil_trainers.papers.workflow import build_classifier, load_tasks

        base = resolve_model_name_or_path(MINILM)
        suite = load_tasks(["davidson"], seed=seed, max_train_samples=n_train, max_eval_samples=n_eval)
        tokenizer = AutoTokenizer.from_pretrained(base)

        def encode(batch):
            return tokenizer(batch["text"], truncation=True, max_length=max_length, padding="max_length")

        raw = suite.tasks[0].splits
        splits = {
            name: raw[split].map(encode, batched=True, remove_columns=["text"]).rename_column("label", "labels")
            for name, split in (("train", "train"), ("eval", "validation"))
        }
        if teacher:
            shutil.copytree(teacher, workdir / "teacher", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("checkpoint-*", "*.bin", "optimizer*"))
            spec["teacher_desc"] = f"all-MiniLM-L6-v2 fine-tuned on Davidson ({teacher})"
        else:
            build_classifier(base, suite).save_pretrained(workdir / "teacher")
            spec["teacher_desc"] = "all-MiniLM-L6-v2 with an untrained classification head"
        build_classifier(base, suite, layers=[0, 2, 4]).save_pretrained(workdir / "student")
        tokenizer.save_pretrained(workdir / "student")
        spec["student_desc"] = "all-MiniLM-L6-v2 layers 0, 2, 4"
        spec["dataset"] = f"Davidson (seed {seed}): {n_train} train / {n_eval} validation examples"
    else:
        raise ValueError(f"setup must be 'tiny' or 'minilm', got {setup!r}")
    for name, ds in splits.items():
        ds = ds.cast_column("labels", datasets.Value("int64"))
        ds.save_to_disk(str(workdir / name))
    (workdir / "spec.json").write_text(json.dumps(spec, indent=1))
    return spec


def load_split(spec: dict[str, Any], name: str):
    import datasets

    return datasets.load_from_disk(str(Path(spec["workdir"]) / name))


def load_model(spec: dict[str, Any], which: str):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(Path(spec["workdir"]) / which)


def tensor_batches(ds, batch_size: int, seed: int, steps: int, with_ids: bool = False):
    """``steps`` shuffled batches of tensors (input_ids, attention_mask, labels), the same for every contender."""
    g = torch.Generator().manual_seed(seed)
    columns = ["input_ids", "attention_mask", "labels"]
    data = {c: torch.tensor(ds[c][:]) for c in columns}
    out, order = [], torch.empty(0, dtype=torch.long)
    while len(out) < steps:
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(ds), generator=g)])
        idx, order = order[:batch_size], order[batch_size:]
        out.append({c: data[c][idx] for c in columns})
    return out


# --------------------------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------------------------


class StepTimer:
    """Time between consecutive optimizer steps, measured identically whatever library runs the loop: a global
    optimizer step hook that follows the first optimizer that steps (with one optimizer per student, the first
    student's, i.e. once per batch)."""

    def __init__(self):
        self.stamps: list[float] = []
        self.cpu_stamps: list[float] = []
        self._owner: int | None = None
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.handle = register_optimizer_step_post_hook(self._hook)

    def _hook(self, optimizer, args, kwargs):
        if self._owner is None:
            self._owner = id(optimizer)
        if id(optimizer) == self._owner:
            self.stamps.append(time.perf_counter())
            self.cpu_stamps.append(time.process_time())

    def step_seconds(self, warmup: int) -> list[float]:
        """Wall-clock seconds of each step after ``warmup``."""
        diffs = [b - a for a, b in zip(self.stamps, self.stamps[1:])]
        return diffs[warmup:]

    def cpu_seconds(self, warmup: int) -> list[float]:
        """CPU seconds of this process in each step after ``warmup``: the work done, whatever share of the cores the
        process got (on a shared machine the wall time mostly measures the share)."""
        diffs = [b - a for a, b in zip(self.cpu_stamps, self.cpu_stamps[1:])]
        return diffs[warmup:]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@torch.no_grad()
def macro_f1(model: torch.nn.Module, ds, batch_size: int = 128) -> float:
    from sklearn.metrics import f1_score

    model.eval()
    preds, labels = [], []
    for start in range(0, len(ds), batch_size):
        rows = ds[start : start + batch_size]
        logits = model(input_ids=torch.tensor(rows["input_ids"]),
                       attention_mask=torch.tensor(rows["attention_mask"])).logits
        preds += logits.argmax(-1).tolist()
        labels += rows["labels"]
    return float(f1_score(labels, preds, average="macro"))


def emit(result: dict[str, Any]) -> None:
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def versions(packages: list[str]) -> dict[str, str]:
    out = {"python": platform.python_version(), "cores": str(os.cpu_count())}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


# --------------------------------------------------------------------------------------------------------------------
# Running contenders round-robin
# --------------------------------------------------------------------------------------------------------------------


def run_child(script: Path, name: str, spec_path: Path, extra: list[str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(script), "--child", name, "--spec", str(spec_path), *extra]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        return {"name": name, "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"name": name, "error": f"exit {proc.returncode}: " + " | ".join(tail)}


def round_robin(script: Path, names: list[str], spec_path: Path, reps: int, extra: list[str],
                timeout: float = 900.0) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for rep in range(reps):
        for name in names:
            start = time.perf_counter()
            res = run_child(script, name, spec_path, extra, timeout)
            status = res.get("error") or f"{res.get('step_s', float('nan')) * 1000:.1f} ms/step"
            print(f"  rep {rep + 1}/{reps} {name:<22} {status} ({time.perf_counter() - start:.0f} s)", flush=True)
            results[name].append(res)
    return results


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if key in r and r[key] is not None]
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------------------------------------------------
# Machine facts, result files and RESULTS.md sections (shared by the resumable benchmarks)
# --------------------------------------------------------------------------------------------------------------------


def _cpuinfo() -> list[str]:
    """The lines of ``/proc/cpuinfo`` (none where there is no such file)."""
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where there is no such file)."""
    flags: set[str] = set()
    for line in _cpuinfo():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return flags


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``, else :func:`platform.processor`; None when neither says)."""
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() or None
    return platform.processor() or None


def bf16_support() -> dict[str, Any]:
    """Whether bf16 autocast training makes sense on this machine's CPU, and why: ``supported`` is true when the CPU
    has native bf16 instructions (``avx512_bf16`` or ``amx_bf16``) and a bf16 autocast matmul runs; without them
    autocast still runs, emulated, and is slower than fp32. A CUDA device counts as supported."""
    flags = cpu_flags()
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast_ok = (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16
    except (RuntimeError, TypeError):
        autocast_ok = False
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        capability = "unknown"
    cuda = torch.cuda.is_available()
    return {
        "supported": bool(cuda or (native and autocast_ok)),
        "native_bf16_instructions": native,
        "autocast_runs": autocast_ok,
        "torch_cpu_capability": capability,
        "cuda": cuda,
    }


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file renamed over it: a reader never sees half a file,
    even when the writer is stopped mid-way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def md_row(*cells: Any) -> str:
    """One Markdown table row, ``|`` in a cell escaped."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def replace_markdown_section(path: Path, heading: str, body: str) -> str:
    """Put ``body`` under the level-2 ``heading`` (``"## Full-data results"``) of the Markdown file ``path``: the
    section (up to the next level-2 heading) is replaced when there is one, else appended at the end. Returns the new
    text (also written)."""
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading.strip()), None)
    section = [heading.strip(), "", *body.strip("\n").splitlines(), ""]
    if start is None:
        new = lines + ([""] if lines and lines[-1].strip() else []) + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = lines[:start] + section + lines[end:]
    result = "\n".join(new).rstrip("\n") + "\n"
    path.write_text(result)
    return result


def replace_marked_section(path: Path, start: str, end: str, section: str) -> None:
    """Write ``section`` between the ``start`` and ``end`` marker lines of the Markdown file ``path`` (replacing
    what was there), or append it with its markers when the file has none."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{start}\n{section.rstrip()}\n{end}\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        text = before + block + (("\n" + after) if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
