"""Reading the full-data benchmark's stages (``benchmarks/quality.py``) without running them: the plan (what is
left and how long it should take), the report (mean ± std over the seeds, paired differences, variants, stage wall
times) and the README's headline table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import _common as C
from _quality_machines import duration, machines_line, seed_machine, wall_time_lines
from _quality_runner import finished_records, schedule
from _quality_settings import (
    BASELINES,
    FIXED_ROWS,
    METHOD_TITLES,
    MINILM3,
    TEACHER,
    TIMING_ROUNDS,
    DatasetData,
    Variant,
    variants_of,
)
from _quality_stages import SeedJob, describe, seed_jobs
from paper_results import format_duration, shown

# ----------------------------------------------------------------------------------------------------------------------
# Plan
# ----------------------------------------------------------------------------------------------------------------------


def plan_text(datasets_: list[DatasetData], methods: list[str], runs_dir: Path, results_dir: Path,
              assumptions: dict, bf16: dict) -> str:
    lines = ["# Plan of the full-data benchmark (nothing run)", ""]
    total = remaining = 0.0
    stage_count = 0
    for data in datasets_:
        if data.error:
            lines += [f"## {data.key}: MISSING", "", f"{data.source} could not be read: {data.error}", ""]
            continue
        jobs = seed_jobs(data, methods, runs_dir, results_dir, assumptions, bf16["supported"], True)
        variants = variants_of(data.settings["variants"])
        skipped = [v.name for v in variants if v.bf16 and not bf16["supported"]]
        groups: dict[str, list] = {}
        done = count = 0
        seconds_all = seconds_left = 0.0
        rebuilds = []
        for job in jobs:
            stages = job.stages()
            plan = schedule(stages, rebuild=True, every=job.every_stage())
            records = plan.records
            if plan.stale:
                again = [name for name in plan.stale if name in records]
                rebuilds.append(f"seed {job.seed}: {len(plan.rebuilt) + len(again)} finished stage(s) run again with "
                                f"--rebuild ({', '.join(plan.rebuilt)}: folder gone)" + (
                                    f", {len(plan.stale) - len(again)} of other methods or variants left out"
                                    if len(again) < len(plan.stale) else ""))
            for stage in stages:
                group, examples, seconds = stage.estimate
                finished = records[stage.name] is not None
                entry = groups.setdefault(group, [0, examples, seconds, 0])
                entry[0] += 1
                entry[3] += int(finished)
                count += 1
                done += int(finished)
                seconds_all += seconds
                seconds_left += seconds if stage.name in plan.run else 0
        lines += [f"## {data.key}: {data.title}", "", describe(data), "",
                  f"Seeds {', '.join(map(str, data.settings['seeds']))}; variants "
                  f"{', '.join(v.name for v in variants if v.name not in skipped)}"
                  + (f" ({', '.join(skipped)} skipped: no bf16 support on this CPU)" if skipped else "")
                  + f"; methods {', '.join(methods)}.", "",
                  C.md_row("stage", "runs", "done", "examples per run", "estimated time per run", "all runs"),
                  "|---|---:|---:|---:|---:|---:|"]
        for group, (runs, examples, seconds, finished) in groups.items():
            lines.append(C.md_row(group, runs, finished, f"{examples:,.0f}", format_duration(seconds),
                                  format_duration(seconds * runs)))
        lines += ["", f"{count} stages ({done} done); estimated {format_duration(seconds_all)} "
                      f"({seconds_all / 3600:.1f} h) in all, {format_duration(seconds_left)} left, on an idle "
                      "machine" + (" (counting the stages --rebuild runs again)." if rebuilds else "."), ""]
        lines += [f"Folders gone: {'; '.join(rebuilds)}.", ""] if rebuilds else []
        total += seconds_all
        remaining += seconds_left
        stage_count += count
    lines += [f"All datasets: {stage_count} stages, estimated {format_duration(total)} "
              f"({total / 3600:.1f} h; {remaining / 3600:.1f} h left) on an idle 2-core machine.", "",
              "Assumptions: " + " ".join(str(assumptions.get("source", "")).split()),
              f"Training samples/s: {assumptions['train_samples_per_second']}; bf16 speed-up "
              f"x{assumptions.get('bf16_speedup')}; inference samples/s: {assumptions['inference_samples_per_second']}"
              " (batch-1 timing at half that rate).",
              f"bf16 on this CPU: {'supported' if bf16['supported'] else 'NOT supported'} "
              f"(native instructions: {', '.join(bf16['native_bf16_instructions']) or 'none'})."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------


def _stats(values: dict[int, float]) -> dict | None:
    from distil_trainers.papers.reports import aggregate_seeds

    if not values:
        return None
    return aggregate_seeds([{"v": v} for _, v in sorted(values.items())])["v"]


def _fmt(stats: dict | None, scale: float = 100.0, digits: int = 2, sign: bool = False, unit: str = "") -> str:
    """``"+1.23 ± 0.40 (n=3)"``: mean ± sample std (ddof=1) over the seeds; the mean alone for one seed."""
    from distil_trainers.papers.reports import format_mean_std

    if not stats:
        return "-"
    text = format_mean_std(stats["mean"], stats["std"], scale=scale, digits=digits) + unit
    if sign and stats["mean"] >= 0:
        text = "+" + text
    return f"{text} (n={stats['n']})" if stats["n"] > 1 else text


def _params(count: int | None) -> str:
    if not count:
        return "-"
    return f"{count / 1e6:.2f}M" if count >= 100_000 else f"{count:,}"


def _speed(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def collect(data: DatasetData, methods: list[str], runs_dir: Path, results_dir: Path, assumptions: dict,
            bf16_ok: bool) -> dict:
    """The finished stages of a dataset under the current settings: ``{(row, variant): {seed: eval result}}``, the
    training wall times, every stage's wall time, the commands that produced them, and the result files left out
    because they were made with other settings or from a teacher or cache made again since."""
    evals: dict[tuple[str, str | None], dict[int, dict]] = {}
    trains: dict[tuple[str, str | None], dict[int, float]] = {}
    walls: dict[str, dict[int, float]] = {}
    cpus: dict[str, dict[int, float]] = {}  # the stage process's CPU seconds (all its threads), where recorded
    resumed: list[str] = []
    stale: list[str] = []
    commands: list[str] = []
    machines: dict[int, dict] = {}  # the machine of each seed (see seed_machine)
    stage_envs: dict[str, dict[int, dict]] = {}  # the machine each finished stage ran on, where recorded
    per_variant: dict[str | None, list[int]] = {}  # variant: [stages, finished]
    for job in seed_jobs(data, methods, runs_dir, results_dir, assumptions, bf16_ok, True):
        stages = job.stages()
        records = finished_records(stages)
        for stage in stages:
            record = records[stage.name]
            counts = per_variant.setdefault(stage.variant, [0, 0])
            counts[0] += 1
            counts[1] += record is not None
            if record is None:
                if stage.result.is_file():
                    stale.append(shown(stage.result))
                continue
            if record.get("command") and record["command"] not in commands:
                commands.append(record["command"])
            if record.get("environment"):
                machines[job.seed] = seed_machine(machines.get(job.seed), record["environment"])
                stage_envs.setdefault(stage.name, {})[job.seed] = record["environment"]
            walls.setdefault(stage.name, {})[job.seed] = record["seconds"]
            if record.get("cpu_seconds") is not None:
                cpus.setdefault(stage.name, {})[job.seed] = record["cpu_seconds"]
            result = record["result"]
            if stage.kind in ("baseline", "eval"):
                evals.setdefault((stage.row, stage.variant), {})[job.seed] = result
            if stage.kind == "baseline":
                trains.setdefault((stage.row, None), {})[job.seed] = result["fit_seconds"]
            if stage.kind == "train":
                seconds = result.get("train_seconds")
                if result.get("resumed_from_checkpoint"):
                    resumed.append(f"{stage.name} (seed {job.seed})")
                if stage.method is None:
                    trains.setdefault(("teacher", None), {})[job.seed] = seconds
                else:
                    for row in job.method_rows(stage.method):
                        trains.setdefault((row, stage.variant), {})[job.seed] = seconds
    return {"evals": evals, "trains": trains, "walls": walls, "cpus": cpus, "stale": stale, "commands": commands,
            "environment": next(iter(machines.values()), None), "machines": machines, "stage_envs": stage_envs,
            "resumed": resumed,
            "expected": sum(total for total, _ in per_variant.values()), "stages_by_variant": per_variant,
            "finished": sum(len(v) for v in walls.values())}


def _row_label(row: str, teacher_base: str | None = None) -> str:
    if row == "teacher" and teacher_base and teacher_base != "sentence-transformers/all-MiniLM-L6-v2":
        return f"teacher: {Path(teacher_base).name} fine-tuned"
    if row in FIXED_ROWS:
        return FIXED_ROWS[row]
    if row in METHOD_TITLES:
        return METHOD_TITLES[row]
    for method in ("kd_c0", "ddml"):
        if row.startswith(method + "_"):
            return f"{METHOD_TITLES[method]}: {row[len(method) + 1:]}"
    return row


def _metric(result: dict, key: str) -> float | None:
    value = result["metrics"].get(key) if key.startswith(("f1", "accuracy", "precision", "recall")) else result.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _per_seed(collected: dict, row: str, variant: str | None, key: str = "f1_macro") -> dict[int, float]:
    found = collected["evals"].get((row, variant), {})
    return {seed: v for seed, r in found.items() if (v := _metric(r, key)) is not None}


def _best_tfidf(collected: dict) -> dict[int, float]:
    lr, svm = _per_seed(collected, "tfidf_lr", None), _per_seed(collected, "tfidf_svm", None)
    return {s: max(lr[s], svm[s]) for s in lr if s in svm}


def _speed_ratios(collected: dict, row: str, variant: str | None, batch: int = 64,
                  separate: bool = True) -> tuple[dict[int, float], int, str]:
    """Per seed, the row's samples/s at ``batch`` over the teacher's: as timed beside the teacher in the row's own
    evaluation stage where it was (``beside_teacher``), else (with ``separate``) the ratio of the two stages' own
    timings when both used the same torch threads. Returns the ratios, how many of them were timed beside the
    teacher, and why seeds were left out (empty when none was)."""
    key = f"samples_per_second_b{batch}"
    found, teacher = collected["evals"].get((row, variant), {}), collected["evals"].get(("teacher", None), {})
    ratios: dict[int, float] = {}
    beside, mismatched = 0, set()
    for seed, result in found.items():
        paired = (result.get("beside_teacher") or {}).get(f"vs_teacher_b{batch}")
        if paired is not None:
            ratios[seed], beside = float(paired), beside + 1
            continue
        other = teacher.get(seed)
        if not separate or not other or not result.get(key) or not other.get(key):
            continue
        if result.get("torch_threads") != other.get("torch_threads"):
            mismatched.add((result.get("torch_threads"), other.get("torch_threads")))
            continue
        ratios[seed] = float(result[key]) / float(other[key])
    why = ", ".join(f"{a} vs {b} threads" for a, b in sorted(mismatched, key=str))
    return ratios, beside, why


def _speed_ratio(collected: dict, row: str, variant: str | None, batch: int = 64) -> str:
    """The mean over the seeds of :func:`_speed_ratios`, as a table cell: ``†`` marks a mean with seeds whose two
    models were timed in separate stages. At batch 1 only timings made beside the teacher count (a single post's
    timing is too short to compare across two moments of a shared machine)."""
    if row == "teacher":
        return "1.00×" if collected["evals"].get((row, variant)) else "-"
    ratios, beside, why = _speed_ratios(collected, row, variant, batch, separate=batch != 1)
    if not ratios:
        return f"n/a ({why})" if why else "-"
    mark = "" if beside == len(ratios) else "†"
    return f"{sum(ratios.values()) / len(ratios):.2f}×{mark}"


def _paired(a: dict[int, float], b: dict[int, float]) -> dict | None:
    return _stats({s: a[s] - b[s] for s in a if s in b})


def weighted_teacher_variant(variant: str | None, variants: list[Variant]) -> str | None:
    """The variant whose class-weighted teacher (the ``teacher`` method) has the class weights of ``variant``'s
    students; None for a variant without class weights."""
    found = next((v for v in variants if v.name == variant), None)
    if found is None or found.class_weights == "none":
        return None
    return Variant(found.class_weights).name


def report_dataset(data: DatasetData, methods: list[str], runs_dir: Path, results_dir: Path, assumptions: dict,
                   bf16: dict) -> tuple[str, dict]:
    """The Markdown tables of one dataset and their numbers."""
    if data.error:
        return f"### {data.key}: MISSING\n\n{data.source} could not be read: {data.error}\n", {"error": data.error}
    collected = collect(data, methods, runs_dir, results_dir, assumptions, bf16["supported"])
    all_variants = variants_of(data.settings["variants"])
    variants = [v.name for v in all_variants if bf16["supported"] or not v.bf16]
    reference = variants[0]
    probe = SeedJob(data, data.settings["seeds"][0], all_variants, methods, runs_dir,
                    results_dir, assumptions, bf16["supported"], True)
    student_rows = [(row, v) for v in variants for m in methods
                    if v in [x.name for x in probe.student_variants(m)] for row in probe.method_rows(m)]
    # every row of the reference variant is listed ("not run" says what is left); another variant's rows only once a
    # seed of them has finished, so that asking for an axis does not fill the tables with empty rows
    unrun = [(row, v) for row, v in student_rows if v != reference and not _per_seed(collected, row, v)]
    student_rows = [pair for pair in student_rows if pair not in unrun]
    all_rows = [(row, None) for row in (*BASELINES, "teacher")] + student_rows
    classes = data.label_names
    tb = data.settings["teacher_base"]
    from distil_trainers.metrics import per_class_keys

    class_keys = per_class_keys(classes, len(classes))
    seeds = data.settings["seeds"]
    # the stages of the variants begun (and of the shared stages and the reference variant), so that asking for an
    # axis does not bury what was run under the grid it opens
    collected["expected_begun"] = sum(total for variant, (total, done) in collected["stages_by_variant"].items()
                                      if done or variant in (None, reference))
    unbegun = collected["expected"] - collected["expected_begun"]
    never = f" ({unbegun} more in the variants asked for with none finished)" if unbegun else ""
    lines = [f"### {data.key}: {data.title}", "",
             f"{describe(data)}. Seeds {', '.join(map(str, seeds))} (data split seed {data.settings['data_seed']}); "
             f"{collected['finished']} of {collected['expected_begun']} stages finished{never}. Scores on the "
             f"{data.report_split} split in %, mean ± sample std over the seeds that finished (n); samples/s: CPU "
             "inference from raw text (tokenisation included), mean over the seeds; × teacher: the row's samples/s "
             f"over the teacher's, both timed in turn in the row's evaluation stage ({TIMING_ROUNDS} rounds, median "
             "of the rounds' ratios), mean over the seeds; † marks a mean with seeds timed the older way (each model "
             "once, in its own stage, so the machine's load at two moments enters the ratio); train time: wall time "
             "of the training stage.", ""]
    header = ["row", "variant", "n", "params", "macro-F1", "accuracy", *[f"F1 {c}" for c in classes],
              "samples/s b1", "samples/s b64", "b1 × teacher", "b64 × teacher", "train time"]
    lines += [C.md_row(*header), "|" + "---|" * len(header)]
    numbers: dict[str, Any] = {"rows": {}, "paired": {}, "variants": {}}
    for row, variant in all_rows:
        f1 = _per_seed(collected, row, variant)
        if not f1:
            lines.append(C.md_row(_row_label(row, tb), variant or "-", 0, *["not run"] * (len(header) - 3)))
            continue
        found = collected["evals"][(row, variant)]
        params = next((r.get("params") for r in found.values() if r.get("params")), None)
        b1 = _stats(_per_seed(collected, row, variant, "samples_per_second_b1"))
        b64 = _stats(_per_seed(collected, row, variant, "samples_per_second_b64"))
        ratio, ratio_b1 = _speed_ratio(collected, row, variant), _speed_ratio(collected, row, variant, 1)
        beside = _speed_ratios(collected, row, variant, separate=False)[0] if row != "teacher" else {}
        train = _stats(collected["trains"].get((row, variant), {}))
        cells = [_fmt(_stats(f1)), _fmt(_stats(_per_seed(collected, row, variant, "accuracy")))]
        cells += [_fmt(_stats(_per_seed(collected, row, variant, f"f1_{k}"))) for k in class_keys]
        lines.append(C.md_row(_row_label(row, tb), variant or "-", len(f1),
                              _params(params), *cells,
                              _speed(b1 and b1["mean"]), _speed(b64 and b64["mean"]), ratio_b1, ratio,
                              duration(train["mean"]) if train else "-"))
        numbers["rows"][f"{row}|{variant or '-'}"] = {
            "f1_macro": _stats(f1), "samples_per_second_b1": b1, "samples_per_second_b64": b64, "params": params,
            "train_seconds": train, "b64_vs_teacher": ratio, "b1_vs_teacher": ratio_b1,
            "b64_vs_teacher_beside": sum(beside.values()) / len(beside) if beside else None,
            "b64_beside_seeds": len(beside)}

    # paired differences (same seed), macro-F1 points; the class-weighted teacher's column only where a row has one
    teacher, tfidf = _per_seed(collected, "teacher", None), _best_tfidf(collected)
    weighted_column = any(weighted_teacher_variant(variant, all_variants) for _, variant in student_rows)
    columns = ("alone", "kd_c0", "tfidf", "teacher") + (("weighted_teacher",) if weighted_column else ())
    lines += ["", "Paired differences in macro-F1 points (per seed, then mean ± std over the seeds that have both "
              "sides): each student against the student trained alone (same variant), DDML against single-teacher "
              "KD (c = 0, same student), against the better TF-IDF baseline of the seed, against the teacher (the "
              "one every student distils, without class weights)" + (
                  " and, in a variant with class weights, against the teacher fine-tuned with the same weights"
                  if weighted_column else "") + ".", "",
              C.md_row("row", "variant", "− alone", "− KD c = 0", "− best TF-IDF", "− teacher",
                       *(["− teacher, same class weights"] if weighted_column else [])),
              "|" + "---|" * (2 + len(columns))]
    for row, variant in [("teacher", None), *student_rows]:
        f1 = _per_seed(collected, row, variant)
        alone = _per_seed(collected, "alone", variant) if row not in ("alone", TEACHER) and variant else {}
        if row.startswith(("ddml_", "kd_c0_")) and not row.endswith(f"_{MINILM3}"):
            alone = {}  # the small own-vocabulary student has no "alone" run
        c0 = _per_seed(collected, "kd_c0_" + row[len("ddml_"):], variant) if row.startswith("ddml_") else {}
        same = weighted_teacher_variant(variant, all_variants)
        weighted = _per_seed(collected, TEACHER, same) if same and row != TEACHER else {}
        cells = {"alone": _paired(f1, alone), "kd_c0": _paired(f1, c0), "tfidf": _paired(f1, tfidf),
                 "teacher": _paired(f1, teacher) if (row, variant) != ("teacher", None) else None,
                 "weighted_teacher": _paired(f1, weighted)}
        numbers["paired"][f"{row}|{variant or '-'}"] = cells
        lines.append(C.md_row(_row_label(row, tb), variant or "-", *[_fmt(cells[k], sign=True) for k in columns]))

    # variants against the reference variant
    if len(variants) > 1:
        lines += ["", f"Variants against `{reference}` (same row, same seed): macro-F1 difference in points and "
                  "training wall time as a ratio (variant / reference).", "",
                  C.md_row("row", "variant", "Δ macro-F1", "train time ratio"), "|---|---|---|---|"]
        for row, variant in student_rows:
            if variant == reference:
                continue
            # the class-weighted teacher against the teacher (no variant: trained once per seed, whatever the variants)
            base = None if row == TEACHER else reference
            f1 = _paired(_per_seed(collected, row, variant), _per_seed(collected, row, base))
            mine, ref = collected["trains"].get((row, variant), {}), collected["trains"].get((row, base), {})
            ratio = _stats({s: mine[s] / ref[s] for s in mine if s in ref and ref[s]})
            numbers["variants"][f"{row}|{variant}"] = {"f1_macro": f1, "train_time_ratio": ratio}
            lines.append(C.md_row(_row_label(row, tb), variant, _fmt(f1, sign=True), _fmt(ratio, 1.0, unit="×")))

    # the goal of the issue, as measured
    students = {f"{row}|{v}": _stats(_per_seed(collected, row, v)) for row, v in student_rows
                if row not in ("alone", TEACHER) and _per_seed(collected, row, v)}
    best_tfidf_row = max(("tfidf_lr", "tfidf_svm"), key=lambda r: (_stats(_per_seed(collected, r, None)) or
                                                                  {"mean": -1})["mean"])
    tfidf_stats, teacher_stats = _stats(_per_seed(collected, best_tfidf_row, None)), _stats(teacher)
    if students and tfidf_stats and teacher_stats:
        best = max(students, key=lambda k: students[k]["mean"])
        row, variant = best.split("|")
        ratio = _speed_ratio(collected, row, variant)
        speed = f", {ratio} the teacher's batch-64 throughput" if "×" in ratio else ""
        lines += ["", f"Best distilled student (mean macro-F1): {_row_label(row, tb)} [{variant}] "
                  f"{100 * students[best]['mean']:.2f}, against {_row_label(best_tfidf_row, tb)} "
                  f"{100 * tfidf_stats['mean']:.2f} ({100 * (students[best]['mean'] - tfidf_stats['mean']):+.2f}) and "
                  f"the teacher {100 * teacher_stats['mean']:.2f} "
                  f"({100 * (students[best]['mean'] - teacher_stats['mean']):+.2f} between the means; paired, the "
                  f"seeds of both: {_fmt(numbers['paired'][best]['teacher'], sign=True)}){speed}."]
        same = weighted_teacher_variant(variant, all_variants)
        weighted = _stats(_per_seed(collected, TEACHER, same)) if same else None
        if weighted:
            lines[-1] = lines[-1][:-1] + (f"; the teacher fine-tuned with the same class weights "
                                          f"{100 * weighted['mean']:.2f} "
                                          f"({100 * (students[best]['mean'] - weighted['mean']):+.2f}).")

    lines += wall_time_lines(collected, seeds)
    env = collected["environment"]
    if env:
        b = env.get("bf16", {})
        versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
        lines += ["", f"Machine: {env.get('cpu_count')} cores, torch threads: {env.get('torch_threads')}; bf16 "
                  f"{'supported' if b.get('supported') else 'not supported'} (native: "
                  f"{', '.join(b.get('native_bf16_instructions') or []) or 'none'}); {versions}."]
    differ = machines_line(collected["machines"])
    if differ:
        lines += ["", differ]
    if unrun:
        lines += ["", f"Not listed: {len(unrun)} row(s) of the variants "
                  f"{', '.join(dict.fromkeys(v for _, v in unrun))} with no finished seed."]
    skipped = [v.name for v in all_variants if v.bf16 and not bf16["supported"]]
    if skipped:
        lines += ["", f"Variants not run: {', '.join(skipped)} (this CPU has no bf16 support)."]
    if any(r == TEACHER and v for r, v in student_rows):
        lines += ["", "The teacher in a variant with class weights is fine-tuned again with them, as that variant's "
                  "reference: its students distil the teacher without them (the one cache of the seed), so that "
                  "their rows differ from the variant without class weights in their own label term alone."]
    if "ffn" in methods and any(v.class_weights != "none" for v in all_variants):
        lines += ["", "The FFN student has no label term (logit MSE + feature KL): class weights change nothing, so "
                  "it runs only in the variants without them."]
    if collected["resumed"]:
        lines += ["", "Resumed from a checkpoint (their train time is the last run's): "
                  + ", ".join(collected["resumed"]) + "."]
    if collected["stale"]:
        lines += ["", "Left out (made with other settings or from a teacher or cache made again since; running again "
                  f"replaces them): {len(collected['stale'])} result file(s), e.g. {collected['stale'][0]}."]
    if collected["commands"]:
        lines += ["", "Produced by:", ""] + [f"    {c}" for c in collected["commands"]]
    numbers["commands"] = collected["commands"]
    numbers["weighted_teachers"] = {v.name: weighted_teacher_variant(v.name, all_variants) for v in all_variants
                                    if v.class_weights != "none"}
    numbers["finished"], numbers["expected"] = collected["finished"], collected["expected"]
    numbers["expected_begun"] = collected["expected_begun"]
    return "\n".join(lines) + "\n", numbers


def _goal(paired: dict, speed: str, beside: float | None = None) -> str:
    """Which part of the goal the best student misses, on the means as the table shows them (two decimals): "met", the
    parts missed, and the parts not measured. Throughput: the mean over the seeds timed beside the teacher
    (``beside``) where there are any, else the table's mean ``speed``."""
    def shown(stats: dict | None) -> float | None:  # macro-F1 points, as the table rounds them
        return None if not stats else round(100 * stats["mean"], 2)

    ratio_shown = re.match(r"\d+(\.\d+)?", speed)
    ratio = round(beside, 2) if beside is not None else float(ratio_shown.group()) if ratio_shown else None
    over_tfidf, over_teacher = shown(paired.get("tfidf")), shown(paired.get("teacher"))
    checks = {"≥ TF-IDF": None if over_tfidf is None else over_tfidf >= 0,
              "within 1 of the teacher": None if over_teacher is None else over_teacher >= -1.0,
              "≥ 2× throughput": None if ratio is None else ratio >= 2.0}  # fmt: skip
    missed = [name for name, ok in checks.items() if ok is False]
    unknown = [name for name, ok in checks.items() if ok is None]
    parts = (["misses " + ", ".join(missed)] if missed else []) + (["not measured: " + ", ".join(unknown)] if unknown
                                                                  else [])  # fmt: skip
    return "; ".join(parts) or "met"


def headline_table(data: list, numbers: dict, invocation: str) -> str:
    """Per dataset with a finished teacher: macro-F1 (mean ± std over the seeds, n) of the teacher, the better TF-IDF
    baseline, the 3-layer student alone and the best distilled student (the best mean among the rows run on two seeds
    or more, where the teacher was), with that student's paired gaps to the best TF-IDF baseline and to the teacher,
    its batch-64 throughput against the teacher's (same threads), and which part of the goal (at least the best
    TF-IDF, within 1 point of the teacher, at least 2× its throughput; on the means) it misses."""
    lines = ["| dataset | seeds | teacher (MiniLM-L6) | best TF-IDF | 3-layer student alone | best distilled student "
             "| − best TF-IDF | − teacher | throughput × teacher | goal |", "|---|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    notes = []
    for d in data:
        found = numbers.get(d.key, {})
        rows, paired = found.get("rows", {}), found.get("paired", {})
        teacher = rows.get("teacher|-", {}).get("f1_macro")
        if not teacher:
            continue
        tfidf = max((rows.get(f"{r}|-", {}).get("f1_macro") for r in ("tfidf_lr", "tfidf_svm")),
                    key=lambda st: st["mean"] if st else -1.0)  # fmt: skip
        alone = rows.get("alone|default", {}).get("f1_macro")
        distilled = {k: v for k, v in rows.items() if v.get("f1_macro") and k.split("|")[0] not in (
            "teacher", "alone", "majority", "tfidf_lr", "tfidf_svm")}
        # a row with a spread beats a single seed's luck: where the teacher ran on two seeds or more, the best among
        # the rows run on two or more (all rows if none was)
        spread = min(teacher["n"], 2)
        complete = {k: v for k, v in distilled.items() if v["f1_macro"]["n"] >= spread} or distilled
        best = max(complete, key=lambda k: complete[k]["f1_macro"]["mean"]) if complete else None
        best_cell = over_tfidf = gap = speed = goal = "-"
        if best:
            row, variant = best.split("|")
            best_cell = f"{_fmt(distilled[best]['f1_macro'])}: {_row_label(row)} [{variant}]"
            over_tfidf = _fmt(paired.get(best, {}).get("tfidf"), sign=True)
            gap = _fmt(paired.get(best, {}).get("teacher"), sign=True)
            speed = distilled[best].get("b64_vs_teacher") or "-"
            beside = distilled[best].get("b64_vs_teacher_beside")
            goal = _goal(paired.get(best, {}), speed, beside)
            if beside is not None and "†" in speed:  # the mean the goal is judged on, beside the table's
                speed = f"{speed}, {beside:.2f}× beside (n={distilled[best].get('b64_beside_seeds')})"
            same = found.get("weighted_teachers", {}).get(variant)
            weighted = rows.get(f"{TEACHER}|{same}", {}).get("f1_macro")
            if weighted:
                notes.append(f"{d.key}: the best student is class-weighted; the teacher fine-tuned with the same "
                             f"class weights scores {_fmt(weighted)}, and the student "
                             f"{_fmt(paired[best].get('weighted_teacher'), sign=True)} against it (paired).")
        seeds = teacher["n"]
        lines.append(C.md_row(d.key, seeds, _fmt(teacher), _fmt(tfidf), _fmt(alone), best_cell, over_tfidf, gap, speed,
                              goal))
    dagger = (" Throughput: the student's batch-64 samples/s over the teacher's, both timed in turn in the student's "
              "evaluation; † where some seeds timed the two in separate stages." if any("†" in x for x in lines) else "")
    notes_text = "".join(f" {note}" for note in notes)
    return "\n".join([*lines, "", f"Macro-F1 (%) on the full test splits, from `{invocation}`; every row, the seeds and "
                       "the stage times are in [benchmarks/RESULTS.md](benchmarks/RESULTS.md#full-data-results). Best "
                       "distilled student: the best mean among the rows run on two seeds or more, where the teacher was; "
                       "− best TF-IDF and − teacher: paired, seed by seed. Goal: at least the best TF-IDF baseline, "
                       "within 1 point of the teacher, at least 2× its throughput (on the means as shown; the throughput "
                       "over the seeds timed beside the teacher where there are any: \"beside\")."
                       + dagger + notes_text])
