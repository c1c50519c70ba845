"""scripts/gpu_smoke.sh: its syntax, and its CPU dry run (the same commands as on the GPU, on a tiny Llama, a handful
of Davidson posts and 2 training steps) completing with both students scored in results.json and every model of the
efficiency table measured the same way."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rationale_fixtures import tiny_llama, tiny_tokenizer

from distil_trainers.data import get_data_dir

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_smoke.sh"


def test_the_script_parses_and_refuses_unknown_arguments():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(SCRIPT)], check=True)
    wrong = subprocess.run(["bash", str(SCRIPT), "--fast"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown argument --fast" in wrong.stderr
    usage = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    assert "--dry-run" in usage.stdout and "set -euo" not in usage.stdout


@pytest.mark.slow
@pytest.mark.skipif(get_data_dir() is None, reason="no data directory (set DISTIL_TRAINERS_DATA_DIR)")
def test_the_dry_run_runs_the_whole_chain(tmp_path):
    tok = tiny_tokenizer()
    tiny_llama(tok).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    env = {
        **os.environ,
        "DRY_RUN_MODEL": str(tmp_path / "model"),
        "OUT": str(out),
        "PYTHON": sys.executable,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "DISTIL_TRAINERS_DATA_DIR": str(get_data_dir()),
    }
    run = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True, timeout=1200
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "both students scored" in run.stdout
    for stage in ("generate", "train", "evaluate"):
        assert f"[smoke] stage {stage}: " in run.stdout
    results = json.loads((out / "results.json").read_text())
    for name in ("student", "student_label_only"):
        assert 0 <= results[name]["f1_macro"] <= 1 and 0 <= results[name]["agreement"] <= 1
        assert results[name]["generated_posts"] == results["eval_posts"] == 4
        assert (out / name / "adapter_config.json").is_file()
    rows = {row["name"]: row for row in results["efficiency"]}
    assert set(rows) == {
        "teacher (transformers): label + explanation", "student: label scoring", "student: explanation (generate)",
    }  # fmt: skip
    assert {row["peak_memory_method"] for row in rows.values()} == {"fresh_process_peak_rss"}
    assert all(row["error"] is None and row["peak_memory_bytes"] > row["weight_bytes"] for row in rows.values())
    assert (out / "results.md").is_file()
