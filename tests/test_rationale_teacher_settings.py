"""The teacher's settings from the recipe config (``TeacherArguments``): ``device_map`` / ``max_memory`` reaching
``from_pretrained`` and bad values refused before loading, the quantization and dtype in the cache fingerprint, the
prompt's task description and demonstrations from YAML (checked against the class names before any generation), the
balanced-binary subsample, and the shipped config that uses them run through the recipe with a stub teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import RECIPES, load_recipe
from datasets import ClassLabel, Dataset, DatasetDict
from rationale_fixtures import tiny_llama, tiny_tokenizer
from transformers import AutoModelForCausalLM
from trl import ModelConfig, TrlParser

from distil_trainers.data.balance import balanced_binary_subsample
from distil_trainers.teachers.rationales import (
    CacheMismatchError,
    GenerationResult,
    TeacherArguments,
    TeacherBackend,
    TransformersBackend,
    default_prompt,
    generate_rationales,
)
from distil_trainers.teachers.rationales.backends import transformers_backend as backends_module

NAMES = ["hate", "offensive", "neither"]
BINARY_CONFIG = RECIPES / "configs" / "rationale_binary_hate.yaml"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher")
    tok = tiny_tokenizer()
    tiny_llama(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture
def spy(monkeypatch):
    """Records the keyword arguments of every AutoModelForCausalLM.from_pretrained call, then loads as usual."""
    calls = []
    real = AutoModelForCausalLM.from_pretrained

    def recording(*args, **kwargs):
        calls.append({k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()})  # before accelerate
        return real(*args, **{k: v for k, v in kwargs.items() if k not in getattr(recording, "drop", ())})

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", recording)
    recording.calls = calls
    return recording


# ---- device_map / max_memory ----------------------------------------------------------------------------------------


def test_device_map_and_max_memory_reach_from_pretrained(tiny_dir, spy):
    args = TeacherArguments(teacher_backend="transformers", teacher_model=tiny_dir, teacher_device_map="auto",
                            teacher_max_memory={"cpu": "2GiB"})
    backend = args.build_backend()
    assert spy.calls == [] and not backend.loaded  # the weights load when the teacher is first asked
    assert backend.model is not None and backend.loaded
    assert spy.calls[-1]["device_map"] == "auto" and spy.calls[-1]["max_memory"] == {"cpu": "2GiB"}
    assert str(backend.device) == "cpu" and backend.generate([[{"role": "user", "content": "hello"}]], 2)[0].text
    # max_memory alone: from_pretrained places the model itself (device_map auto)
    assert TransformersBackend(tiny_dir, max_memory={"cpu": 2**31}).model is not None
    assert spy.calls[-1]["device_map"] == "auto" and spy.calls[-1]["max_memory"] == {"cpu": 2**31}


def test_the_two_gpu_example_reaches_from_pretrained_with_int_gpu_keys(tiny_dir, spy, monkeypatch):
    """The paper's setting on a machine with two GPUs (here pretended: the GPUs are only counted, and the placement
    arguments are recorded, then left out of the actual CPU load); YAML gives GPU keys as strings."""
    monkeypatch.setattr(backends_module, "visible_gpus", lambda: 2)
    spy.drop = ("device_map", "max_memory")
    args = TeacherArguments(teacher_backend="transformers", teacher_model=tiny_dir, teacher_device_map="auto",
                            teacher_max_memory='{"0": "20GiB", "1": "20GiB", "cpu": "60GiB"}')  # as on the CLI
    assert args.teacher_max_memory == {0: "20GiB", 1: "20GiB", "cpu": "60GiB"}
    assert args.build_backend().model is not None
    assert spy.calls[-1]["device_map"] == "auto"
    assert spy.calls[-1]["max_memory"] == {0: "20GiB", 1: "20GiB", "cpu": "60GiB"}  # accelerate wants int GPU keys
    assert TransformersBackend(tiny_dir, device_map={"model": 1, "lm_head": "cpu"}).model is not None
    assert spy.calls[-1]["device_map"] == {"model": 1, "lm_head": "cpu"}


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"teacher_max_memory": {"gpu0": "20GiB"}}, "max_memory key 'gpu0' is not a device"),
        ({"teacher_max_memory": {"0": "20G"}}, r"max_memory\['0'\] = '20G' is not a size"),
        ({"teacher_max_memory": ["20GiB"]}, "max_memory must be a mapping"),
        ({"teacher_device_map": "everywhere"}, "device_map must be one of"),
        ({"teacher_device_map": {"model": "gpu"}}, r"device_map\['model'\]: 'gpu' is not a device"),
        ({"teacher_dtype": "float8"}, "teacher_dtype must be one of"),
    ],
)
def test_bad_placement_values_fail_when_parsed(tiny_dir, spy, settings, message):
    with pytest.raises(ValueError, match=message):
        TeacherArguments(teacher_backend="transformers", teacher_model=tiny_dir, **settings)
    assert spy.calls == []


def test_missing_gpus_and_a_max_memory_without_a_strategy_fail_before_loading(tiny_dir, spy, monkeypatch):
    monkeypatch.setattr(backends_module, "visible_gpus", lambda: 0)
    args = TeacherArguments(teacher_backend="transformers", teacher_model=tiny_dir, teacher_device_map="auto",
                            teacher_max_memory={"0": "20GiB", "cpu": "60GiB"})  # fine to parse on a login node
    with pytest.raises(ValueError, match=r"name GPU \[0\] but torch sees no GPU"):
        args.build_backend()
    monkeypatch.setattr(backends_module, "visible_gpus", lambda: 1)
    with pytest.raises(ValueError, match=r"name GPU \[1\] but torch sees 1 GPU"):
        TransformersBackend(tiny_dir, device_map="cuda:1")
    with pytest.raises(ValueError, match="max_memory applies when from_pretrained places the model itself"):
        TransformersBackend(tiny_dir, device_map="cpu", max_memory={"cpu": "1GiB"})
    assert spy.calls == []  # nothing was loaded


# ---- quantization and dtype in the cache fingerprint ----------------------------------------------------------------


def test_quantization_and_dtype_are_part_of_the_cache_fingerprint(tiny_dir, tmp_path):
    ds = Dataset.from_dict({"id": ["a", "b"], "text": ["hello", "you are stupid"], "label": [2, 1]})
    cache = tmp_path / "c.jsonl"
    plain = TransformersBackend(tiny_dir)
    assert plain.describe() == {"backend": "TransformersBackend", "model": tiny_dir}  # as in older caches
    out = generate_rationales(ds, plain, default_prompt(NAMES), cache, max_new_tokens=3, show_progress=False)
    assert set(out["finish_reason"]) == {"length"}  # three tokens: every answer is cut (and recorded as such)
    fp32 = TransformersBackend(tiny_dir, dtype="float32")
    assert fp32.describe()["dtype"] == "float32"
    with pytest.raises(CacheMismatchError, match="different teacher"):
        generate_rationales(ds, fp32, default_prompt(NAMES), cache, max_new_tokens=3, show_progress=False)
    pytest.importorskip("bitsandbytes")
    four_bit = TransformersBackend(tiny_dir, load_in_4bit=True)
    assert four_bit.describe()["quantization"] == {
        "quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False, "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True, "bnb_4bit_compute_dtype": "bfloat16",
    }  # fmt: skip
    with pytest.raises(CacheMismatchError, match="different teacher.*quantization"):
        generate_rationales(ds, four_bit, default_prompt(NAMES), cache, max_new_tokens=3, show_progress=False)


# ---- the prompt from YAML -------------------------------------------------------------------------------------------


def parse_recipe_config(*extra: str, output_dir: str = "unused"):
    recipe = load_recipe("rationale_distill")
    from distil_trainers.trainers.rationale import RationaleSFTConfig

    parser = TrlParser((recipe.ScriptArguments, RationaleSFTConfig, ModelConfig))
    argv = ["--config", str(BINARY_CONFIG), "--output_dir", output_dir, "--use_cpu", "true", "--bf16", "false", *extra]
    return recipe, parser.parse_args_and_config(argv)


def test_the_shipped_config_sets_the_prompt_and_the_teacher(tmp_path):
    _, (script, _, _) = parse_recipe_config()
    assert script.teacher_concurrency == 32 and script.balance_binary == "train"
    assert [d["label"] for d in script.teacher_few_shot] == ["hate", "not-hate", "hate", "not-hate"]
    prompt = script.prompt(["not-hate", "hate"])  # tweeteval_hate's classes
    messages = prompt.to_messages("some post")
    assert messages[0]["content"].startswith("You are an expert content moderator. Decide whether a social media")
    assert "Possible labels: not-hate, hate." in messages[0]["content"]
    assert len(messages) == 1 + 2 * 4 + 1
    assert messages[1]["content"] == "Post: Close the borders, these invaders breed like rats and ruin every town " \
                                     "they move into."
    assert messages[2]["content"].endswith("because of their origin.\nLabel: hate")
    assert messages[4]["content"].endswith("not a group for who they are.\nLabel: not-hate")


def test_placement_and_sampling_from_the_command_line(tiny_dir):
    _, (script, _, _) = parse_recipe_config(
        "--teacher_backend", "transformers", "--teacher_model", tiny_dir, "--teacher_device_map", "auto",
        "--teacher_max_memory", '{"0": "20GiB", "cpu": "60GiB"}', "--teacher_dtype", "bfloat16",
        "--teacher_sampling", '{"top_p": 0.9}', "--retry_failed", "true", "--balance_binary", "all",
    )
    assert script.teacher_device_map == "auto" and script.teacher_max_memory == {0: "20GiB", "cpu": "60GiB"}
    assert script.teacher_sampling == {"top_p": 0.9} and script.retry_failed and script.balance_binary == "all"
    assert script.generation_kwargs() == {"batch_size": 8, "max_new_tokens": 192, "temperature": 0.0,
                                          "retry_failed": True}
    with pytest.raises(ValueError, match=r"teacher_sampling must not set \['temperature'\]"):
        TeacherArguments(teacher_sampling={"temperature": 0.7})
    with pytest.raises(ValueError, match="teacher_max_memory key 'gpu0' is not a device"):
        parse_recipe_config("--teacher_backend", "transformers", "--teacher_max_memory", '{"gpu0": "1GiB"}')


def test_demonstrations_are_checked_before_any_generation():
    good = [{"text": "x", "label": "HATE", "explanation": "because"}]  # any case; `explanation` for `rationale`
    prompt = TeacherArguments(teacher_few_shot=good).prompt(["not-hate", "hate"])
    assert [(d.label, d.explanation) for d in prompt.few_shot] == [("hate", "because")]
    assert TeacherArguments(teacher_few_shot="[]").prompt(NAMES).few_shot == []  # zero-shot, from the command line
    bad = [{"text": "a", "label": "spam", "rationale": "r"}, {"text": "b", "label": "hate", "rationale": "r"},
           {"text": "c", "label": "toxic", "rationale": "r"}]
    with pytest.raises(ValueError, match=r"labels of item 0 \('spam'\), item 2 \('toxic'\) are not among the class "
                                         r"names \['not-hate', 'hate'\]"):
        TeacherArguments(teacher_few_shot=bad).prompt(["not-hate", "hate"])
    with pytest.raises(ValueError, match=r"item 0 needs non-empty text, label and rationale \(missing: \['rationale'"):
        TeacherArguments(teacher_few_shot=[{"text": "a", "label": "hate"}])
    with pytest.raises(ValueError, match="unknown keys"):
        TeacherArguments(teacher_few_shot=[{"text": "a", "label": "hate", "rationale": "r", "lable": "x"}])
    with pytest.raises(ValueError, match="teacher_label_synonyms"):
        TeacherArguments(teacher_label_synonyms={"spam": ["junk"]}).prompt(NAMES)


class StubTeacher(TeacherBackend):
    """Answers "hate" with an explanation; records every conversation it is asked."""

    model_id = "stub-teacher"

    def __init__(self):
        self.conversations = []

    def generate(self, messages_batch, max_new_tokens=256, temperature=0.0):
        self.conversations += list(messages_batch)
        return [GenerationResult("Explanation: it attacks a group.\nLabel: hate", 8, "stop") for _ in messages_batch]


def needs_data():
    from distil_trainers.data import get_data_dir

    if get_data_dir() is None:
        pytest.skip("no data directory (set DISTIL_TRAINERS_DATA_DIR)")


def test_the_recipe_with_the_shipped_binary_config(tmp_path):
    """rationale_binary_hate.yaml through recipes/rationale_distill.py (a stub in the served teacher's place, a tiny
    Llama in the 8B student's): the teacher is asked with the YAML's demonstrations about a class-balanced train
    split; a demonstration with a label that is no class stops the run before the teacher is asked anything."""
    needs_data()
    from distil_trainers.data import load_dataset_by_name

    tok = tiny_tokenizer()
    tiny_llama(tok).save_pretrained(tmp_path / "student_base")
    tok.save_pretrained(tmp_path / "student_base")
    out = tmp_path / "run"
    flags = ["--model_name_or_path", str(tmp_path / "student_base"), "--load_in_4bit", "false", "--dtype", "float32",
             "--lora_target_modules", "q_proj", "v_proj", "--lora_r", "4", "--lora_alpha", "8",
             "--max_train_samples", "8", "--max_eval_samples", "3", "--max_steps", "1", "--max_length", "128",
             "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--save_strategy", "no",
             "--gradient_checkpointing", "false", "--disable_tqdm", "true"]
    recipe, parsed = parse_recipe_config(*flags, output_dir=str(out))
    teacher = StubTeacher()
    metrics = recipe.main(*parsed, teacher=teacher)
    assert 0.0 <= metrics["test_f1_macro"] <= 1.0
    assert len(teacher.conversations) == 8 + 3
    assert all(c[1]["content"].startswith("Post: Close the borders") and len(c) == 10 for c in teacher.conversations)
    train_ids = [json.loads(line)["id"] for line in (out / "rationales" / "train.jsonl").read_text().splitlines()[1:]]
    labels = dict(zip(*(lambda d: (d["id"][:], d["label"][:]))(load_dataset_by_name("tweeteval_hate")["train"])))
    assert sorted(labels[i] for i in train_ids) == [0, 0, 0, 0, 1, 1, 1, 1]  # 4 posts of each class

    bad = '[{"text": "x", "label": "offensive", "rationale": "y"}]'
    recipe, parsed = parse_recipe_config(*flags, "--teacher_few_shot", bad, output_dir=str(tmp_path / "bad"))
    teacher = StubTeacher()
    with pytest.raises(ValueError, match=r"'offensive'\) are not among the class names \['not-hate', 'hate'\]"):
        recipe.main(*parsed, teacher=teacher)
    assert teacher.conversations == [] and not (tmp_path / "bad" / "rationales").exists()


# ---- balanced binary subsample --------------------------------------------------------------------------------------


def binary(n0, n1):
    labels = [0] * n0 + [1] * n1
    order = np.random.default_rng(0).permutation(len(labels))
    ds = Dataset.from_dict({"id": [f"p{i}" for i in range(len(labels))], "label": [labels[i] for i in order]})
    return ds.cast_column("label", ClassLabel(names=["not-hate", "hate"]))


def test_balanced_binary_subsample(caplog):
    ds = binary(30, 8)
    with caplog.at_level("INFO", logger="distil_trainers.data.balance"):
        out = balanced_binary_subsample(ds, seed=1, name="train")
    assert sorted(out["label"][:]) == [0] * 8 + [1] * 8
    expected = "train: class-balanced binary subsample (seed 1): not-hate 30, hate 8 -> 8 posts of each class"
    assert expected in caplog.text
    ids = [int(i[1:]) for i in out["id"][:]]
    assert ids == sorted(ids)  # original order kept
    assert out["id"][:] == balanced_binary_subsample(ds, seed=1)["id"][:]  # seeded
    assert out["id"][:] != balanced_binary_subsample(ds, seed=2)["id"][:]
    assert sorted(balanced_binary_subsample(ds, max_samples=7, seed=1)["label"][:]) == [0, 0, 0, 1, 1, 1]
    three = Dataset.from_dict({"label": [0, 1, 2]}).cast_column("label", ClassLabel(names=["a", "b", "c"]))
    with pytest.raises(ValueError, match="needs two classes"):
        balanced_binary_subsample(three)
    with pytest.raises(ValueError, match="no post of class 'hate'"):
        balanced_binary_subsample(binary(5, 0))


def test_balance_binary_option_draws_from_the_whole_split():
    args = TeacherArguments(balance_binary=True)  # `balance_binary: true` in YAML means the train split
    assert args.balance_binary == "train"
    args.max_train_samples, args.max_eval_samples = 10, 4
    loading = args.loading_arguments()
    assert loading.max_train_samples is None and loading.max_eval_samples == 4 and args.max_train_samples == 10
    posts = DatasetDict({"train": binary(40, 12), "test": binary(9, 3)})
    out = args.balance(posts, seed=0)
    assert sorted(out["train"]["label"][:]) == [0] * 5 + [1] * 5 and len(out["test"]) == 12  # the test mix kept
    args.balance_binary = "all"
    out = args.balance(posts, seed=0)
    assert sorted(out["test"]["label"][:]) == [0, 0, 1, 1]
    assert TeacherArguments().balance(posts, seed=0) is posts
