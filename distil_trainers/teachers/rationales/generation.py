"""Resumable teacher rationale generation and the teacher's report card.

:func:`generate_rationales` asks a :class:`~distil_trainers.teachers.rationales.backends.TeacherBackend` for an explanation and
a label for every example of a dataset and returns a :class:`datasets.Dataset` with the columns ``id``, ``text``,
``label`` (gold), ``teacher_label`` (-1 when unparseable), ``rationale`` ("" when unparseable), ``teacher_agrees``,
``parsed`` and ``raw_output``.

Every finished batch is appended to a JSONL cache (one record per example id, flushed and fsync'ed), so an interrupted
run loses at most the batch in progress, and a rerun generates only the ids that are not in the cache yet. The cache
keeps raw answers; parsing happens when the dataset is built, so a better parser needs no new generation.

The first line of the cache is a header with a fingerprint of everything that changes the answers: the prompt
(instructions, few-shot examples, label names, synonyms), the backend and its model, ``max_new_tokens`` and the
temperature. Opening a cache whose fingerprint differs raises :class:`CacheMismatchError`: pass another
``cache_path`` (or delete the file) to generate with another teacher or prompt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from tqdm.auto import tqdm

from ...metrics import classification_metrics
from .backends import TeacherBackend
from .prompts import RationalePrompt

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_VERSION",
    "CacheMismatchError",
    "RATIONALE_FEATURES",
    "RationaleCache",
    "cache_fingerprint",
    "generate_rationales",
    "teacher_report",
]

CACHE_VERSION = 1

RATIONALE_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "text": datasets.Value("string"),
        "label": datasets.Value("int64"),
        "teacher_label": datasets.Value("int64"),
        "rationale": datasets.Value("string"),
        "teacher_agrees": datasets.Value("bool"),
        "parsed": datasets.Value("bool"),
        "raw_output": datasets.Value("string"),
    }
)
"""The columns (and types) of the dataset returned by :func:`generate_rationales`, in order."""


class CacheMismatchError(ValueError):
    """The cache file was written for another prompt, teacher or generation setting (or is not a cache)."""


def _text_digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def cache_fingerprint(
    prompt: RationalePrompt, backend: TeacherBackend, max_new_tokens: int, temperature: float
) -> dict:
    """The header that identifies a cache: prompt, backend description and generation settings, and their hash."""
    settings = {
        "prompt": prompt.to_dict(),
        "teacher": backend.describe(),
        "max_new_tokens": int(max_new_tokens),
        "temperature": float(temperature),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()
    return {"cache_version": CACHE_VERSION, "fingerprint": digest, **settings}


class RationaleCache:
    """Append-only JSONL file of teacher answers keyed by example id.

    Line 1 is ``{"header": {...}}``; every other line is a record ``{"id", "text_sha1", "raw_output", "num_tokens",
    "seconds"}``. A last line cut short by a crash is dropped (and cut from the file before anything is appended).

    Args:
        path: the ``.jsonl`` file (its directory is created).
        header: the expected header (see :func:`cache_fingerprint`); a file with another fingerprint raises
            :class:`CacheMismatchError`.
    """

    def __init__(self, path: str | os.PathLike, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.header = header
        self.records: dict[str, dict[str, Any]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._load()
        else:
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(json.dumps({"header": header}, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def _load(self) -> None:
        with open(self.path, "rb") as f:
            data = f.read()
        pos, good_end, header_seen, line_no = 0, 0, False, 0
        while pos < len(data):
            newline = data.find(b"\n", pos)
            end = len(data) if newline == -1 else newline + 1
            raw = data[pos:end].strip()
            line_no += 1
            if raw:
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    if end == len(data):  # a last line cut short by a crash: the example is generated again
                        logger.warning("%s: dropping a truncated last line (%d bytes)", self.path, len(raw))
                        break
                    raise CacheMismatchError(
                        f"{self.path}: line {line_no} is not valid JSON; the cache is damaged"
                    ) from None
                if not header_seen:
                    self._check_header(obj)
                    header_seen = True
                elif isinstance(obj, dict) and "id" in obj and "raw_output" in obj:
                    self.records.setdefault(str(obj["id"]), obj)
                else:
                    raise CacheMismatchError(f"{self.path}: line {line_no} is not a rationale record")
            good_end, pos = end, end
        if good_end == len(data) and data.endswith(b"\n"):
            return
        with open(self.path, "r+b") as f:  # cut the torn line, end the file with a newline, before any append
            f.truncate(good_end)
            if not header_seen:
                f.seek(0)
                f.truncate(0)
                f.write((json.dumps({"header": self.header}, ensure_ascii=False) + "\n").encode("utf-8"))
            elif not data[:good_end].endswith(b"\n"):
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())

    def _check_header(self, obj: Any) -> None:
        header = obj.get("header") if isinstance(obj, dict) else None
        if not isinstance(header, dict) or "fingerprint" not in header:
            raise CacheMismatchError(f"{self.path} is not a rationale cache (no header on line 1)")
        if header["fingerprint"] != self.header["fingerprint"]:
            changed = [
                k
                for k in ("prompt", "teacher", "max_new_tokens", "temperature")
                if header.get(k) != self.header.get(k)
            ]
            raise CacheMismatchError(
                f"{self.path} was written with a different {', '.join(changed) or 'setting'} "
                f"(cached teacher: {header.get('teacher')}, now: {self.header.get('teacher')}). "
                "Use another cache_path for this prompt/teacher, or delete the file to start over."
            )

    def __contains__(self, example_id: str) -> bool:
        return example_id in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Append records (one line each), then flush and fsync, so they survive a crash of the process."""
        lines = []
        for record in records:
            if record["id"] in self.records:
                continue
            self.records[record["id"]] = record
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        if not lines:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            _lock(f)  # one writer at a time, whatever else appends to this file; released when it is closed
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())


def _lock(file) -> None:
    """An exclusive advisory lock on an open file (POSIX ``flock``; a no-op where it does not exist)."""
    try:
        import fcntl
    except ImportError:  # Windows
        return
    fcntl.flock(file.fileno(), fcntl.LOCK_EX)


@contextlib.contextmanager
def one_writer(cache_path: str | os.PathLike):
    """Hold an exclusive lock on ``<cache_path>.lock`` for the block: of several processes generating into the same
    cache (``accelerate launch`` / ``torchrun`` ranks, two runs sharing a folder), one generates while the others wait,
    then find its answers in the cache and ask the teacher nothing. A file lock rather than a process-group barrier,
    so it composes with any ``main_process_first`` around it. A no-op where ``flock`` does not exist."""
    lock_path = Path(f"{os.fspath(cache_path)}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        _lock(lock)
        yield


def _validate(dataset: datasets.Dataset, id_column: str, text_column: str, label_column: str, prompt: RationalePrompt):
    missing = [c for c in (id_column, text_column, label_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(f"the dataset has no column(s) {missing}; its columns are {dataset.column_names}")
    ids = [str(i) for i in dataset[id_column]]
    if len(set(ids)) != len(ids):
        seen, dupes = set(), []
        for i in ids:
            if i in seen:
                dupes.append(i)
            seen.add(i)
        raise ValueError(
            f"column {id_column!r} must hold unique ids (the cache is keyed by them); repeated: {dupes[:5]}"
        )
    texts = list(dataset[text_column])
    bad = [ids[k] for k, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"column {text_column!r} must hold strings; ids {bad[:5]} do not")
    labels = np.asarray(list(dataset[label_column]))
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"column {label_column!r} must hold integer class ids, got {labels.dtype}")
    n = len(prompt.label_names)
    out_of_range = [ids[k] for k, y in enumerate(labels.tolist()) if not (0 <= y < n or y == -100)]
    if out_of_range:
        raise ValueError(
            f"labels of ids {out_of_range[:5]} are outside 0..{n - 1} (the prompt's labels are {prompt.label_names})"
        )
    features = dataset.features.get(label_column)
    if isinstance(features, datasets.ClassLabel) and len(features.names) != n:
        raise ValueError(f"the dataset has {len(features.names)} classes {features.names} but the prompt {n}")
    return ids, texts, labels.astype(np.int64).tolist()


def generate_rationales(
    dataset: datasets.Dataset,
    backend: TeacherBackend,
    prompt: RationalePrompt,
    cache_path: str | os.PathLike,
    *,
    id_column: str = "id",
    text_column: str = "text",
    label_column: str = "label",
    batch_size: int = 8,
    max_new_tokens: int = 256,
    show_progress: bool = True,
    temperature: float = 0.0,
) -> datasets.Dataset:
    """Teacher label and explanation for every example, resumable through a JSONL cache.

    Args:
        dataset: examples with an id, a text and a gold label id.
        backend: the teacher.
        prompt: the few-shot prompt (its ``label_names`` are the dataset's classes, in id order).
        cache_path: JSONL file that receives every finished example; an existing file is resumed (ids already in it
            are not generated again). A file written with another prompt/teacher/settings raises
            :class:`CacheMismatchError`.
        id_column, text_column, label_column: column names in ``dataset``.
        batch_size: conversations per ``backend.generate`` call (and per cache write).
        max_new_tokens: answer length limit.
        show_progress: tqdm bar over examples with the generated tokens/s.
        temperature: 0 for greedy decoding.

    Under ``accelerate launch`` / ``torchrun`` with several processes, one process generates while the others wait on a
    file lock beside the cache, then read the finished cache (they ask the teacher nothing).

    Returns:
        A dataset in the order of ``dataset`` with columns ``id`` (str), ``text`` (str), ``label`` (int, gold),
        ``teacher_label`` (int, -1 when the answer could not be parsed), ``rationale`` (str, "" when unparseable),
        ``teacher_agrees`` (bool), ``parsed`` (bool), ``raw_output`` (str).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(backend, TeacherBackend):
        raise TypeError(f"backend must be a TeacherBackend, got {type(backend).__name__}")
    ids, texts, labels = _validate(dataset, id_column, text_column, label_column, prompt)
    with one_writer(cache_path):  # several processes: one asks the teacher, the others then read its cache
        return _generate(dataset, backend, prompt, cache_path, ids, texts, labels, batch_size, max_new_tokens,
                         show_progress, temperature)


def _generate(dataset, backend, prompt, cache_path, ids, texts, labels, batch_size, max_new_tokens, show_progress,
              temperature) -> datasets.Dataset:
    cache = RationaleCache(cache_path, cache_fingerprint(prompt, backend, max_new_tokens, temperature))
    for example_id, text in zip(ids, texts):
        record = cache.records.get(example_id)
        if record is not None and record.get("text_sha1") not in (None, _text_digest(text)):
            raise CacheMismatchError(
                f"{cache.path}: id {example_id!r} was cached for a different text; ids must identify the same "
                "example across runs (use another cache_path for another dataset)"
            )
    todo = [k for k, example_id in enumerate(ids) if example_id not in cache]
    if len(todo) < len(ids):
        logger.info("%s: %d of %d examples already generated", cache.path, len(ids) - len(todo), len(ids))

    bar = tqdm(total=len(ids), initial=len(ids) - len(todo), unit="ex", desc="teacher", disable=not show_progress)
    tokens, seconds = 0, 0.0
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            messages = [prompt.to_messages(texts[k]) for k in batch]
            t0 = time.perf_counter()
            results = backend.generate(messages, max_new_tokens=max_new_tokens, temperature=temperature)
            elapsed = time.perf_counter() - t0
            if len(results) != len(batch):
                raise RuntimeError(
                    f"{type(backend).__name__} returned {len(results)} answers for {len(batch)} prompts"
                )
            cache.append(
                [
                    {
                        "id": ids[k],
                        "text_sha1": _text_digest(texts[k]),
                        "raw_output": result.text,
                        "num_tokens": int(result.num_tokens),
                        "seconds": round(elapsed / len(batch), 4),
                    }
                    for k, result in zip(batch, results)
                ]
            )
            tokens += sum(r.num_tokens for r in results)
            seconds += elapsed
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{tokens / max(seconds, 1e-9):.1f}")
    finally:
        bar.close()
    if seconds:
        logger.info("generated %d tokens in %.1f s (%.1f tokens/s)", tokens, seconds, tokens / seconds)

    rows: dict[str, list[Any]] = {name: [] for name in RATIONALE_FEATURES}
    for example_id, text, label in zip(ids, texts, labels):
        raw = cache.records[example_id]["raw_output"]
        parsed = prompt.parse(raw)
        rows["id"].append(example_id)
        rows["text"].append(text)
        rows["label"].append(int(label))
        rows["teacher_label"].append(parsed.label_id)
        rows["rationale"].append(parsed.rationale)
        rows["teacher_agrees"].append(bool(parsed.parsed and parsed.label_id == label))
        rows["parsed"].append(parsed.parsed)
        rows["raw_output"].append(raw)
    return datasets.Dataset.from_dict(rows, features=RATIONALE_FEATURES)


def teacher_report(rationale_dataset: datasets.Dataset, label_names: Sequence[str]) -> dict[str, Any]:
    """How good the teacher's labels are: parse rate, and accuracy / macro-F1 / per-class F1 against the gold labels.

    Unparseable answers count as wrong (they are scored as a class that matches no gold label), so the numbers
    describe the whole dataset; ``accuracy_parsed`` and ``f1_macro_parsed`` are the same metrics on parsed rows only.

    Returns:
        ``{"n", "parse_rate", "agreement", "accuracy", "f1_macro", "f1_<class>"..., "accuracy_parsed",
        "f1_macro_parsed", "confusion_matrix"}``; the confusion matrix has one more column, "unparsed".
    """
    names = list(label_names)
    n_classes = len(names)
    gold = np.asarray(rationale_dataset["label"][:], dtype=np.int64)
    teacher = np.asarray(rationale_dataset["teacher_label"][:], dtype=np.int64)
    parsed = np.asarray(rationale_dataset["parsed"][:], dtype=bool)
    keep = gold != -100
    gold, teacher, parsed = gold[keep], teacher[keep], parsed[keep]
    if gold.size == 0:
        raise ValueError("the dataset has no gold-labelled rows")
    if gold.max() >= n_classes or teacher.max() >= n_classes:
        raise ValueError(f"label ids go beyond the {n_classes} label_names {names}")
    pred = np.where(parsed & (teacher >= 0), teacher, n_classes)  # an extra "unparsed" class, never gold
    full = classification_metrics(gold, pred, num_labels=n_classes + 1, include_confusion=True)
    # the macro averages must run over the real classes only
    real = classification_metrics(gold, np.where(pred == n_classes, -1, pred), label_names=names)
    report: dict[str, Any] = {
        "n": int(gold.size),
        "parse_rate": float(parsed.mean()),
        "agreement": float(np.mean(pred == gold)),
        "accuracy": full["accuracy"],
    }
    for key, value in real.items():
        if key != "accuracy":
            report[key] = value
    report["confusion_matrix"] = [row for row in full["confusion_matrix"][:n_classes]]
    report["confusion_columns"] = names + ["unparsed"]
    if parsed.any():
        sub = classification_metrics(gold[parsed], teacher[parsed], label_names=names)
        report["accuracy_parsed"], report["f1_macro_parsed"] = sub["accuracy"], sub["f1_macro"]
    else:
        report["accuracy_parsed"] = report["f1_macro_parsed"] = float("nan")
    return report
