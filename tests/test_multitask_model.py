"""Tests of MultiTaskConfig / MultiTaskModel (shared encoder, one head per task) on tiny random BERT encoders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, BertConfig, BertModel

import distil_trainers  # noqa: F401  (registers the model with the Auto classes)
from distil_trainers.models import MultiTaskConfig, MultiTaskModel

TASKS = {"hate": 3, "offensive": 2, "target": 5}
LABEL_NAMES = {"hate": ["none", "mild", "severe"], "offensive": ["no", "yes"]}


def tiny_bert_config(**kwargs) -> BertConfig:
    defaults = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    defaults.update(kwargs)
    return BertConfig(**defaults)


def make_model(tasks=None, task_label_names=None, seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    config = MultiTaskConfig(
        encoder=tiny_bert_config().to_dict(),
        tasks=dict(TASKS if tasks is None else tasks),
        task_label_names=task_label_names,
        classifier_dropout=0.1,
    )
    return MultiTaskModel(config).eval()


def make_inputs(batch: int = 3, length: int = 7, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 99, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[0, -2:] = 0  # some padding, so the mask matters
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def task_ids(task_id: int, batch: int = 3) -> torch.Tensor:
    return torch.full((batch,), task_id, dtype=torch.long)


@pytest.fixture(scope="module")
def model() -> MultiTaskModel:
    return make_model(task_label_names=LABEL_NAMES)


@pytest.fixture(scope="module")
def saved_dir(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("multitask")
    model.save_pretrained(path)
    return path


# --- save / load ---------------------------------------------------------------------------------------------------


def test_round_trip_gives_identical_logits_for_every_task(model, saved_dir):
    loaded = MultiTaskModel.from_pretrained(saved_dir).eval()
    inputs = make_inputs()
    with torch.no_grad():
        for task_id, name in enumerate(TASKS):
            expected = model(**inputs, task_ids=task_ids(task_id)).logits
            got = loaded(**inputs, task_ids=task_ids(task_id)).logits
            assert got.shape == (3, TASKS[name])
            assert torch.equal(got, expected), name


def test_round_trip_state_dict_is_identical(model, saved_dir):
    loaded = MultiTaskModel.from_pretrained(saved_dir)
    expected = model.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_round_trip_keeps_config(model, saved_dir):
    config = AutoConfig.from_pretrained(saved_dir)
    assert isinstance(config, MultiTaskConfig)
    assert config.tasks == TASKS
    assert list(config.tasks) == list(TASKS)  # the order defines the task ids
    assert config.task_names == list(TASKS)
    assert config.task_label_names == LABEL_NAMES
    assert config.classifier_dropout == 0.1
    assert config.encoder.model_type == "bert"
    assert config.encoder.hidden_size == 32
    assert config.encoder.num_hidden_layers == 2
    assert config.encoder.vocab_size == 99


UNSORTED_TASKS = {"zeta": 2, "alpha": 3, "mid": 4}
# config.json is written with sorted keys: the task order (= the task ids) must survive save/load all the same.


def test_round_trip_keeps_the_task_order_of_the_config(tmp_path):
    config = MultiTaskConfig(encoder=tiny_bert_config().to_dict(), tasks=UNSORTED_TASKS)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert loaded.tasks == UNSORTED_TASKS
    assert loaded.task_names == ["zeta", "alpha", "mid"]
    assert loaded.task_id("zeta") == 0


def test_round_trip_task_ids_select_the_same_heads(tmp_path):
    m = make_model(tasks=UNSORTED_TASKS)
    m.save_pretrained(tmp_path)
    loaded = MultiTaskModel.from_pretrained(tmp_path).eval()
    inputs = make_inputs()
    with torch.no_grad():
        for task_id, name in enumerate(UNSORTED_TASKS):
            got = loaded(**inputs, task_ids=task_ids(task_id)).logits
            assert got.shape == (3, UNSORTED_TASKS[name]), name
            assert torch.equal(got, m(**inputs, task_ids=task_ids(task_id)).logits), name


def test_round_trip_of_unsorted_tasks_keeps_each_heads_weights(tmp_path):
    # the heads are stored by name, so the weights of each named head survive even though the ids do not
    m = make_model(tasks=UNSORTED_TASKS)
    m.save_pretrained(tmp_path)
    loaded = MultiTaskModel.from_pretrained(tmp_path).eval()
    inputs = make_inputs()
    with torch.no_grad():
        for name in UNSORTED_TASKS:
            assert torch.equal(loaded(**inputs, task_ids=name).logits, m(**inputs, task_ids=name).logits), name


@pytest.mark.parametrize("auto_class", [AutoModelForSequenceClassification, AutoModel])
def test_auto_classes_load_a_multitask_model(model, saved_dir, auto_class):
    loaded = auto_class.from_pretrained(saved_dir).eval()
    assert isinstance(loaded, MultiTaskModel)
    assert loaded.config.tasks == TASKS
    inputs = make_inputs()
    with torch.no_grad():
        assert torch.equal(loaded(**inputs, task_ids=task_ids(2)).logits, model(**inputs, task_ids=task_ids(2)).logits)


def test_auto_model_from_config_builds_a_multitask_model():
    config = MultiTaskConfig(encoder=tiny_bert_config().to_dict(), tasks={"a": 2})
    assert isinstance(AutoModelForSequenceClassification.from_config(config), MultiTaskModel)


# --- task selection --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task_id,name", list(enumerate(TASKS)))
def test_task_ids_select_the_head(model, task_id, name):
    inputs = make_inputs()
    with torch.no_grad():
        logits = model(**inputs, task_ids=task_ids(task_id)).logits
        cls = model.encoder(**inputs).last_hidden_state[:, 0]
        expected = model.heads[name](cls)
    assert logits.shape == (3, TASKS[name])
    assert torch.allclose(logits, expected, rtol=0, atol=1e-6)
    # and it is not the output of any other head (different widths aside, the heads differ)
    for other in TASKS:
        if other != name and TASKS[other] == TASKS[name]:
            with torch.no_grad():
                assert not torch.allclose(logits, model.heads[other](cls))


def test_heads_have_the_configured_sizes(model):
    assert list(model.heads) == list(TASKS)
    for name, n in TASKS.items():
        assert model.heads[name].out_features == n
        assert model.heads[name].in_features == 32


def test_task_can_be_given_by_name(model):
    inputs = make_inputs()
    with torch.no_grad():
        by_name = model(**inputs, task_ids="offensive").logits
        by_id = model(**inputs, task_ids=task_ids(1)).logits
    assert torch.equal(by_name, by_id)


def test_mixed_task_batch_raises_naming_the_ids(model):
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        model(**make_inputs(), task_ids=torch.tensor([0, 2, 0]))


@pytest.mark.parametrize("bad_id", [3, 7, -1])
def test_out_of_range_task_id_raises(model, bad_id):
    with pytest.raises(ValueError, match=f"task id {bad_id} out of range"):
        model(**make_inputs(), task_ids=task_ids(bad_id))


def test_unknown_task_name_raises(model):
    with pytest.raises(KeyError, match="nope"):
        model(**make_inputs(), task_ids="nope")


def test_single_task_model_works_without_task_ids():
    single = make_model(tasks={"only": 4})
    inputs = make_inputs()
    with torch.no_grad():
        without = single(**inputs).logits
        with_ids = single(**inputs, task_ids=task_ids(0)).logits
        expected = single.heads["only"](single.encoder(**inputs).last_hidden_state[:, 0])
    assert without.shape == (3, 4)
    assert torch.equal(without, with_ids)
    assert torch.allclose(without, expected, rtol=0, atol=1e-6)


def test_multi_task_model_without_task_ids_raises(model):
    with pytest.raises(ValueError, match="task_ids"):
        model(**make_inputs())


def test_token_type_ids_are_passed_to_the_encoder(model):
    inputs = make_inputs()
    token_type_ids = torch.zeros_like(inputs["input_ids"])
    token_type_ids[:, 3:] = 1
    with torch.no_grad():
        logits = model(**inputs, token_type_ids=token_type_ids, task_ids=task_ids(0)).logits
        cls = model.encoder(**inputs, token_type_ids=token_type_ids).last_hidden_state[:, 0]
        plain = model(**inputs, task_ids=task_ids(0)).logits
    assert torch.allclose(logits, model.heads["hate"](cls), rtol=0, atol=1e-6)
    assert not torch.allclose(logits, plain)


# --- loss ------------------------------------------------------------------------------------------------------------


def test_loss_equals_cross_entropy(model):
    inputs = make_inputs()
    labels = torch.tensor([4, 0, 2])
    with torch.no_grad():
        out = model(**inputs, task_ids=task_ids(2), labels=labels)
    assert out.loss is not None
    assert out.loss.shape == ()
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels), rtol=1e-6, atol=1e-6)


def test_no_labels_no_loss(model):
    with torch.no_grad():
        assert model(**make_inputs(), task_ids=task_ids(0)).loss is None


def test_loss_rejects_labels_beyond_the_task_head(model):
    # label 3 is valid for "target" (5 classes) but not for "offensive" (2 classes)
    with pytest.raises(ValueError):
        model(**make_inputs(), task_ids=task_ids(1), labels=torch.tensor([0, 1, 3]))


def test_loss_backpropagates_only_into_the_selected_head():
    m = make_model().train()
    out = m(**make_inputs(), task_ids=task_ids(0), labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    assert m.heads["hate"].weight.grad is not None and m.heads["hate"].weight.grad.abs().sum() > 0
    assert m.heads["offensive"].weight.grad is None
    assert m.heads["target"].weight.grad is None
    assert m.encoder.embeddings.word_embeddings.weight.grad is not None


def test_output_hidden_states(model):
    with torch.no_grad():
        out = model(**make_inputs(), task_ids=task_ids(0), output_hidden_states=True)
    assert out.hidden_states is not None
    assert len(out.hidden_states) == 3  # embeddings + 2 layers


# --- config validation -----------------------------------------------------------------------------------------------


def test_config_label_names_length_mismatch():
    with pytest.raises(ValueError, match="'hate' has 3 classes but 2 label names"):
        MultiTaskConfig(encoder=tiny_bert_config().to_dict(), tasks={"hate": 3}, task_label_names={"hate": ["a", "b"]})


def test_config_unknown_task_in_label_names():
    with pytest.raises(ValueError, match="'other'.*not in tasks"):
        MultiTaskConfig(
            encoder=tiny_bert_config().to_dict(), tasks={"hate": 2}, task_label_names={"other": ["a", "b"]}
        )


@pytest.mark.parametrize("n", [0, -1])
def test_config_task_without_classes(n):
    with pytest.raises(ValueError, match="'empty' must have at least one class"):
        MultiTaskConfig(encoder=tiny_bert_config().to_dict(), tasks={"ok": 2, "empty": n})


def test_config_task_id_lookup():
    config = MultiTaskConfig(encoder=tiny_bert_config().to_dict(), tasks={"a": 2, "b": 3})
    assert config.task_id("a") == 0
    assert config.task_id("b") == 1
    with pytest.raises(KeyError, match="'c'"):
        config.task_id("c")


def test_config_accepts_an_encoder_config_object():
    config = MultiTaskConfig(encoder=tiny_bert_config(), tasks={"a": 2})
    assert config.encoder.hidden_size == 32
    assert MultiTaskModel(config).heads["a"].in_features == 32


def test_model_without_tasks_raises():
    with pytest.raises(ValueError, match="tasks is empty"):
        MultiTaskModel(MultiTaskConfig(encoder=tiny_bert_config().to_dict()))


# --- from_encoder ----------------------------------------------------------------------------------------------------


def test_from_encoder_copies_the_encoder_weights(tmp_path):
    torch.manual_seed(3)
    encoder = BertModel(tiny_bert_config()).eval()
    encoder.save_pretrained(tmp_path)
    m = MultiTaskModel.from_encoder(str(tmp_path), tasks={"a": 2, "b": 4}, task_label_names={"b": list("wxyz")})
    assert isinstance(m, MultiTaskModel)
    assert m.config.tasks == {"a": 2, "b": 4}
    assert m.config.task_label_names == {"b": list("wxyz")}
    assert m.config.encoder.hidden_size == 32
    expected = encoder.state_dict()
    got = m.encoder.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    assert m.heads["a"].out_features == 2
    assert m.heads["b"].out_features == 4
    m.eval()
    inputs = make_inputs()
    with torch.no_grad():
        hidden = encoder(**inputs).last_hidden_state
        assert torch.equal(m.encoder(**inputs).last_hidden_state, hidden)
        logits = m(**inputs, task_ids=task_ids(1)).logits
    assert torch.allclose(logits, m.heads["b"](hidden[:, 0]), rtol=0, atol=1e-6)


def test_from_encoder_then_round_trip(tmp_path):
    torch.manual_seed(4)
    BertModel(tiny_bert_config()).save_pretrained(tmp_path / "enc")
    m = MultiTaskModel.from_encoder(str(tmp_path / "enc"), tasks={"a": 2, "b": 3}).eval()
    m.save_pretrained(tmp_path / "mt")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "mt").eval()
    inputs = make_inputs()
    with torch.no_grad():
        for task_id in range(2):
            assert torch.equal(
                loaded(**inputs, task_ids=task_ids(task_id)).logits, m(**inputs, task_ids=task_ids(task_id)).logits
            )
