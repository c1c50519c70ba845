"""A teacher-output cache is never used when it is wrong: NaN or inf teacher outputs are refused (when the cache is
built, loaded from disk, constructed or attached, and before a trainer starts), with one error naming the examples;
a cache built on other texts that reuse the same ids is refused at attach time; a cache written before the
per-example hashes existed loads with a warning."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import random_classification_dataset, small_run_args, tiny_bert_config, tiny_classifier
from datasets import Dataset, List, Value
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.modeling_outputs import CausalLMOutput, SequenceClassifierOutput

from distil_trainers import AnnealingArguments, AnnealingTrainer, MultiTaskConfig, MultiTaskModel
from distil_trainers.data.multitask import concatenate_tasks
from distil_trainers.teachers.cache import (
    CACHE_ROW_COLUMN,
    FORMAT_VERSION,
    META_FILE,
    TENSORS_FILE,
    TeacherOutputs,
    check_finite_logits,
    precompute_teacher_outputs,
    precompute_topk_logprobs,
)

LENGTH = 8
NAN = float("nan")
INF = float("inf")


def with_ids(ds, prefix="ex"):
    return ds.add_column("id", [f"{prefix}{i}" for i in range(len(ds))])


def args_for(tmp_path, **overrides) -> AnnealingArguments:
    return small_run_args(AnnealingArguments, tmp_path, annealing="kd", temperature=2.0, **overrides)


class PoisonedTeacher(nn.Module):
    """A tiny classifier whose logits are ``value`` (NaN by default) for the examples starting with token
    ``poison``: what a teacher overflowing in float16 on a few inputs looks like."""

    def __init__(self, poison: int, value: float = NAN):
        super().__init__()
        self.inner = tiny_classifier(0)
        self.config = self.inner.config
        self.poison, self.value = poison, value

    def forward(self, input_ids, attention_mask=None, **kwargs):
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask).logits
        hit = (input_ids[:, 0] == self.poison)[:, None]
        return SequenceClassifierOutput(logits=torch.where(hit, torch.full_like(logits, self.value), logits))


class PoisonedCausalLM(nn.Module):
    """A bigram causal LM over 20 tokens whose logits are NaN for the sequences starting with token ``poison``."""

    def __init__(self, poison: int):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head = nn.Embedding(20, 8), nn.Linear(8, 20)
        self.poison = poison

    def forward(self, input_ids, attention_mask=None, **kwargs):
        logits = self.head(self.embed(input_ids))
        hit = (input_ids[:, 0] == self.poison)[:, None, None]
        return CausalLMOutput(logits=torch.where(hit, torch.full_like(logits, NAN), logits))


def poisoned_dataset(n: int, bad_rows: list[int], poison: int = 1, seed: int = 0):
    """Random examples whose first token is never ``poison``, except those of ``bad_rows``."""
    ds = with_ids(random_classification_dataset(n=n, seed=seed))
    ids = ds["input_ids"][:]
    for r, row in enumerate(ids):
        row[0] = poison if r in bad_rows else (poison % 98) + 1 + (row[0] % 50)
    return ds.remove_columns("input_ids").add_column("input_ids", ids)


def tokens(text: str) -> list[int]:
    """A toy tokenizer: one id per character (in the tiny BERTs' vocabulary of 99), padded with 0."""
    ids = [ord(c) % 97 + 1 for c in text[:LENGTH]]
    return ids + [0] * (LENGTH - len(ids))


def text_dataset(texts: list[str], prefix: str = "doc") -> Dataset:
    """Raw texts with their tokens next to them, under the ids ``{prefix}0``, ``{prefix}1``…"""
    return Dataset.from_dict({
        "id": [f"{prefix}{i}" for i in range(len(texts))],
        "text": texts,
        "input_ids": [tokens(t) for t in texts],
        "attention_mask": [[int(x != 0) for x in tokens(t)] for t in texts],
        "labels": [len(t) % 3 for t in texts],
    })


TEXTS_A = [f"text a{i:02d}" for i in range(12)]
TEXTS_B = [f"other {i:02d}" for i in range(12)]  # another dataset that numbers its ids the same way


def tamper(directory, key: str, index, value: float) -> None:
    """Overwrite one stored value of a saved cache, as a damaged or edited file would hold."""
    tensors = load_file(str(directory / TENSORS_FILE))
    tensors[key][index] = value
    save_file(tensors, str(directory / TENSORS_FILE))


# ---- the public check ----------------------------------------------------------------------------------------------


def test_check_finite_logits_names_the_examples_and_the_cause():
    logits = torch.zeros(8, 3, 5)  # (batch, tokens, vocabulary): a row is an example
    check_finite_logits(logits)
    logits[2, 1, 0] = NAN
    for r in (3, 4, 5, 6, 7):
        logits[r, 0, 4] = INF
    ids = [f"q{i}" for i in range(8)]
    with pytest.raises(ValueError) as err:
        check_finite_logits(logits, ids, "teacher logits of batch 3")
    message = str(err.value)
    assert message.startswith("The teacher logits of batch 3 hold NaN or inf for 6 example(s) (ids ['q2', 'q3', ")
    assert "'q6'] and 1 more)" in message and "q7" not in message
    assert "float16" in message and "bfloat16" in message and "rebuild=True" in message
    with pytest.raises(ValueError, match=r"for 1 example\(s\) \(rows \[0\]\)"):
        check_finite_logits(torch.tensor([[-INF, 0.0]]))

    # log-probabilities: -inf is a probability of 0, NaN and +inf are not values at all
    log_probs = torch.log_softmax(torch.tensor([[0.0, -INF, 1.0], [0.0, 0.0, 0.0]]), -1)
    check_finite_logits(log_probs, allow_neg_inf=True)
    with pytest.raises(ValueError, match=r"NaN or \+inf for 1 example\(s\) \(ids \['b'\]\)"):
        check_finite_logits(torch.tensor([[0.0, -INF], [INF, 0.0]]), ["a", "b"], allow_neg_inf=True)
    # only the entries that mean something: padding beyond a head's width may be NaN
    padded = torch.tensor([[0.1, 0.2, NAN], [0.3, 0.4, 0.5]])
    check_finite_logits(padded, valid=torch.tensor([[True, True, False], [True, True, True]]))


# ---- NaN / inf when a cache is built -------------------------------------------------------------------------------


def test_build_refuses_nan_from_the_teacher_and_writes_no_cache(tmp_path):
    ds = poisoned_dataset(16, bad_rows=[3])
    directory = tmp_path / "cache"
    with pytest.raises(ValueError) as err:
        precompute_teacher_outputs(PoisonedTeacher(poison=1), ds, directory, batch_size=5)
    message = str(err.value)
    assert "The teacher's logits hold NaN or inf for 1 example(s) (ids ['ex3'])" in message
    assert "The teacher produced them" in message and "float16" in message and "no cache was written" in message
    assert not (directory / META_FILE).exists()
    # the same data with a sound teacher builds
    assert len(precompute_teacher_outputs(PoisonedTeacher(poison=0), ds, directory)) == 16


def test_build_names_a_few_of_many_bad_examples_and_counts_the_rest():
    ds = poisoned_dataset(20, bad_rows=[0, 2, 4, 6, 8, 10, 12, 14])
    with pytest.raises(ValueError) as err:
        precompute_teacher_outputs(PoisonedTeacher(poison=1, value=INF), ds, batch_size=6)
    assert "for 8 example(s) (ids ['ex0', 'ex2', 'ex4', 'ex6', 'ex8'] and 3 more)" in str(err.value)


def test_build_refuses_logits_a_float16_cache_cannot_hold():
    ds = with_ids(random_classification_dataset(n=6))
    teacher = tiny_classifier(0)
    with torch.no_grad():
        teacher.classifier.bias[1] = 1e5  # beyond float16's 65504
    assert len(precompute_teacher_outputs(teacher, ds)) == 6  # float32 holds them
    with pytest.raises(ValueError, match=r"hold NaN or inf for 6 example\(s\).*dtype=torch.float16"):
        precompute_teacher_outputs(teacher, ds, dtype=torch.float16)


def test_multitask_build_refuses_nan_in_a_head_but_not_the_padding():
    tasks = {"sentiment": 2, "hate": 3}
    torch.manual_seed(0)
    teacher = MultiTaskModel(MultiTaskConfig(encoder=tiny_bert_config().to_dict(), tasks=tasks)).eval()
    sentiment = random_classification_dataset(n=5, num_labels=2, seed=1)
    hate = random_classification_dataset(n=4, num_labels=3, seed=2)
    data = concatenate_tasks({"sentiment": sentiment, "hate": hate})
    data = data.add_column("id", [f"m{i}" for i in range(len(data))])
    cache = precompute_teacher_outputs(teacher, data)  # sentiment rows: NaN padding in column 2
    assert torch.isnan(cache.tensors["logits"][:5, 2]).all()
    with torch.no_grad():
        teacher.heads["hate"].weight[0, 0] = NAN
    with pytest.raises(ValueError, match=r"for 4 example\(s\) \(ids \['m5', 'm6', 'm7', 'm8'\]\)"):
        precompute_teacher_outputs(teacher, data)


def test_topk_build_refuses_nan_log_probabilities():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 20, (5, 6), generator=g)
    ids[4, 0] = 1  # the poisoned sequence
    ds = Dataset.from_dict({"id": [f"s{i}" for i in range(5)], "input_ids": ids.tolist(),
                            "attention_mask": [[1] * 6] * 5})
    refused = r"top-k log-probabilities hold NaN or \+inf for 1 example\(s\) \(ids \['s4'\]\)"
    with pytest.raises(ValueError, match=refused):
        precompute_topk_logprobs(PoisonedCausalLM(poison=1), ds, k=4)
    # k covering the vocabulary leaves no rest mass: rest_logprob is -inf, and that is a valid cache
    cache = precompute_topk_logprobs(PoisonedCausalLM(poison=0), ds, k=20)
    assert torch.isneginf(cache.tensors["rest_logprob"]).all()


# ---- NaN / inf when a cache is loaded from disk --------------------------------------------------------------------


@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_a_tampered_file_is_refused_at_load(tmp_path, value):
    ds = with_ids(random_classification_dataset(n=10, seed=3))
    teacher = tiny_classifier(0)
    directory = tmp_path / "cache"
    precompute_teacher_outputs(teacher, ds, directory)
    tamper(directory, "logits", (6, 1), value)
    with pytest.raises(ValueError) as err:
        TeacherOutputs.load(directory)
    message = str(err.value)
    assert f"The teacher outputs stored in {directory} hold NaN or inf for 1 example(s) (ids ['ex6'])" in message
    assert "damaged" in message and "delete the folder" in message
    with pytest.raises(ValueError, match="damaged"):  # the builder's reuse path loads it too
        precompute_teacher_outputs(teacher, ds, directory)
    rebuilt = precompute_teacher_outputs(teacher, ds, directory, rebuild=True)
    assert torch.isfinite(rebuilt.tensors["logits"]).all() and len(TeacherOutputs.load(directory)) == 10


def test_a_tampered_topk_file_is_refused_at_load_but_minus_inf_is_a_log_probability(tmp_path):
    ids = torch.randint(2, 20, (4, 6), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[1] = -100  # a row without completion tokens: the offsets map tokens to the right examples
    ds = Dataset.from_dict({"id": ["t0", "t1", "t2", "t3"], "input_ids": ids.tolist(),
                            "attention_mask": [[1] * 6] * 4, "labels": labels.tolist()})
    directory = tmp_path / "lm"
    cache = precompute_topk_logprobs(PoisonedCausalLM(poison=0), ds, directory, k=3)
    assert cache.tensors["offsets"].tolist() == [0, 5, 5, 10, 15]
    tamper(directory, "topk_logprobs", (7, 2), -INF)  # a token the teacher rules out
    assert torch.isneginf(TeacherOutputs.load(directory).tensors["topk_logprobs"][7, 2])
    tamper(directory, "rest_logprob", 10, INF)  # first token of t3
    with pytest.raises(ValueError, match=r"NaN or \+inf for 1 example\(s\) \(ids \['t3'\]\)"):
        TeacherOutputs.load(directory)
    tamper(directory, "rest_logprob", 10, -1.0)
    tamper(directory, "topk_logprobs", (4, 0), NAN)  # last token of t0
    with pytest.raises(ValueError, match=r"\(ids \['t0'\]\)"):
        TeacherOutputs.load(directory)


# ---- NaN / inf given to the constructor, or found at attach time ---------------------------------------------------


def test_constructor_refuses_nan_and_inf():
    logits = torch.randn(4, 3)
    logits[2, 0] = NAN
    with pytest.raises(ValueError, match=r"The teacher outputs hold NaN or inf for 1 example\(s\) \(ids \['c'\]\)"):
        TeacherOutputs(ids=["a", "b", "c", "d"], kind="logits", tensors={"logits": logits})
    logits[2, 0] = -INF  # the logit-matching losses (Annealing-KD's MSE) cannot use a classifier logit of -inf
    with pytest.raises(ValueError, match="NaN or inf"):
        TeacherOutputs(ids=["a", "b", "c", "d"], kind="logits", tensors={"logits": logits})
    # a multi-task cache: NaN beyond a row's head width is padding, NaN within it is refused
    multitask = {"logits": torch.tensor([[0.1, 0.2, NAN], [0.1, 0.2, 0.3]]), "task_ids": torch.tensor([0, 1])}
    meta = {"tasks": {"sentiment": 2, "hate": 3}}
    TeacherOutputs(ids=["s", "h"], kind="logits", tensors=multitask, meta=meta)
    multitask["logits"][1, 2] = NAN
    with pytest.raises(ValueError, match=r"\(ids \['h'\]\)"):
        TeacherOutputs(ids=["s", "h"], kind="logits", tensors=multitask, meta=meta)


def test_attach_refuses_outputs_changed_after_construction():
    ds = with_ids(random_classification_dataset(n=8))
    cache = precompute_teacher_outputs(tiny_classifier(0), ds)
    cache.tensors["logits"][5, 2] = NAN
    refused = r"The cached teacher outputs hold NaN or inf for 1 example\(s\) \(ids \['ex5'\]\)"
    with pytest.raises(ValueError, match=refused):
        cache.attach(ds)


def test_trainer_refuses_a_bad_cache_before_training(tmp_path):
    ds = with_ids(random_classification_dataset(n=8))
    teacher = tiny_classifier(0)
    bad = precompute_teacher_outputs(teacher, ds)
    bad.tensors["logits"][1, 0] = NAN
    with pytest.raises(ValueError, match=r"NaN or inf for 1 example\(s\) \(ids \['ex1'\]\)"):
        AnnealingTrainer(model=tiny_classifier(1), teacher_outputs=bad, args=args_for(tmp_path), train_dataset=ds)

    directory = tmp_path / "cache"
    precompute_teacher_outputs(teacher, ds, directory)
    tamper(directory, "logits", (4, 2), INF)
    with pytest.raises(ValueError, match=r"stored in .* hold NaN or inf for 1 example\(s\) \(ids \['ex4'\]\)"):
        AnnealingTrainer(model=tiny_classifier(1), teacher_outputs=str(directory), args=args_for(tmp_path),
                         train_dataset=ds)


# ---- a cache built on other texts that reuse the ids ---------------------------------------------------------------


def test_cache_stores_a_hash_of_every_example(tmp_path):
    directory = tmp_path / "cache"
    precompute_teacher_outputs(tiny_classifier(0), text_dataset(TEXTS_A), directory)
    meta = json.loads((directory / META_FILE).read_text())
    assert meta["format_version"] == FORMAT_VERSION == 3
    hashes = meta["content_hashes"]
    assert sorted(hashes) == ["input_ids", "text"]
    assert all(len(h) == 12 and len(set(h)) == 12 for h in hashes.values())
    assert all(len(x) == 16 and int(x, 16) >= 0 for x in hashes["text"])


def test_same_texts_attach_in_any_order_and_with_or_without_text(tmp_path):
    data = text_dataset(TEXTS_A)
    evaluation = text_dataset(TEXTS_B[:4], prefix="eval").remove_columns("text")  # tokenised only
    cache = precompute_teacher_outputs(tiny_classifier(0), {"train": data, "eval": evaluation}, tmp_path / "c")
    assert cache.content_hashes["text"][12:] == [None] * 4  # the eval split had no text to hash
    shuffled = data.shuffle(seed=4)
    attached = cache.attach(shuffled)
    assert [cache.ids[r] for r in attached[CACHE_ROW_COLUMN][:]] == shuffled["id"][:]
    cache.attach(data.remove_columns("text"))  # compared on the teacher's input ids
    cache.attach(data.cast_column("input_ids", List(Value("int32"))))  # the same ids stored narrower
    cache.attach(evaluation)
    loaded = TeacherOutputs.load(tmp_path / "c")
    assert loaded.content_hashes == cache.content_hashes
    loaded.attach(shuffled)


def test_other_texts_under_the_same_ids_are_refused(tmp_path):
    cache = precompute_teacher_outputs(tiny_classifier(0), text_dataset(TEXTS_A))
    other = text_dataset(TEXTS_A[:5] + TEXTS_B[5:])  # 7 examples changed, ids kept
    with pytest.raises(ValueError) as err:
        cache.attach(other, "train dataset")
    message = str(err.value)
    assert message.startswith(
        "7 example(s) (ids ['doc5', 'doc6', 'doc7', 'doc8', 'doc9'] and 2 more) of the train dataset differ from the "
        "examples the teacher-output cache holds under the same ids"
    )
    assert "(compared: text and input_ids)" in message and "other texts that reuse these ids" in message
    assert "rebuild=True" in message and "delete the cache folder" in message
    with pytest.raises(ValueError, match=r"^7 example\(s\)"):  # the same check for code that maps rows itself
        cache.check_contents(other, "train dataset")
    # a tokenised-only copy of the other texts: the teacher's input ids differ
    with pytest.raises(ValueError, match=r"7 example\(s\).*\(compared: input_ids\)"):
        cache.attach(other.remove_columns("text"))
    # a text edit the toy tokenizer cannot see (beyond its 8 characters) is still another text
    edited = text_dataset([t + " and more" if i == 2 else t for i, t in enumerate(TEXTS_A)])
    assert edited["input_ids"][:] == text_dataset(TEXTS_A)["input_ids"][:]
    with pytest.raises(ValueError, match=r"1 example\(s\) \(ids \['doc2'\]\)"):
        cache.attach(edited)


def test_trainer_refuses_a_cache_built_on_other_texts(tmp_path):
    cache_dir = tmp_path / "cache"
    precompute_teacher_outputs(tiny_classifier(0), text_dataset(TEXTS_A), cache_dir)
    with pytest.raises(ValueError, match="other texts that reuse these ids"):
        AnnealingTrainer(model=tiny_classifier(1), teacher_outputs=str(cache_dir), args=args_for(tmp_path),
                         train_dataset=text_dataset(TEXTS_B).remove_columns("text"))


def test_multitask_cache_refuses_other_examples_under_its_ids():
    tasks = {"sentiment": 2, "hate": 3}
    torch.manual_seed(0)
    teacher = MultiTaskModel(MultiTaskConfig(encoder=tiny_bert_config().to_dict(), tasks=tasks)).eval()

    def mixed(seed):
        data = concatenate_tasks({"sentiment": random_classification_dataset(n=4, num_labels=2, seed=seed),
                                  "hate": random_classification_dataset(n=4, num_labels=3, seed=seed + 1)})
        return data.add_column("id", [f"m{i}" for i in range(len(data))])

    cache = precompute_teacher_outputs(teacher, mixed(0))
    cache.attach(mixed(0).shuffle(seed=1))
    with pytest.raises(ValueError, match=r"8 example\(s\).*other texts that reuse these ids"):
        cache.attach(mixed(10))


def test_a_raw_text_dataset_is_checked_before_the_trainer_tokenises_it_and_not_warned_about(tmp_path, caplog):
    from rationale_fixtures import tiny_tokenizer

    tok = tiny_tokenizer(chat=False)
    texts = ["you are all stupid idiots", "good morning all", "nice day", "we love you", "stupid word", "hello"]
    raw = Dataset.from_dict({"id": [f"p{i}" for i in range(6)], "text": texts, "label": [1, 2, 2, 2, 1, 2]})
    view = raw.map(lambda b: {f"teacher_{k}": v for k, v in tok(b["text"]).items()}, batched=True)
    cache = precompute_teacher_outputs(tiny_classifier(0, vocab_size=len(tok)), view, tokenizer=tok)
    assert "text" in cache.content_hashes

    def trainer(data):
        return AnnealingTrainer(model=tiny_classifier(1, vocab_size=len(tok)), teacher_outputs=cache,
                                args=args_for(tmp_path), train_dataset=data, processing_class=tok)  # fmt: skip

    with caplog.at_level(logging.WARNING, logger="distil_trainers.teachers.cache"):
        trained_on = trainer(raw).train_dataset
    assert "cannot be checked" not in caplog.text and "text" not in trained_on.column_names  # checked, then tokenised
    with pytest.raises(ValueError, match="other texts that reuse these ids"):
        trainer(raw.map(lambda row, i: {"text": row["text"] + " !" if i == 3 else row["text"]}, with_indices=True))


def test_no_shared_columns_skips_the_check_with_a_warning(caplog):
    data = text_dataset(TEXTS_A)
    data = data.add_column("teacher_input_ids", data["input_ids"][:])
    data = data.add_column("teacher_attention_mask", data["attention_mask"][:])
    cache = precompute_teacher_outputs(tiny_classifier(0), data.remove_columns("text"))
    assert sorted(cache.content_hashes) == ["teacher_input_ids"]
    student_only = text_dataset(TEXTS_B).remove_columns("text")  # the student's input_ids are not the teacher's
    with caplog.at_level(logging.WARNING, logger="distil_trainers.teachers.cache"):
        cache.attach(student_only, "eval dataset")
    assert "eval dataset has none of the columns the teacher-output cache hashed" in caplog.text


def test_attach_checks_25k_shuffled_examples_and_finds_the_one_that_changed():
    n = 25_000
    g = torch.Generator().manual_seed(0)
    data = Dataset.from_dict({"id": [f"r{i}" for i in range(n)], "text": [f"example number {i}" for i in range(n)],
                              "input_ids": torch.randint(1, 99, (n, 64), generator=g).tolist()})
    from distil_trainers.teachers.cache.fingerprints import _dataset_content_hashes

    cache = TeacherOutputs(ids=data["id"][:], kind="logits", tensors={"logits": torch.randn(n, 3, generator=g)},
                           content_hashes=_dataset_content_hashes([("train", data)]))
    shuffled = data.shuffle(seed=0)
    attached = cache.attach(shuffled)
    assert attached[CACHE_ROW_COLUMN][:5] == [int(i[1:]) for i in shuffled["id"][:5]]
    changed = shuffled.map(lambda row: {"text": row["text"] + "!" if row["id"] == "r12345" else row["text"]})
    with pytest.raises(ValueError, match=r"1 .*r12345"):
        cache.attach(changed)


# ---- caches written before the hashes existed ----------------------------------------------------------------------


def test_an_old_format_cache_loads_with_a_warning_and_is_upgraded_by_the_builder(tmp_path, caplog):
    data = text_dataset(TEXTS_A)
    teacher = tiny_classifier(0)
    built = precompute_teacher_outputs(teacher, data)
    old = tmp_path / "old"
    old.mkdir()
    save_file({"logits": built.tensors["logits"].contiguous()}, str(old / TENSORS_FILE))
    (old / META_FILE).write_text(json.dumps({
        "format_version": 1, "kind": "logits", "fingerprint": built.fingerprint,
        "meta": {"num_labels": 3, "teacher": "BertForSequenceClassification",
                 "teacher_fingerprint": built.meta["teacher_fingerprint"]},
        "ids": data["id"][:],
    }))
    with caplog.at_level(logging.WARNING, logger="distil_trainers.teachers.cache"):
        loaded = TeacherOutputs.load(old)
    assert f"The teacher-output cache in {old} (format version 1) holds no per-example content hashes" in caplog.text
    assert loaded.content_hashes == {}
    torch.testing.assert_close(loaded.tensors["logits"], built.tensors["logits"])
    loaded.attach(text_dataset(TEXTS_B))  # cannot be checked: used as before

    # the builder reuses it (same teacher, same tokens) and records the hashes of the examples given now
    stamp = (old / TENSORS_FILE).stat().st_mtime_ns
    reused = precompute_teacher_outputs(teacher, data, old)
    assert (old / TENSORS_FILE).stat().st_mtime_ns == stamp
    meta = json.loads((old / META_FILE).read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["content_hashes"] == built.content_hashes
    assert reused.content_hashes == built.content_hashes
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="distil_trainers.teachers.cache"):
        upgraded = TeacherOutputs.load(old)
    assert "content hashes" not in caplog.text
    with pytest.raises(ValueError, match="other texts that reuse these ids"):
        upgraded.attach(text_dataset(TEXTS_B))
