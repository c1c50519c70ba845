"""What the classifier trainers take as given and what they refuse before the first optimizer step: raw-text datasets
with string labels, models given as local paths (their label space from the data), class names mapped to the
teacher's order by name, and one clear error for each input that used to train without a word."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import small_run_args, tiny_bert_config
from datasets import ClassLabel, Dataset, Features, Value
from transformers import (
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
    BertModel,
    BertTokenizerFast,
)

from distil_trainers import AnnealingArguments, AnnealingTrainer, MutualLearningArguments, MutualLearningTrainer
from distil_trainers.metrics import build_compute_metrics

WORDS = ("hate", "you", "all", "love", "this", "nice", "day", "go", "away", "idiot", "great", "people", "we", "are",
         "the", "best", "worst", "ever", "kind", "sunny")
POSTS = [("i hate you all", "hate"), ("love this nice day", "none"), ("go away idiot", "hate"),
         ("great people we are", "none"), ("the worst ever", "hate"), ("kind and sunny day", "none"),
         ("you idiot go away", "hate"), ("the best day ever", "none")]


def write_tokenizer(folder, words=WORDS) -> BertTokenizerFast:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return BertTokenizerFast.from_pretrained(str(folder))


def save_classifier(folder, names, tokenizer, seed=0, layers=2) -> str:
    """A tiny fine-tuned-looking classifier (named classes) saved with its tokenizer."""
    torch.manual_seed(seed)
    config = tiny_bert_config(num_labels=len(names), layers=layers, vocab_size=len(tokenizer),
                              id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def save_encoder(folder, tokenizer, seed=1, layers=1) -> str:
    """A bare pretrained encoder (no classification head) saved with its tokenizer."""
    torch.manual_seed(seed)
    BertModel(tiny_bert_config(layers=layers, vocab_size=len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def string_dataset(rows=POSTS) -> Dataset:
    return Dataset.from_dict({"id": [f"p{i}" for i in range(len(rows))], "text": [t for t, _ in rows],
                              "label": [y for _, y in rows]})


def classlabel_dataset(names, rows=POSTS) -> Dataset:
    features = Features({"id": Value("string"), "text": Value("string"), "label": ClassLabel(names=list(names))})
    return Dataset.from_dict({"id": [f"p{i}" for i in range(len(rows))], "text": [t for t, _ in rows],
                              "label": [names.index(y) for _, y in rows]}, features=features)


def args(tmp_path, cls=AnnealingArguments, **overrides):
    return small_run_args(cls, tmp_path, **{"max_steps": 2, **overrides})


@pytest.fixture
def tok(tmp_path):
    return write_tokenizer(tmp_path / "tok")


@pytest.fixture
def teacher_dir(tmp_path, tok):
    return save_classifier(tmp_path / "teacher", ["none", "hate"], tok)


# ---- data in: raw text, string labels, paths ---------------------------------------------------------------------


def test_raw_csv_like_dataset_with_string_labels_trains_and_follows_the_teachers_class_order(tmp_path, tok,
                                                                                           teacher_dir):
    student_dir = save_encoder(tmp_path / "student", tok)
    trainer = AnnealingTrainer(model=student_dir, teacher_model=teacher_dir, args=args(tmp_path),
                               train_dataset=string_dataset(), eval_dataset=string_dataset(POSTS[:4]),
                               processing_class=tok)
    # the teacher says 0 = none, 1 = hate: "hate" rows must carry 1, whatever order the strings sort in
    expected = [1 if y == "hate" else 0 for _, y in POSTS]
    assert trainer.train_dataset["labels"][:] == expected
    student = trainer.model
    assert student.config.id2label == {0: "none", 1: "hate"} and student.config.num_labels == 2
    trainer.train()
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])
    metrics = trainer.evaluate(string_dataset(POSTS[4:]))  # a raw eval set given later is tokenised too
    assert "eval_loss" in metrics


def test_class_names_in_another_order_are_mapped_by_name_not_by_id(tmp_path, tok, teacher_dir):
    data = classlabel_dataset(["hate", "none"])  # ids: hate = 0, none = 1; the teacher's: none = 0, hate = 1
    trainer = AnnealingTrainer(model=teacher_dir, teacher_model=teacher_dir, args=args(tmp_path),
                               train_dataset=data, processing_class=tok)
    assert trainer.train_dataset["labels"][:] == [1 - y for y in data["label"][:]]


def test_class_names_that_do_not_match_are_one_error_listing_both_sides(tmp_path, tok, teacher_dir):
    rows = [(t, "offensive" if y == "hate" else "none") for t, y in POSTS]
    with pytest.raises(ValueError, match=r"(?s)dataset.*\['none', 'offensive'\].*teacher.*\['none', 'hate'\]"):
        AnnealingTrainer(model=teacher_dir, teacher_model=teacher_dir, args=args(tmp_path),
                         train_dataset=classlabel_dataset(["none", "offensive"], rows), processing_class=tok)


def test_string_labels_without_a_named_model_get_sorted_names(tmp_path, tok):
    teacher = BertForSequenceClassification(tiny_bert_config(num_labels=2, vocab_size=len(tok)))
    trainer = AnnealingTrainer(model=save_encoder(tmp_path / "s", tok), teacher_model=teacher, args=args(tmp_path),
                               train_dataset=string_dataset(), processing_class=tok)
    assert trainer.model.config.id2label == {0: "hate", 1: "none"}
    assert trainer.train_dataset["labels"][:] == [0 if y == "hate" else 1 for _, y in POSTS]


def test_students_model_init_kwargs(tmp_path, tok, teacher_dir):
    trainer = AnnealingTrainer(model=save_encoder(tmp_path / "s", tok), teacher_model=teacher_dir,
                               args=args(tmp_path, model_init_kwargs='{"classifier_dropout": 0.33}'),
                               train_dataset=string_dataset(), processing_class=tok)
    assert trainer.model.config.classifier_dropout == 0.33


def test_a_teacher_path_with_its_own_tokenizer_gets_its_own_columns(tmp_path, tok):
    other = write_tokenizer(tmp_path / "tok_t", tuple(reversed(WORDS)) + ("extra", "words"))
    teacher = save_classifier(tmp_path / "t", ["none", "hate"], other)
    trainer = AnnealingTrainer(model=save_encoder(tmp_path / "s", tok), teacher_model=teacher, args=args(tmp_path),
                               train_dataset=string_dataset(), processing_class=tok)
    row = trainer.train_dataset[0]
    assert row["teacher_input_ids"] == other(POSTS[0][0], truncation=True, max_length=128)["input_ids"]
    assert row["input_ids"] == tok(POSTS[0][0], truncation=True, max_length=128)["input_ids"]
    trainer.train()


# ---- one clear error before training ------------------------------------------------------------------------------


def tokenised(tok, labels):
    enc = tok([t for t, _ in POSTS])
    return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                              "labels": labels})


def test_student_token_ids_are_never_fed_to_a_teacher_with_another_vocabulary(tmp_path, tok):
    teacher = BertForSequenceClassification(tiny_bert_config(num_labels=2, vocab_size=len(tok) + 40))
    student = BertForSequenceClassification(tiny_bert_config(num_labels=2, vocab_size=len(tok)))
    with pytest.raises(ValueError, match=r"teacher's vocabulary has 65 entries but the student's .* 25.*"
                                         r"teacher_processing_class"):
        AnnealingTrainer(model=student, teacher_model=teacher, args=args(tmp_path),
                         train_dataset=tokenised(tok, [0, 1] * 4), processing_class=tok)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda tok: Dataset.from_dict({"text": ["a", "b"], "y": [0, 1]}), r"no label column.*\['text', 'y'\]"),
        (lambda tok: tokenised(tok, ["hate", "none"] * 4), r"tokenised but its 'labels' column holds strings"),
        (lambda tok: string_dataset([]).cast_column("label", Value("string")), r"train dataset is empty"),
        (lambda tok: tokenised(tok, [-100] * 8), r"no labelled example"),
    ],
    ids=["label-column-missing", "string-labels-pretokenised", "empty", "all-ignored"],
)
def test_bad_datasets_are_refused_before_training(tmp_path, tok, teacher_dir, make, match):
    with pytest.raises(ValueError, match=match):
        AnnealingTrainer(model=teacher_dir, teacher_model=teacher_dir, args=args(tmp_path),
                         train_dataset=make(tok), processing_class=tok)


@pytest.mark.parametrize("overrides", [{"max_steps": 0}, {"max_steps": -1, "num_train_epochs": 0}])
def test_nothing_to_train_is_refused(tmp_path, overrides):
    with pytest.raises(ValueError, match="Nothing to train"):
        args(tmp_path, **overrides)
    with pytest.raises(ValueError, match="Nothing to train"):
        args(tmp_path, cls=MutualLearningArguments, **overrides)


def test_a_teacher_without_a_classification_head_is_refused(tmp_path, tok):
    encoder = save_encoder(tmp_path / "encoder", tok)
    with pytest.raises(ValueError, match=r"teacher .*encoder.* has no classification head.*BertModel"):
        AnnealingTrainer(model=encoder, teacher_model=encoder, args=args(tmp_path),
                         train_dataset=string_dataset(), processing_class=tok)
    with pytest.raises(ValueError, match=r"teacher \(BertModel\) has no classification head"):
        AnnealingTrainer(model=encoder, teacher_model=BertModel(tiny_bert_config(vocab_size=len(tok))),
                         args=args(tmp_path), train_dataset=string_dataset(), processing_class=tok)


def test_a_path_that_does_not_exist_says_not_found_locally(tmp_path, tok, teacher_dir, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"'\./no/such/teacher' was not found locally.*a path, not a Hub id"):
        AnnealingTrainer(model=teacher_dir, teacher_model="./no/such/teacher", args=args(tmp_path),
                         train_dataset=string_dataset(), processing_class=tok)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"'someone/teacher' was not found locally.*Hub cannot be reached"):
        AnnealingTrainer(model=teacher_dir, teacher_model="someone/teacher", args=args(tmp_path),
                         train_dataset=string_dataset(), processing_class=tok)


def test_students_given_as_a_list_are_refused(tmp_path, teacher_dir):
    with pytest.raises(TypeError, match=r"students must be a dict .*got a list"):
        MutualLearningTrainer(students=[teacher_dir, teacher_dir], teacher_model=teacher_dir,
                              args=args(tmp_path, cls=MutualLearningArguments), train_dataset=string_dataset())


class NaNForOnePost(BertForSequenceClassification):
    """A teacher whose logits are NaN for the posts holding the token id ``poison``."""

    poison = 14  # "idiot"

    def forward(self, input_ids=None, **kwargs):
        out = super().forward(input_ids=input_ids, **kwargs)
        bad = (input_ids == self.poison).any(-1)
        out.logits = torch.where(bad[:, None], torch.full_like(out.logits, float("nan")), out.logits)
        return out


def test_non_finite_teacher_logits_stop_training_with_the_step_and_ids(tmp_path, tok, teacher_dir):
    assert tok.convert_tokens_to_ids("idiot") == NaNForOnePost.poison
    teacher = NaNForOnePost.from_pretrained(teacher_dir)
    student = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    trainer = AnnealingTrainer(model=student, teacher_model=teacher, args=args(tmp_path, max_steps=4, per_device_train_batch_size=8),
                               train_dataset=string_dataset(), processing_class=tok)
    with pytest.raises(FloatingPointError, match=r"non-finite logits.*at step 0 for \d example\(s\): (p2|p6)"):
        trainer.train()
    # no optimizer step ran on a NaN loss: the student is still its initial, finite self
    for key, value in student.state_dict().items():
        assert torch.equal(value, before[key]), key


# ---- mutual learning: drop-in ------------------------------------------------------------------------------------


def test_ddml_readme_example_runs_with_local_paths_on_a_three_class_dataset(tmp_path, tok):
    names = ["hate", "offensive", "neither"]
    rows = [(t, names[i % 3]) for i, (t, _) in enumerate(POSTS)]
    other = write_tokenizer(tmp_path / "tok_b", tuple(reversed(WORDS)))
    students = {"mbert": save_encoder(tmp_path / "mbert", tok, seed=1),
                "xlmr": save_encoder(tmp_path / "xlmr", other, seed=2)}
    teacher = save_classifier(tmp_path / "teacher", names, tok, seed=3)
    raw = {"train": classlabel_dataset(names, rows), "validation": classlabel_dataset(names, rows[:6])}
    trainer = MutualLearningTrainer(
        students=students,
        teacher_model=teacher,
        args=MutualLearningArguments(output_dir=str(tmp_path / "ddml"), max_steps=2, per_device_train_batch_size=4,
                                     report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True,
                                     student_learning_rates={"xlmr": 1e-5}),
        train_dataset=raw["train"],
        eval_dataset=raw["validation"],
        compute_metrics=build_compute_metrics(names),
    )
    trainer.train()
    for name in students:
        assert trainer.group.students[name].config.id2label == dict(enumerate(names))
    metrics = trainer.evaluate()
    assert {"eval_mbert_f1_macro", "eval_xlmr_f1_macro", "eval_teacher_f1_macro"} <= set(metrics)
    trainer.save_model()
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "ddml" / "xlmr").config.num_labels == 3


def test_students_sharing_one_tokenizer_read_plain_columns_and_evaluate_raw_text(tmp_path, tok, teacher_dir):
    students = {"a": save_encoder(tmp_path / "a", tok, seed=1), "b": save_encoder(tmp_path / "b", tok, seed=2)}
    trainer = MutualLearningTrainer(students=students, teacher_model=teacher_dir,
                                    args=args(tmp_path, cls=MutualLearningArguments),
                                    train_dataset=string_dataset(), compute_metrics=build_compute_metrics())
    columns = set(trainer.train_dataset.column_names)
    assert {"input_ids", "attention_mask", "labels"} <= columns
    assert not any(c.startswith(("a_", "b_", "teacher_input")) for c in columns)
    trainer.train()
    metrics = trainer.evaluate(string_dataset(POSTS[2:]))
    assert {"eval_a_accuracy", "eval_b_accuracy", "eval_ensemble_accuracy"} <= set(metrics)
    # pre-tokenised plain columns work as well (no prefixed columns needed)
    trainer = MutualLearningTrainer(students=students, teacher_model=teacher_dir,
                                    args=args(tmp_path, cls=MutualLearningArguments),
                                    train_dataset=tokenised(tok, [0, 1] * 4))
    trainer.train()


# ---- without gold labels: a teacher labels a raw corpus ------------------------------------------------------------


def unlabelled(rows=POSTS) -> Dataset:
    return Dataset.from_dict({"id": [f"u{i}" for i in range(len(rows))], "text": [t for t, _ in rows]})


@pytest.mark.parametrize("overrides", [{"annealing": "kd", "alpha": 0.0, "beta": 1.0}, {"annealing": "mse"}])
def test_a_loss_without_label_term_distils_unlabelled_text(tmp_path, tok, teacher_dir, overrides):
    student = AutoModelForSequenceClassification.from_pretrained(save_encoder(tmp_path / "s", tok),
                                                                 **{"num_labels": 2})
    before = [p.detach().clone() for p in student.parameters()]
    trainer = AnnealingTrainer(model=student, teacher_model=teacher_dir, args=args(tmp_path, **overrides),
                               train_dataset=unlabelled(), eval_dataset=string_dataset(POSTS[:4]),
                               processing_class=tok)
    assert set(trainer.train_dataset["labels"][:]) == {-1}
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    key = "loss_kd" if overrides["annealing"] == "kd" else "loss_mse"
    assert all(h[key] > 0 and math.isfinite(h[key]) for h in logs) and "loss_ce" not in logs[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_a_loss_with_a_label_term_refuses_unlabelled_text(tmp_path, tok, teacher_dir):
    with pytest.raises(ValueError, match=r"no label column.*annealing='kd', alpha=0"):
        AnnealingTrainer(model=teacher_dir, teacher_model=teacher_dir, args=args(tmp_path, annealing="bam"),
                         train_dataset=unlabelled(), processing_class=tok)


def test_ddml_without_hard_term_trains_on_unlabelled_text(tmp_path, tok, teacher_dir):
    students = {"a": save_encoder(tmp_path / "a", tok, seed=1), "b": save_encoder(tmp_path / "b", tok, seed=2)}
    with pytest.raises(ValueError, match="no label column"):
        MutualLearningTrainer(students=students, teacher_model=teacher_dir,
                              args=args(tmp_path, cls=MutualLearningArguments), train_dataset=unlabelled())
    trainer = MutualLearningTrainer(students=students, teacher_model=teacher_dir,
                                    args=args(tmp_path, cls=MutualLearningArguments, hard_weight=0.0),
                                    train_dataset=unlabelled())
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    # no gold label anywhere: the hard term has no item, so it is not logged (a term is the mean over its own items)
    assert logs and all("a/loss_hard" not in h and h["a/loss_soft"] > 0 for h in logs)
    assert all(h["a/loss"] == pytest.approx(h["a/loss_soft"] + h["a/loss_mutual"], rel=1e-6) for h in logs)


# ---- what a review of the path above found ------------------------------------------------------------------------


def always_predicts(model, class_id: int):
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([10.0 if i == class_id else -10.0
                                                  for i in range(model.config.num_labels)]))
    return model


def test_per_class_metrics_follow_the_mapped_class_order(tmp_path, tok, teacher_dir):
    from distil_trainers.metrics import build_compute_metrics

    student = always_predicts(AutoModelForSequenceClassification.from_pretrained(teacher_dir), 0)  # 0 = "none"
    data = classlabel_dataset(["hate", "none"])
    trainer = AnnealingTrainer(model=student, teacher_model=teacher_dir, args=args(tmp_path), train_dataset=data,
                               eval_dataset=data, processing_class=tok,
                               compute_metrics=build_compute_metrics(["hate", "none"]))
    metrics = trainer.evaluate()
    assert metrics["eval_f1_hate"] == 0.0 and metrics["eval_f1_none"] > 0.0
    with pytest.raises(ValueError, match=r"compute_metrics names the classes \['a', 'b'\]"):
        AnnealingTrainer(model=teacher_dir, teacher_model=teacher_dir, args=args(tmp_path), train_dataset=data,
                         processing_class=tok, compute_metrics=build_compute_metrics(["a", "b"]))


def test_a_model_folder_without_a_tokenizer_is_refused_not_read_as_unknown_words(tmp_path, tok, teacher_dir):
    bare = tmp_path / "no_tokenizer"
    BertModel(tiny_bert_config(vocab_size=len(tok))).save_pretrained(bare)
    with pytest.raises(ValueError, match=r"student 'b'.* has no saved tokenizer"):
        MutualLearningTrainer(students={"a": save_encoder(tmp_path / "a", tok), "b": str(bare)},
                              teacher_model=teacher_dir, args=args(tmp_path, cls=MutualLearningArguments),
                              train_dataset=string_dataset())


def test_a_student_path_brings_its_tokenizer(tmp_path, tok, teacher_dir):
    trainer = AnnealingTrainer(model=save_encoder(tmp_path / "s", tok), teacher_model=teacher_dir,
                               args=args(tmp_path), train_dataset=string_dataset())
    assert trainer.train_dataset[0]["input_ids"] == tok(POSTS[0][0])["input_ids"]
    trainer.train()


def test_a_teacher_loaded_from_a_folder_reads_its_own_tokens_even_at_the_same_vocabulary_size(tmp_path, tok):
    shuffled = write_tokenizer(tmp_path / "tok_t", tuple(reversed(WORDS)))  # same size, other ids
    teacher_dir = save_classifier(tmp_path / "t", ["none", "hate"], shuffled)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    trainer = AnnealingTrainer(model=save_encoder(tmp_path / "s", tok), teacher_model=teacher, args=args(tmp_path),
                               train_dataset=string_dataset(), processing_class=tok)
    assert trainer.train_dataset[0]["teacher_input_ids"] == shuffled(POSTS[0][0])["input_ids"]
    with pytest.raises(ValueError, match="tokenized for the student only|tokenised for the student only"):
        AnnealingTrainer(model=save_encoder(tmp_path / "s2", tok), teacher_model=teacher, args=args(tmp_path),
                         train_dataset=tokenised(tok, [0, 1] * 4), processing_class=tok)


def test_a_padded_embedding_table_with_the_same_tokenizer_is_not_refused(tmp_path, tok):
    teacher = BertForSequenceClassification(tiny_bert_config(num_labels=2, vocab_size=len(tok) + 7))
    student = BertForSequenceClassification(tiny_bert_config(num_labels=2, vocab_size=len(tok)))
    trainer = AnnealingTrainer(model=student, teacher_model=teacher, args=args(tmp_path),
                               train_dataset=tokenised(tok, [0, 1] * 4), processing_class=tok,
                               teacher_processing_class=tok)
    trainer.train()


def test_a_cache_changed_after_attach_stops_training(tmp_path, tok, teacher_dir):
    from distil_trainers.teachers.cache import precompute_teacher_outputs

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    data = tokenised(tok, [0, 1] * 4).add_column("id", [f"p{i}" for i in range(8)])
    cache = precompute_teacher_outputs(teacher, data, tokenizer=tok)
    trainer = AnnealingTrainer(model=teacher_dir, teacher_outputs=cache, args=args(tmp_path), train_dataset=data,
                               processing_class=tok)
    cache.tensors["logits"][3, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite logits"):
        trainer.train()


def test_integer_codes_without_zero_are_their_own_classes():
    from distil_trainers.data.labels import encode_labels

    data = encode_labels(Dataset.from_dict({"text": ["a", "b", "c"], "label": [2, 10, 2]}))
    assert data.features["label"].names == ["2", "10"] and data["label"][:] == [0, 1, 0]


def test_a_raw_text_dataset_is_checked_against_the_cache_before_tokenising(tmp_path, tok, teacher_dir):
    from distil_trainers.teachers.cache import precompute_teacher_outputs

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    raw = string_dataset()
    enc = tok(raw["text"][:])
    cache = precompute_teacher_outputs(
        teacher, raw.add_column("input_ids", enc["input_ids"]).add_column("attention_mask", enc["attention_mask"]),
        tokenizer=tok,
    )
    AnnealingTrainer(model=teacher_dir, teacher_outputs=cache, args=args(tmp_path), train_dataset=raw,
                     processing_class=tok)
    edited = raw.map(lambda row: {"text": row["text"] + " again" if row["id"] == "p3" else row["text"]})
    with pytest.raises(ValueError, match=r"p3.*built on other texts"):
        AnnealingTrainer(model=teacher_dir, teacher_outputs=cache, args=args(tmp_path), train_dataset=edited,
                         processing_class=tok)
