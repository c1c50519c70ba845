"""Resumable teacher rationale generation and the teacher's report card.

:func:`generate_rationales` asks a :class:`~distil_trainers.teachers.rationales.backends.TeacherBackend` for an explanation and
a label for every example of a dataset and returns a :class:`datasets.Dataset` with the columns ``id``, ``text``,
``label`` (gold), ``teacher_label`` (-1 when unparseable), ``rationale`` ("" when unparseable), ``teacher_agrees``,
``parsed``, ``raw_output``, ``finish_reason`` and ``error``.

Every answer is appended to a JSONL cache as soon as it is finished (one record per example id, flushed at once and
fsync'ed at least every second), so an interrupted run loses at most the requests in flight, and a rerun generates only
the ids that are not in the cache yet. The cache keeps raw answers; parsing happens when the dataset is built, so a
better parser needs no new generation.

One post never stops the run: a request that fails (an HTTP error such as 400 for a prompt over the server's length
limit or a content filter, or retries exhausted) is recorded with its error and HTTP status, an answer cut at
``max_new_tokens`` with ``finish_reason="length"``; ``retry_failed=True`` asks the teacher again for exactly those.
A failed post has no answer: ``parsed`` False, ``teacher_label`` -1, ``error`` set. :func:`drop_failed_rows` removes
such rows from a training set; :func:`teacher_report` counts them (as wrong) and reports how many there were.

The first line of the cache is a header with a fingerprint of everything that changes the answers: the prompt
(instructions, few-shot examples, label names, synonyms), the backend's description (its model and the settings that
change answers: an endpoint's sampling fields, an in-process teacher's quantization and dtype), ``max_new_tokens`` and
the temperature. Opening a cache whose fingerprint differs raises :class:`CacheMismatchError`: pass another
``cache_path`` (or delete the file) to generate with another teacher or prompt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from tqdm.auto import tqdm

from ...metrics import classification_metrics
from ..locks import lock_file as _lock
from ..locks import one_writer
from .backends import GenerationResult, TeacherBackend, TeacherBackendError
from .prompts import RationalePrompt

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_VERSION",
    "CacheMismatchError",
    "RATIONALE_FEATURES",
    "RationaleCache",
    "cache_fingerprint",
    "drop_failed_rows",
    "generate_rationales",
    "teacher_report",
]

CACHE_VERSION = 2
"""1: records without ``finish_reason`` / ``error`` (read as finished answers of unknown finish reason); 2: with."""

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
        "finish_reason": datasets.Value("string"),
        "error": datasets.Value("string"),
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


def needs_retry(record: dict[str, Any]) -> bool:
    """A cache record that ``retry_failed`` asks again for: a failed request or an answer cut at ``max_new_tokens``."""
    return bool(record.get("error")) or record.get("finish_reason") == "length"


class RationaleCache:
    """Append-only JSONL file of teacher answers keyed by example id.

    Line 1 is ``{"header": {...}}``; every other line is a record ``{"id", "text_sha1", "raw_output", "num_tokens",
    "seconds", "finish_reason"}``, plus ``"error"`` and ``"http_status"`` for a failed request (``raw_output`` is then
    ""), and ``"writer"`` / ``"written"`` (host:pid, time) for a failed or truncated one. ``seconds`` is the
    wall-clock time since the previous answer of the run was written (their sum is the run's generation time). A
    later record of an id replaces an earlier one only when that one failed or was truncated (a
    retry); a finished answer is never replaced. A last line cut short by a crash is dropped (and cut from the file
    before anything is appended).

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
                    self._put(obj)
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

    def _put(self, record: dict[str, Any]) -> bool:
        key = str(record["id"])
        existing = self.records.get(key)
        if existing is not None and not needs_retry(existing):
            return False
        self.records[key] = record
        return True

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
            older = ""
            cached, now = header.get("teacher"), self.header.get("teacher")
            if header.get("cache_version", 1) < CACHE_VERSION and isinstance(cached, dict) and isinstance(now, dict):
                unrecorded = sorted(set(now) - set(cached))
                if unrecorded and all(cached.get(k) == now.get(k) for k in cached):
                    older = (
                        f" The cache was written by an older version of distil_trainers (cache version "
                        f"{header.get('cache_version', 1)}) that did not record the teacher's {', '.join(unrecorded)} "
                        f"(now: {', '.join(f'{k}={now[k]!r}' for k in unrecorded)}), so whether its answers were made "
                        "with these settings cannot be told."
                    )
            raise CacheMismatchError(
                f"{self.path} was written with a different {', '.join(changed) or 'setting'} "
                f"(cached teacher: {cached}, now: {now}).{older} "
                "Use another cache_path for this prompt/teacher, or delete the file to start over."
            )

    def __contains__(self, example_id: str) -> bool:
        return example_id in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, records: Sequence[dict[str, Any]], sync: bool = True) -> None:
        """Append records (one line each) and flush them, so they survive a crash of the process; ``sync`` also
        fsyncs them (they then survive a crash of the machine). A record of an id that already has a finished answer
        is skipped; one of an id whose answer failed or was truncated replaces it."""
        lines = []
        for record in records:
            if self._put(record):
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        if not lines:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            _lock(f)  # one writer at a time, whatever else appends to this file; released when it is closed
            f.write("".join(lines))
            f.flush()
            if sync:
                os.fsync(f.fileno())

    def sync(self) -> None:
        """fsync the file (what :meth:`append` wrote with ``sync=False`` is then on disk)."""
        with open(self.path, "a", encoding="utf-8") as f:
            os.fsync(f.fileno())

    def failed_ids(self) -> list[str]:
        """Ids whose request failed."""
        return [i for i, r in self.records.items() if r.get("error")]

    def truncated_ids(self) -> list[str]:
        """Ids whose answer was cut at ``max_new_tokens``."""
        return [i for i, r in self.records.items() if not r.get("error") and r.get("finish_reason") == "length"]


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
    retry_failed: bool = False,
    max_failures_in_a_row: int | None = 16,
) -> datasets.Dataset:
    """Teacher label and explanation for every example, resumable through a JSONL cache.

    Args:
        dataset: examples with an id, a text and a gold label id.
        backend: the teacher.
        prompt: the few-shot prompt (its ``label_names`` are the dataset's classes, in id order).
        cache_path: JSONL file that receives every answer as soon as it is finished; an existing file is resumed (ids
            already in it are not generated again). A file written with another prompt/teacher/settings raises
            :class:`CacheMismatchError`.
        id_column, text_column, label_column: column names in ``dataset``.
        batch_size: conversations per ``backend.generate`` call for batching backends (transformers); an endpoint
            backend keeps its ``concurrency`` requests in flight instead.
        max_new_tokens: answer length limit.
        show_progress: tqdm bar over examples with the generated tokens/s.
        temperature: 0 for greedy decoding.
        retry_failed: ask the teacher again for the ids whose cached request failed or whose answer was cut at
            ``max_new_tokens`` (only those); otherwise they are kept as they are. Under several processes the first
            to hold the cache lock asks again; the others read its answers (a failure another process recorded after
            this one started is not asked again).
        max_failures_in_a_row: stop with :class:`~distil_trainers.teachers.rationales.backends.TeacherBackendError`
            after this many failed requests in a row (an unreachable or misconfigured server, not a bad post); the
            answers finished so far stay in the cache. None: never stop.

    Under ``accelerate launch`` / ``torchrun`` with several processes, one process generates while the others wait on a
    file lock beside the cache, then read the finished cache (they ask the teacher nothing).

    A failed request or a truncated answer never stops the run: it is recorded in the cache (error, HTTP status,
    ``finish_reason``), counted in a warning at the end, and shows in the ``error`` / ``finish_reason`` columns.

    Returns:
        A dataset in the order of ``dataset`` with columns ``id`` (str), ``text`` (str), ``label`` (int, gold),
        ``teacher_label`` (int, -1 when the answer could not be parsed or the request failed), ``rationale`` (str, ""
        when unparseable), ``teacher_agrees`` (bool), ``parsed`` (bool), ``raw_output`` (str), ``finish_reason``
        (str: ``"stop"``, ``"length"`` when cut at ``max_new_tokens``, "" when unknown or failed) and ``error`` (str,
        "" unless the request failed). Failed rows are kept (so that a report over them counts them); drop them from a
        training set with :func:`drop_failed_rows`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_failures_in_a_row is not None and max_failures_in_a_row < 1:
        raise ValueError(f"max_failures_in_a_row must be >= 1 or None, got {max_failures_in_a_row}")
    if not isinstance(backend, TeacherBackend):
        raise TypeError(f"backend must be a TeacherBackend, got {type(backend).__name__}")
    ids, texts, labels = _validate(dataset, id_column, text_column, label_column, prompt)
    with one_writer(cache_path):  # several processes: one asks the teacher, the others then read its cache
        return _generate(dataset, backend, prompt, cache_path, ids, texts, labels, batch_size, max_new_tokens,
                         show_progress, temperature, retry_failed, max_failures_in_a_row)


_IMPORTED_AT = time.time()


def _writer() -> str:
    """This process, as a failed or truncated record names its writer."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_start() -> float:
    """When this process started (psutil, which accelerate requires; else when this module was imported)."""
    try:
        import psutil

        return psutil.Process(os.getpid()).create_time()
    except Exception:  # noqa: BLE001 - no psutil, or no access to the process table
        return _IMPORTED_AT


def _retry_now(record: dict[str, Any]) -> bool:
    """Whether ``retry_failed`` asks again for this failed or truncated record: yes unless another process wrote it
    after this one started, i.e. another process of the same run (``torchrun`` ranks wait on the cache lock in turn)
    already asked again; the later ranks then read its answer instead of asking a second time."""
    if not needs_retry(record):
        return False
    if record.get("writer") in (None, _writer()):
        return True
    return float(record.get("written") or 0.0) < _process_start()


def _record(example_id: str, text: str, result: GenerationResult, seconds: float) -> dict[str, Any]:
    if not isinstance(result, GenerationResult):
        raise TypeError(f"a teacher backend must give GenerationResult objects, got {type(result).__name__}")
    record = {
        "id": example_id,
        "text_sha1": _text_digest(text),
        "raw_output": "" if result.failed else result.text,
        "num_tokens": int(result.num_tokens),
        "seconds": round(seconds, 4),
        "finish_reason": result.finish_reason,
    }
    if result.failed:
        record.update(error=result.error, http_status=result.status)
    if needs_retry(record):  # who wrote it and when: see _retry_now
        record.update(writer=_writer(), written=round(time.time(), 3))
    return record


def _generate(dataset, backend, prompt, cache_path, ids, texts, labels, batch_size, max_new_tokens, show_progress,
              temperature, retry_failed, max_failures_in_a_row) -> datasets.Dataset:
    cache = RationaleCache(cache_path, cache_fingerprint(prompt, backend, max_new_tokens, temperature))
    for example_id, text in zip(ids, texts):
        record = cache.records.get(example_id)
        if record is not None and record.get("text_sha1") not in (None, _text_digest(text)):
            raise CacheMismatchError(
                f"{cache.path}: id {example_id!r} was cached for a different text; ids must identify the same "
                "example across runs (use another cache_path for another dataset)"
            )
    again = [k for k, i in enumerate(ids) if retry_failed and i in cache and _retry_now(cache.records[i])]
    todo = sorted({k for k, i in enumerate(ids) if i not in cache} | set(again))
    if len(todo) < len(ids):
        logger.info("%s: %d of %d examples already generated", cache.path, len(ids) - len(todo), len(ids))
    if again:
        logger.info("%s: asking again for %d failed or truncated answers", cache.path, len(again))

    bar = tqdm(total=len(ids), initial=len(ids) - len(todo), unit="ex", desc="teacher", disable=not show_progress)
    conversations = (prompt.to_messages(texts[k]) for k in todo)  # rendered as the backend asks for them
    stream = backend.generate_stream(
        conversations, max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size
    )
    tokens, done, in_a_row, answered = 0, set(), 0, 0
    start = last = last_sync = time.perf_counter()
    try:
        for position, result in stream:
            if not 0 <= position < len(todo) or position in done:
                raise RuntimeError(f"{type(backend).__name__}.generate_stream gave an unexpected position {position}")
            done.add(position)
            k = todo[position]
            now = time.perf_counter()
            sync = now - last_sync >= 1.0
            cache.append([_record(ids[k], texts[k], result, now - last)], sync=sync)
            last, last_sync = now, now if sync else last_sync
            tokens += int(result.num_tokens)
            bar.update(1)
            bar.set_postfix(tok_s=f"{tokens / max(now - start, 1e-9):.1f}")
            in_a_row = in_a_row + 1 if result.failed else 0
            answered += not result.failed
            if max_failures_in_a_row is not None and in_a_row >= max_failures_in_a_row:
                raise TeacherBackendError(
                    f"{in_a_row} teacher requests in a row failed (the last: {result.error}); stopping, since the "
                    f"server looks unreachable or misconfigured. The {answered} answers finished in this run and the "
                    f"failures are recorded in {cache.path}: fix the server and run again with "
                    "retry_failed=True (--retry_failed) to ask again for the failed posts.",
                    status=result.status,
                )
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        bar.close()
        cache.sync()
    if len(done) != len(todo):
        raise RuntimeError(f"{type(backend).__name__} returned {len(done)} answers for {len(todo)} prompts")
    seconds = last - start
    if todo and seconds:
        logger.info("generated %d tokens in %.1f s (%.1f tokens/s)", tokens, seconds, tokens / seconds)

    rows: dict[str, list[Any]] = {name: [] for name in RATIONALE_FEATURES}
    failed = truncated = 0
    for example_id, text, label in zip(ids, texts, labels):
        record = cache.records[example_id]
        raw, error = record["raw_output"], record.get("error") or ""
        parsed = prompt.parse("" if error else raw)
        failed += bool(error)
        truncated += record.get("finish_reason") == "length"
        rows["id"].append(example_id)
        rows["text"].append(text)
        rows["label"].append(int(label))
        rows["teacher_label"].append(parsed.label_id)
        rows["rationale"].append(parsed.rationale)
        rows["teacher_agrees"].append(bool(parsed.parsed and parsed.label_id == label))
        rows["parsed"].append(parsed.parsed)
        rows["raw_output"].append(raw)
        rows["finish_reason"].append(record.get("finish_reason") or "")
        rows["error"].append(error)
    if failed or truncated:
        logger.warning(
            "%s: %d of %d posts have no teacher answer (failed requests) and %d answers were cut at "
            "max_new_tokens=%d; their errors and finish_reason are in the cache. Run again with retry_failed=True "
            "to ask again for exactly those.",
            cache.path, failed, len(ids), truncated, max_new_tokens,
        )
    return datasets.Dataset.from_dict(rows, features=RATIONALE_FEATURES)


def drop_failed_rows(rationales: datasets.Dataset, what: str = "training set") -> datasets.Dataset:
    """``rationales`` without the posts whose teacher request failed (non-empty ``error``), with a logged count: they
    have no teacher answer, so they are no training target. Rows of a dataset without an ``error`` column are all
    kept. Truncated answers are kept (when the label line was written before the cut they parse as usual)."""
    if "error" not in rationales.column_names:
        return rationales
    errors = rationales["error"][:]
    keep = [i for i, error in enumerate(errors) if not error]
    if len(keep) == len(errors):
        return rationales
    logger.warning(
        "%s: %d of %d posts left out because their teacher request failed (see their `error`; retry_failed=True "
        "asks again)", what, len(errors) - len(keep), len(errors),
    )
    return rationales.select(keep)


def teacher_report(rationale_dataset: datasets.Dataset, label_names: Sequence[str]) -> dict[str, Any]:
    """How good the teacher's labels are: parse rate, and accuracy / macro-F1 / per-class F1 against the gold labels.

    Unparseable answers count as wrong (they are scored as a class that matches no gold label), so the numbers
    describe the whole dataset; ``accuracy_parsed`` and ``f1_macro_parsed`` are the same metrics on parsed rows only.

    Failed requests (rows with an ``error``) count as unparsed; ``failed`` and ``truncated`` (answers cut at
    ``max_new_tokens``) say how many there were, when the dataset has the ``error`` / ``finish_reason`` columns.

    Returns:
        ``{"n", "parse_rate", "agreement", "accuracy", "failed", "truncated", "f1_macro", "f1_<class>"...,
        "accuracy_parsed", "f1_macro_parsed", "confusion_matrix"}``; the confusion matrix has one more column,
        "unparsed".
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
    columns = rationale_dataset.column_names
    if "error" in columns:  # requests that failed (no answer; counted as unparsed above)
        report["failed"] = int(sum(bool(e) for e, k in zip(rationale_dataset["error"][:], keep) if k))
    if "finish_reason" in columns:  # answers cut at max_new_tokens
        report["truncated"] = int(sum(f == "length" for f, k in zip(rationale_dataset["finish_reason"][:], keep) if k))
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
