"""The packaged SmolLM2-135M-Instruct GGUF as teacher: through llama-cpp-python, through a real
``python -m llama_cpp.server`` on 127.0.0.1, and dequantized by transformers. These check structure, not quality."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from distil_trainers.teachers.rationales import (
    RATIONALE_FEATURES,
    LlamaCppBackend,
    OpenAIEndpointBackend,
    TeacherBackendError,
    TransformersBackend,
    default_prompt,
    generate_rationales,
    packaged_smollm2_gguf,
    teacher_report,
)

pytestmark = pytest.mark.slow

POSTS = [
    "I love spending sunday mornings at the farmers market with my family",
    "shut up you dumb bitch nobody asked you",
    "this game is trash and so are you lol",
]


@pytest.fixture(scope="module")
def gguf_path():
    try:
        return packaged_smollm2_gguf()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def davidson_posts():
    from datasets import Dataset

    from distil_trainers.data import load_dataset_by_name
    from distil_trainers.data.registry import DatasetNotAvailableError

    try:
        test = load_dataset_by_name("davidson", max_samples_per_split={"test": 4})["test"]
    except DatasetNotAvailableError:  # no data directory: a few hand-written posts in the same schema
        test = Dataset.from_dict({"id": [f"p{i}" for i in range(3)], "text": POSTS, "label": [2, 1, 1]})
    return test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(gguf_path, tmp_path_factory):
    """``python -m llama_cpp.server`` on a free local port; waits until it lists its model, killed afterwards."""
    pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (pip install 'distil-trainers[llamacpp]')"
    )
    pytest.importorskip("uvicorn", reason="the llama.cpp server needs llama-cpp-python[server]")
    import requests

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "distil_trainers.teachers.llamacpp",  # llama_cpp.server, weight repacking off on AMX CPUs
        "--model",
        gguf_path,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        str(os.cpu_count() or 1),
    ]
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    log = open(log_path, "w")  # a file, not a pipe: the server's verbose log would fill a pipe and block it
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 400
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            if time.time() > deadline:
                pytest.fail("llama_cpp.server did not answer within 400 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=30)
        log.close()


def check_structure(out, n):
    assert out.features == RATIONALE_FEATURES and len(out) == n
    assert all(raw.strip() for raw in out["raw_output"])
    for row in out:
        if row["parsed"]:
            assert 0 <= row["teacher_label"] < 3 and row["rationale"]
            assert row["teacher_agrees"] == (row["teacher_label"] == row["label"])
        else:
            assert row["teacher_label"] == -1 and row["rationale"] == "" and not row["teacher_agrees"]
    assert sum(out["parsed"]) >= 1  # the instruction-tuned model follows the format at least sometimes


def test_llamacpp_backend_on_packaged_smollm2(gguf_path, davidson_posts, tmp_path):
    pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (pip install 'distil-trainers[llamacpp]')"
    )
    backend = LlamaCppBackend(gguf_path, n_ctx=2048)
    names = ["hate", "offensive", "neither"]
    out = generate_rationales(
        davidson_posts,
        backend,
        default_prompt(names),
        tmp_path / "c.jsonl",
        batch_size=2,
        max_new_tokens=80,
        show_progress=False,
    )
    check_structure(out, len(davidson_posts))
    report = teacher_report(out, names)
    assert 0 <= report["f1_macro"] <= 1 and report["parse_rate"] == sum(out["parsed"]) / len(out)
    # greedy decoding is deterministic: the cache is reused and a fresh generation gives the same answers
    again = backend.generate([default_prompt(names).to_messages(davidson_posts["text"][0])], max_new_tokens=80)
    assert again[0].text == out["raw_output"][0] and again[0].num_tokens > 0
    backend.close()
    with pytest.raises(TeacherBackendError, match="closed"):
        backend.generate([[{"role": "user", "content": "hi"}]])


def test_openai_endpoint_backend_against_llama_cpp_server(llama_server, davidson_posts, tmp_path):
    backend = OpenAIEndpointBackend(llama_server, timeout=120)
    assert backend.model_id.endswith(".gguf")
    names = ["hate", "offensive", "neither"]
    out = generate_rationales(
        davidson_posts,
        backend,
        default_prompt(names),
        tmp_path / "c.jsonl",
        batch_size=2,
        max_new_tokens=80,
        show_progress=False,
    )
    check_structure(out, len(davidson_posts))
    results = backend.generate([[{"role": "user", "content": "Say hi."}]], max_new_tokens=5)
    assert 1 <= results[0].num_tokens <= 5 and results[0].finish_reason in ("length", "stop")


def test_transformers_backend_loads_the_gguf(gguf_path, davidson_posts, tmp_path):
    pytest.importorskip("gguf", reason="loading GGUF with transformers needs `pip install gguf`")
    backend = TransformersBackend(gguf_path)
    assert backend.tokenizer.padding_side == "left"
    names = ["hate", "offensive", "neither"]
    out = generate_rationales(
        davidson_posts,
        backend,
        default_prompt(names),
        tmp_path / "c.jsonl",
        batch_size=4,
        max_new_tokens=80,
        show_progress=False,
    )
    check_structure(out, len(davidson_posts))
