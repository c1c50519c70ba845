# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""
Report, plots and model cards for finished runs of the other recipes.

Every saved model below the run directory (teacher, students, baselines trained alone; not the checkpoints) is
evaluated on a split of a registered dataset, together with the ensemble of each mutual-learning run. A multi-task
model (``MultiTaskModel``, saved by the multi-task annealing and feature-KD configs) is evaluated head by head, each
task on the registered dataset of that name (``--tasks`` picks heads), one report row per (model, task). Written to
``<first run dir>/evaluation`` (or ``--output_dir``):

- ``report.json`` / ``report.md``: accuracy, macro precision / recall / F1, per-class F1, confusion matrix, parameters
  and inference samples/s of every model; with several run directories (the same recipe with different seeds), the
  mean ± sample standard deviation (ddof=1) over them;
- ``plots/``: training curves (every logged loss component and λ over the steps), confusion matrices, and a bar
  chart per metric comparing teacher, students, baselines and ensembles;
- with ``--write_cards true``: a ``README.md`` model card beside every saved student.

Usage:

    python recipes/evaluate_runs.py --run_dirs runs/ddml_quickstart --dataset davidson --max_samples 800 --max_length 64
    python recipes/evaluate_runs.py --run_dirs runs/s1 runs/s2 runs/s3 --seeds 1 2 3 --dataset davidson
    python recipes/evaluate_runs.py --run_dirs runs/annealing_multitask --max_samples 800 --max_length 64
    python recipes/evaluate_runs.py --config evaluate.yaml

(The script is not called ``evaluate.py``: run as ``python recipes/<name>.py``, a file of that name in ``recipes/``
would shadow the ``evaluate`` package for every recipe.) The same is available as ``distil-trainers evaluate <run dirs> --dataset ...`` once the package is installed.
Use the run's ``max_eval_samples`` / ``max_length`` / ``seed`` so that the evaluated examples are the run's.
"""

from __future__ import annotations

import os

from trl import TrlParser

from distil_trainers.papers.cli import EvaluateArguments, run_evaluation

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    (arguments,) = TrlParser((EvaluateArguments,)).parse_args_and_config()
    run_evaluation(arguments)
