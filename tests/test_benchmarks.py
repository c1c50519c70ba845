"""Smoke tests of the benchmark scripts: tiny models, a few steps, one repetition. No timing is asserted; the runs
must complete, report every contender, and give finite step times, ratios, memory and (peers) macro-F1."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "result.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--setup", "tiny", "--steps", "2", "--warmup", "1",
           "--reps", "1", "--n-train", "48", "--n-eval", "16", "--batch-size", "8", "--threads", "1",
           "--workdir", str(tmp_path / "work"), "--json", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def finite(x) -> bool:
    return x is not None and math.isfinite(x)


@pytest.mark.slow
def test_overhead_script_reports_ratios_and_floors(tmp_path):
    result = run("overhead.py", tmp_path, "--contenders", "plain,teacher_forward,live,cached")
    rows = {r["contender"]: r for r in result["rows"]}
    assert set(rows) == {"plain", "live", "cached"}
    for row in rows.values():
        assert not row["errors"], row
        assert finite(row["ratio"]) and finite(row["peak_rss_mb"]) and row["peak_rss_mb"] > 0
    assert rows["plain"]["ratio"] == 1.0
    assert rows["live"]["floor"] == pytest.approx(1 + result["teacher_forward_share"])
    assert rows["cached"]["floor"] == 1.0
    assert result["header"]["versions"]["torch"] != "not installed"
    assert result["cache"]["examples"] == 48


@pytest.mark.slow
def test_peers_script_runs_ours_and_reports_missing_peers(tmp_path):
    result = run("peers.py", tmp_path, "--contenders", "ours,ours_cached,textbrewer,ours_ddml_cached")
    rows = {r["contender"]: r for r in result["rows"]}
    for name in ("ours", "ours_cached", "ours_ddml_cached"):
        assert not rows[name]["errors"], rows[name]
        assert finite(rows[name]["samples_per_s"]) and 0.0 <= rows[name]["macro_f1"] <= 1.0
    versions = result["header"]["versions"]
    if versions["textbrewer"] == "not installed":  # the project's own environment has no peers: a clear error
        assert rows["textbrewer"]["errors"] and "textbrewer" in rows["textbrewer"]["errors"][0].lower()
    else:
        assert not rows["textbrewer"]["errors"]


def test_import_time_script_times_each_statement_and_names_heavy_modules():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "import_time.py"), "--repeats", "1", "--statements",
           "import distil_trainers", "import sklearn"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split("|")[1].strip(" `"): [c.strip() for c in line.split("|")[2:-1]]
            for line in proc.stdout.splitlines() if line.startswith("| `")}
    assert list(rows) == ["import transformers", "from transformers import Trainer", "import distil_trainers",
                          "import sklearn"]
    assert all(float(cells[0]) >= 0 for cells in rows.values())
    assert rows["import transformers"][1] == "+0.00" and rows["from transformers import Trainer"][2] == "+0.00"
    assert "sklearn" in rows["import sklearn"][3] and rows["import distil_trainers"][3] == "—"
