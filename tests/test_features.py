"""Feature matching (distil_trainers.features) and its integration in the trainers, on tiny random models: parsing and
validation of matches, the uniform layer map, projections (golden value, optimizer, saving, resuming), what is asked
of the models, short runs that lower each kind of feature loss, gradient accumulation, multi-task models and DDP."""

from __future__ import annotations

import functools
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import random_classification_dataset, small_run_args, tiny_bert_config, tiny_classifier
from safetensors.torch import load_file
from transformers import BertForSequenceClassification, HfArgumentParser

from distil_trainers import (
    AnnealingArguments,
    AnnealingTrainer,
    MultiTaskConfig,
    MultiTaskModel,
)
from distil_trainers.data.multitask import concatenate_tasks
from distil_trainers.features import (
    PROJECTIONS_NAME,
    FeatureDistiller,
    FeatureMatch,
    model_dimensions,
    parse_feature_matches,
    uniform_layer_map,
    uniform_matches,
)


def narrow_student(seed: int = 1, layers: int = 1, hidden: int = 16, **kwargs) -> BertForSequenceClassification:
    """A student narrower than the tiny teacher (hidden 32), so vector matches need a projection."""
    torch.manual_seed(seed)
    config = tiny_bert_config(layers=layers, **kwargs)
    config.hidden_size, config.intermediate_size = hidden, 20
    return BertForSequenceClassification(config)


def make_args(tmp_path, **overrides) -> AnnealingArguments:
    return small_run_args(AnnealingArguments, tmp_path, **{"per_device_eval_batch_size": 16, **overrides})


HIDDEN_MATCH = {"student_layer": 1, "teacher_layer": 2, "feature": "hidden", "loss": "mse"}


# ---- matches ------------------------------------------------------------------------------------------------------


def test_feature_match_parsing_and_normalisation():
    matches = parse_feature_matches(
        '[{"student_layer": 2, "teacher_layer": 4, "feature": "hidden", "loss": "similarity_kl", "weight": 0.5},'
        ' {"feature": "embeddings", "loss": "kl"}, {"student_layer": 1, "teacher_layer": 3, "feature": "attention",'
        ' "loss": "mse"}]'
    )
    assert matches[0] == FeatureMatch(2, 4, "hidden", "similarity_kl", 0.5)
    assert (matches[1].student_layer, matches[1].teacher_layer) == (0, 0)
    assert matches[2].loss == "attention_mse"  # "mse" on attention maps is TinyBERT's loss
    assert [m.name for m in matches] == ["hidden_similarity_kl_s2_t4", "embeddings_kl", "attention_mse_s1_t3"]
    assert parse_feature_matches({"student_layer": 1, "teacher_layer": 1, "feature": "cls", "loss": "cosine"})[0].feature == "cls"
    assert parse_feature_matches(None) == [] and parse_feature_matches("") == []
    assert parse_feature_matches([m.to_dict() for m in matches]) == matches


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"student_layer": 1, "teacher_layer": 1, "feature": "logits"}, "Unknown feature 'logits'"),
        ({"student_layer": 1, "teacher_layer": 1, "feature": "cls", "loss": "similarity_kl"}, "does not apply to feature 'cls'"),
        ({"student_layer": 1, "teacher_layer": 1, "feature": "attention", "loss": "kl"}, "does not apply"),
        ({"student_layer": 1, "feature": "hidden"}, "needs teacher_layer"),
        ({"student_layer": 2, "teacher_layer": 0, "feature": "embeddings"}, "embedding-layer output"),
        ({"student_layer": 1, "teacher_layer": 1, "weight": -1}, "weight"),
        ({"student_layer": 1, "teacher_layer": 1, "temperature": 0}, "temperature"),
        ({"student_layer": 1, "teacher_layer": 1, "layer": 3}, r"Unknown keys \['layer'\]"),
        ("[{not json", "must be JSON"),
    ],
)
def test_bad_matches(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_feature_matches(spec)


def test_uniform_layer_map():
    assert uniform_layer_map(3, 6) == {1: 2, 2: 4, 3: 6}
    assert uniform_layer_map(4, 6) == {1: 2, 2: 3, 3: 5, 4: 6}  # ceil(m * 6 / 4)
    assert uniform_layer_map(6, 6) == {i: i for i in range(1, 7)}
    assert uniform_layer_map(2, 12, include_embeddings=True) == {0: 0, 1: 6, 2: 12}
    assert uniform_layer_map(4, 2) == {1: 1, 2: 1, 3: 2, 4: 2}
    with pytest.raises(ValueError, match=">= 1"):
        uniform_layer_map(0, 6)
    matches = uniform_matches(3, 6, feature="cls", loss="mse", weight=0.5)
    assert [(m.student_layer, m.teacher_layer, m.feature, m.loss, m.weight) for m in matches] == [
        (1, 2, "cls", "mse", 0.5), (2, 4, "cls", "mse", 0.5), (3, 6, "cls", "mse", 0.5)]


def test_model_dimensions_of_plain_and_multitask_models():
    assert model_dimensions(tiny_classifier(0, layers=3)) == (3, 32, 2)
    torch.manual_seed(0)
    multitask = MultiTaskModel(MultiTaskConfig(encoder=tiny_bert_config(layers=4).to_dict(), tasks={"a": 2}))
    assert model_dimensions(multitask) == (4, 32, 2)


@pytest.mark.parametrize(
    "match, message",
    [
        ({"student_layer": 5, "teacher_layer": 2, "feature": "hidden", "loss": "kl"},
         r"student_layer=5 does not exist\. The student has 1 transformer layers, so student_layer must be in 0\.\.1"),
        ({"student_layer": 1, "teacher_layer": 3, "feature": "cls", "loss": "mse"},
         r"teacher_layer=3 does not exist\. The teacher has 2 transformer layers, so teacher_layer must be in 0\.\.2"),
        ({"student_layer": 0, "teacher_layer": 1, "feature": "attention", "loss": "attention_mse"},
         r"student_layer=0 does not exist.*must be in 1\.\.1 for feature 'attention'"),
    ],
)
def test_a_match_on_a_missing_layer_fails_at_construction_naming_the_range(tmp_path, match, message):
    with pytest.raises(ValueError, match=message):
        AnnealingTrainer(model=narrow_student(layers=1), teacher_model=tiny_classifier(0, layers=2),
                         args=make_args(tmp_path, feature_matches=[match]))


def test_bad_feature_arguments_fail_when_the_arguments_are_built(tmp_path):
    with pytest.raises(ValueError, match="Unknown feature"):
        make_args(tmp_path, feature_matches='[{"student_layer": 1, "teacher_layer": 1, "feature": "ffn"}]')
    with pytest.raises(ValueError, match="feature_loss_weight"):
        make_args(tmp_path, feature_loss_weight=-1.0)


def test_matches_from_the_command_line_and_from_yaml(tmp_path):
    parser = HfArgumentParser(AnnealingArguments)
    (args,) = parser.parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--feature_matches", json.dumps([HIDDEN_MATCH]), "--feature_loss_weight", "2"]
    )
    assert args.feature_matches == [FeatureMatch(**HIDDEN_MATCH).to_dict()] and args.feature_loss_weight == 2.0
    config = tmp_path / "c.yaml"
    config.write_text(
        f"output_dir: {tmp_path}\nfeature_matches:\n  - {{student_layer: 1, teacher_layer: 2, feature: hidden, loss: mse}}\n"
        "  - {feature: embeddings, loss: kl, weight: 0.5}\n"
    )
    (args,) = parser.parse_yaml_file(str(config))
    assert [m["feature"] for m in args.feature_matches] == ["hidden", "embeddings"]
    json.dumps(args.to_dict())  # still serialisable (saved with checkpoints, sent to loggers)


# ---- the distiller and its projections ------------------------------------------------------------------------------


def test_projections_only_where_widths_differ_and_a_golden_value_through_one():
    matches = [
        {"student_layer": 1, "teacher_layer": 2, "feature": "hidden", "loss": "mse"},
        {"student_layer": 1, "teacher_layer": 2, "feature": "hidden", "loss": "similarity_kl"},
        {"student_layer": 1, "teacher_layer": 1, "feature": "attention", "loss": "attention_mse"},
        {"student_layer": 1, "teacher_layer": 2, "feature": "cls", "loss": "cosine"},
    ]
    distiller = FeatureDistiller(matches, narrow_student(hidden=16), tiny_classifier(0))
    assert set(distiller.projections) == {"hidden_mse_s1_t2", "cls_cosine_s1_t2"}
    assert distiller.projections["hidden_mse_s1_t2"].weight.shape == (32, 16)
    same = FeatureDistiller(matches, tiny_classifier(1, layers=1), tiny_classifier(0))
    assert len(same.projections) == 0

    # Golden value: student width 2 -> teacher width 3 with W = [[1, 0], [0, 2], [1, 1]], b = [0, 1, -1].
    # Student token (1, 2) -> W s + b = (1, 5, 2); teacher token (1, 4, 0): mse = (0 + 1 + 4) / 3 = 5/3.
    # Second token (0, -1) -> (0, -1, -2); teacher (0, 0, 0): mse = (0 + 1 + 4) / 3 = 5/3; a padded third token
    # (mask 0) is ignored. Mean over the sequence's 2 tokens: 5/3.
    from distil_trainers.features import ModelDims

    d = FeatureDistiller([{"student_layer": 1, "teacher_layer": 1, "feature": "hidden", "loss": "mse"}],
                         ModelDims(1, 2, 1), ModelDims(1, 3, 1))
    with torch.no_grad():
        d.projections["hidden_mse_s1_t1"].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
        d.projections["hidden_mse_s1_t1"].bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    s_layer = torch.tensor([[[1.0, 2.0], [0.0, -1.0], [7.0, 7.0]]])
    t_layer = torch.tensor([[[1.0, 4.0, 0.0], [0.0, 0.0, 0.0], [9.0, 9.0, 9.0]]])
    loss, parts = d({"hidden_states": (torch.zeros(1, 3, 2), s_layer)}, {"hidden_states": (torch.zeros(1, 3, 3), t_layer)},
                    mask=torch.tensor([[1, 1, 0]]))
    assert loss.item() == pytest.approx(5 / 3) and parts["hidden_mse_s1_t1"].item() == pytest.approx(5 / 3)
    loss.backward()
    assert d.projections["hidden_mse_s1_t1"].weight.grad.abs().sum() > 0


def test_distiller_weights_and_sums_the_matches():
    student, teacher = tiny_classifier(1, layers=1), tiny_classifier(0)
    matches = [{"student_layer": 1, "teacher_layer": 2, "feature": "hidden", "loss": "mse", "weight": 0.25},
               {"student_layer": 1, "teacher_layer": 2, "feature": "hidden", "loss": "kl", "weight": 3.0}]
    distiller = FeatureDistiller(matches, student, teacher)
    x = torch.randint(1, 99, (2, 6))
    s_out, t_out = student(input_ids=x, output_hidden_states=True), teacher(input_ids=x, output_hidden_states=True)
    total, parts = distiller(s_out, t_out)
    from distil_trainers.losses import hidden_kl_loss, hidden_mse_loss

    mse = hidden_mse_loss(s_out.hidden_states[1], t_out.hidden_states[2])
    kl = hidden_kl_loss(s_out.hidden_states[1], t_out.hidden_states[2])
    assert parts["hidden_mse_s1_t2"].item() == pytest.approx(mse.item())
    assert parts["hidden_kl_s1_t2"].item() == pytest.approx(kl.item())
    assert total.item() == pytest.approx(0.25 * mse.item() + 3.0 * kl.item())


def test_missing_outputs_and_different_tokenizations_are_explained():
    student, teacher = tiny_classifier(1, layers=1), tiny_classifier(0)
    distiller = FeatureDistiller([HIDDEN_MATCH], student, teacher)
    x = torch.randint(1, 99, (2, 6))
    with pytest.raises(ValueError, match="returned no hidden_states; call it with output_hidden_states=True"):
        distiller(student(input_ids=x), teacher(input_ids=x, output_hidden_states=True))
    y = torch.randint(1, 99, (2, 9))
    with pytest.raises(ValueError, match="student sees 6 tokens per sequence but the teacher 9.*only feature 'cls'"):
        distiller(student(input_ids=x, output_hidden_states=True), teacher(input_ids=y, output_hidden_states=True))
    cls = FeatureDistiller([{"student_layer": 1, "teacher_layer": 2, "feature": "cls", "loss": "mse"}], student, teacher)
    loss, _ = cls(student(input_ids=x, output_hidden_states=True), teacher(input_ids=y, output_hidden_states=True))
    assert torch.isfinite(loss)
    attention = FeatureDistiller([{"student_layer": 1, "teacher_layer": 1, "feature": "attention"}], student, teacher)
    with pytest.raises(ValueError, match="eager"):
        attention({"attentions": ()}, {"attentions": ()})


# ---- the trainer: optimizer, saving, what the models are asked for ----------------------------------------------------


def test_projections_train_with_the_student_but_are_not_saved_in_it(tmp_path):
    ds = random_classification_dataset(n=16)
    matches = [HIDDEN_MATCH, {"student_layer": 1, "teacher_layer": 2, "feature": "cls", "loss": "kl"}]
    args = make_args(tmp_path, feature_matches=matches, save_strategy="steps", save_steps=2)
    trainer = AnnealingTrainer(model=narrow_student(), teacher_model=tiny_classifier(0), args=args, train_dataset=ds)
    projections = list(trainer.feature_distiller.parameters())
    assert len(projections) == 4  # two Linear(16, 32)
    before = [p.detach().clone() for p in projections]
    trainer.train()

    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in in_optimizer for p in projections)
    assert all(id(p) in in_optimizer for p in trainer.model.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, projections))  # trained
    assert all(p.grad is None for p in projections)  # cleared after every optimizer step, like the student's
    decay = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert decay[id(trainer.feature_distiller.projections["hidden_mse_s1_t2"].bias)] == 0.0

    trainer.save_model(str(tmp_path / "student"))
    saved = load_file(str(tmp_path / "student" / "model.safetensors"))
    assert set(saved) == set(trainer.student.state_dict())
    assert not any("projection" in k for k in saved)
    assert not (tmp_path / "student" / PROJECTIONS_NAME).exists()
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path / "student")
    assert reloaded.config.hidden_size == 16
    # checkpoints carry the projections beside the student (for resuming), never inside it
    checkpoint = tmp_path / "out" / "checkpoint-4"
    assert set(load_file(str(checkpoint / "model.safetensors"))) == set(saved)
    assert (checkpoint / PROJECTIONS_NAME).exists()

    trainer.args.save_projections = True
    trainer.save_model(str(tmp_path / "with_projections"))
    stored = load_file(str(tmp_path / "with_projections" / PROJECTIONS_NAME))
    for key, value in trainer.feature_distiller.projections.state_dict().items():
        assert torch.equal(stored[key], value)


def spy_kwargs(model, log):
    original = model.forward

    @functools.wraps(original)  # keeps the signature Trainer inspects to choose the input columns
    def forward(*args, **kwargs):
        log.append({k for k in ("output_hidden_states", "output_attentions") if kwargs.get(k)})
        return original(*args, **kwargs)

    model.forward = forward
    return model


@pytest.mark.parametrize(
    "matches, expected",
    [
        (None, set()),
        ([HIDDEN_MATCH], {"output_hidden_states"}),
        ([{"student_layer": 1, "teacher_layer": 2, "feature": "attention"}], {"output_attentions"}),
        ([HIDDEN_MATCH, {"student_layer": 1, "teacher_layer": 1, "feature": "attention"}],
         {"output_hidden_states", "output_attentions"}),
    ],
)
def test_models_are_asked_for_hidden_states_and_attentions_only_when_needed(tmp_path, matches, expected):
    student_log, teacher_log = [], []
    student = spy_kwargs(tiny_classifier(1, layers=1), student_log)
    teacher = spy_kwargs(tiny_classifier(0), teacher_log)
    ds = random_classification_dataset(n=8)
    trainer = AnnealingTrainer(model=student, teacher_model=teacher, args=make_args(tmp_path, feature_matches=matches),
                               train_dataset=ds, eval_dataset=ds)
    trainer.train()
    assert student_log and teacher_log
    assert all(flags == expected for flags in student_log + teacher_log)
    if "output_attentions" in expected:  # switched to the implementation that returns attention maps
        assert trainer.model.config._attn_implementation == "eager"
    # evaluation predictions are the logits only, not the requested hidden states
    predictions = trainer.predict(ds).predictions
    assert predictions.shape == (8, 3)


def test_feature_loss_is_added_with_its_weight_and_logged(tmp_path):
    matches = [HIDDEN_MATCH, {"feature": "embeddings", "loss": "kl", "weight": 2.0}]
    args = make_args(tmp_path, feature_matches=matches, feature_loss_weight=0.5, learning_rate=0.0)
    trainer = AnnealingTrainer(model=narrow_student(), teacher_model=tiny_classifier(0), args=args,
                               train_dataset=random_classification_dataset(n=8, masked=2))
    trainer.train()
    for h in [h for h in trainer.state.log_history if "loss" in h]:
        assert h["loss_feature"] == pytest.approx(h["loss_feature/hidden_mse_s1_t2"] + 2.0 * h["loss_feature/embeddings_kl"], rel=1e-5)
        assert h["loss"] == pytest.approx(h["loss_ta"] + 0.5 * h["loss_feature"], rel=1e-5)


def test_batches_without_an_attention_mask_count_every_token(tmp_path):
    ds = random_classification_dataset(n=8, masked=2).remove_columns("attention_mask")
    trainer = AnnealingTrainer(model=narrow_student(), teacher_model=tiny_classifier(0),
                               args=make_args(tmp_path, feature_matches=[HIDDEN_MATCH], learning_rate=0.0), eval_dataset=ds)
    with_mask = AnnealingTrainer(model=narrow_student(), teacher_model=tiny_classifier(0),
                                 args=make_args(tmp_path, feature_matches=[HIDDEN_MATCH], learning_rate=0.0),
                                 eval_dataset=random_classification_dataset(n=8, masked=2))
    with_mask.feature_distiller.load_state_dict(trainer.feature_distiller.state_dict())
    key = "eval_loss_feature/hidden_mse_s1_t2"
    assert trainer.evaluate()[key] == pytest.approx(with_mask.evaluate()[key], rel=1e-6)  # the mask is all ones


# ---- every kind of match learns ---------------------------------------------------------------------------------------

KINDS = [
    ("embeddings", "kl"), ("embeddings", "mse"), ("hidden", "kl"), ("hidden", "similarity_kl"), ("hidden", "mse"),
    ("hidden", "cosine"), ("cls", "kl"), ("cls", "mse"), ("cls", "cosine"), ("attention", "attention_mse"),
]


@pytest.mark.parametrize("feature, loss", KINDS)
def test_a_short_run_lowers_each_feature_loss(tmp_path, feature, loss):
    match = {"feature": feature, "loss": loss}
    if feature != "embeddings":
        match.update(student_layer=1, teacher_layer=2)
    # a teacher with large weights has peaked attention maps and distinctive features to copy
    teacher = tiny_classifier(0, initializer_range=0.5)
    student = narrow_student() if feature != "attention" else tiny_classifier(1, layers=1)
    ds = random_classification_dataset(n=32, length=6)
    args = make_args(tmp_path, feature_matches=[match], feature_loss_weight=10.0, learning_rate=1e-2,
                     num_train_epochs=4, per_device_train_batch_size=8, lr_scheduler_type="constant")
    trainer = AnnealingTrainer(model=student, teacher_model=teacher, args=args, train_dataset=ds, eval_dataset=ds)
    key = f"eval_loss_feature/{FeatureMatch(**match).name}"
    before = trainer.evaluate()[key]
    trainer.train()
    after = trainer.evaluate()[key]
    assert after < 0.8 * before, (before, after)


# ---- exactness under gradient accumulation, resuming ------------------------------------------------------------------


def test_batch_8_equals_4_x_2_accumulation_including_projections(tmp_path):
    ds = random_classification_dataset(n=8, masked=3)
    matches = [HIDDEN_MATCH, {"student_layer": 1, "teacher_layer": 1, "feature": "hidden", "loss": "similarity_kl"},
               {"student_layer": 1, "teacher_layer": 2, "feature": "cls", "loss": "cosine"}]
    results = []
    for bs, ga in ((8, 1), (4, 2)):
        args = make_args(tmp_path, feature_matches=matches, per_device_train_batch_size=bs, gradient_accumulation_steps=ga,
                         optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", max_grad_norm=0.0,
                         weight_decay=0.0, lambda_schedule="constant", lambda_value=0.4, max_steps=1)
        trainer = AnnealingTrainer(model=narrow_student(), teacher_model=tiny_classifier(0), args=args, train_dataset=ds)
        start = {**trainer.student.state_dict(), **trainer.feature_distiller.state_dict()}
        start = {k: v.clone() for k, v in start.items()}
        trainer.train()
        end = {**trainer.student.state_dict(), **trainer.feature_distiller.state_dict()}
        log = [h for h in trainer.state.log_history if "loss" in h][0]
        results.append((log, {k: start[k] - end[k] for k in start}))
    (log_a, grads_a), (log_b, grads_b) = results
    for key in ("loss", "loss_feature", "loss_feature/cls_cosine_s1_t2"):
        assert log_a[key] == pytest.approx(log_b[key], abs=1e-5), key
    assert grads_a["projections.hidden_mse_s1_t2.weight"].abs().max() > 1e-4
    for k in grads_a:
        torch.testing.assert_close(grads_a[k], grads_b[k], atol=1e-5, rtol=0, msg=k)


def test_resume_restores_the_projections(tmp_path):
    ds = random_classification_dataset(n=24, seed=3)

    def run(out, resume=None):
        args = make_args(tmp_path, output_dir=str(tmp_path / out), feature_matches=[HIDDEN_MATCH], max_steps=6,
                         save_strategy="steps", save_steps=3)
        trainer = AnnealingTrainer(model=narrow_student(), teacher_model=tiny_classifier(0), args=args, train_dataset=ds)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run("full")
    run("src")
    again = run("src", resume=str(tmp_path / "src" / "checkpoint-3"))
    for a, b in zip(full.feature_distiller.parameters(), again.feature_distiller.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    for a, b in zip(full.model.parameters(), again.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


# ---- other models and trainers ------------------------------------------------------------------------------------------


def test_multitask_models_match_their_encoders_hidden_states(tmp_path):
    from distil_trainers.metrics import build_compute_metrics

    def multitask(seed, layers):
        torch.manual_seed(seed)
        return MultiTaskModel(MultiTaskConfig(encoder=tiny_bert_config(layers=layers).to_dict(), tasks={"s": 2, "h": 3}))

    s_data = random_classification_dataset(n=8, num_labels=2, seed=1)
    h_data = random_classification_dataset(n=8, num_labels=3, seed=2)
    evals = {"s": s_data.add_column("task_ids", [0] * 8), "h": h_data.add_column("task_ids", [1] * 8)}
    matches = uniform_matches(1, 2, feature="hidden", loss="kl") + [{"feature": "embeddings", "loss": "similarity_kl"}]
    args = make_args(tmp_path, annealing="mse", feature_matches=[m if isinstance(m, dict) else m.to_dict() for m in matches])
    trainer = AnnealingTrainer(model=multitask(1, 1), teacher_model=multitask(0, 2), args=args,
                               train_dataset=concatenate_tasks({"s": s_data, "h": h_data}), eval_dataset=evals,
                               compute_metrics=build_compute_metrics())
    trainer.train()
    metrics = trainer.evaluate()
    for task in ("s", "h"):
        assert metrics[f"eval_{task}_loss_feature/hidden_kl_s1_t2"] > 0
        assert metrics[f"eval_{task}_loss_mse"] >= 0


def test_token_level_matches_need_the_same_tokens(tmp_path):
    ds = random_classification_dataset(n=8, teacher_vocab_size=40)  # the teacher reads 3 more tokens
    args = make_args(tmp_path, feature_matches=[HIDDEN_MATCH])
    trainer = AnnealingTrainer(model=tiny_classifier(1, layers=1), teacher_model=tiny_classifier(0, vocab_size=40),
                               args=args, train_dataset=ds)
    with pytest.raises(ValueError, match="student sees 8 tokens per sequence but the teacher 11"):
        trainer.train()
    args = make_args(tmp_path, feature_matches=[{"student_layer": 1, "teacher_layer": 2, "feature": "cls", "loss": "mse"}])
    trainer = AnnealingTrainer(model=tiny_classifier(1, layers=1), teacher_model=tiny_classifier(0, vocab_size=40),
                               args=args, train_dataset=ds)
    trainer.train()
    assert "loss_feature/cls_mse_s1_t2" in trainer.state.log_history[0]


def test_load_best_model_at_end_restores_the_best_checkpoints_projections(tmp_path):
    train, held_out = random_classification_dataset(n=16, seed=3), random_classification_dataset(n=8, seed=4)
    args = make_args(tmp_path, feature_matches=[HIDDEN_MATCH], max_steps=4, learning_rate=0.05, eval_strategy="steps",
                     eval_steps=1, save_strategy="steps", save_steps=1, load_best_model_at_end=True,
                     metric_for_best_model="loss", greater_is_better=True)  # "best" = highest loss: an early step
    trainer = AnnealingTrainer(model=narrow_student(), teacher_model=tiny_classifier(0), args=args,
                               train_dataset=train, eval_dataset=held_out)
    trainer.train()
    losses = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    best = trainer.state.best_model_checkpoint
    assert best.endswith(f"checkpoint-{1 + losses.index(max(losses))}") and not best.endswith("checkpoint-4")
    stored = load_file(os.path.join(best, PROJECTIONS_NAME))
    last = load_file(str(tmp_path / "out" / "checkpoint-4" / PROJECTIONS_NAME))
    for key, value in trainer.feature_distiller.projections.state_dict().items():
        assert torch.equal(value, stored[key]), key
        assert not torch.equal(value, last[key]), key  # the final step's projections were replaced


def test_per_student_matches_are_refused_with_one_student(tmp_path):
    args = make_args(tmp_path, feature_matches={"a": [HIDDEN_MATCH]})
    assert args.feature_matches == {"a": [FeatureMatch(**HIDDEN_MATCH).to_dict()]}
    with pytest.raises(ValueError, match="only apply to MutualLearningTrainer"):
        AnnealingTrainer(model=narrow_student(), teacher_model=tiny_classifier(0), args=args,
                         train_dataset=random_classification_dataset(n=4))


# ---- DDP ---------------------------------------------------------------------------------------------------------------

WORKER = Path(__file__).with_name("ddp_feature_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_the_projections_like_one(tmp_path):
    """Under torchrun with 2 processes (gloo) the projections get all-reduced gradients: student and projections end
    with the same weights as one process with the same effective batch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    outputs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        out.mkdir()
        if processes == 1:
            cmd = [sys.executable, str(WORKER), str(out), "4"]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(_free_port()), str(WORKER), str(out), "2"]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-4000:]
        outputs[processes] = (load_file(str(out / "final.safetensors")), json.loads((out / "log.json").read_text()))
    (w1, log1), (w2, log2) = outputs[1], outputs[2]
    assert log1["world_size"] == 1 and log2["world_size"] == 2
    assert any(k.startswith("projections.") for k in w1)
    for name, value in w1.items():
        assert (w2[name] - value).abs().max() < 1e-5, name
    for a, b in zip([h for h in log1["logs"] if "loss" in h], [h for h in log2["logs"] if "loss" in h]):
        assert b["loss_feature"] == pytest.approx(a["loss_feature"], rel=1e-4)
    assert math.isfinite(log2["logs"][-1]["train_loss"])
