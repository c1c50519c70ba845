"""Teacher-output cache: the cached trainers give the live teacher's losses, rows are found by id whatever the order,
the cache is rebuilt when the teacher or the data change, nothing is pickled, and the top-k LM cache's loss."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import random_classification_dataset, tiny_classifier
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM, default_data_collator

from distil_trainers import AnnealingArguments, AnnealingTrainer, MutualLearningArguments, MutualLearningTrainer
from distil_trainers.losses import kd_kl_loss, topk_kl_loss
from distil_trainers.teachers.cache import (
    CACHE_ROW_COLUMN,
    META_FILE,
    TENSORS_FILE,
    TeacherOutputs,
    precompute_teacher_outputs,
    precompute_topk_logprobs,
    topk_entries,
)


def with_ids(ds, prefix="ex"):
    return ds.add_column("id", [f"{prefix}{i}" for i in range(len(ds))])


def annealing_args(tmp_path, **overrides) -> AnnealingArguments:
    defaults = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, per_device_eval_batch_size=8,
        num_train_epochs=2, learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        seed=0, disable_tqdm=True, annealing="kd", temperature=2.0,
    )
    defaults.update(overrides)
    return AnnealingArguments(**defaults)


def losses_of(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


# ---- cached == live ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("annealing", ["none", "bam", "jafari"])
def test_annealing_cached_equals_live(tmp_path, annealing):
    train = with_ids(random_classification_dataset(n=24, seed=1))
    evaluation = with_ids(random_classification_dataset(n=8, seed=2), prefix="ev")
    teacher = tiny_classifier(0, layers=3)
    args = dict(annealing=annealing, gradient_accumulation_steps=2, eval_strategy="steps", eval_steps=2)

    live = AnnealingTrainer(model=tiny_classifier(1), teacher_model=teacher, args=annealing_args(tmp_path, **args),
                            train_dataset=train, eval_dataset=evaluation)
    live.train()
    live_eval = live.evaluate()

    # The cache is built over a shuffled copy: rows are matched by id, not by position.
    cache = precompute_teacher_outputs(teacher, {"train": train.shuffle(seed=3), "eval": evaluation}, batch_size=5)
    cached = AnnealingTrainer(model=tiny_classifier(1), teacher_outputs=cache, args=annealing_args(tmp_path, **args),
                              train_dataset=train, eval_dataset=evaluation)
    assert cached.teacher is None
    cached.train()
    assert len(losses_of(live)) == 6
    assert losses_of(cached) == pytest.approx(losses_of(live), abs=1e-6, rel=0)
    cached_eval = cached.evaluate()
    assert cached_eval["eval_loss"] == pytest.approx(live_eval["eval_loss"], abs=1e-6, rel=0)
    for p_live, p_cached in zip(live.model.parameters(), cached.model.parameters()):
        torch.testing.assert_close(p_cached, p_live, atol=1e-6, rtol=0)


def mutual_dataset(n, seed, prefix):
    base = random_classification_dataset(n=n, seed=seed, teacher_vocab_size=99)
    data = {
        "id": [f"{prefix}{i}" for i in range(n)],
        "a_input_ids": base["input_ids"][:], "a_attention_mask": base["attention_mask"][:],
        "b_input_ids": base["input_ids"][:], "b_attention_mask": base["attention_mask"][:],
        "teacher_input_ids": base["teacher_input_ids"][:], "teacher_attention_mask": base["teacher_attention_mask"][:],
        "labels": base["labels"][:],
    }
    return type(base).from_dict(data)


def test_mutual_learning_cached_equals_live(tmp_path):
    train, evaluation = mutual_dataset(16, 1, "tr"), mutual_dataset(8, 2, "ev")
    teacher = tiny_classifier(0, layers=3)

    def run(**teacher_kwargs):
        args = MutualLearningArguments(
            output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_train_epochs=1, learning_rate=1e-3,
            logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
            temperature=2.0,
        )
        trainer = MutualLearningTrainer(
            students={"a": tiny_classifier(1), "b": tiny_classifier(2, layers=1)}, args=args, train_dataset=train,
            eval_dataset=evaluation, data_collator=default_data_collator, **teacher_kwargs,
        )
        trainer.train()
        return trainer, trainer.evaluate()

    live, live_eval = run(teacher_model=teacher)
    cache = precompute_teacher_outputs(teacher, {"train": train, "eval": evaluation})
    cached, cached_eval = run(teacher_outputs=cache)
    assert cached.teacher is None
    assert losses_of(cached) == pytest.approx(losses_of(live), abs=1e-6, rel=0)
    assert cached_eval["eval_loss"] == pytest.approx(live_eval["eval_loss"], abs=1e-6, rel=0)


# ---- keyed by id ---------------------------------------------------------------------------------------------------


def test_rows_are_found_by_id_in_any_order():
    ds = with_ids(random_classification_dataset(n=20, seed=4))
    teacher = tiny_classifier(0)
    cache = precompute_teacher_outputs(teacher, ds, batch_size=3)
    shuffled = ds.shuffle(seed=9)
    attached = cache.attach(shuffled)
    rows = torch.tensor(attached[CACHE_ROW_COLUMN][:])
    with torch.no_grad():
        expected = teacher(input_ids=torch.tensor(shuffled["input_ids"][:]),
                           attention_mask=torch.tensor(shuffled["attention_mask"][:])).logits
    torch.testing.assert_close(cache.logits_at(rows), expected, atol=1e-6, rtol=0)
    assert [cache.ids[r] for r in rows.tolist()] == shuffled["id"][:]


def test_missing_ids_and_missing_id_column_are_clear_errors(tmp_path):
    train = with_ids(random_classification_dataset(n=8))
    cache = precompute_teacher_outputs(tiny_classifier(0), train)
    other = with_ids(random_classification_dataset(n=4, seed=5), prefix="other")
    with pytest.raises(ValueError, match="no entry for 4 example"):
        AnnealingTrainer(model=tiny_classifier(1), teacher_outputs=cache, args=annealing_args(tmp_path),
                         train_dataset=train, eval_dataset=other)
    with pytest.raises(ValueError, match="no `id` column"):
        precompute_teacher_outputs(tiny_classifier(0), random_classification_dataset(n=4))
    with pytest.raises(ValueError, match="classes"):
        AnnealingTrainer(model=tiny_classifier(1, num_labels=4), teacher_outputs=cache, args=annealing_args(tmp_path),
                         train_dataset=train.remove_columns("labels").add_column("labels", [0] * 8))


# ---- fingerprint ---------------------------------------------------------------------------------------------------


def test_cache_is_reused_and_rebuilt_when_teacher_or_data_change(tmp_path):
    ds = with_ids(random_classification_dataset(n=12, seed=6))
    directory = tmp_path / "cache"
    teacher = tiny_classifier(0)
    first = precompute_teacher_outputs(teacher, ds, directory)
    stamp = (directory / TENSORS_FILE).stat().st_mtime_ns

    again = precompute_teacher_outputs(teacher, ds.shuffle(seed=1).flatten_indices().sort("id"), directory)
    assert again.fingerprint == first.fingerprint
    assert (directory / TENSORS_FILE).stat().st_mtime_ns == stamp  # reused, not rebuilt

    with torch.no_grad():
        teacher.classifier.bias += 1.0
    changed_teacher = precompute_teacher_outputs(teacher, ds, directory)
    assert changed_teacher.fingerprint != first.fingerprint
    torch.testing.assert_close(changed_teacher.tensors["logits"], first.tensors["logits"] + 1.0, atol=1e-5, rtol=0)
    assert TeacherOutputs.load(directory).fingerprint == changed_teacher.fingerprint

    ids = ds["input_ids"][:]
    ids[0][0] = (ids[0][0] % 98) + 1
    changed_data = precompute_teacher_outputs(teacher, ds.remove_columns("input_ids").add_column("input_ids", ids),
                                              directory)
    assert changed_data.fingerprint != changed_teacher.fingerprint
    assert not torch.equal(changed_data.tensors["logits"][0], changed_teacher.tensors["logits"][0])
    torch.testing.assert_close(changed_data.tensors["logits"][1:], changed_teacher.tensors["logits"][1:])


def test_progress_bar_can_be_hidden(tmp_path, capsys):
    ds = with_ids(random_classification_dataset(n=6, seed=2))
    teacher = tiny_classifier(0)
    shown = precompute_teacher_outputs(teacher, ds)
    assert "Teacher outputs" in capsys.readouterr().err
    hidden = precompute_teacher_outputs(teacher, ds, show_progress=False)
    assert capsys.readouterr().err == ""
    torch.testing.assert_close(hidden.tensors["logits"], shown.tensors["logits"])
    assert hidden.fingerprint == shown.fingerprint  # not a setting of the cache


def test_stale_cache_with_another_teacher_is_refused(tmp_path):
    ds = with_ids(random_classification_dataset(n=8))
    cache = precompute_teacher_outputs(tiny_classifier(0), ds)
    with pytest.raises(ValueError, match="different teacher weights"):
        AnnealingTrainer(model=tiny_classifier(1), teacher_model=tiny_classifier(7), teacher_outputs=cache,
                         args=annealing_args(tmp_path), train_dataset=ds)


def test_no_pickle_on_disk_and_a_directory_loads_in_the_trainer(tmp_path):
    ds = with_ids(random_classification_dataset(n=8))
    directory = tmp_path / "cache"
    built = precompute_teacher_outputs(tiny_classifier(0), ds, directory)
    assert sorted(p.name for p in directory.iterdir()) == sorted([TENSORS_FILE, META_FILE])
    for path in directory.iterdir():
        assert not path.read_bytes().startswith(b"\x80"), f"{path.name} looks like a pickle"
    meta = json.loads((directory / META_FILE).read_text())
    assert meta["ids"] == ds["id"][:] and meta["kind"] == "logits"
    with safe_open(str(directory / TENSORS_FILE), framework="pt") as f:
        assert list(f.keys()) == ["logits"]
        torch.testing.assert_close(f.get_tensor("logits"), built.tensors["logits"])
    trainer = AnnealingTrainer(model=tiny_classifier(1), teacher_outputs=str(directory), args=annealing_args(tmp_path),
                               train_dataset=ds)
    trainer.train()
    assert all(math.isfinite(x) for x in losses_of(trainer))


# ---- top-k cache for causal LMs ------------------------------------------------------------------------------------


def test_topk_loss_equals_full_kl_when_k_covers_the_vocabulary():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 11, generator=g), torch.randn(6, 11, generator=g)
    values, indices, rest = topk_entries(teacher, k=11, temperature=2.0)
    got = topk_kl_loss(student, values, indices, rest, temperature=2.0)
    torch.testing.assert_close(got, kd_kl_loss(student, teacher, temperature=2.0), atol=1e-6, rtol=0)
    student.requires_grad_(True)
    topk_kl_loss(student, values, indices, rest, temperature=2.0).backward()
    assert torch.isfinite(student.grad).all()


def test_topk_loss_gap_is_the_tail_mass_times_the_tail_kl():
    """Full KL = coarse (top-k + rest) KL + p_rest * KL(teacher tail || student tail), computed independently."""
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(5, 40, generator=g), 3 * torch.randn(5, 40, generator=g)
    k = 8
    values, indices, rest = topk_entries(teacher, k=k)
    coarse = topk_kl_loss(student, values, indices, rest)
    full = kd_kl_loss(student, teacher)
    log_t, log_s = F.log_softmax(teacher.double(), -1), F.log_softmax(student.double(), -1)
    tail = torch.ones_like(log_t, dtype=torch.bool).scatter(-1, indices, False)
    gaps = []
    for i in range(5):
        t_tail, s_tail = log_t[i][tail[i]], log_s[i][tail[i]]
        t_norm, s_norm = t_tail - t_tail.logsumexp(0), s_tail - s_tail.logsumexp(0)
        gaps.append(t_tail.logsumexp(0).exp() * (t_norm.exp() * (t_norm - s_norm)).sum())
    assert float(full - coarse) == pytest.approx(float(torch.stack(gaps).mean()), abs=1e-5)
    assert float(coarse) <= float(full) + 1e-6
    # the stored rest mass is what the top-k leaves
    torch.testing.assert_close(rest.exp() + values.exp().sum(-1), torch.ones(5), atol=1e-6, rtol=0)


def tiny_llama(seed):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def test_topk_cache_matches_the_live_teacher_on_completion_tokens(tmp_path):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 64, (6, 10), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100  # a 4-token prompt
    from datasets import Dataset

    ds = Dataset.from_dict({"id": [f"s{i}" for i in range(6)], "input_ids": ids.tolist(),
                            "attention_mask": [[1] * 10] * 6, "labels": labels.tolist()})
    teacher, student = tiny_llama(0), tiny_llama(1)
    cache = precompute_topk_logprobs(teacher, ds.shuffle(seed=2), tmp_path / "lm", k=64, temperature=1.5)
    reloaded = TeacherOutputs.load(tmp_path / "lm")
    assert reloaded.kind == "topk" and reloaded.meta["k"] == 64
    entries = reloaded.topk_at(reloaded.rows(ds["id"][:]))
    assert [e["topk_logprobs"].shape[0] for e in entries] == [6] * 6  # tokens 4..9 are predicted

    with torch.no_grad():
        t_logits = teacher(input_ids=ids).logits[:, 3:-1]  # logits at t - 1 predict token t
        s_logits = student(input_ids=ids).logits[:, 3:-1]
    stacked = {k: torch.stack([e[k] for e in entries]) for k in entries[0]}
    full = kd_kl_loss(s_logits, t_logits, temperature=1.5)
    got = topk_kl_loss(s_logits, stacked["topk_logprobs"], stacked["topk_indices"], stacked["rest_logprob"],
                       temperature=1.5)
    torch.testing.assert_close(got, full, atol=1e-6, rtol=0)
    assert cache.fingerprint == reloaded.fingerprint
