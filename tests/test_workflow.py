"""Stage bookkeeping of the recipes: finished stages are reused only for the same settings; interrupted ones resume."""

from __future__ import annotations

import json

from distil_trainers.workflow import (
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
