"""The LLM classifier teacher on tiny causal LMs built from configs with a word-level tokenizer written here: class
log-probabilities against an independent full forward, length normalisation, several label words per class, left
padding, the token boundary, calibration golden values, the OpenAI-compatible backend against a local fake server,
the teacher-output cache (saved, reused, attached with text hashes, NaN refused) and a student distilled from it."""

from __future__ import annotations

import json
import math
import threading
from http.server import ThreadingHTTPServer

import datasets
import pytest
import torch
from conftest import tiny_classifier
from json_server import JSONHandler
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from distil_trainers import AnnealingArguments, AnnealingTrainer
from distil_trainers._sequences import common_prefix_length
from distil_trainers.teachers import (
    ClassifierPrompt,
    LLMCalibration,
    LLMClassifier,
    OpenAILogprobBackend,
    TransformersLogprobBackend,
    apply_temperature,
    as_logprob_backend,
    content_free_distribution,
    contextual_calibration,
    default_classifier_prompt,
    default_label_words,
    first_token_class_scores,
    fit_temperature,
    precompute_llm_teacher_outputs,
    resolve_label_words,
    temperature_nll,
)
from distil_trainers.teachers.cache import CACHE_ROW_COLUMN, META_FILE, TENSORS_FILE, TeacherOutputs
from distil_trainers.teachers.rationales import TeacherBackendError, TransformersBackend

CLASSES = ["hate", "offensive", "neither"]
WORDS = {"hate": ["hate", "hateful"], "offensive": ["very offensive", "offensive"], "neither": ["neither"]}
TEXTS = [
    "you are great",
    "shut up you stupid idiot",
    "send them all back they are animals",
    "what a lovely sunny day at the lake with my family",
    "idiot",
    "I hate mondays",
]
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


# ---- tiny models -------------------------------------------------------------------------------------------------


def corpus() -> list[str]:
    prompt = default_classifier_prompt("davidson", demonstrations=[("idiot", "offensive")])
    words = resolve_label_words(WORDS, CLASSES)
    return [prompt.plain_text(t, CLASSES, words) for t in TEXTS] + [w for ws in WORDS.values() for w in ws] + [
        "Label: Post: N/A MASK not Sentence Tweet"
    ]


def word_tokenizer(directory, *, chat_template: str | None = None, split: str = "whitespace"):
    """A word-level tokenizer (BOS added) over the words of the test prompts, saved and reloaded from ``directory``.
    ``split="whitespace_split"`` keeps punctuation glued to words (``"Label:"`` is one token) for the boundary test."""
    pre = pre_tokenizers.Whitespace() if split == "whitespace" else pre_tokenizers.WhitespaceSplit()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for text in corpus():
        for piece, _ in pre.pre_tokenize_str(text):
            vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.add_special_tokens([AddedToken(s, special=True) for s in SPECIALS])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(directory)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         initializer_range=0.3, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(vocab_size: int, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=512, n_embd=32, n_layer=2, n_head=4,
                        initializer_range=0.3, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1,
                        eos_token_id=2)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return word_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def chat_tok(tmp_path_factory):
    return word_tokenizer(tmp_path_factory.mktemp("chat_tok"), chat_template=CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def llama(tok):
    return tiny_llama(len(tok))


def reference_class_log_probs(model, tokenizer, prompts, words, normalization="mean", separator=" "):
    """Independent computation: one full forward per prompt + word (no padding, no cache), manual log_softmax sums."""
    rows = []
    for prompt in prompts:
        prompt_ids = tokenizer(prompt)["input_ids"]
        per_class = []
        for class_words in words:
            scores = []
            for w in class_words:
                full = tokenizer(prompt + separator + w)["input_ids"]
                assert full[: len(prompt_ids)] == prompt_ids  # a clean boundary for this tokenizer
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([full])).logits[0].double()
                log_p = torch.log_softmax(logits, -1)
                token_lps = [log_p[t - 1, full[t]] for t in range(len(prompt_ids), len(full))]
                total = torch.stack(token_lps).sum()
                scores.append(total / len(token_lps) if normalization == "mean" else total)
            per_class.append(torch.stack(scores).logsumexp(0))
        rows.append(torch.log_softmax(torch.stack(per_class), 0))
    return torch.stack(rows)


def make_classifier(model, tokenizer, **kwargs):
    backend = TransformersLogprobBackend(model, tokenizer, share_prefix=kwargs.pop("share_prefix", True))
    kwargs.setdefault("label_words", WORDS)
    kwargs.setdefault("task", "davidson")
    return LLMClassifier(backend, CLASSES, **kwargs)


# ---- prompts -------------------------------------------------------------------------------------------------------


def test_common_prefix_length_counts_the_shared_leading_tokens():
    # the scored tokens of a candidate start after this prefix (LLM backends, rationale views)
    assert common_prefix_length([5, 6, 7], [5, 6, 8, 9]) == 2
    assert common_prefix_length([5, 6], [5, 6, 7]) == 2
    assert common_prefix_length([5, 6, 7], [5, 6]) == 2
    assert common_prefix_length([4, 6], [5, 6]) == 0
    assert common_prefix_length([], [1]) == 0


def test_plain_prompt_text_is_exact(tok, llama):
    prompt = ClassifierPrompt("Classify the post.", demonstrations=[("idiot", "offensive")])
    clf = make_classifier(llama, tok, prompt=prompt)
    assert not clf.use_chat_template
    assert clf.prompt_text("you are great") == (
        "Classify the post.\n\nAnswer with exactly one of these labels: hate, very offensive, neither.\n\n"
        "Post: idiot\nLabel: very offensive\n\nPost: you are great\nLabel:"
    )
    assert clf._continuations == [" hate", " hateful", " very offensive", " offensive", " neither"]


def test_chat_template_is_used_when_the_tokenizer_has_one(chat_tok, tok):
    model = tiny_llama(len(chat_tok))
    clf = make_classifier(model, chat_tok, prompt=ClassifierPrompt("Classify.", demonstrations=[("idiot", "hate")]))
    assert clf.use_chat_template
    messages = [
        {"role": "system", "content": "Classify.\n\nAnswer with exactly one of these labels: hate, very offensive, "
                                      "neither."},
        {"role": "user", "content": "Post: idiot"},
        {"role": "assistant", "content": "Label: hate"},
        {"role": "user", "content": "Post: you are great"},
    ]
    expected = chat_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + "Label:"
    assert clf.prompt_text("you are great") == expected
    assert expected.startswith("<|system|> Classify.") and expected.endswith("<|assistant|>Label:")
    plain = make_classifier(model, chat_tok, prompt=ClassifierPrompt("Classify.", use_chat_template=False))
    assert not plain.use_chat_template and plain.prompt_text("x").endswith("Post: x\nLabel:")
    with pytest.raises(ValueError, match="requires a chat template"):
        make_classifier(tiny_llama(len(tok)), tok, prompt=ClassifierPrompt(use_chat_template=True))
    # golden values hold through the template too
    got = clf.class_log_probs(TEXTS[:3])
    ref = reference_class_log_probs(model, chat_tok, [clf.prompt_text(t) for t in TEXTS[:3]],
                                    resolve_label_words(WORDS, CLASSES))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


# ---- scoring -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("normalization", ["mean", "sum"])
def test_class_log_probs_match_an_independent_forward(tok, llama, share_prefix, normalization):
    clf = make_classifier(llama, tok, share_prefix=share_prefix, normalization=normalization, batch_size=4,
                          prompt=default_classifier_prompt("davidson", demonstrations=[("idiot", "offensive")]))
    got = clf.class_log_probs(TEXTS)
    ref = reference_class_log_probs(llama, tok, [clf.prompt_text(t) for t in TEXTS],
                                    resolve_label_words(WORDS, CLASSES), normalization)
    assert got.shape == (len(TEXTS), 3) and got.dtype == torch.float64
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(len(TEXTS), dtype=torch.float64))
    assert clf.backend.boundary_merges == 0


def test_length_normalisation_and_several_label_words(tok, llama):
    prompt = ClassifierPrompt("Classify the post.", answer_instruction="")  # the same prompt whatever the words
    mean = make_classifier(llama, tok, normalization="mean", prompt=prompt)
    total = make_classifier(llama, tok, normalization="sum", prompt=prompt)
    lengths = torch.tensor([1, 1, 2, 1, 1], dtype=torch.float64)  # "very offensive" is two tokens
    w_mean, w_sum = mean.word_log_probs(TEXTS), total.word_log_probs(TEXTS)
    torch.testing.assert_close(w_mean * lengths, w_sum, atol=1e-9, rtol=0)
    assert not torch.allclose(w_mean[:, 2], w_sum[:, 2])
    # a class's score is the log of its words' summed probabilities, then renormalised over the classes
    by_hand = torch.stack([w_mean[:, 0:2].logsumexp(-1), w_mean[:, 2:4].logsumexp(-1), w_mean[:, 4]], -1)
    # class_log_probs batches the texts by length, word_log_probs took them in one batch: the float32 forward passes
    # differ by rounding (~1e-7 with two threads), far below what a wrong combination of the words would change
    torch.testing.assert_close(mean.class_log_probs(TEXTS), torch.log_softmax(by_hand, -1), atol=1e-5, rtol=0)
    one_word = make_classifier(llama, tok, prompt=prompt, label_words={"hate": "hate", "offensive": "offensive",
                                                                       "neither": "neither"})
    expected = torch.log_softmax(w_mean[:, [0, 3, 4]], -1)
    torch.testing.assert_close(one_word.class_log_probs(TEXTS), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("share_prefix", [True, False])
def test_left_padding_gives_the_one_by_one_result(tok, arch, share_prefix):
    """Texts of different lengths in one batch (left padded) score as each alone; GPT-2 has absolute positions."""
    model = tiny_llama(len(tok), seed=3) if arch == "llama" else tiny_gpt2(len(tok), seed=3)
    batched = make_classifier(model, tok, share_prefix=share_prefix, batch_size=len(TEXTS))
    alone = make_classifier(model, tok, share_prefix=share_prefix, batch_size=1)
    got = batched.class_log_probs(TEXTS)
    torch.testing.assert_close(got, alone.class_log_probs(TEXTS), atol=1e-5, rtol=0)
    ref = reference_class_log_probs(model, tok, [batched.prompt_text(t) for t in TEXTS[:2]],
                                    resolve_label_words(WORDS, CLASSES))
    torch.testing.assert_close(got[:2], ref, atol=1e-5, rtol=0)


def test_a_token_merged_across_the_boundary_is_scored_and_counted(tmp_path):
    """With punctuation glued to words, "Label:" + "hate" is one unknown token: the scored token covers the end of
    the prompt, counted in boundary_merges."""
    tokenizer = word_tokenizer(tmp_path, split="whitespace_split")
    model = tiny_llama(len(tokenizer), seed=5)
    backend = TransformersLogprobBackend(model, tokenizer)
    prompt = "Post: you are great\nLabel:"
    [[values]] = backend.continuation_logprobs([prompt], ["hate"])
    ids = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + "hate")["input_ids"]
    assert full[:-1] == ids[:-1] and full[-1] != ids[-1] and len(values) == 1
    with torch.no_grad():
        log_p = torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0].double(), -1)
    assert values[0] == pytest.approx(float(log_p[-2, full[-1]]), abs=1e-5)
    assert backend.boundary_merges == 1
    # with the separator the boundary is clean again
    [[clean]] = backend.continuation_logprobs([prompt], [" hate"])
    assert backend.boundary_merges == 1 and len(clean) == 1


def test_label_words_are_checked_and_follow_the_class_order():
    assert resolve_label_words({"b": "x", "a": ["y", "z"]}, ["a", "b"]) == [["y", "z"], ["x"]]
    assert resolve_label_words(["x", ["y"]], ["a", "b"]) == [["x"], ["y"]]
    with pytest.raises(ValueError, match=r"missing \['b'\], unknown \['c'\]"):
        resolve_label_words({"a": "x", "c": "y"}, ["a", "b"])
    with pytest.raises(ValueError, match="given to both"):
        resolve_label_words({"a": "x", "b": "x"}, ["a", "b"])
    with pytest.raises(ValueError, match="non-empty"):
        resolve_label_words({"a": "x", "b": " "}, ["a", "b"])
    with pytest.raises(ValueError, match="2 entries for 3 classes"):
        resolve_label_words(["x", "y"], ["a", "b", "c"])
    assert default_label_words(["NOT", "HOF"], "hasoc_en_a") == {"NOT": ["none"], "HOF": ["offensive"]}
    assert default_label_words(["HATE", "OFFN", "PRFN"]) == {"HATE": ["hate"], "OFFN": ["offensive"],
                                                             "PRFN": ["profane"]}
    assert default_label_words(["not-hate", "Very_Bad"]) == {"not-hate": ["not hate"], "Very_Bad": ["very bad"]}
    assert default_classifier_prompt("tweeteval_hate").text_prefix == "Tweet: "
    with pytest.raises(ValueError, match="Unknown task"):
        default_classifier_prompt("nope")


def test_class_order_is_the_classlabel_order(tok, llama):
    clf = make_classifier(llama, tok)
    reordered = LLMClassifier(clf.backend, ["neither", "hate", "offensive"], label_words=WORDS,
                              prompt=default_classifier_prompt("davidson"))
    # the instructions list the choices in class order, so the prompts differ: compare the scores' construction
    words = reordered.word_log_probs(TEXTS[:2])
    expected = torch.log_softmax(
        torch.stack([words[:, 0], words[:, 1:3].logsumexp(-1), words[:, 3:5].logsumexp(-1)], -1), -1
    )
    torch.testing.assert_close(reordered.class_log_probs(TEXTS[:2]), expected, atol=1e-12, rtol=0)
    assert reordered.describe()["label_words"] == {"neither": ["neither"], "hate": ["hate", "hateful"],
                                                   "offensive": ["very offensive", "offensive"]}


# ---- calibration (pure functions, golden values) -------------------------------------------------------------------


def test_contextual_calibration_golden_values():
    cf = torch.tensor([[0.6, 0.2, 0.2], [0.4, 0.4, 0.2]]).log()
    p_cf = content_free_distribution(cf)
    torch.testing.assert_close(p_cf, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    log_p = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]).log()
    calibrated = contextual_calibration(log_p, p_cf).exp()
    # row 0 is p_cf itself -> uniform; row 1: (0.2/0.5, 0.3/0.3, 0.5/0.2) = (0.4, 1, 2.5), / 3.9
    expected = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0.4 / 3.9, 1 / 3.9, 2.5 / 3.9]], dtype=torch.float64)
    torch.testing.assert_close(calibrated, expected, atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="positive"):
        contextual_calibration(log_p, torch.tensor([0.5, 0.5, 0.0]))


def test_temperature_scaling_golden_values():
    # every example has p = (0.8, 0.2): two labelled 0, one labelled 1. dNLL/dbeta = 0 at sigma(beta * log 4) = 2/3,
    # i.e. beta * log 4 = log 2: T = log 4 / log 2 = 2 exactly.
    log_p = torch.tensor([[0.8, 0.2]] * 3, dtype=torch.float64).log()
    labels = [0, 0, 1]
    t = fit_temperature(log_p, labels)
    assert t == pytest.approx(2.0, abs=1e-9)
    torch.testing.assert_close(apply_temperature(log_p, t).exp()[0], torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    assert temperature_nll(log_p, labels, t) == pytest.approx(-(2 * math.log(2 / 3) + math.log(1 / 3)) / 3)
    # three classes, random scores: the bisection finds the grid minimum
    g = torch.Generator().manual_seed(0)
    scores = 3 * torch.randn(40, 3, generator=g)
    y = (scores + 2 * torch.randn(40, 3, generator=g)).argmax(-1)
    t = fit_temperature(scores, y)
    grid = torch.linspace(0.2, 10, 98001, dtype=torch.float64)  # steps of 1e-4
    on_grid = torch.log_softmax(torch.log_softmax(scores.double(), -1)[None] / grid[:, None, None], -1)
    nll = -on_grid.gather(2, y[None, :, None].expand(len(grid), -1, 1)).squeeze(2).mean(1)
    best = float(grid[nll.argmin()])
    assert t == pytest.approx(best, abs=2e-4)
    assert temperature_nll(scores, y, t) <= float(nll.min()) + 1e-12
    # a separated dev set: the NLL decreases as T -> 0, clipped to the lower bound
    assert fit_temperature(torch.tensor([[0.9, 0.1], [0.1, 0.9]]).log(), [0, 1], bounds=(0.1, 10)) == 0.1
    with pytest.raises(ValueError, match="labels must lie"):
        fit_temperature(log_p, [0, 2, 1])


def test_first_token_scores_golden_values():
    words = [["hate", "hateful"], ["offensive"], ["neither", "not hate"]]
    top = [(" hate", math.log(0.4)), ("Hate", math.log(0.1)), ("off", math.log(0.2)), ("x", math.log(0.05))]
    scores, floored, ambiguous = first_token_class_scores(top, words)
    # neither: not listed -> floor min(p_k = 0.05, 1 - 0.75 = 0.25) = 0.05
    assert [math.exp(s) for s in scores] == pytest.approx([0.5, 0.2, 0.05])
    assert floored == [2] and ambiguous == 0
    top = [("n", math.log(0.3)), ("neither", math.log(0.5)), ("h", math.log(0.1))]
    scores, floored, ambiguous = first_token_class_scores([*top, ("hat", math.log(0.05))], [["hate"], ["no"],
                                                                                            ["neither"]])
    # "n" begins both "no" and "neither": ambiguous, counted for none; "no" gets the floor min(0.05, 0.05)
    assert [math.exp(s) for s in scores] == pytest.approx([0.15, 0.05, 0.5])
    assert floored == [1] and ambiguous == pytest.approx(0.3)


# ---- the OpenAI-compatible backend against a local fake server -----------------------------------------------------


class TransformersServerModel:
    """What a vLLM-like server computes, from a tiny transformers LM: echoed prompt log-probabilities (token texts
    carry their leading white space, offsets in characters) and top-k first answer tokens of a chat completion."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def echo(self, text: str):
        enc = self.tokenizer(text, return_offsets_mapping=True)
        ids, spans = enc["input_ids"], enc["offset_mapping"]
        with torch.no_grad():
            log_p = torch.log_softmax(self.model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        tokens, offsets, values, prev_end = [], [], [], 0
        for t, (token_id, (_start, end)) in enumerate(zip(ids, spans)):
            if token_id == self.tokenizer.bos_token_id:
                continue
            tokens.append(text[prev_end:end])
            offsets.append(prev_end)
            values.append(float(log_p[t - 1, token_id]) if t > 0 else None)
            prev_end = end
        values[0] = None  # the OpenAI convention: the first echoed token has none
        generated = int(log_p[-1].argmax())
        word = " " + self.tokenizer.convert_ids_to_tokens(generated)
        tokens.append(word)
        offsets.append(len(text))
        values.append(float(log_p[-1, generated]))
        return tokens, offsets, values, text + word

    def chat_top(self, messages, k):
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        with torch.no_grad():
            log_p = torch.log_softmax(self.model(input_ids=torch.tensor([[1, *ids]])).logits[0, -1].double(), -1)
        values, indices = log_p.topk(k)
        return [(self.tokenizer.convert_ids_to_tokens(int(i)), float(v)) for v, i in zip(values, indices)]


class FakeOpenAIServer:
    """``/v1/models``, ``/v1/completions`` (echo) and ``/v1/chat/completions`` (top_logprobs) on 127.0.0.1.
    ``shifted=True`` answers like llama-cpp-python's server for models without BOS: echoed values one token off and
    the generated token missing."""

    def __init__(self, backend_model, name="fake-model", shifted=False):
        self.backend_model, self.name, self.shifted = backend_model, name, shifted
        self.requests = 0
        server = self

        class Handler(JSONHandler):
            def do_GET(self):
                self._send(200, {"data": [{"id": server.name}]})

            def do_POST(self):
                body = self.read_json()
                server.requests += 1
                if self.path.endswith("/completions") and "chat" not in self.path:
                    tokens, offsets, values, text = server.backend_model.echo(body["prompt"])
                    if server.shifted:
                        values = [None] + values[2:-1] + [values[-1]]
                        tokens, offsets = tokens[:-1], offsets[:-1]
                    logprobs = {"tokens": tokens, "text_offset": offsets, "token_logprobs": values,
                                "top_logprobs": [None] * len(tokens)}
                    self._send(200, {"choices": [{"text": text, "logprobs": logprobs, "finish_reason": "length"}]})
                else:
                    top = server.backend_model.chat_top(body["messages"], body["top_logprobs"])
                    content = [{"token": top[0][0], "logprob": top[0][1],
                                "top_logprobs": [{"token": t, "logprob": v} for t, v in top]}]
                    self._send(200, {"choices": [{"message": {"role": "assistant", "content": top[0][0]},
                                             "logprobs": {"content": content}, "finish_reason": "length"}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def test_openai_echo_mode_equals_the_local_backend(tok, llama):
    local = make_classifier(llama, tok, prompt=default_classifier_prompt("davidson"))
    with FakeOpenAIServer(TransformersServerModel(llama, tok)) as server:
        backend = OpenAILogprobBackend(server.url, mode="echo", concurrency=3, max_retries=0)
        assert backend.model_id == "fake-model" and backend.scoring == "tokens"
        remote = LLMClassifier(backend, CLASSES, WORDS, default_classifier_prompt("davidson"), batch_size=4)
        torch.testing.assert_close(remote.class_log_probs(TEXTS), local.class_log_probs(TEXTS), atol=1e-5, rtol=0)
        assert server.requests == len(TEXTS) * 5  # one request per text and label word
    with FakeOpenAIServer(TransformersServerModel(llama, tok), shifted=True) as server:
        backend = OpenAILogprobBackend(server.url, mode="echo", max_retries=0)
        with pytest.raises(TeacherBackendError, match="misaligned"):
            LLMClassifier(backend, CLASSES, WORDS).class_log_probs(TEXTS[:1])


def test_echoed_tokens_are_read_back_from_the_end():
    from distil_trainers.teachers.llm_backends.openai_backend import _echoed_continuation

    # "Label:" + " hateful" tokenised as ..., "Label", ":", " hate", "ful" and the generated token ","
    tokens = ["<s>", "Post", ":", " hi", "\n", "Label", ":", " hate", "ful", ","]
    values = [None, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0]
    text = "Post: hi\nLabel: hateful,"
    assert _echoed_continuation("Post: hi\nLabel:", " hateful", text, tokens, values) == [-7.0, -8.0]
    # a token merged across the boundary (":h") is scored with the rest of the word, as the local backends do
    merged = ["Post", ":", " hi", "\n", "Label", ":h", "ate", ","]
    assert _echoed_continuation("Post: hi\nLabel:", "hate", "Post: hi\nLabel:hate,", merged,
                                [None, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0]) == [-5.0, -6.0]
    # nothing generated (the model stopped at once), or an end-of-sequence token without text
    assert _echoed_continuation("Post: hi\nLabel:", " hateful", "Post: hi\nLabel: hateful", tokens[:-1],
                                values[:-1]) == [-7.0, -8.0]
    assert _echoed_continuation("Post: hi\nLabel:", " hateful", "Post: hi\nLabel: hateful", [*tokens[:-1], ""],
                                values) == [-7.0, -8.0]
    with pytest.raises(TeacherBackendError, match="misaligned"):
        _echoed_continuation("Post: hi\nLabel:", " hateful", text, tokens[:-1], values[:-1])
    with pytest.raises(TeacherBackendError, match="did not echo"):
        _echoed_continuation("Post: hi\nLabel:", " hateful", ",", [","], [-1.0])


def test_openai_chat_mode_reads_the_first_answer_token(chat_tok, caplog):
    model = tiny_llama(len(chat_tok), seed=1)
    words = {"hate": "hate", "offensive": "offensive", "neither": "neither"}
    prompt = ClassifierPrompt("Classify.", demonstrations=[("idiot", "offensive")])
    with FakeOpenAIServer(TransformersServerModel(model, chat_tok)) as server:
        backend = OpenAILogprobBackend(server.url, mode="chat", top_logprobs=len(chat_tok))
        remote = LLMClassifier(backend, CLASSES, words, prompt)
        got = remote.class_log_probs(TEXTS[:3])
        info = remote.describe()
        assert info["scoring"] == "first_token" and info["messages"][2] == {"role": "assistant",
                                                                            "content": "offensive"}
        # the same conversation scored locally: every vocabulary token that begins a class's word counts for it
        # ("of" and "Offensive" for offensive, "N" for neither...), the probabilities summed per class
        matching = {c: [t for t in chat_tok.get_vocab() if w.startswith(t.casefold())] for c, w in words.items()}
        assert set(matching["offensive"]) >= {"of", "offensive", "Offensive"}
        local = TransformersLogprobBackend(model, chat_tok)
        prompts = [local.render_chat(remote.messages(t)) for t in TEXTS[:3]]
        tokens = [t for c in CLASSES for t in matching[c]]
        first = torch.tensor([[lps[0] for lps in row] for row in local.continuation_logprobs(prompts, tokens)],
                             dtype=torch.float64)
        sizes = [len(matching[c]) for c in CLASSES]
        per_class = torch.stack([part.logsumexp(-1) for part in first.split(sizes, dim=-1)], -1)
        torch.testing.assert_close(got, torch.log_softmax(per_class, -1), atol=1e-5, rtol=0)
        # with k = 2 most classes are not listed: they get the floor, and a warning counts them
        few = LLMClassifier(OpenAILogprobBackend(server.url, mode="chat", top_logprobs=2), CLASSES, words, prompt)
        with caplog.at_level("WARNING"):
            few.class_log_probs(TEXTS[:3])
        assert sum(few.floored.values()) >= 3 and "floor probability" in caplog.text


def test_backends_convert_from_the_generation_backends(chat_tok):
    model = tiny_llama(len(chat_tok))
    backend = as_logprob_backend(TransformersBackend(model, chat_tok))
    assert isinstance(backend, TransformersLogprobBackend) and backend.model is model
    assert backend.tokenizer.padding_side == "left"
    with pytest.raises(TypeError, match="cannot score"):
        as_logprob_backend(3)


# ---- the cache -----------------------------------------------------------------------------------------------------


def labelled(texts, labels, prefix, names=CLASSES):
    features = datasets.Features({"id": datasets.Value("string"), "text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict({"id": [f"{prefix}{i}" for i in range(len(texts))], "text": list(texts),
                                       "label": list(labels)}, features=features)


@pytest.fixture
def splits():
    train = labelled(TEXTS * 2, [2, 1, 0, 2, 1, 0] * 2, "tr")
    validation = labelled(TEXTS[:4], [2, 1, 0, 2], "va")
    return {"train": train, "validation": validation}


def test_cache_is_built_saved_reused_and_attached_with_text_hashes(tok, llama, splits, tmp_path):
    backend = TransformersLogprobBackend(llama, tok)
    directory = tmp_path / "llm_cache"
    cache = precompute_llm_teacher_outputs(backend, splits, directory, label_words=WORDS, task="davidson",
                                           batch_size=3, show_progress=False)
    assert sorted(p.name for p in directory.iterdir()) == sorted([TENSORS_FILE, META_FILE])
    clf = LLMClassifier(backend, CLASSES, WORDS, task="davidson")
    expected = clf.class_log_probs(TEXTS * 2 + TEXTS[:4]).float()
    torch.testing.assert_close(cache.tensors["logits"], expected, atol=1e-5, rtol=0)
    assert cache.ids == splits["train"]["id"][:] + splits["validation"]["id"][:]
    assert cache.num_labels == 3 and cache.kind == "logits" and list(cache.content_hashes) == ["text"]
    meta = cache.meta
    assert meta["class_names"] == CLASSES and meta["teacher_kind"] == "llm_classifier"
    assert meta["llm"]["label_words"] == WORDS and meta["llm"]["normalization"] == "mean"
    assert meta["llm"]["prompt_text"].endswith("Post: {text}\nLabel:")
    assert meta["llm"]["backend"]["backend"] == "transformers" and meta["llm"]["backend"]["weights_sha256"]
    assert meta["calibration"] is None and meta["texts_per_second"] > 0
    json.dumps(meta)

    stamp = (directory / TENSORS_FILE).stat().st_mtime_ns
    again = precompute_llm_teacher_outputs(backend, {"validation": splits["validation"], "train": splits["train"]},
                                           directory, label_words=WORDS, task="davidson", show_progress=False)
    assert (directory / TENSORS_FILE).stat().st_mtime_ns == stamp and again.fingerprint == cache.fingerprint
    reloaded = TeacherOutputs.load(directory)
    torch.testing.assert_close(reloaded.tensors["logits"], cache.tensors["logits"])
    assert reloaded.meta == json.loads(json.dumps(cache.meta))

    # anything that changes the scores changes the fingerprint
    changed = precompute_llm_teacher_outputs(backend, splits, directory, label_words=WORDS, task="davidson",
                                             normalization="sum", show_progress=False)
    assert changed.fingerprint != cache.fingerprint and TeacherOutputs.load(directory).fingerprint == changed.fingerprint
    other_words = dict(WORDS, neither=["neither", "none"])
    assert precompute_llm_teacher_outputs(backend, splits["validation"], label_words=other_words,
                                          show_progress=False).fingerprint != cache.fingerprint

    # attached by id in any order; a text changed under the same id is refused
    shuffled = splits["train"].shuffle(seed=1)
    rows = reloaded.attach(shuffled)[CACHE_ROW_COLUMN][:]
    assert [reloaded.ids[r] for r in rows] == shuffled["id"][:]
    edited = splits["train"].map(lambda ex: {"text": ex["text"] + "!" if ex["id"] == "tr3" else ex["text"]})
    with pytest.raises(ValueError, match=r"1 example\(s\) \(ids \['tr3'\]\).*differ"):
        reloaded.attach(edited)


def test_errors_come_before_any_scoring(tok, llama, splits):
    backend = TransformersLogprobBackend(llama, tok)
    no_ids = splits["train"].remove_columns("id")
    with pytest.raises(ValueError, match="no `id` column"):
        precompute_llm_teacher_outputs(backend, no_ids, label_words=WORDS)
    with pytest.raises(ValueError, match="differ from the LLM classifier's classes"):
        precompute_llm_teacher_outputs(LLMClassifier(backend, ["neither", "hate", "offensive"], WORDS), splits)
    with pytest.raises(ValueError, match="text_pair"):
        precompute_llm_teacher_outputs(backend, splits["train"].add_column("text_pair", TEXTS * 2), label_words=WORDS)
    with pytest.raises(ValueError, match="duplicate"):
        precompute_llm_teacher_outputs(backend, {"a": splits["train"], "b": splits["train"]}, label_words=WORDS)
    unlabelled = splits["train"].remove_columns("label")
    with pytest.raises(ValueError, match="Cannot tell the classes"):
        precompute_llm_teacher_outputs(backend, unlabelled, label_words=list(WORDS.values()))
    cache = precompute_llm_teacher_outputs(backend, unlabelled, label_words=WORDS, show_progress=False)
    assert cache.meta["class_names"] == CLASSES  # the mapping's order
    with pytest.raises(ValueError, match="label_words must name every class"):
        precompute_llm_teacher_outputs(backend, splits, label_words={"hate": "hate", "neither": "neither"})
    with pytest.raises(ValueError, match="pass label_words"):
        precompute_llm_teacher_outputs(LLMClassifier(backend, CLASSES, WORDS), splits, task="davidson")
    with pytest.raises(ValueError, match="either a dev_dataset"):
        LLMCalibration(dev_dataset=splits["validation"], temperature=2.0)


def test_nan_outputs_are_refused_and_nothing_is_written(tok, tmp_path):
    model = tiny_llama(len(tok))
    with torch.no_grad():
        model.lm_head.weight[5, 0] = float("nan")
    directory = tmp_path / "nan_cache"
    with pytest.raises(ValueError, match=r"NaN or inf for 6 example\(s\) \(ids \['va0', 'va1'"):
        precompute_llm_teacher_outputs(TransformersLogprobBackend(model, tok), labelled(TEXTS, [0] * 6, "va"),
                                       directory, label_words=WORDS, show_progress=False)
    assert not directory.exists() or not any(directory.iterdir())


def test_calibrated_cache_equals_the_pure_functions(tok, llama, splits):
    backend = TransformersLogprobBackend(llama, tok)
    dev = splits["validation"]
    calibration = LLMCalibration(content_free_inputs=["N/A", "", "[MASK]"], dev_dataset=dev)
    cache = precompute_llm_teacher_outputs(backend, splits["train"], label_words=WORDS, calibration=calibration,
                                           show_progress=False)
    clf = LLMClassifier(backend, CLASSES, WORDS)
    p_cf = content_free_distribution(clf.class_log_probs(["N/A", "", "[MASK]"]))
    dev_scores = contextual_calibration(clf.class_log_probs(dev["text"][:]), p_cf)
    t = fit_temperature(dev_scores, dev["label"][:])
    expected = apply_temperature(contextual_calibration(clf.class_log_probs(splits["train"]["text"][:]), p_cf), t)
    torch.testing.assert_close(cache.tensors["logits"], expected.float(), atol=1e-6, rtol=0)
    record = cache.meta["calibration"]
    assert record["methods"] == ["contextual", "temperature"] and record["temperature"] == pytest.approx(t)
    assert list(record["content_free_distribution"]) == CLASSES and record["dev_examples"] == 4
    assert record["dev_nll_after"] <= record["dev_nll_before"] + 1e-12
    contextual_only = precompute_llm_teacher_outputs(backend, splits["train"], label_words=WORDS,
                                                     calibration="contextual", show_progress=False)
    assert contextual_only.meta["calibration"]["methods"] == ["contextual"]
    assert contextual_only.fingerprint != cache.fingerprint


# ---- distilling a student from the cache --------------------------------------------------------------------------


def tokenized(ds, tokenizer, length=16):
    def encode(batch):
        enc = tokenizer(batch["text"], padding="max_length", truncation=True, max_length=length)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    return ds.map(encode, batched=True)  # keeps `text`, so that attaching the cache compares it


def test_annealing_trainer_distils_the_llm_cache(tok, llama, splits, tmp_path):
    assert len(tok) < 99  # the tiny BERT students' vocabulary
    cache = precompute_llm_teacher_outputs(TransformersLogprobBackend(llama, tok), splits, tmp_path / "c",
                                           label_words=WORDS, calibration="contextual", show_progress=False)
    train, validation = tokenized(splits["train"], tok), tokenized(splits["validation"], tok)
    args = AnnealingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_train_epochs=2, learning_rate=1e-3,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
        annealing="kd", temperature=2.0,
    )
    trainer = AnnealingTrainer(model=tiny_classifier(1), teacher_outputs=str(tmp_path / "c"), args=args,
                               train_dataset=train, eval_dataset=validation)
    assert trainer.teacher is None
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert math.isfinite(trainer.evaluate()["eval_loss"])
    # the trainer attaches the cache to the datasets it is given: an edited text is refused before training
    edited = train.map(lambda ex: {"text": ex["text"].upper() if ex["id"] == "tr0" else ex["text"]})
    with pytest.raises(ValueError, match="differ"):
        AnnealingTrainer(model=tiny_classifier(1), teacher_outputs=cache, args=args, train_dataset=edited)


def test_an_interrupted_scoring_resumes_where_it_stopped(tok, llama, splits, tmp_path):
    backend = TransformersLogprobBackend(llama, tok)
    directory = tmp_path / "llm_cache"
    calls = []
    original = LLMClassifier.class_log_probs

    def failing_after_two_parts(self, texts, **kwargs):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is stopped while scoring the third part
        return original(self, texts, **kwargs)

    kwargs = dict(label_words=WORDS, task="davidson", batch_size=3, show_progress=False, checkpoint_every=5)
    LLMClassifier.class_log_probs = failing_after_two_parts
    try:
        with pytest.raises(KeyboardInterrupt):
            precompute_llm_teacher_outputs(backend, splits, directory, **kwargs)
    finally:
        LLMClassifier.class_log_probs = original
    assert sorted(p.name for p in (directory / "partial").glob("part-*")) == [
        "part-000000000.safetensors", "part-000000005.safetensors"]  # 10 of the 16 texts are saved
    assert not (directory / TENSORS_FILE).exists()

    scored = []
    LLMClassifier.class_log_probs = lambda self, texts, **kw: scored.append(len(texts)) or original(self, texts, **kw)
    try:
        cache = precompute_llm_teacher_outputs(backend, splits, directory, **kwargs)
    finally:
        LLMClassifier.class_log_probs = original
    assert scored == [5, 1]  # only the texts no earlier part holds
    expected = LLMClassifier(backend, CLASSES, WORDS, task="davidson").class_log_probs(TEXTS * 2 + TEXTS[:4]).float()
    torch.testing.assert_close(cache.tensors["logits"], expected, atol=1e-5, rtol=0)
    assert not (directory / "partial").exists()  # the finished cache replaces the parts

    # parts of another prompt are never reused
    (directory / "partial").mkdir()
    (directory / "partial" / "fingerprint.txt").write_text("another")
    (directory / "partial" / "part-000000000.safetensors").write_bytes(b"stale")
    other = {**kwargs, "label_words": {**WORDS, "hate": "hateful"}}
    precompute_llm_teacher_outputs(backend, splits, directory, **other)
    assert not (directory / "partial").exists()
