# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""The evaluate stage of the rationale pipeline (:func:`evaluate_run`, what
``distil_trainers.papers.rationale_pipeline.stage_evaluate`` runs), written so that finished work is never lost.

* ``results.json`` is written part by part as each part completes (the teacher's report, each student's scores, the
  explanations, each efficiency row), atomically (a temporary file, then ``os.replace``). Every part carries a
  fingerprint of what it depends on (the trained student, the evaluation posts, the settings); a rerun reuses the
  parts whose fingerprint still matches and computes only the others. ``results.md`` is written from whatever is
  there, also when a part fails.
* Each student is scored twice on the evaluation posts: by label scoring (the log-likelihood of each label word
  after the label-view prompt) and by its own answer to the rationale-view prompt ("explanation + Label: X"),
  generated in batches (left padding, ``max_eval_generations`` caps the posts), read with the parser of the
  teacher's answers; the F1 of both and their agreement are reported. The answers are kept per post in
  ``evaluation/<student>_answers.jsonl`` as they are generated, so an interrupted generation resumes.
* The students are released (``del``, ``gc.collect``, ``torch.cuda.empty_cache``) before anything is timed. Every
  efficiency row is measured in a fresh process that loads its model (absolute peak memory: GPU
  ``max_memory_allocated`` of weights + prediction, CPU peak RSS), teacher and students alike; a served teacher is
  timed through its endpoint and its row says that its memory is the server's. A teacher that cannot be reached or
  loaded gives a row with the error, never an exception that would lose the students' results.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from tqdm.auto import tqdm

from distil_trainers.cards import write_model_card
from distil_trainers.papers import rationale_parts as parts
from distil_trainers.papers.efficiency import (
    EfficiencyRow,
    measure,
    measure_in_fresh_process,
    served_row,
    unmeasured_row,
)
from distil_trainers.papers.workflow import fingerprint, main_process_only
from distil_trainers.trainers.rationale import RationaleSFTTrainer
from distil_trainers.trainers.rationale.evaluation import answer_metrics, parse_generated_answer

logger = logging.getLogger(__name__)

__all__ = ["ResultsFile", "evaluate_run", "generate_answers_cached", "release_memory"]

RESULTS_FILE = "results.json"
PARTS_KEY = "parts"  # in results.json: {part: fingerprint} of the finished parts
EFFICIENCY_KEY = "efficiency"

# The names of the efficiency rows (also their order in the table)
LABEL_SCORING_ROW = "student: label scoring"
GENERATION_ROW = "student: explanation (generate)"

# The evaluation settings a student's scores depend on (besides the student and the posts)
_SCORING_FIELDS = (
    "alpha", "class_names", "task_description", "label_instruction", "rationale_instruction", "answer_prefix",
    "max_length", "truncation_mode", "max_scoring_samples", "label_source", "unparsed_rows",
    "rationales_when_teacher_agrees", "label_scoring",
)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# results.json, part by part
# --------------------------------------------------------------------------------------------------------------------


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ResultsFile:
    """``results.json`` kept up to date part by part.

    ``expected``: the fingerprint of every part this run will produce; the parts of an earlier ``results.json`` whose
    fingerprint equals it are kept (and reused), every other part is dropped. :meth:`put` records a finished part and
    rewrites the file at once (temporary file + ``os.replace``, so a crash leaves the old or the new file, never half a
    file). Efficiency rows are parts ``"efficiency: <row name>"`` stored in the ``efficiency`` list; a row with an
    ``error`` is stored without its fingerprint, so that a rerun measures it again. ``write=False`` (every process but
    the first of a distributed run) keeps everything in memory only.
    """

    def __init__(self, path: str | os.PathLike, header: Mapping[str, Any], expected: Mapping[str, str], write=True):
        self.path = Path(path)
        self.write_enabled = write
        self.expected = dict(expected)
        old: dict[str, Any] = {}
        if self.path.exists():
            try:
                old = json.loads(self.path.read_text())
            except (OSError, ValueError) as error:
                logger.warning("%s cannot be read (%s): it is written afresh", self.path, error)
        old_parts = old.get(PARTS_KEY) if isinstance(old.get(PARTS_KEY), dict) else {}
        self.data: dict[str, Any] = dict(header)
        self.data[PARTS_KEY] = {}
        self.data[EFFICIENCY_KEY] = []
        old_rows = {row.get("name"): row for row in old.get(EFFICIENCY_KEY) or [] if isinstance(row, dict)}
        for key, key_print in old_parts.items():
            if self.expected.get(key) != key_print:
                continue
            if key.startswith(f"{EFFICIENCY_KEY}: "):
                row = old_rows.get(key.removeprefix(f"{EFFICIENCY_KEY}: "))
                if row is None:
                    continue
                self.data[EFFICIENCY_KEY].append(row)
            elif key in old:
                self.data[key] = old[key]
            else:
                continue
            self.data[PARTS_KEY][key] = key_print
        self._order_rows()
        self.write()

    def done(self, key: str) -> bool:
        return key in self.data[PARTS_KEY]

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.data[PARTS_KEY][key] = self.expected[key]
        self.write()

    def put_row(self, row: EfficiencyRow) -> None:
        key = f"{EFFICIENCY_KEY}: {row.name}"
        self.data[EFFICIENCY_KEY] = [r for r in self.data[EFFICIENCY_KEY] if r.get("name") != row.name]
        self.data[EFFICIENCY_KEY].append(row.to_dict())
        self._order_rows()
        if row.error is None:
            self.data[PARTS_KEY][key] = self.expected[key]
        else:
            self.data[PARTS_KEY].pop(key, None)
        self.write()

    def _order_rows(self) -> None:
        order = [k.removeprefix(f"{EFFICIENCY_KEY}: ") for k in self.expected if k.startswith(f"{EFFICIENCY_KEY}: ")]
        rank = {name: i for i, name in enumerate(order)}
        self.data[EFFICIENCY_KEY].sort(key=lambda row: rank.get(row.get("name"), len(rank)))

    def rows(self) -> list[EfficiencyRow]:
        return [EfficiencyRow.from_dict(row) for row in self.data[EFFICIENCY_KEY]]

    def results(self) -> dict[str, Any]:
        """What the stage returns: the parts (``efficiency`` left out when there is no row)."""
        out = dict(self.data)
        if not out[EFFICIENCY_KEY]:
            out.pop(EFFICIENCY_KEY)
        return out

    def write(self) -> None:
        if self.write_enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(self.path, json.dumps(self.results(), indent=2, default=str))


# --------------------------------------------------------------------------------------------------------------------
# The student's own answers
# --------------------------------------------------------------------------------------------------------------------


def _read_answers(path: Path, key: str) -> dict[tuple[int, str], str]:
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        if not lines or json.loads(lines[0]).get("fingerprint") != key:
            return {}
    except (ValueError, AttributeError):
        return {}
    answers = {}
    for line in lines[1:]:
        try:
            record = json.loads(line)
            answers[(int(record["i"]), str(record["id"]))] = str(record["output"])
        except (ValueError, KeyError, TypeError):  # a torn last line: that answer is generated again
            continue
    return answers


def generate_answers_cached(
    trainer: RationaleSFTTrainer,
    texts: Sequence[str],
    ids: Sequence[Any],
    path: str | os.PathLike,
    key: str,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    write: bool = True,
    desc: str = "Generating answers",
) -> list[str]:
    """The student's raw answers to the rationale-view prompts of ``texts`` (``trainer.generate_answers``, greedy, in
    batches), kept in the JSONL file ``path`` (a header line with ``key``, then one line per post, appended and
    flushed after every batch). Answers already in the file under the same ``key`` are reused; a file with another
    key is started afresh."""
    path = Path(path)
    ids = [str(i) for i in ids]
    answers = _read_answers(path, key)
    todo = [i for i in range(len(texts)) if (i, ids[i]) not in answers]
    handle = None
    if write and todo:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not answers:
            _write_atomically(path, json.dumps({"fingerprint": key}) + "\n")
        handle = open(path, "a+", encoding="utf-8")
        handle.seek(0, os.SEEK_END)
        if handle.tell():
            handle.seek(handle.tell() - 1)
            if handle.read(1) != "\n":  # a torn last line: keep the next record on a line of its own
                handle.write("\n")
    try:
        starts = range(0, len(todo), batch_size)
        for start in tqdm(starts, desc=desc, unit="batch", disable=not trainer.is_world_process_zero()):
            chunk = todo[start : start + batch_size]
            outputs = trainer.generate_answers(
                [texts[i] for i in chunk], max_new_tokens=max_new_tokens, batch_size=len(chunk), show_progress=False
            )
            for i, answer in zip(chunk, outputs):
                answers[(i, ids[i])] = answer["output"]
                if handle is not None:
                    handle.write(json.dumps({"i": i, "id": ids[i], "output": answer["output"]}) + "\n")
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
    finally:
        if handle is not None:
            handle.close()
    return [answers[(i, ids[i])] for i in range(len(texts))]


def release_memory(*objects: Any) -> None:
    """Drop references to models (and trainers holding them) and give their memory back: ``gc.collect`` and, with
    CUDA, ``torch.cuda.empty_cache``. The caller must not hold other references (``del`` its own names first)."""
    del objects
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------------------------
# What is timed (module-level: a fresh process imports them by name)
# --------------------------------------------------------------------------------------------------------------------


def _student_trainer(directory, script, model_args, eval_args, rows: Mapping[str, list]) -> RationaleSFTTrainer:
    model, tokenizer = parts.load_trained_student(Path(directory), script, model_args)
    args = dataclasses.replace(eval_args)  # set up again in this process
    return RationaleSFTTrainer(
        model=model, args=args, train_dataset=datasets.Dataset.from_dict(dict(rows)), processing_class=tokenizer
    )


def load_student_for_timing(
    directory, script, model_args, eval_args, rows: Mapping[str, list], task: str, max_new_tokens: int
) -> tuple[Callable[[list[str]], Any], dict[str, Any]]:
    """``(predict, info)`` of a trained student for :func:`measure_in_fresh_process`: label scoring (``task="label"``)
    or its answer to the rationale-view prompt (``task="generate"``)."""
    trainer = _student_trainer(directory, script, model_args, eval_args, rows)
    if task == "label":

        def predict(batch):
            return trainer.predict_labels(batch, show_progress=False)

    else:

        def predict(batch):
            return trainer.generate_answers(
                batch, max_new_tokens=max_new_tokens, batch_size=len(batch), show_progress=False
            )

    return predict, {"model": trainer.model}


def _teacher_answers(backend, prompt, texts: Sequence[str], max_new_tokens: int, temperature: float = 0.0) -> list:
    messages = [prompt.to_messages(t) for t in texts]
    results = backend.generate(messages, max_new_tokens=max_new_tokens, temperature=temperature)
    failed = [r for r in results if getattr(r, "error", None)]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(results)} teacher requests failed: {failed[0].error}")
    return results


def load_teacher_for_timing(script, names: Sequence[str], max_new_tokens: int):
    """``(predict, info)`` of the teacher for :func:`measure_in_fresh_process`: its answer (explanation + label) to
    the generation prompt; ``info`` gives its torch model (transformers backend) or its weight file (llama.cpp)."""
    backend = parts.build_teacher(script)
    prompt = parts.teacher_prompt(script, names)

    def predict(batch):
        return _teacher_answers(backend, prompt, batch, max_new_tokens, getattr(script, "teacher_temperature", 0.0))

    model = getattr(backend, "model", None)
    if isinstance(model, torch.nn.Module):
        return predict, {"model": model}
    weights = getattr(backend, "model_path", None) or script.teacher_model
    return predict, ({"weights_path": weights} if weights and os.path.isfile(weights) else {})


# --------------------------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------------------------


def _file_text(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def _eval_args(args, out: Path, alpha: float, names: Sequence[str]):
    return dataclasses.replace(
        args, output_dir=str(out / "eval_tmp"), alpha=alpha, class_names=list(names), report_to="none"
    )


def _generation_settings(script) -> dict[str, Any]:
    return {
        "max_eval_generations": script.max_eval_generations,
        "max_new_tokens": script.eval_max_new_tokens or script.teacher_max_new_tokens,
    }


def _teacher_settings(script) -> dict[str, Any]:
    return {k: v for k, v in vars(script).items() if k.startswith("teacher_")}


def _teacher_row_name(script) -> str:
    return f"teacher ({script.teacher_backend}): label + explanation"


def _student_fingerprint(args, out: Path, name: str, alpha: float, names) -> str:
    """The trained student (its stage fingerprint and completion marker) and the settings its scores depend on."""
    directory = out / name
    eval_args = _eval_args(args, out, alpha, names)
    return fingerprint(
        _file_text(directory / "stage.json"),
        _file_text(directory / "training_complete.json"),
        {k: getattr(eval_args, k, None) for k in _SCORING_FIELDS},
    )


def _answers_key(script, args, out: Path, name: str, alpha: float, names) -> str:
    """What a student's answer to one post depends on (the cap on the posts does not change it)."""
    student = _student_fingerprint(args, out, name, alpha, names)
    return fingerprint("answers", student, _generation_settings(script)["max_new_tokens"])


def _part_fingerprints(script, args, out: Path, students: Mapping[str, float], names, eval_set) -> dict[str, str]:
    """The fingerprint of every part of results.json this run produces."""
    posts = fingerprint(list(eval_set["id"][:]), eval_set["text"][:], [int(x) for x in eval_set["label"][:]])
    parts = {}
    report = out / "rationales" / "teacher_report.json"
    parts["teacher"] = fingerprint("teacher", posts, _file_text(report) if report.exists() else None)
    for name, alpha in students.items():
        student = _student_fingerprint(args, out, name, alpha, names)
        parts[name] = fingerprint("scores", student, posts, _generation_settings(script), script.explain_samples)
        if name == "student":
            if script.explain_samples:
                parts["explanations"] = fingerprint(parts[name], script.explain_samples)
            if script.efficiency_samples:
                timing = (posts, script.efficiency_samples, script.eval_generation_batch_size)
                parts[f"efficiency: {LABEL_SCORING_ROW}"] = fingerprint("label", student, *timing)
                parts[f"efficiency: {GENERATION_ROW}"] = fingerprint("generate", student, *timing,
                                                                      _generation_settings(script))  # fmt: skip
    if script.efficiency_samples and script.time_teacher:
        parts[f"efficiency: {_teacher_row_name(script)}"] = fingerprint(
            "teacher", _teacher_settings(script), posts, script.efficiency_samples, script.eval_generation_batch_size,
            _generation_settings(script),
        )  # fmt: skip
    # the teacher row first, then the students' (the order of the table)
    teacher_rows = [k for k in parts if k.startswith("efficiency: teacher")]
    return {k: parts[k] for k in [*[k for k in parts if not k.startswith("efficiency: ")], *teacher_rows,
                                  *[k for k in parts if k.startswith("efficiency: student")]]}  # fmt: skip


def _score_student(trainer, eval_set, names, script, path: Path, key: str, write: bool) -> tuple[dict, list[dict]]:
    """Label scoring of every evaluation post, and the student's own answers (the first ``max_eval_generations``)
    scored against the gold labels and against label scoring. Returns (scores, answers)."""
    metrics = trainer.evaluate(eval_set, metric_key_prefix="eval")
    scores = {k.removeprefix("eval_"): v for k, v in metrics.items()}
    scored = trainer.last_label_predictions
    if scored is None:  # label scoring is off: score the posts for the agreement
        scored = [int(p) for p in trainer.predict_labels(eval_set["text"][:])]
    limit = len(scored) if script.max_eval_generations is None else min(script.max_eval_generations, len(scored))
    limit = max(limit, min(script.explain_samples, len(scored)))  # the explanations are the first answers
    texts = eval_set["text"][:limit]
    outputs = generate_answers_cached(
        trainer,
        texts,
        eval_set["id"][:limit],
        path,
        key,
        batch_size=script.eval_generation_batch_size,
        max_new_tokens=_generation_settings(script)["max_new_tokens"],
        write=write,
        desc=f"Generating the answers of {path.stem.removesuffix('_answers')}",
    )
    answers = []
    for text, output in zip(texts, outputs):
        rationale, label = parse_generated_answer(output, names, trainer.args.answer_prefix)
        label_name = names[label] if label >= 0 else None
        answers.append({"text": text, "rationale": rationale, "label": label, "label_name": label_name,
                        "output": output})  # fmt: skip
    if answers:
        references = [int(x) for x in eval_set["label"][:limit]]
        scores.update(answer_metrics(references, [a["label"] for a in answers], scored[:limit], names))
    return scores, answers


def _time_students(results: ResultsFile, script, model_args, args, out, names, eval_set, fresh: bool) -> None:
    """The student's efficiency rows, each in a fresh process that loads the saved student (none is held here)."""
    sample = eval_set.select(range(min(script.efficiency_samples, len(eval_set))))
    texts = sample["text"][:]
    rows = sample.to_dict()
    eval_args = _eval_args(args, out, parts.student_runs(script, args)["student"], names)
    new_tokens = _generation_settings(script)["max_new_tokens"]
    jobs = [
        (LABEL_SCORING_ROW, "label", 1),
        (GENERATION_ROW, "generate", script.eval_generation_batch_size),
    ]
    for name, task, batch_size in jobs:
        if results.done(f"{EFFICIENCY_KEY}: {name}"):
            continue
        load_args = (str(out / "student"), script, model_args, eval_args, rows, task, new_tokens)
        if fresh:
            row = measure_in_fresh_process(
                name, load_student_for_timing, texts, load_args=load_args, batch_size=batch_size
            )
        else:
            row = _measure_here(name, load_student_for_timing, load_args, texts, batch_size)
        results.put_row(row)


def _measure_here(name, load, load_args, texts, batch_size) -> EfficiencyRow:
    """:func:`measure` in this process (``efficiency_fresh_process=False``), the model released afterwards."""
    try:
        predict, info = load(*load_args)
        row = measure(name, predict, texts, batch_size=batch_size, show_progress=False, **info)
    except Exception as error:  # noqa: BLE001 - the row says what happened
        row = unmeasured_row(name, f"{type(error).__name__}: {error}", len(texts), batch_size)
    predict = info = None
    release_memory()
    return row


def _time_teacher(results: ResultsFile, script, names, eval_set, fresh: bool) -> None:
    name = _teacher_row_name(script)
    if results.done(f"{EFFICIENCY_KEY}: {name}"):
        return
    texts = eval_set["text"][: script.efficiency_samples]
    batch_size = script.eval_generation_batch_size
    new_tokens = _generation_settings(script)["max_new_tokens"]
    if script.teacher_backend == "openai":
        try:
            backend = parts.build_teacher(script)
            prompt = parts.teacher_prompt(script, names)
            row = served_row(
                name,
                lambda batch: _teacher_answers(
                    backend, prompt, batch, new_tokens, getattr(script, "teacher_temperature", 0.0)
                ),
                texts,
                where=str(script.teacher_base_url),
                batch_size=batch_size,
                show_progress=False,
            )
        except Exception as error:  # noqa: BLE001 - an unreachable or misconfigured server is a row, not a crash
            row = unmeasured_row(name, f"{type(error).__name__}: {error}", len(texts), batch_size,
                                 note=f"served by {script.teacher_base_url}")  # fmt: skip
    elif fresh:
        row = measure_in_fresh_process(
            name, load_teacher_for_timing, texts, load_args=(script, list(names), new_tokens), batch_size=batch_size
        )
    else:
        row = _measure_here(name, load_teacher_for_timing, (script, list(names), new_tokens), texts, batch_size)
    if row.error is not None:
        logger.warning("Teacher not timed: %s", row.error)
    results.put_row(row)


def evaluate_run(script, args, model_args, out: Path, contexts: dict | None = None) -> dict:
    """The evaluate stage (see the module docstring): ``results.json`` part by part, ``results.md`` from whatever is
    there, a model card beside each student (its :class:`~distil_trainers.cards.CardContext` also put in
    ``contexts``). Returns the results."""
    out = Path(out)
    rationales = parts.load_rationales(script, out)
    eval_set = rationales["eval"]
    names = list(args.class_names or eval_set.features["label"].names)
    students = parts.student_runs(script, args)
    first = bool(args.should_save)  # the process that writes the run's files (see workflow.main_process_only)
    for name in students:
        if not (out / name / "training_complete.json").exists():
            raise FileNotFoundError(f"{out / name} holds no finished student: run --stage train first.")
    header = {**parts.posts_info(script, out), "eval_posts": len(eval_set)}
    expected = _part_fingerprints(script, args, out, students, names, eval_set)
    # (computed before any trainer exists: building arguments resets accelerate's state, which a live trainer uses)
    answer_keys = {name: _answers_key(script, args, out, name, alpha, names) for name, alpha in students.items()}
    results = ResultsFile(out / RESULTS_FILE, header, expected, write=first)
    cards: dict[str, tuple[Any, Any]] = {}
    try:
        if not results.done("teacher"):
            report_path = out / "rationales" / "teacher_report.json"
            if report_path.exists():
                results.put("teacher", json.loads(report_path.read_text())["eval"])
            else:
                try:
                    from distil_trainers.teachers.rationales import teacher_report

                    results.put("teacher", teacher_report(eval_set, names))
                except ImportError:
                    logger.warning("distil_trainers.teachers.rationales is not available: no teacher scores")
        for name, alpha in students.items():
            wanted = [name] + (["explanations"] if name == "student" and "explanations" in expected else [])
            eval_args = _eval_args(args, out, alpha, names)
            model, tokenizer = parts.load_trained_student(out / name, script, model_args)
            trainer = RationaleSFTTrainer(
                model=model, args=eval_args, train_dataset=eval_set, processing_class=tokenizer
            )
            if not all(results.done(key) for key in wanted):
                path = out / "evaluation" / f"{name}_answers.jsonl"
                scores, answers = _score_student(trainer, eval_set, names, script, path, answer_keys[name], first)
                results.put(name, scores)
                if "explanations" in wanted:
                    results.put("explanations", answers[: script.explain_samples])
            # what the card says about the model, kept without the model
            cards[name] = (_CardFacts(trainer.model), eval_args)
            del model, tokenizer, trainer
            release_memory()
        with main_process_only(args) as writer:  # timed once, by the writing process; the others wait
            if writer and script.efficiency_samples:
                # the students first (their rows matter most), then the teacher (a 70B model may take long or fail)
                fresh = script.efficiency_fresh_process
                _time_students(results, script, model_args, args, out, names, eval_set, fresh)
                if script.time_teacher:
                    _time_teacher(results, script, names, eval_set, fresh)
    finally:
        final = results.results()
        if first:
            table = parts.results_markdown(final)
            (out / "results.md").write_text(table + "\n")
            print(table)
    with main_process_only(args) as writer:
        if writer:
            splits = {"train": len(rationales["train"]), final["eval_split"]: len(eval_set)}
            for name, (facts, run_args) in cards.items():
                context = parts.student_card(script, model_args, facts, run_args, name, final, splits, names)
                write_model_card(context, out / name)
                if contexts is not None:
                    contexts[name] = context
    return final


class _CardFacts:
    """What a model card reads from a model (its config, its parameter count, where it came from), kept once the model
    itself is released."""

    def __init__(self, model: torch.nn.Module):
        self.config = getattr(model, "config", None)
        self.name_or_path = getattr(model, "name_or_path", None)
        self._count = sum(p.numel() for p in model.parameters())

    def parameters(self):
        yield torch.empty(self._count, device="meta")
