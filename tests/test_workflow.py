"""Stage bookkeeping of the recipes: finished stages are reused only for the same settings; interrupted ones resume."""

from __future__ import annotations

import json

from distil_trainers.papers.workflow import (
    COMPLETE_MARKER,
    fingerprint,
    mark_complete,
    prepare_stage,
    results_table,
)


def test_fingerprint_is_stable_and_sensitive():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_finished_stage_is_reused_only_with_the_same_settings(tmp_path):
    stage = tmp_path / "teacher"
    assert prepare_stage(stage, "k1") is False          # new: start it
    (stage / "checkpoint-3").mkdir()
    assert prepare_stage(stage, "k1") is False          # interrupted, same settings: keep the checkpoint to resume
    assert (stage / "checkpoint-3").is_dir()
    mark_complete(stage, {"steps": 6})
    assert prepare_stage(stage, "k1") is True           # finished: reuse
    assert prepare_stage(stage, "k2") is False          # other settings: the old result is gone
    assert not (stage / "checkpoint-3").exists() and not (stage / COMPLETE_MARKER).exists()
    assert json.loads((stage / "stage.json").read_text()) == {"fingerprint": "k2"}


def test_results_table_formats_percentages_and_extra_columns():
    rows = [{"model": "student", "params": 17_400_000, "task": "davidson", "f1_macro": 0.5812, "samples_per_second": 75.44}]
    table = results_table(rows, metrics=("f1_macro", "accuracy"), extra=("samples_per_second",)).splitlines()
    assert table[0] == "| model | params | task | f1_macro | accuracy | samples_per_second |"
    assert table[2] == "| student | 17.4M | davidson | 58.12 | - | 75.4 |"


def test_stage_arguments_take_the_runs_settings_and_the_overrides(tmp_path):
    from distil_trainers import AnnealingArguments
    from distil_trainers.papers.workflow import STAGE_FIELDS, stage_arguments

    run = AnnealingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=7, warmup_steps=3, weight_decay=0.02, seed=5,
        logging_steps=4, report_to="none", use_cpu=True, learning_rate=1e-3, num_train_epochs=9, annealing="jafari",
    )
    stage = stage_arguments(run, tmp_path / "teacher", num_train_epochs=2, learning_rate=5e-5)
    assert type(stage) is AnnealingArguments
    assert all(getattr(stage, name) == getattr(run, name) for name in STAGE_FIELDS)
    assert (stage.output_dir, stage.num_train_epochs, stage.learning_rate) == (str(tmp_path / "teacher"), 2, 5e-5)
    assert (stage.save_strategy, stage.save_total_limit) == ("epoch", 1)
    assert stage.annealing == "bam"  # not taken over from the run: the field's default
