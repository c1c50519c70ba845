"""Where and how long the full-data benchmark's stages ran: each stage's wall time and the cores it kept busy, the
machine each seed ran on, and the marks on a stage that ran on another machine than the rest of its seed (a seed made
again, or carried on, on a new machine). Read by the report (``_quality_report.py``)."""

from __future__ import annotations

import _common as C
from paper_results import format_duration


def duration(seconds: float | None) -> str:
    if seconds is not None and seconds < 10:
        return f"{seconds:.1f} s"
    return format_duration(seconds)


def stage_time(wall: float, cpu: float | None) -> str:
    """A stage's wall time and, when its CPU time was recorded, the cores it kept busy (CPU time / wall time)."""
    if cpu is None or wall <= 0:
        return duration(wall)
    return f"{duration(wall)}, {cpu / wall:.1f} cores"


def _machine(env: dict) -> str:
    known = env.get("cpu") or "CPU model not recorded"
    native = (env.get("bf16") or {}).get("native_bf16_instructions") or []
    return f"{known}, bf16 instructions: {', '.join(native) or 'none'}"


def same_machine(a: dict, b: dict) -> bool:
    """Whether two stages' environments may be one machine: the same CPU model where both recorded it, else the same
    native bf16 instructions (all an older record tells)."""
    if a.get("cpu") and b.get("cpu"):
        return _machine(a) == _machine(b)
    native = [(env.get("bf16") or {}).get("native_bf16_instructions") or [] for env in (a, b)]
    return native[0] == native[1]


def seed_machine(known: dict | None, env: dict) -> dict:
    """The machine a seed is reported on, given the one ``known`` so far and the ``env`` of its next stage: its first
    stage's, unless a later stage on the same machine names the CPU model that the earlier ones did not record."""
    if known is None or (env.get("cpu") and not known.get("cpu") and same_machine(known, env)):
        return env
    return known


def machines_line(machines: dict[int, dict]) -> str | None:
    """A sentence naming each seed's machine when the seeds ran on different machines (their wall times then compare
    machines as much as methods); None when they ran on one kind of machine."""
    described = {seed: _machine(env) for seed, env in sorted(machines.items())}
    if len(set(described.values())) < 2:
        return None
    return ("The seeds ran on different machines, so compare stage times within a seed: "
            + "; ".join(f"seed {seed}: {text}" for seed, text in described.items()) + ".")


MARKS = "ᵃᵇᶜᵈᵉᶠᵍʰ"


def elsewhere(stage_envs: dict[str, dict[int, dict]], machines: dict[int, dict]) -> tuple[dict, list[str]]:
    """The stages that ran on another machine than the rest of their seed (a seed made again, or carried on, on a new
    machine): ``{(stage, seed): mark}``, one mark per machine, and the sentence naming each (see same_machine)."""
    marks: dict[tuple[str, int], str] = {}
    named: dict[str, str] = {}  # machine: mark
    for name, per_seed in stage_envs.items():
        for seed, env in per_seed.items():
            known = machines.get(seed) or {}
            if not same_machine(env, known):
                marks[(name, seed)] = named.setdefault(_machine(env), MARKS[len(named) % len(MARKS)])
    notes = [f"{mark} ran on {machine}, not on the machine of the rest of its seed." for machine, mark in named.items()]
    return marks, notes


def wall_time_lines(collected: dict, seeds: list[int]) -> list[str]:
    """The table of every stage's wall time (and cores kept busy), a stage that ran on another machine than the rest of
    its seed marked, and the machines named where they differ."""
    walls, cpus = collected["walls"], collected["cpus"]
    lines: list[str] = []
    if walls:
        marks, notes = elsewhere(collected.get("stage_envs", {}), collected["machines"])
        lines += ["", "Wall time of every stage (as it ran; a stage resumed from a checkpoint counts its last run "
                  "only), and where it was recorded the cores it kept busy: its CPU time over its wall time. A stage "
                  "that was paused or shared the CPU with other work kept fewer busy than the same stage of another "
                  "seed:", "", C.md_row("stage", *[f"seed {s}" for s in seeds]), "|---|" + "---|" * len(seeds)]

        def cell(name: str, seed: int) -> str:
            if seed not in walls[name]:
                return "-"
            mark = marks.get((name, seed))
            return stage_time(walls[name][seed], cpus.get(name, {}).get(seed)) + (f" {mark}" if mark else "")

        for name in walls:
            lines.append(C.md_row(name, *[cell(name, s) for s in seeds]))
        totals = [sum(w.get(s, 0.0) for w in walls.values()) for s in seeds]
        lines.append(C.md_row("**all stages**", *[duration(t) for t in totals]))
        if notes:
            lines += ["", " ".join(notes)]
    return lines
