"""RationaleSFTTrainer with a top-k teacher cache: the token-level KD term against a full-softmax KL computed here from
the live teacher, the lower bound for k < vocabulary, rows found by id under shuffling, the loss unchanged when the
term is off, the errors raised before training, gradient accumulation, and a short training run. Tiny models built
offline; every golden value comes from the formulas in this file."""

from __future__ import annotations

import math

import pytest
import torch
from rationale_fixtures import rationale_dataset, sft_args, tiny_llama, tiny_tokenizer

from distil_trainers.teachers.cache import CACHE_ROW_COLUMN, TeacherOutputs, precompute_topk_logprobs
from distil_trainers.trainers.rationale import (
    LABEL_VIEW,
    RATIONALE_VIEW,
    RationaleSeq2SeqConfig,
    RationaleSeq2SeqTrainer,
    RationaleSFTConfig,
    RationaleSFTTrainer,
    training_views,
    view_row_id,
)

T = 2.0


def kd_args(tmp_path, **kwargs) -> RationaleSFTConfig:
    return sft_args(tmp_path, **{"alpha": 0.3, "teacher_kd_weight": 1.0, "teacher_kd_temperature": T, **kwargs})


def sharp_llama(tok, seed: int, scale: float = 40.0, vocab_size: int | None = None):
    """A tiny Llama with peaked next-token distributions (a random one is almost uniform)."""
    model = tiny_llama(tok, seed=seed)
    if vocab_size is not None:
        model.resize_token_embeddings(vocab_size)
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    return model.eval()


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def teacher(tok):
    return sharp_llama(tok, seed=7)


def cache_for(tmp_path, tok, teacher, args, k=None, posts=None, name="cache", temperature=T) -> TeacherOutputs:
    views = training_views(posts if posts is not None else rationale_dataset(), args, tok)
    k = k or len(tok)
    return precompute_topk_logprobs(teacher, views, tmp_path / name, k=k, temperature=temperature, tokenizer=tok)


def batch_of(trainer, ids=None):
    """The collated batch of the given view rows (all rows by default), columns as the dataloader sees them."""
    dataset = trainer._remove_unused_columns(trainer.train_dataset)
    row_ids = [view_row_id(i, v) for i, v in zip(trainer.train_dataset["id"][:], trainer.train_dataset["view"][:])]
    ids = ids if ids is not None else sorted(row_ids)
    index = [row_ids.index(i) for i in ids]
    return trainer.data_collator([dataset[i] for i in index])


# ---- golden values: full-softmax KL and cross-entropy, by hand ------------------------------------------------------


def by_hand(student, teacher, batch, alpha, temperature=T):
    """alpha * mean over label-view completion tokens + (1 - alpha) * mean over rationale-view completion tokens, of
    T^2 * KL(softmax(teacher / T) || softmax(student / T)) and of the cross-entropy; token t predicted at t - 1."""
    with torch.no_grad():
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        t_logits = teacher(**inputs).logits.double()
        s_logits = student(**inputs).logits.double()
    kl = {LABEL_VIEW: [], RATIONALE_VIEW: []}
    ce = {LABEL_VIEW: [], RATIONALE_VIEW: []}
    labels = batch["labels"]
    for b in range(labels.shape[0]):
        for t in range(1, labels.shape[1]):
            if labels[b, t] == -100:
                continue
            log_p = torch.log_softmax(t_logits[b, t - 1] / temperature, -1)
            log_q = torch.log_softmax(s_logits[b, t - 1] / temperature, -1)
            view = int(batch["view"][b])
            kl[view].append(float((log_p.exp() * (log_p - log_q)).sum()) * temperature**2)
            ce[view].append(-float(torch.log_softmax(s_logits[b, t - 1], -1)[labels[b, t]]))

    def mix(per_view):
        mean = {v: sum(x) / len(x) if x else 0.0 for v, x in per_view.items()}
        return alpha * mean[LABEL_VIEW] + (1 - alpha) * mean[RATIONALE_VIEW]

    return mix(kl), mix(ce)


def loss_on(trainer, batch, weight=None):
    if weight is not None:
        trainer.args.teacher_kd_weight = weight
    trainer.model.eval()
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, {k: v.clone() for k, v in batch.items()}).item()


# ---- the KD term ---------------------------------------------------------------------------------------------------


def test_kd_term_equals_the_full_kl_when_k_covers_the_vocabulary(tmp_path, tok, teacher):
    args = kd_args(tmp_path)
    cache = cache_for(tmp_path, tok, teacher, args)
    assert cache.meta["k"] == len(tok) and cache.meta["vocab_size"] == len(tok)
    student = sharp_llama(tok, seed=1, scale=10.0)
    trainer = RationaleSFTTrainer(student, args=args, train_dataset=rationale_dataset(), processing_class=tok,
                                  teacher_outputs=cache)
    batch = batch_of(trainer)
    assert set(batch["view"].tolist()) == {LABEL_VIEW, RATIONALE_VIEW}
    kd, ce = by_hand(student, teacher, batch, alpha=0.3)
    assert kd > 0.1  # peaked teacher: a real test
    assert loss_on(trainer, batch, weight=1.0) == pytest.approx(kd, rel=1e-5, abs=1e-6)
    assert loss_on(trainer, batch, weight=0.4) == pytest.approx(0.6 * ce + 0.4 * kd, rel=1e-5, abs=1e-6)


def test_kd_term_with_k_below_the_vocabulary_is_a_lower_bound_tightening_with_k(tmp_path, tok, teacher):
    student = sharp_llama(tok, seed=1, scale=10.0)
    args = kd_args(tmp_path)
    terms = {}
    for k in (2, 8, 32, len(tok)):
        cache = cache_for(tmp_path, tok, teacher, args, k=k, name=f"k{k}")
        trainer = RationaleSFTTrainer(student, args=args, train_dataset=rationale_dataset(), processing_class=tok,
                                      teacher_outputs=cache)
        batch = batch_of(trainer)  # the same rows in the same order for every k
        terms[k] = loss_on(trainer, batch, weight=1.0)
    full, _ = by_hand(student, teacher, batch, alpha=0.3)
    gaps = [full - terms[k] for k in sorted(terms)]
    assert all(gap >= -1e-6 for gap in gaps)  # cached <= full + 1e-6
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > 1e-3  # shrinks as k grows
    assert terms[len(tok)] == pytest.approx(full, rel=1e-5, abs=1e-6)


def test_rows_are_found_by_id_whatever_the_order(tmp_path, tok, teacher):
    """The cache is built over shuffled views; two trainers with different data orders: every row of their first
    batches, and one named row, gets its own teacher entries (checked against the live teacher row by row)."""
    student = sharp_llama(tok, seed=1, scale=10.0)
    views = training_views(rationale_dataset(), kd_args(tmp_path), tok).shuffle(seed=5)
    cache = precompute_topk_logprobs(teacher, views, None, k=len(tok), temperature=T, tokenizer=tok)
    firsts = []
    for seed in (0, 1):
        args = kd_args(tmp_path / f"s{seed}", data_seed=seed, seed=seed)
        trainer = RationaleSFTTrainer(student, args=args, train_dataset=rationale_dataset(), processing_class=tok,
                                      teacher_outputs=cache)
        batch = next(iter(trainer.get_train_dataloader()))
        firsts.append([cache.ids[r] for r in batch[CACHE_ROW_COLUMN].tolist()])
        for b in range(batch["input_ids"].shape[0]):
            row = {k: v[b : b + 1] for k, v in batch.items()}
            alpha = 1.0 if int(row["view"]) == LABEL_VIEW else 0.0
            trainer.args.alpha = alpha
            expected, _ = by_hand(student, teacher, row, alpha=alpha)
            assert loss_on(trainer, row, weight=1.0) == pytest.approx(expected, rel=1e-5, abs=1e-6)
        trainer.args.alpha = 0.3
        named = trainer.train_dataset.filter(lambda r: r["id"] == "p2" and r["view"] == RATIONALE_VIEW)
        assert cache.ids[named[0][CACHE_ROW_COLUMN]] == "p2:rationale"
        row = batch_of(trainer, ["p2:rationale"])
        trainer.args.alpha = 0.0
        assert loss_on(trainer, row) == pytest.approx(by_hand(student, teacher, row, alpha=0.0)[0], rel=1e-5)
    assert firsts[0] != firsts[1]  # the two orders differ


def test_training_views_are_the_rows_the_trainer_trains_on(tmp_path, tok):
    args = kd_args(tmp_path, teacher_kd_weight=0.0)
    views = training_views(rationale_dataset(), args, tok)
    assert views.column_names == ["id", "post_id", "view", "input_ids", "labels"]
    assert len(set(views["id"][:])) == len(views) == 15 and "p0:label" in views["id"][:]
    trainer = RationaleSFTTrainer(tiny_llama(tok), args=args, train_dataset=rationale_dataset(), processing_class=tok)
    mine = {view_row_id(r["id"], r["view"]): (r["input_ids"], r["labels"]) for r in trainer.train_dataset}
    assert mine == {r["id"]: (r["input_ids"], r["labels"]) for r in views}
    both = training_views({"train": rationale_dataset(4), "eval": rationale_dataset()}, args, tok)
    assert set(both) == {"train", "eval"} and len(both["train"]) == 7  # post 3 has no rationale view


# ---- off means off; errors before training -------------------------------------------------------------------------


def test_weight_zero_gives_exactly_the_old_loss(tmp_path, tok, teacher):
    runs = {}
    for name, cache in (("plain", None), ("cached", cache_for(tmp_path, tok, teacher, kd_args(tmp_path)))):
        args = kd_args(tmp_path / name, teacher_kd_weight=0.0, max_steps=3, seed=4)
        trainer = RationaleSFTTrainer(tiny_llama(tok, seed=1), args=args, train_dataset=rationale_dataset(),
                                      processing_class=tok, teacher_outputs=cache)
        batch = batch_of(trainer)
        first = loss_on(trainer, batch)
        trainer.model.train()
        trainer.train()
        logs = [h for h in trainer.state.log_history if "loss" in h]
        runs[name] = (first, [(h["loss"], h["loss_label"], h.get("loss_rationale")) for h in logs])
        assert not any("loss_teacher_kd" in h for h in logs)
    assert runs["plain"] == runs["cached"]


def test_wrong_cache_is_refused_before_training(tmp_path, tok, teacher):
    args = kd_args(tmp_path)
    posts = rationale_dataset()

    def build(cache, a=args):
        return RationaleSFTTrainer(tiny_llama(tok), args=a, train_dataset=posts, processing_class=tok,
                                   teacher_outputs=cache)

    good = cache_for(tmp_path, tok, teacher, args)
    with pytest.raises(ValueError, match=r"temperature = 1\.0 but the teacher cache was built with temperature 2\.0"):
        build(good, kd_args(tmp_path, teacher_kd_temperature=1.0))
    big = sharp_llama(tok, seed=3, vocab_size=len(tok) + 16)
    vocab = len(tok)
    with pytest.raises(ValueError, match=rf"vocabulary of {vocab + 16} but the student's vocabulary has {vocab} "):
        build(cache_for(tmp_path, tok, big, args, k=len(tok) + 16, name="big"))
    views = training_views(posts, args, tok)
    partial = precompute_topk_logprobs(teacher, views.select(range(10)), None, k=4, temperature=T, tokenizer=tok)
    with pytest.raises(ValueError, match=r"no entry for 5 of the 15 train views rows"):
        build(partial)

    def drop_last_completion_token(row, i):
        if i == 0:
            last = max(t for t, label in enumerate(row["labels"]) if label != -100)
            row["labels"] = [-100 if t == last else label for t, label in enumerate(row["labels"])]
        return row

    shorter = views.map(drop_last_completion_token, with_indices=True)
    mismatched = precompute_topk_logprobs(teacher, shorter, None, k=4, temperature=T, tokenizer=tok)
    with pytest.raises(ValueError, match=r"1 train views rows have a different number of completion tokens"):
        build(mismatched)
    with pytest.raises(ValueError, match="teacher_kd_weight = 1.0 needs `teacher_outputs`"):
        build(None)
    classifier = TeacherOutputs(ids=["p0"], kind="logits", tensors={"logits": torch.zeros(1, 3)})
    with pytest.raises(ValueError, match="needs a 'topk' teacher-output cache"):
        build(classifier)
    with pytest.raises(ValueError, match="teacher_kd_weight must be in"):
        kd_args(tmp_path, teacher_kd_weight=1.5)
    s2s = RationaleSeq2SeqConfig(output_dir=str(tmp_path / "t5"), report_to="none", use_cpu=True,
                                 teacher_kd_weight=0.5)
    with pytest.raises(ValueError, match="available in RationaleSFTTrainer"):
        RationaleSeq2SeqTrainer(tiny_llama(tok), args=s2s, train_dataset=posts, processing_class=tok)


# ---- training ------------------------------------------------------------------------------------------------------


def _one_step(tmp_path, tok, cache, batch_size, accumulation):
    args = kd_args(
        tmp_path, per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation, max_steps=1,
        optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0,
        teacher_kd_weight=0.6, seed=3,
    )
    model = sharp_llama(tok, seed=1, scale=10.0).train()
    trainer = RationaleSFTTrainer(model, args=args, train_dataset=rationale_dataset(), processing_class=tok,
                                  teacher_outputs=cache)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer.train()
    return {k: before[k] - v.detach() for k, v in model.named_parameters()}, trainer.state.log_history[0]


def test_gradient_accumulation_keeps_the_kd_term_exact(tmp_path, tok, teacher):
    """Batch 4 in one step == batch 2 x 2 accumulation steps, KD term included."""
    cache = cache_for(tmp_path, tok, teacher, kd_args(tmp_path))
    full, full_logs = _one_step(tmp_path / "full", tok, cache, 4, 1)
    acc, acc_logs = _one_step(tmp_path / "acc", tok, cache, 2, 2)
    for name in full:
        torch.testing.assert_close(acc[name], full[name], rtol=1e-4, atol=1e-6, msg=name)
    for key in ("loss", "loss_label", "loss_rationale", "loss_teacher_kd"):
        assert acc_logs[key] == pytest.approx(full_logs[key], rel=1e-5)
    assert full_logs["loss"] == pytest.approx(
        0.4 * (0.3 * full_logs["loss_label"] + 0.7 * full_logs["loss_rationale"]) + 0.6 * full_logs["loss_teacher_kd"],
        rel=1e-5,
    )


def test_training_with_the_cache_logs_and_lowers_the_kd_term(tmp_path, tok, teacher):
    args = kd_args(tmp_path, teacher_kd_weight=0.5, max_steps=12, learning_rate=1e-2, per_device_train_batch_size=8)
    cache_for(tmp_path, tok, teacher, args, name="cache")
    posts = rationale_dataset()
    trainer = RationaleSFTTrainer(tiny_llama(tok, seed=1), args=args, train_dataset=posts, eval_dataset=posts,
                                  processing_class=tok, teacher_outputs=str(tmp_path / "cache"))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 12 and all(math.isfinite(h["loss"]) and "loss_teacher_kd" in h for h in logs)
    kd = [h["loss_teacher_kd"] for h in logs]
    assert sum(kd[-3:]) < sum(kd[:3])
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss_teacher_kd"]) and "eval_f1_macro" in metrics
    again = trainer.evaluate(eval_dataset=rationale_dataset(4))  # a new dataset gets its cache rows too
    assert math.isfinite(again["eval_loss_teacher_kd"])
