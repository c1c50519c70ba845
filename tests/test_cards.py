"""Model cards: the right citation per method, metadata the Hub reads back, templates found in an installed package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import random_classification_dataset, tiny_classifier
from huggingface_hub import ModelCard, metadata_load

from distil_trainers import AnnealingArguments, AnnealingTrainer
from distil_trainers.cards import (
    METHODS,
    CardContext,
    PeerInfo,
    card_context_from_trainer,
    card_metadata,
    dataset_info,
    hub_id_of,
    load_template,
    render_model_card,
    write_model_card,
)

ROOT = Path(__file__).resolve().parents[1]

# method -> strings of its citation that must be in the card
CITATIONS = {
    "bam": ["BAM", "Clark, Kevin", "P19-1595"],
    "jafari": ["Annealing Knowledge Distillation", "Jafari, Aref", "2021.eacl-main.212"],
    "hinton": ["Distilling the Knowledge in a Neural Network", "1503.02531"],
    "mse": ["MKD-BERT", "Zhang, Ying", "Breazu, Radu"],
    "ddml": ["Multi-Student Knowledge Distillation for Hate Speech", "Liu, Ze", "10.3390/e27040417"],
    "rationale": ["Distilling Step-by-Step", "Hsieh, Cheng-Yu", "2412.13698", "Piot, Paloma"],
}


def context(method="bam", **overrides):
    values = dict(
        model_name="minilm3-davidson",
        method=method,
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        params=17_400_000,
        teacher="me/minilm6-davidson",
        datasets=[dataset_info("davidson", {"train": 2000, "test": 1000})],
        label_names=["hate", "offensive", "neither"],
        hyperparameters={"learning_rate": 1e-4, "lambda_schedule": "linear"},
        metrics=[
            {
                "model": "this model",
                "dataset": "davidson",
                "split": "test",
                "values": {
                    "accuracy": 0.885,
                    "precision_macro": 0.5566,
                    "recall_macro": 0.6048,
                    "f1_macro": 0.5795,
                    "f1_hate": 0.12,
                },
            }
        ],
    )
    values.update(overrides)
    return CardContext(**values)


@pytest.mark.parametrize("method", sorted(CITATIONS))
def test_card_cites_the_method_and_states_limitations(method):
    text = render_model_card(context(method))
    for needle in CITATIONS[method]:
        assert needle in text, needle
    others = [s for m, strings in CITATIONS.items() if m != method for s in strings[-1:]]
    assert not any(s in text for s in others if s not in CITATIONS[method])  # no other method's reference
    assert METHODS[method].title in text
    assert "Not for automated moderation without review" in text
    assert "False positives on dialects" in text
    assert "| test | 88.50 | 55.66 | 60.48 | 57.95 | 12.00 |" in text  # the metrics table, in %
    assert "train (2,000), test (1,000)" in text


def test_feature_matching_adds_mkd_bert_and_tinybert():
    text = render_model_card(context("bam", feature_matching="3 matches (attention/attention_mse, hidden/kl)."))
    assert "MKD-BERT" in text and "TinyBERT" in text and "Clark, Kevin" in text


def test_metadata_round_trips_through_huggingface_hub(tmp_path):
    ctx = context("ddml", peers=[PeerInfo("wpbert", repo_id="me/ddml-wpbert")])
    path = write_model_card(ctx, tmp_path)
    assert path == tmp_path / "README.md"
    loaded = metadata_load(path)
    assert loaded == card_metadata(ctx).to_dict()
    assert loaded["license"] == "apache-2.0"
    assert loaded["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert loaded["datasets"] == ["tdavidson/hate_speech_offensive"] and loaded["language"] == ["en"]
    assert loaded["pipeline_tag"] == "text-classification"
    assert {"knowledge-distillation", "ddml", "hate-speech"} <= set(loaded["tags"])
    assert set(loaded["metrics"]) == {"accuracy", "precision", "recall", "f1"}
    card = ModelCard.load(path)
    results = {(r.metric_name, r.metric_value, r.dataset_split) for r in card.data.eval_results}
    assert ("f1_macro", 0.5795, "test") in results and ("accuracy", 0.885, "test") in results
    assert "[me/ddml-wpbert](https://huggingface.co/me/ddml-wpbert)" in card.text


@pytest.mark.parametrize(
    ("datasets", "language", "expected"),
    [
        (["davidson"], [], ["en"]),
        (["hasoc_de_a"], [], ["de"]),
        (["redv1", "tweeteval_emotion", "sst2"], [], ["ro", "en"]),
        ([], [], ["en"]),
        (["hasoc_de_a"], ["de", "en"], ["de", "en"]),  # given explicitly: kept
    ],
)
def test_card_language_comes_from_the_datasets(tmp_path, datasets, language, expected):
    ctx = context(datasets=[dataset_info(name) for name in datasets], language=language)
    assert metadata_load(write_model_card(ctx, tmp_path))["language"] == expected


def test_unknown_method_and_unreadable_metadata_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown method"):
        context("telepathy")
    (tmp_path / "student.md.j2").write_text("---\n{{ card_data }}\ntags: [unclosed\n---\n# broken\n")
    with pytest.raises(yaml.YAMLError):  # the card is parsed back before it is returned
        render_model_card(context(), template_dir=tmp_path)


def test_hub_ids():
    assert hub_id_of("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert hub_id_of("/tmp/some/local/folder") is None
    assert hub_id_of(None) is None
    from distil_trainers.models.paths import packaged_model_path

    local = packaged_model_path("sentence-transformers/all-MiniLM-L6-v2")
    if local is not None:
        assert hub_id_of(local) == "sentence-transformers/all-MiniLM-L6-v2"
    assert dataset_info("tweeteval_hate").hub_id is not None
    assert dataset_info("not-registered").hub_id is None


def test_user_templates_take_precedence(tmp_path, monkeypatch):
    (tmp_path / "student.md.j2").write_text("---\n{{ card_data }}\n---\n# custom {{ model_name }}\n")
    text = render_model_card(context(), template_dir=tmp_path)
    assert "# custom minilm3-davidson" in text and "license: apache-2.0" in text
    monkeypatch.setenv("DISTIL_TRAINERS_CARD_TEMPLATES", str(tmp_path))
    assert "# custom" in render_model_card(context())
    monkeypatch.delenv("DISTIL_TRAINERS_CARD_TEMPLATES")
    assert "# custom" not in render_model_card(context())


def test_documented_template_folder_is_the_packaged_one():
    packaged = Path(load_template().filename).resolve()
    assert packaged == (ROOT / "model_cards" / "student.md.j2").resolve()


def test_context_from_an_annealing_trainer(tmp_path):
    torch.manual_seed(0)
    data = random_classification_dataset(n=16)
    args = AnnealingArguments(
        output_dir=str(tmp_path / "bam-run"),
        per_device_train_batch_size=8,
        num_train_epochs=1,
        eval_strategy="epoch",
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        lambda_schedule="cosine",
    )
    from distil_trainers.metrics import build_compute_metrics

    trainer = AnnealingTrainer(
        model=tiny_classifier(1),
        teacher_model=tiny_classifier(0),
        args=args,
        train_dataset=data,
        eval_dataset=data,
        compute_metrics=build_compute_metrics(),
    )
    trainer.train()
    ctx = card_context_from_trainer(trainer, datasets=["davidson"])
    last_eval = [e for e in trainer.state.log_history if "eval_f1_macro" in e][-1]
    assert ctx.method == "bam" and ctx.model_name == "bam-run"
    assert ctx.hyperparameters["lambda_schedule"] == "cosine" and ctx.hyperparameters["learning_rate"] == 5e-5
    assert ctx.params == sum(p.numel() for p in trainer.model.parameters())
    assert ctx.metrics[0]["values"]["f1_macro"] == last_eval["eval_f1_macro"]
    assert ctx.metrics[0]["split"] == "validation"
    assert ctx.teacher == "BertForSequenceClassification"  # a model built from a config has no name
    assert "Clark, Kevin" in render_model_card(ctx)


def test_templates_load_from_a_non_editable_install(tmp_path):
    source, target = tmp_path / "src", tmp_path / "site"  # build from a copy: no build/ or egg-info in the checkout
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "tests"
        ),
    )
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-compile",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    assert (target / "distil_trainers" / "model_cards" / "student.md.j2").is_file()
    script = textwrap.dedent(
        """
        import distil_trainers, distil_trainers.cards as cards
        print(distil_trainers.__file__)
        print(cards.load_template().filename)
        ctx = cards.CardContext(model_name="x", method="jafari", datasets=[cards.dataset_info("davidson")])
        print("Jafari, Aref" in cards.render_model_card(ctx))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("DISTIL_TRAINERS_CARD_TEMPLATES", None)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    module, template, cited = run.stdout.split()[-3:]
    assert module.startswith(str(target)) and template.startswith(str(target)) and cited == "True"


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        ({"method": "bam", "tasks": {}}, "bam"),
        ({"task": "hasoc_en_a", "method": "jafari"}, "jafari"),
        ({"method": "ffn_cls"}, "mse"),
        ({"generation": 1, "tasks": {}}, "bam"),  # born-again MTKD student written before the marker named its method
        ({"variant": "adversarial", "stage": 2}, "finetune"),  # trained on labels, no teacher
        ({"base": "x", "tasks": {}}, "finetune"),
    ],
)
def test_saved_model_method_reads_the_recipes_markers(tmp_path, marker, expected):
    import json

    from distil_trainers.cards import saved_model_method

    (tmp_path / "training_complete.json").write_text(json.dumps(marker))
    assert saved_model_method(tmp_path)[0] == expected


def test_trainer_name_tags_and_paper_go_into_the_card():
    from types import SimpleNamespace

    class CitingTrainer:  # what card_context_from_trainer reads of a trainer, and the class attributes TRL's carry
        _name = "BAM"
        _tag_names = ["distil-trainers", "teacher-annealing", "bam"]
        _paper = {"title": "BAM!", "citation": METHODS["bam"].citations[0].replace("  ", " ")}  # same paper, respaced

        def __init__(self):
            self.model = tiny_classifier(1)
            self.args = AnnealingArguments(output_dir="bam-run", report_to="none")
            self.state = SimpleNamespace(log_history=[])
            self.accelerator = SimpleNamespace(unwrap_model=lambda m: m)

    ctx = card_context_from_trainer(CitingTrainer(), tags=["mine"])
    assert (ctx.trainer_class, ctx.trainer_name, ctx.method) == ("CitingTrainer", "BAM", "bam")
    assert ctx.tags == ["distil-trainers", "teacher-annealing", "bam", "mine"]
    text = render_model_card(ctx)
    assert "| trainer | `CitingTrainer` (BAM) |" in text
    assert text.count("Clark, Kevin") == 1  # the trainer's citation and the method's are one paper: cited once
    assert {"bam", "mine"} <= set(card_metadata(ctx).tags)


def test_cards_import_jinja2_only_to_render():
    code = "import sys, distil_trainers.cards, distil_trainers.hub; print('jinja2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "False"
