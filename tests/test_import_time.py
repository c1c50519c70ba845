"""The package namespace is lazy: importing it, or a classifier trainer, does not pull in TRL, PEFT, scikit-learn,
matplotlib, jinja2 or the LLM backends beyond what transformers' Trainer loads itself (the import-time figures are in benchmarks/import_time.py)."""

import functools
import subprocess
import sys

import pytest

HEAVY = ("trl", "peft", "sklearn", "pandas", "llama_cpp", "matplotlib", "jinja2")


@functools.cache  # the baseline is the same for every statement: one interpreter for it, not one per test
def modules_after(statement: str) -> frozenset[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(m for m in sys.modules if '.' not in m)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return frozenset(out.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import distil_trainers",
        "from distil_trainers import AnnealingTrainer, MutualLearningTrainer, losses, schedules",
        "from distil_trainers.trainers.adversarial import AdversarialTrainer",
        "from distil_trainers.teachers.cache import precompute_teacher_outputs",
        "from distil_trainers.data import load_text_classification",
    ],
)
def test_classifier_paths_do_not_import_heavy_optional_modules(statement):
    # what transformers' Trainer and datasets import themselves (peft and pandas where installed) is not ours to save
    ours = (modules_after(statement) - modules_after("from transformers import Trainer; import datasets")) & set(HEAVY)
    assert not ours, f"{statement!r} imported {sorted(ours)}"


def test_lazy_names_resolve_to_their_modules():
    import distil_trainers
    from distil_trainers.trainers.annealing import AnnealingTrainer

    assert distil_trainers.AnnealingTrainer is AnnealingTrainer
    assert "RationaleSFTTrainer" in dir(distil_trainers) and "RationaleSFTTrainer" in distil_trainers.__all__
    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        distil_trainers.NotAThing  # noqa: B018


@pytest.mark.parametrize(
    "package",
    ["distil_trainers", "distil_trainers.trainers", "distil_trainers.data", "distil_trainers.models",
     "distil_trainers.teachers", "distil_trainers.teachers.rationales"],
)
def test_every_lazy_name_resolves(package):
    import importlib

    module = importlib.import_module(package)
    listed = {name: sub for sub, names in module._EXPORTS.items() for name in names}
    assert sorted(listed) == sorted(module.__all__)
    for name, sub in listed.items():
        assert getattr(module, name) is getattr(importlib.import_module(f"{package}.{sub}"), name), name
