"""Running the stages of the full-data benchmark (``benchmarks/quality.py``) so that a finished stage is never run
again and no result outlives the model it was made from: :class:`Stage` (one step and the JSON record it writes),
which records count as finished (:func:`finished_records`), what a run must run (:func:`schedule`), and running them
(:func:`run_stages`). What each stage does is in ``_quality_stages.py``."""

from __future__ import annotations

import gc
import os
import shutil
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import _common as C
from paper_results import format_duration, shown


@dataclass
class Stage:
    name: str  # e.g. "teacher", "default/train_kd", "default/eval_ddml_wpbert"
    kind: str  # baseline | train | cache | eval
    key: str  # fingerprint of everything the result depends on
    result: Path  # the JSON it writes
    action: Callable[[], dict]
    artifact: Path | None = None  # the folder a train / cache stage leaves for later stages
    needs: tuple[str, ...] = ()  # stages whose folder it reads
    row: str | None = None
    method: str | None = None
    variant: str | None = None
    estimate: tuple[str, float, float] = ("", 0.0, 0.0)  # (plan group, examples per run, seconds per run)


def stage_record(stage: Stage) -> dict | None:
    """The stage's result file when it holds the current fingerprint (a finished stage), else None."""
    data = C.read_json(stage.result)
    if isinstance(data, dict) and data.get("fingerprint") == stage.key and data.get("status") == "ok":
        return data
    return None


def finished_records(stages: list[Stage]) -> dict[str, dict | None]:
    """The record of every finished stage, else None. A stage counts as finished when its result holds its fingerprint
    and was made from the runs of the stages it reads that are on record now (``inputs``: their ``run_id``): a
    teacher trained again makes its evaluation, cache and students unfinished, in whatever run they were made.
    Records made before runs had an id match a need whose record has none either."""
    records: dict[str, dict | None] = {}
    for stage in stages:  # in order: a stage comes after the stages it reads
        record = stage_record(stage)
        if record is not None:
            inputs = record.get("inputs") or {}
            for name in stage.needs:
                if name in records and (records[name] is None or inputs.get(name) != records[name].get("run_id")):
                    record = None
                    break
        records[stage.name] = record
    return records


def _artifact_ok(stage: Stage) -> bool:
    from distil_trainers.papers.workflow import is_complete

    return stage.artifact is not None and is_complete(stage.artifact, stage.key)


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


@dataclass
class Schedule:
    """Which stages of one seed run. ``rebuilt``: finished training or cache stages run again because a stage that
    runs reads their folder and it is gone; ``stale``: other finished stages that read what a rebuilt stage makes
    (directly or through another), so their results came from the model or cache it replaces."""

    run: set[str]
    rebuilt: list[str]
    stale: list[str]
    outdated: list[str]  # results of this fingerprint made from a run of a stage they read that is no longer on record
    records: dict[str, dict | None]  # finished_records(stages), read once


def schedule(stages: list[Stage], rebuild: bool = False, every: list[Stage] | None = None) -> Schedule:
    """What :func:`run_stages` runs: every unfinished stage, every finished stage whose folder is gone while a stage
    that runs reads it (up the chain: a cache rebuilt for a student needs the teacher's folder in turn), and with
    ``rebuild`` the finished stages downstream of those, so that all of a seed's rows come from one teacher.
    ``every`` (:meth:`SeedJob.every_stage`): the seed's stages of every method and variant, among which ``stale``
    is found; those of them that ``stages`` does not list are not run, and count as unfinished once it has."""
    by_name = {s.name: s for s in stages}
    records = finished_records(stages)
    run = {name for name, record in records.items() if record is None}
    rebuilt: set[str] = set()
    grown = True
    while grown:
        grown = False
        for stage in stages:
            if stage.name not in run:
                continue
            for name in stage.needs:
                need = by_name.get(name)
                if need is not None and name not in run and need.artifact is not None and not _artifact_ok(need):
                    run.add(name)
                    rebuilt.add(name)
                    grown = True
    every = stages if every is None else every
    every_records = records if every is stages else finished_records(every)
    affected = set(rebuilt)
    for stage in every:  # in order: a stage comes after the stages it reads
        if any(name in affected for name in stage.needs):
            affected.add(stage.name)
    stale = [s.name for s in every if s.name in affected and s.name not in run and every_records[s.name] is not None]
    if rebuild:
        run |= set(stale) & set(by_name)
    outdated = [s.name for s in stages if records[s.name] is None and stage_record(s) is not None]
    return Schedule(run, [s.name for s in stages if s.name in rebuilt], stale, outdated, records)


def stale_message(tag: str, stages: list[Stage], plan: Schedule) -> str:
    """The error for a seed whose finished results would be left beside a model they were not made from."""
    by_name = {s.name: s for s in stages}
    gone = ", ".join(f"{shown(by_name[name].artifact)} ({name})" for name in plan.rebuilt)
    listed = ", ".join(plan.stale[:4]) + (f" and {len(plan.stale) - 4} more" if len(plan.stale) > 4 else "")
    unlisted = len([name for name in plan.stale if name not in by_name])
    return (f"{tag} the folder of a finished stage is gone and stages to run read it: {gone}. Making it again would "
            f"leave {len(plan.stale)} finished stage(s) ({listed}) made from the model or cache it replaces. Run with "
            "--rebuild to run those again too (the seed's rows then all come from the new one"
            + (f"; {unlisted} of them belong to methods or variants this run does not list: they are left out of the "
               "report until a run that lists them makes them again" if unlisted else "")
            + "), or leave out the methods that read it (--methods).")


def _inputs_file(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".inputs.json")


def _prepare_folder(artifact: Path, inputs: dict[str, str | None]) -> None:
    """Before a training or cache stage runs: its folder is kept (to resume from a checkpoint, or reused when it was
    finished but its record is missing) only when it was started from the same runs of what it reads, which
    ``<folder>.inputs.json`` says (written as the stage starts); a folder without one is from a run that had no ids,
    kept while what it reads has none either. Otherwise the folder was made from a teacher or cache since made again,
    and it is cleared."""
    started = C.read_json(_inputs_file(artifact))
    same = started.get("inputs") == inputs if isinstance(started, dict) else all(v is None for v in inputs.values())
    if not same:
        shutil.rmtree(artifact, ignore_errors=True)
    artifact.parent.mkdir(parents=True, exist_ok=True)
    C.write_json_atomic(_inputs_file(artifact), {"inputs": inputs})


def run_stages(stages: list[Stage], tag: str, context: dict, say: Callable[[str], None],
               rebuild: bool = False, every: list[Stage] | None = None) -> list[dict]:
    """Run the stages in order: a finished stage (its result holds its fingerprint) is skipped unless
    :func:`schedule` says otherwise; a failing stage is reported and the stages that need it are not run. Raises
    ``ValueError`` before running anything when finished results would go stale and ``rebuild`` is not set.
    Returns the events ``{stage, status, ...}``."""
    plan = schedule(stages, rebuild, every)
    if plan.stale and not rebuild:
        raise ValueError(stale_message(tag, stages, plan))
    records = dict(plan.records)  # updated as stages finish: the inputs of the stages after them
    events: list[dict] = []
    failed: set[str] = set()
    for index, stage in enumerate(stages, 1):
        head = f"{tag} [{index}/{len(stages)}] {stage.name}"
        if stage.name not in plan.run:
            say(f"{head}: skipped (done: {shown(stage.result)})")
            events.append({"stage": stage.name, "status": "skipped"})
            continue
        blocked = [n for n in stage.needs if n in failed]
        if blocked:
            say(f"{head}: blocked ({', '.join(blocked)} failed)")
            events.append({"stage": stage.name, "status": "blocked"})
            failed.add(stage.name)
            continue
        why = (f" again: {shown(stage.artifact)} is gone" if stage.name in plan.rebuilt
               else " again: a model or cache it read was made again" if stage.name in plan.stale + plan.outdated
               else "")
        say(f"{head}: running{why}")
        inputs = {name: (records.get(name) or {}).get("run_id") for name in stage.needs}
        if stage_record(stage) is not None:  # the record of the run this one replaces goes first, whatever happens
            stage.result.unlink()
        if stage.artifact is not None:
            _prepare_folder(stage.artifact, inputs)
        started, load_start, cpu_start = time.time(), _load(), time.process_time()
        try:
            result = stage.action()
        except Exception as error:  # reported, and the other stages go on
            gc.collect()
            failed.add(stage.name)
            lines = traceback.format_exc().rstrip().splitlines()
            say(f"{head}: FAILED ({type(error).__name__}: {error})\n" + "\n".join("      " + x for x in lines[-8:]))
            events.append({"stage": stage.name, "status": "FAILED", "error": f"{type(error).__name__}: {error}"})
            continue
        seconds, cpu_seconds = time.time() - started, time.process_time() - cpu_start
        gc.collect()  # the stage's models and trainer, before the next stage builds its own
        record = {
            "stage": stage.name, "kind": stage.kind, "row": stage.row, "method": stage.method,
            "variant": stage.variant, "fingerprint": stage.key, "status": "ok", "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "load_average": {"start": load_start, "end": _load()}, **context, "result": result,
            "run_id": uuid.uuid4().hex, "inputs": inputs,
        }
        C.write_json_atomic(stage.result, record)
        records[stage.name] = record
        say(f"{head}: ran in {format_duration(seconds)} ({shown(stage.result)})")
        events.append({"stage": stage.name, "status": "ran", "seconds": seconds})
    return events

