"""Defects of distributed and long-run correctness, each checked against an independent computation: DataParallel
refused before training, 0-dim tensors in model fingerprints, the language discriminator's mean over the rows with a
language id, λ reaching ``lambda_end`` with ``lambda_progress="inclusive"`` and token-level feature matches across
tokenizers refused before training."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import random_classification_dataset, small_run_args, tiny_bert_config, tiny_classifier, train_logs
from datasets import Dataset
from torch import nn
from transformers import BertForSequenceClassification, BertTokenizerFast

from distil_trainers import AnnealingArguments, AnnealingTrainer, losses, schedules
from distil_trainers.losses import LossSum
from distil_trainers.models.discriminator import LANGUAGE_COLUMN
from distil_trainers.teachers.cache import model_fingerprint
from distil_trainers.trainers.adversarial import AdversarialArguments, AdversarialTrainer
from distil_trainers.trainers.objective import Objective

# ---- 1. nn.DataParallel -------------------------------------------------------------------------------------------


def test_data_parallel_is_refused_before_training(tmp_path):
    args = small_run_args(AnnealingArguments, tmp_path)
    assert args.n_gpu <= 1  # devices set up: now pretend one process sees two GPUs (Trainer would use DataParallel)
    args._n_gpu = 2
    with pytest.raises(ValueError, match=r"nn\.DataParallel.*accelerate launch.*torchrun"):
        AnnealingTrainer(model=tiny_classifier(1), teacher_model=tiny_classifier(0), args=args,
                         train_dataset=random_classification_dataset(n=8))


def test_the_rationale_trainer_refuses_data_parallel_too(tmp_path):
    from rationale_fixtures import rationale_dataset, sft_args, tiny_llama, tiny_tokenizer

    from distil_trainers.trainers.rationale import RationaleSFTTrainer

    args = sft_args(tmp_path)
    assert args.n_gpu <= 1
    args._n_gpu = 2
    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match=r"RationaleSFTTrainer does not support nn\.DataParallel"):
        RationaleSFTTrainer(model=tiny_llama(tokenizer), args=args, train_dataset=rationale_dataset(4),
                            processing_class=tokenizer)


def test_a_count_per_gpu_is_refused_by_the_losses_naming_the_fix():
    # Trainer's DataParallel count: the whole batch's count repeated per GPU (or floor-divided), shape (n_gpu, 1)
    with pytest.raises(ValueError, match=r"shape \(2, 1\).*DataParallel.*torchrun"):
        losses.reduce_per_item(torch.ones(4), None, torch.tensor([[4], [4]]))


# ---- 2. model fingerprints of 0-dim tensors -----------------------------------------------------------------------


class _ZeroDim(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)  # its `num_batches_tracked` buffer is 0-dim
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))  # a 0-dim parameter, as in CLIP


def test_model_fingerprint_of_zero_dim_buffers_and_parameters():
    torch.manual_seed(0)
    model = _ZeroDim()
    assert model.norm.num_batches_tracked.dim() == 0 and model.logit_scale.dim() == 0
    first = model_fingerprint(model)
    assert model_fingerprint(model) == first == model_fingerprint(copy.deepcopy(model))
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled.logit_scale.fill_(1.0)
    tracked = copy.deepcopy(model)
    tracked.norm.num_batches_tracked.fill_(5)
    assert len({first, model_fingerprint(scaled), model_fingerprint(tracked)}) == 3


# ---- 3. the language discriminator: a mean over the rows with a language id ---------------------------------------


def _adversarial_trainer(tmp_path) -> AdversarialTrainer:
    ds = random_classification_dataset(n=8, seed=3)
    ds = ds.add_column(LANGUAGE_COLUMN, [i % 2 for i in range(8)])
    args = AdversarialArguments(output_dir=str(tmp_path), report_to="none", adversarial_weight=0.3,
                                discriminator_dropout=0.0, use_cpu=True)
    return AdversarialTrainer(model=tiny_classifier(seed=1), args=args, train_dataset=ds)


def _language_batches(trainer):
    rows = [trainer.train_dataset[i] for i in range(8)]
    first, second = trainer.data_collator(rows[:4]), trainer.data_collator(rows[4:])
    # unlabelled target-language rows (a language id, no label), and rows without a language id
    first["labels"][[1, 3]] = -100
    first[LANGUAGE_COLUMN] = torch.tensor([0, 1, -100, 1])
    second["labels"][[2]] = -100
    second[LANGUAGE_COLUMN] = torch.tensor([1, 1, 0, -100])
    return first, second


def _reference(trainer, batches):
    """Label CE mean over labelled rows + 0.3 × discriminator CE mean over rows with a language id (torch's means)."""
    model, disc = trainer.model, trainer.discriminator
    with torch.no_grad():
        logits, disc_logits = [], []
        for batch in batches:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
            logits.append(out.logits)
            disc_logits.append(disc.net(out.hidden_states[-1][:, 0]))
    labels = torch.cat([b["labels"] for b in batches])
    languages = torch.cat([b[LANGUAGE_COLUMN] for b in batches])
    ce = nn.functional.cross_entropy(torch.cat(logits), labels, ignore_index=-100)
    keep = languages != -100
    adversarial = nn.functional.cross_entropy(torch.cat(disc_logits)[keep], languages[keep])
    return ce, adversarial


def test_discriminator_loss_is_the_mean_over_language_rows_of_the_accumulated_batch(tmp_path):
    trainer = _adversarial_trainer(tmp_path)
    first, second = _language_batches(trainer)
    trainer.model.train()  # dropout is 0: the forward is deterministic
    samples, num_items = trainer.get_batch_samples(iter([first, second]), 2, torch.device("cpu"))
    counts = trainer._step_counts  # labelled rows vs rows with a language id, over the accumulated batch
    assert int(num_items) == 5 and int(counts["labelled"]) == 5 and int(counts["languages"]) == 6
    total = sum(trainer.compute_loss(trainer.model, batch, num_items_in_batch=num_items) for batch in samples)
    ce, adversarial = _reference(trainer, [first, second])
    torch.testing.assert_close(total.detach(), ce + 0.3 * adversarial)
    logged = trainer._flush_metrics("train")
    assert logged["loss_adversarial"] == pytest.approx(adversarial.item(), rel=1e-5)
    assert logged["loss_ce"] == pytest.approx(ce.item(), rel=1e-5)


def test_discriminator_loss_of_one_batch_is_its_mean_over_language_rows(tmp_path):
    trainer = _adversarial_trainer(tmp_path)
    first, _ = _language_batches(trainer)
    trainer.model.eval()
    loss = trainer.compute_loss(trainer.model, first, num_items_in_batch=torch.tensor(2))
    ce, adversarial = _reference(trainer, [first])
    torch.testing.assert_close(loss.detach(), ce + 0.3 * adversarial)
    assert trainer._flush_metrics("eval")["loss_adversarial"] == pytest.approx(adversarial.item(), rel=1e-5)


# ---- 4. λ reaching lambda_end -------------------------------------------------------------------------------------


def test_progress_inclusive_reaches_one_at_the_last_step():
    assert [schedules.progress(k, 4) for k in range(4)] == [0.0, 0.25, 0.5, 0.75]
    assert [schedules.progress(k, 4, inclusive=True) for k in range(4)] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert schedules.progress(0, 1, inclusive=True) == 1.0 and schedules.progress(0, 0, inclusive=True) == 0.0


@pytest.mark.parametrize(
    "mode, expected",
    [("steps_done", [0.2, 0.35, 0.5, 0.65]),  # 0.2 + 0.6·k/4: the last step never uses lambda_end
     ("inclusive", [0.2, 0.4, 0.6, 0.8])],  # 0.2 + 0.6·k/3: the last step uses lambda_end = 0.8
)
def test_lambda_progress_decides_whether_the_last_step_uses_lambda_end(tmp_path, mode, expected):
    args = small_run_args(AnnealingArguments, tmp_path, annealing="bam", lambda_start=0.2, lambda_end=0.8,
                          lambda_progress=mode)  # 16 rows / batch 4 = 4 optimizer steps
    trainer = AnnealingTrainer(model=tiny_classifier(1), teacher_model=tiny_classifier(0), args=args,
                               train_dataset=random_classification_dataset(n=16))
    trainer.train()
    assert [h["lambda"] for h in train_logs(trainer)] == pytest.approx(expected)


def test_lambda_progress_is_checked(tmp_path):
    with pytest.raises(ValueError, match="lambda_progress"):
        small_run_args(AnnealingArguments, tmp_path, lambda_progress="last")


# ---- 5. token-level feature matches across tokenizers -------------------------------------------------------------

WORDS = ("hate", "you", "all", "love", "this", "nice", "day", "go", "away", "idiot")


def _tokenizer(folder, words) -> BertTokenizerFast:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return BertTokenizerFast.from_pretrained(str(folder))


def _text_dataset() -> Dataset:
    texts = ["i hate you all", "love this nice day", "go away idiot", "nice day", "you idiot", "all go away"]
    return Dataset.from_dict({"text": texts, "label": [0, 1, 0, 1, 0, 0]})


def _feature_trainer(tmp_path, match, teacher_tok, student_tok):
    args = small_run_args(AnnealingArguments, tmp_path, feature_matches=[match])
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_bert_config(num_labels=2, vocab_size=len(teacher_tok)))
    torch.manual_seed(1)
    student = BertForSequenceClassification(tiny_bert_config(num_labels=2, layers=1, vocab_size=len(student_tok)))
    return AnnealingTrainer(model=student, teacher_model=teacher, args=args, train_dataset=_text_dataset(),
                            processing_class=student_tok, teacher_processing_class=teacher_tok)


def test_token_level_matches_across_tokenizers_are_refused_before_training(tmp_path):
    student_tok = _tokenizer(tmp_path / "s", WORDS)
    teacher_tok = _tokenizer(tmp_path / "t", tuple(reversed(WORDS)) + ("more", "words"))
    hidden = {"student_layer": 1, "teacher_layer": 2, "feature": "hidden", "loss": "mse"}
    with pytest.raises(ValueError, match=r"different tokenization than the teacher.*\['hidden_mse_s1_t2'\].*'cls'"):
        _feature_trainer(tmp_path, hidden, teacher_tok, student_tok)
    cls = {"student_layer": 1, "teacher_layer": 2, "feature": "cls", "loss": "mse"}
    assert _feature_trainer(tmp_path, cls, teacher_tok, student_tok).feature_distiller is not None
    # one tokenizer for both models: token-level matches are fine
    assert _feature_trainer(tmp_path, hidden, student_tok, student_tok).feature_distiller is not None


# ---- evaluation loss independent of the schedule --------------------------------------------------------------------


@pytest.mark.parametrize("annealing", ["bam", "jafari"])
def test_eval_loss_scores_the_final_objective_whatever_the_step(tmp_path, annealing):
    """The same weights give the same eval_loss at any point of the schedule: the objective at progress 1, i.e. the
    label cross-entropy (λ = 1 for bam, phase 2 for jafari), computed here independently with torch."""
    train, evaluation = random_classification_dataset(n=16, seed=1), random_classification_dataset(n=12, seed=2)
    args = small_run_args(AnnealingArguments, tmp_path, annealing=annealing, max_steps=10, learning_rate=0.0)
    trainer = AnnealingTrainer(model=tiny_classifier(1), teacher_model=tiny_classifier(0), args=args,
                               train_dataset=train, eval_dataset=evaluation)
    student = trainer.model.eval()
    with torch.no_grad():
        logits = student(input_ids=torch.tensor(evaluation["input_ids"][:]),
                         attention_mask=torch.tensor(evaluation["attention_mask"][:])).logits
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor(evaluation["labels"][:])).item()
    trainer.state.max_steps = 10
    seen = []
    for step in (0, 5, 9):
        trainer.state.global_step = step
        seen.append(trainer.evaluate()["eval_loss"])
    assert seen == pytest.approx([expected] * 3, rel=1e-5)


# ---- logging without a host-device synchronisation per micro-batch --------------------------------------------------


def test_logged_terms_stay_tensors_until_the_log_and_average_by_hand(tmp_path):
    args = small_run_args(AnnealingArguments, tmp_path)
    trainer = AnnealingTrainer(model=tiny_classifier(1), teacher_model=tiny_classifier(0), args=args,
                               train_dataset=random_classification_dataset(n=8))
    trainer.model.train()
    step = torch.tensor(8.0, dtype=torch.float64)  # items of this kind in the whole optimizer step
    # two micro-batches: per-item losses summing to 0.9 over 3 items, and to 2.5 over 5 items
    trainer.record_sum("loss_x", LossSum(torch.tensor(0.9), torch.tensor(3.0)), step)
    trainer.record_sum("loss_x", LossSum(torch.tensor(2.5), torch.tensor(5.0)), step)
    objective = Objective({"rows": step, "labelled": step}, {"rows": torch.tensor(3.0), "labelled": torch.tensor(3.0)})
    trainer.record_objective(objective, scalars={"lambda": 0.25}, composites={"twice": {"loss_x": 2.0}})
    assert torch.is_tensor(trainer._metric_sums["train"]["loss_x"])  # nothing synchronised yet
    logged = trainer._flush_metrics("train")
    assert logged["loss_x"] == pytest.approx((0.9 + 2.5) / 8)  # the mean over the step's 8 items
    assert logged["twice"] == pytest.approx(2 * (0.9 + 2.5) / 8)
    assert logged["lambda"] == pytest.approx(0.25)
    assert trainer._flush_metrics("train") == {}


# ---- multi-task training in several processes and DDP's unused-parameter search -----------------------------------


def test_multitask_in_several_processes_refuses_what_ddp_cannot_run(tmp_path):
    from types import SimpleNamespace

    from distil_trainers.data import concatenate_tasks

    data = concatenate_tasks({"a": random_classification_dataset(n=8, num_labels=3, seed=1),
                              "b": random_classification_dataset(n=8, num_labels=3, seed=2)})
    trainer = AnnealingTrainer(model=tiny_classifier(1), teacher_model=tiny_classifier(0), train_dataset=data,
                               args=small_run_args(AnnealingArguments, tmp_path))

    def processes(**settings):  # the arguments of one of two processes
        defaults = dict(world_size=2, ddp_find_unused_parameters=None, activation_checkpointing=True,
                        gradient_checkpointing=True, activation_checkpointing_kwargs=None,
                        gradient_checkpointing_kwargs=None)
        trainer.args = SimpleNamespace(**{**defaults, **settings})
        trainer.check_multitask_processes()
        return trainer.args

    assert processes().ddp_find_unused_parameters is True  # turned on for the heads a step leaves unused
    with pytest.raises(ValueError, match="reentrant activation checkpointing"):
        processes(activation_checkpointing_kwargs={"use_reentrant": True})
    with pytest.raises(ValueError, match="needs ddp_find_unused_parameters"):
        processes(ddp_find_unused_parameters=False)
    assert processes(world_size=1).ddp_find_unused_parameters is None  # one process: nothing to do
