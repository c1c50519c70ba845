"""Tests of the full-data benchmark's stage runner (benchmarks/_quality_runner.py) on stages with made-up actions: the
CPU time a stage records beside its wall time, and a finished folder that is gone (made again up the chain, never
leaving results beside a model they were not made from; a stage stopped while made again resumes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_quality_benchmark import machines_module, runner_module


def test_a_stage_records_the_cpu_time_it_got_beside_its_wall_time(tmp_path):
    import time

    def sleep():  # a stage stopped or starved of CPU: wall time passes, CPU time does not
        time.sleep(0.4)
        return {}

    def work():
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
        return {}

    stages = [runner_module.Stage(name, "baseline", "k", tmp_path / f"{name}.json", action)
              for name, action in [("idle", sleep), ("busy", work)]]
    runner_module.run_stages(stages, "t", {}, lambda line: None)
    idle, busy = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("idle", "busy"))
    assert idle["seconds"] >= 0.4 and idle["cpu_seconds"] < 0.1
    assert busy["cpu_seconds"] >= 0.3
    assert machines_module.stage_time(600.0, 1140.0) == "10.0 min, 1.9 cores"
    assert machines_module.stage_time(600.0, None) == "10.0 min"  # a record made before CPU time was kept


class Chain:
    """teacher → (its evaluation, the cache) → (KD → its evaluation, BAM): stages whose actions treat their folders as
    the benchmark's do (a finished folder is reused, a stopped one resumed from its checkpoint). ``ran`` lists
    ``(stage, how)``; a stage in ``stop`` fails once after its first checkpoint, one in ``stop_finished`` once after
    finishing its folder (before its record is written)."""

    def __init__(self, root: Path):
        self.root, self.ran, self.stop, self.stop_finished = root, [], set(), set()
        self.stages = [self.stage("teacher"), self.stage("eval_teacher", ("teacher",), folder=False),
                       self.stage("cache", ("teacher",)), self.stage("kd", ("cache",)),
                       self.stage("eval_kd", ("kd",), folder=False), self.stage("bam", ("cache",))]

    def stage(self, name, needs=(), folder=True):
        artifact = self.root / "runs" / name if folder else None
        return runner_module.Stage(name, "train" if folder else "eval", name, self.root / "results" / f"{name}.json",
                                   lambda: self.action(name, artifact), artifact=artifact, needs=needs)

    def action(self, name, artifact):
        from distil_trainers.papers.workflow import COMPLETE_MARKER, STAGE_FILE

        if artifact is None:
            self.ran.append((name, "ran"))
        elif (artifact / COMPLETE_MARKER).exists():
            self.ran.append((name, "reused"))
        else:
            how = "resumed" if (artifact / "checkpoint-1").is_dir() else "trained"
            (artifact / "checkpoint-1").mkdir(parents=True, exist_ok=True)
            if name in self.stop:
                self.stop.discard(name)
                raise RuntimeError("stopped on purpose")
            (artifact / STAGE_FILE).write_text(json.dumps({"fingerprint": name}))
            (artifact / COMPLETE_MARKER).write_text("{}")
            (artifact / "checkpoint-1").rmdir()
            if name in self.stop_finished:
                self.stop_finished.discard(name)
                raise RuntimeError("stopped on purpose")
            self.ran.append((name, how))
        return {}

    def run(self, names=None, **kwargs) -> list[tuple[str, str]]:
        self.ran.clear()
        stages = [s for s in self.stages if names is None or s.name in names]
        runner_module.run_stages(stages, "t", {}, lambda line: None, **kwargs)
        return list(self.ran)

    def gone(self, *names: str) -> None:
        import shutil

        for name in names:
            shutil.rmtree(self.root / "runs" / name)


def test_a_gone_folder_is_made_again_up_the_chain_and_never_leaves_stale_rows(tmp_path):
    chain = Chain(tmp_path)
    stages = chain.stages
    first = [s.name for s in stages if s.name != "bam"]
    assert chain.run(first) == [("teacher", "trained"), ("eval_teacher", "ran"), ("cache", "trained"),
                                ("kd", "trained"), ("eval_kd", "ran")]
    # every folder there: only the new student runs
    assert runner_module.schedule(stages).run == {"bam"}
    # the teacher's folder gone: nothing unfinished reads it, nothing runs
    chain.gone("teacher")
    assert runner_module.schedule(stages[:5]).run == set()
    # the cache's folder gone too: BAM reads the cache, which reads the teacher; the finished evaluation and KD student
    # were made from the teacher and cache that would replace them
    chain.gone("cache")
    plan = runner_module.schedule(stages)
    assert plan.run == {"teacher", "cache", "bam"} and plan.rebuilt == ["teacher", "cache"]
    assert plan.stale == ["eval_teacher", "kd", "eval_kd"]
    with pytest.raises(ValueError, match=r"runs/teacher \(teacher\), .*runs/cache \(cache\).* 3 finished stage\(s\) "
                                         r"\(eval_teacher, kd, eval_kd\).*--rebuild"):
        chain.run()
    assert chain.ran == []  # before anything ran
    lines: list[str] = []
    runner_module.run_stages(stages, "t", {}, lines.append, rebuild=True)
    # KD is trained again, not reused from its folder made from the old cache
    assert chain.ran == [("teacher", "trained"), ("eval_teacher", "ran"), ("cache", "trained"), ("kd", "trained"),
                         ("eval_kd", "ran"), ("bam", "trained")]
    assert "t [1/6] teacher: running again: " in lines[0] and "is gone" in lines[0]
    assert runner_module.schedule(stages).run == set()
    record = json.loads((tmp_path / "results" / "kd.json").read_text())
    cache = json.loads((tmp_path / "results" / "cache.json").read_text())
    assert record["inputs"] == {"cache": cache["run_id"]} and len(cache["run_id"]) == 32

    # made again by a run that did not list the KD student (another --methods) for a BAM student whose result was
    # lost: KD's results are no longer finished, in the report as in the next run, which trains it again; BAM's own
    # folder, made from the old cache, is not reused either
    chain.gone("teacher", "cache")
    (tmp_path / "results" / "bam.json").unlink()
    selected = [s.name for s in stages if s.name not in ("kd", "eval_kd")]
    plan = runner_module.schedule([s for s in stages if s.name in selected], every=stages)
    assert plan.stale == ["eval_teacher", "kd", "eval_kd"] and plan.run == {"teacher", "cache", "bam"}
    message = runner_module.stale_message("t", [s for s in stages if s.name in selected], plan)
    assert "3 finished stage(s)" in message and "2 of them belong to methods or variants this run does not list" in message
    assert chain.run(selected, rebuild=True, every=stages) == [
        ("teacher", "trained"), ("eval_teacher", "ran"), ("cache", "trained"), ("bam", "trained")]
    records = runner_module.finished_records(stages)
    assert records["kd"] is None and records["eval_kd"] is None and records["bam"] is not None
    plan = runner_module.schedule(stages)
    assert plan.outdated == ["kd", "eval_kd"] and plan.run == {"kd", "eval_kd"} and not plan.stale
    assert chain.run() == [("kd", "trained"), ("eval_kd", "ran")]

    # records made before runs had ids (no run_id, no inputs) still count as finished
    for path in (tmp_path / "results").glob("*.json"):
        legacy = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("run_id", "inputs")}
        path.write_text(json.dumps(legacy))
    assert all(r is not None for r in runner_module.finished_records(stages).values())


def test_a_stage_stopped_while_made_again_resumes_and_never_revives_the_run_it_replaces(tmp_path):
    chain = Chain(tmp_path)
    stages = chain.stages
    chain.run()
    # KD stopped while made again for a new teacher: the next run resumes it, it is not cleared again
    chain.gone("teacher", "cache")
    (tmp_path / "results" / "bam.json").unlink()
    chain.stop.add("kd")
    chain.run(rebuild=True)
    assert chain.ran[:3] == [("teacher", "trained"), ("eval_teacher", "ran"), ("cache", "trained")]
    assert not (tmp_path / "results" / "kd.json").exists()  # the old record went before the new run started
    assert runner_module.finished_records(stages)["eval_kd"] is None
    assert chain.run() == [("kd", "resumed"), ("eval_kd", "ran")]

    # a student stopped mid-way, then its teacher and cache made again by a run that did not list it: its checkpoint
    # was made from the old cache, so it is trained afresh, not resumed
    (tmp_path / "results" / "bam.json").unlink()
    chain.gone("bam")
    chain.stop.add("bam")
    chain.run()
    assert (tmp_path / "runs" / "bam" / "checkpoint-1").is_dir()
    chain.gone("teacher", "cache")
    (tmp_path / "results" / "eval_teacher.json").unlink()  # a stage to run that reads the teacher
    chain.run([s.name for s in stages if s.name != "bam"], rebuild=True)
    assert chain.run(["bam"]) == [("bam", "trained")]

    # the teacher made again and stopped after finishing its folder, before its record: the old teacher's record is
    # gone, so the results made from it do not count as finished again; the next run reuses the finished folder
    chain.gone("teacher", "cache")
    (tmp_path / "results" / "eval_teacher.json").unlink()
    chain.stop_finished.add("teacher")
    chain.run(rebuild=True)
    records = runner_module.finished_records(stages)
    assert records["teacher"] is None and records["kd"] is None and records["eval_teacher"] is None
    assert chain.run()[:2] == [("teacher", "reused"), ("eval_teacher", "ran")]
    assert all(r is not None for r in runner_module.finished_records(stages).values())

    # a finished student whose record was lost is reused from its folder, not trained again
    (tmp_path / "results" / "kd.json").unlink()
    assert chain.run() == [("kd", "reused"), ("eval_kd", "ran")]
