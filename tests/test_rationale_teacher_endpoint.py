"""Teacher generation against an OpenAI-compatible server at server speed: a local fake server (``http.server``) whose
answers, errors, delays and ``finish_reason`` the tests control. Concurrent requests over the whole run with the
dataset kept in input order; every answer in the cache as soon as it is finished (a run killed mid-batch keeps them);
one failed or truncated post never stops the run, is recorded and counted, and ``retry_failed`` (function, recipe
pipeline, command line) asks again for exactly those; the fingerprint covers the sampling settings, not secrets."""

from __future__ import annotations

import dataclasses
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

import pytest
from datasets import ClassLabel, Dataset
from json_server import JSONHandler

from distil_trainers.teachers.rationales import (
    CacheMismatchError,
    OpenAIEndpointBackend,
    TeacherBackendError,
    default_prompt,
    drop_failed_rows,
    generate_rationales,
    teacher_report,
)
from distil_trainers.teachers.rationales.generation import RationaleCache, cache_fingerprint

REPO = Path(__file__).resolve().parents[1]
NAMES = ["hate", "offensive", "neither"]


# ---- the fake server ------------------------------------------------------------------------------------------------


class FakeTeacherHandler(JSONHandler):
    """``POST /v1/chat/completions``: the answer explains the post and labels it ``hate``. What the post contains
    decides what else happens: ``[400]`` -> HTTP 400 (a prompt over the server's limit), ``[503]`` -> HTTP 503 every
    time, ``[len]`` -> ``finish_reason="length"``, ``[sleep=S]`` -> answer after S seconds, ``[hang]`` -> answer
    only once ``state["release"]`` is set; a post in ``state["fail_texts"]`` -> HTTP 400 too. ``state["fixed"]``: the
    server was repaired, every post is answered."""

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "fake-teacher", "object": "model"}]})

    def do_POST(self):
        state = self.server.state
        body = self.read_json()
        post = body["messages"][-1]["content"].removeprefix("Post: ")
        with state["lock"]:
            state["requests"].append(post)
            state["bodies"].append(body)
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        try:
            fixed = state["fixed"]
            if "[hang]" in post and not fixed:
                state["release"].wait(60)
            if "[sleep=" in post:
                time.sleep(float(post.split("[sleep=")[1].split("]")[0]))
            if ("[400]" in post or post in state["fail_texts"]) and not fixed:
                return self._send(400, {"error": {"message": "This model's maximum context length is 2048 tokens"}})
            if "[503]" in post and not fixed:
                return self._send(503, {"error": "overloaded"})
            finish = "length" if "[len]" in post and not fixed else "stop"
            text = f"Explanation: {post}" if finish == "length" else f"Explanation: about {post}.\nLabel: hate"
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                             "usage": {"completion_tokens": 7}})
        finally:
            with state["lock"]:
                state["in_flight"] -= 1


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeTeacherHandler)
    httpd.daemon_threads = True
    httpd.state = {"lock": threading.Lock(), "requests": [], "bodies": [], "in_flight": 0, "max_in_flight": 0,
                   "fixed": False, "release": threading.Event(), "fail_texts": set()}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield httpd
    httpd.state["release"].set()
    httpd.shutdown()
    httpd.server_close()


def posts(texts, labels=None):
    labels = labels or [i % 3 for i in range(len(texts))]
    ds = Dataset.from_dict({"id": [f"p{i}" for i in range(len(texts))], "text": list(texts), "label": labels})
    return ds.cast_column("label", ClassLabel(names=NAMES))


def cache_records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()[1:]]


# ---- concurrency, order, incremental writing ------------------------------------------------------------------------


def test_concurrent_requests_keep_the_input_order_and_are_cached_as_they_finish(server, tmp_path):
    n = 12
    texts = [f"post {i} [sleep={0.02 * (n - i):.2f}]" for i in range(n)]  # the later posts answer sooner
    backend = OpenAIEndpointBackend(server.url, concurrency=4, backoff=0.01)
    cache = tmp_path / "c.jsonl"
    out = generate_rationales(posts(texts), backend, default_prompt(NAMES), cache, batch_size=3, show_progress=False)
    assert out["id"][:] == [f"p{i}" for i in range(n)] and out["text"][:] == texts  # input order
    assert out["raw_output"][:] == [f"Explanation: about {t}.\nLabel: hate" for t in texts]
    assert all(out["parsed"]) and set(out["finish_reason"]) == {"stop"} and set(out["error"]) == {""}
    assert server.state["max_in_flight"] == 4  # four requests in flight at once, not more, across batch boundaries
    written = [r["id"] for r in cache_records(cache)]
    assert sorted(written) == sorted(out["id"][:]) and written != out["id"][:]  # in the order they finished
    assert written.index("p3") < written.index("p0")  # p3 (sleeps 0.18 s) overtook p0 (0.24 s) in the first window
    assert {r["finish_reason"] for r in cache_records(cache)} == {"stop"}
    # generate() keeps the input order too
    results = backend.generate([[{"role": "user", "content": t}] for t in texts[:5]])
    assert [r.text for r in results] == [f"Explanation: about {t}.\nLabel: hate" for t in texts[:5]]
    backend.close()


KILLED_WORKER = textwrap.dedent(
    """
    import sys
    from datasets import Dataset
    from distil_trainers.teachers.rationales import OpenAIEndpointBackend, default_prompt, generate_rationales

    url, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    texts = ["post 0 [hang]"] + [f"post {i} [sleep=0.05]" for i in range(1, n)]
    ds = Dataset.from_dict({"id": [f"p{i}" for i in range(n)], "text": texts, "label": [0] * n})
    backend = OpenAIEndpointBackend(url, concurrency=3, timeout=120)
    generate_rationales(ds, backend, default_prompt(["hate", "offensive", "neither"]), cache, batch_size=8,
                        show_progress=False)
    print("FINISHED")
    """
)


def test_a_run_killed_mid_batch_keeps_every_finished_answer(server, tmp_path):
    """Post p0 never gets its answer; p1.. finish while it waits. Killed then, the run has already written them:
    answers go to the cache as they finish, not when the batch of 8 (which p0 holds up) completes."""
    script = tmp_path / "worker.py"
    script.write_text(KILLED_WORKER)
    cache, n = tmp_path / "teacher.jsonl", 10
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(script), server.url, str(cache), str(n)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (cache.exists() and len(cache.read_text().splitlines()) >= 1 + 6):
        if proc.poll() is not None:
            pytest.fail(f"worker ended early: {proc.communicate()}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("the worker wrote no answers while p0 was in flight")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["id"] for r in cache_records(cache)}
    assert "p0" not in before and len(before) >= 6 and before <= {f"p{i}" for i in range(1, n)}

    # the rerun (server no longer hanging) asks only for what is missing, and every post ends up once in the cache
    server.state["release"].set()
    server.state["requests"].clear()
    texts = ["post 0 [hang]"] + [f"post {i} [sleep=0.05]" for i in range(1, n)]
    ds = Dataset.from_dict({"id": [f"p{i}" for i in range(n)], "text": texts, "label": [0] * n})
    out = generate_rationales(ds, OpenAIEndpointBackend(server.url, concurrency=3), default_prompt(NAMES), cache,
                              show_progress=False)
    assert all(out["parsed"])
    asked = {f"p{texts.index(t)}" for t in server.state["requests"]}
    assert asked == {f"p{i}" for i in range(n)} - before
    assert sorted(r["id"] for r in cache_records(cache)) == sorted(ds["id"][:])


# ---- failures, truncation, retry_failed -----------------------------------------------------------------------------


def test_failed_and_truncated_posts_are_recorded_and_the_run_goes_on(server, tmp_path):
    texts = ["fine 0", "too long [400]", "fine 2", "overloaded [503]", "rambling [len]", "fine 5", "fine 6"]
    backend = OpenAIEndpointBackend(server.url, concurrency=3, max_retries=1, backoff=0.01)
    cache = tmp_path / "c.jsonl"
    ds = posts(texts)
    out = generate_rationales(ds, backend, default_prompt(NAMES), cache, batch_size=2, show_progress=False)
    assert out["id"][:] == ds["id"][:]  # every post is in the result, in order
    errors = out["error"][:]
    assert "HTTP 400" in errors[1] and "maximum context length" in errors[1]
    assert "after 2 attempts" in errors[3] and "HTTP 503" in errors[3]
    assert [bool(e) for e in errors] == [False, True, False, True, False, False, False]
    assert out["finish_reason"][:] == ["stop", "", "stop", "", "length", "stop", "stop"]
    assert out["parsed"][:] == [True, False, True, False, False, True, True]  # the cut answer has no label line
    assert out["teacher_label"][1] == -1 and out["raw_output"][1] == "" and out["rationale"][3] == ""
    records = {r["id"]: r for r in cache_records(cache)}
    assert records["p1"]["http_status"] == 400 and records["p3"]["http_status"] == 503
    assert records["p4"]["finish_reason"] == "length" and "error" not in records["p4"]
    assert len(server.state["requests"]) == 7 + 1  # the 503 was retried once, the 400 not at all

    report = teacher_report(out, NAMES)
    assert report["failed"] == 2 and report["truncated"] == 1 and report["n"] == 7
    assert report["parse_rate"] == pytest.approx(4 / 7)  # failed posts count as unparsed (wrong)
    train = drop_failed_rows(out)
    assert train["id"][:] == ["p0", "p2", "p4", "p5", "p6"]  # no answer, no training target; truncated ones stay

    # a rerun without retry_failed asks nothing; with it, exactly the failed and truncated posts
    server.state["requests"].clear()
    again = generate_rationales(ds, backend, default_prompt(NAMES), cache, show_progress=False)
    assert server.state["requests"] == [] and again.to_dict() == out.to_dict()
    server.state["fixed"] = True
    retried = generate_rationales(ds, backend, default_prompt(NAMES), cache, retry_failed=True, show_progress=False)
    assert sorted(server.state["requests"]) == sorted([texts[1], texts[3], texts[4]])
    assert all(retried["parsed"]) and set(retried["error"]) == {""} and set(retried["finish_reason"]) == {"stop"}
    assert retried["raw_output"][0] == out["raw_output"][0]
    # the cache keeps both attempts; the newer answer wins when it is read again
    assert len(cache_records(cache)) == 7 + 3
    header = cache_fingerprint(default_prompt(NAMES), backend, 256, 0.0)
    assert RationaleCache(cache, header).records["p1"]["raw_output"] == retried["raw_output"][1]
    server.state["requests"].clear()
    generate_rationales(ds, backend, default_prompt(NAMES), cache, retry_failed=True, show_progress=False)
    assert server.state["requests"] == []  # nothing left to retry


def test_retry_failed_under_several_processes_asks_once(server, tmp_path):
    """torchrun ranks take the cache lock in turn: a failure recorded by another process after this one started was
    just asked again by another rank of this run, so this one reads it instead of asking a second time (the ranks
    then agree); a failure recorded before this process started is asked again."""
    texts = ["fine", "filtered [400]"]
    backend = OpenAIEndpointBackend(server.url, max_retries=0)
    cache = tmp_path / "c.jsonl"
    generate_rationales(posts(texts), backend, default_prompt(NAMES), cache, show_progress=False)
    lines = cache.read_text().splitlines()
    failed = json.loads(lines[2])
    assert failed["error"] and failed["writer"].endswith(f":{os.getpid()}") and failed["written"] <= time.time()

    def rewrite(written):
        cache.write_text("\n".join([*lines[:2], json.dumps({**failed, "writer": "rank1-host:1",
                                                             "written": written})]) + "\n")  # fmt: skip

    server.state["requests"].clear()
    rewrite(time.time())  # another process of this run wrote it a moment ago
    out = generate_rationales(posts(texts), backend, default_prompt(NAMES), cache, retry_failed=True,
                              show_progress=False)
    assert server.state["requests"] == [] and out["error"][1]
    rewrite(0.0)  # an earlier run wrote it
    out = generate_rationales(posts(texts), backend, default_prompt(NAMES), cache, retry_failed=True,
                              show_progress=False)
    assert server.state["requests"] == [texts[1]]


def test_generate_raises_for_a_failed_request_but_generate_stream_isolates_it(server):
    backend = OpenAIEndpointBackend(server.url, concurrency=2, max_retries=0)
    conversations = [[{"role": "user", "content": t}] for t in ("a", "b [400]", "c")]
    with pytest.raises(TeacherBackendError, match="HTTP 400") as error:
        backend.generate(conversations)
    assert error.value.status == 400
    streamed = dict(backend.generate_stream(iter(conversations)))
    assert sorted(streamed) == [0, 1, 2]
    assert streamed[1].failed and streamed[1].status == 400 and not streamed[0].failed and not streamed[2].failed


def test_many_failures_in_a_row_stop_the_run_and_keep_what_was_finished(server, tmp_path):
    texts = ["fine 0", "fine 1"] + [f"down {i} [503]" for i in range(2, 12)]
    backend = OpenAIEndpointBackend(server.url, concurrency=1, max_retries=0)
    cache = tmp_path / "c.jsonl"
    with pytest.raises(TeacherBackendError, match="3 teacher requests in a row failed.*retry_failed"):
        generate_rationales(posts(texts), backend, default_prompt(NAMES), cache, max_failures_in_a_row=3,
                            show_progress=False)
    records = cache_records(cache)
    assert [r["id"] for r in records] == ["p0", "p1", "p2", "p3", "p4"]
    assert [bool(r.get("error")) for r in records] == [False, False, True, True, True]
    assert len(server.state["requests"]) == 5  # it stopped instead of failing the remaining posts one by one


# ---- what the cache fingerprint covers ------------------------------------------------------------------------------


def test_fingerprint_covers_sampling_settings_not_secrets(server, tmp_path):
    ds = posts(["a", "b"])
    cache = tmp_path / "c.jsonl"
    backend = OpenAIEndpointBackend(server.url, api_key="sk-very-secret", extra_body={"top_p": 0.9, "seed": 1,
                                                                                       "user": "me"})
    generate_rationales(ds, backend, default_prompt(NAMES), cache, show_progress=False)
    assert server.state["bodies"][-1]["top_p"] == 0.9 and server.state["bodies"][-1]["seed"] == 1
    header = json.loads(cache.read_text().splitlines()[0])["header"]
    assert header["teacher"] == {"backend": "OpenAIEndpointBackend", "model": "fake-teacher",
                                 "sampling": {"top_p": 0.9, "seed": 1}}
    assert "sk-very-secret" not in cache.read_text() and server.url not in cache.read_text()
    # the same settings with another key (or another end-user id) reuse the cache; other sampling settings do not
    same = OpenAIEndpointBackend(server.url, api_key="other", extra_body={"seed": 1, "top_p": 0.9, "user": "you"})
    generate_rationales(ds, same, default_prompt(NAMES), cache, show_progress=False)
    with pytest.raises(CacheMismatchError, match="different teacher"):
        generate_rationales(ds, OpenAIEndpointBackend(server.url, extra_body={"top_p": 0.5, "seed": 1}),
                            default_prompt(NAMES), cache, show_progress=False)
    with pytest.raises(CacheMismatchError, match="different temperature"):
        generate_rationales(ds, same, default_prompt(NAMES), cache, temperature=0.7, show_progress=False)
    with pytest.raises(CacheMismatchError, match="different teacher"):
        generate_rationales(ds, OpenAIEndpointBackend(server.url, model="other-model", extra_body={"top_p": 0.9,
                            "seed": 1}), default_prompt(NAMES), cache, show_progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="must not set"):
        OpenAIEndpointBackend(server.url, extra_body={"max_tokens": 5})


def test_an_older_cache_loads_when_compatible_and_says_why_not_otherwise(server, tmp_path):
    """A cache of the previous format (version 1: no finish_reason; the endpoint's sampling fields not recorded)."""
    ds = posts(["a", "b"])
    prompt = default_prompt(NAMES)
    plain = OpenAIEndpointBackend(server.url)
    header = {**cache_fingerprint(prompt, plain, 256, 0.0), "cache_version": 1}
    old = tmp_path / "old.jsonl"
    lines = [{"header": header}] + [
        {"id": f"p{i}", "text_sha1": None, "raw_output": f"Explanation: old {i}.\nLabel: neither", "num_tokens": 5,
         "seconds": 0.1} for i in range(2)
    ]  # fmt: skip
    old.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = generate_rationales(ds, plain, prompt, old, show_progress=False)  # default settings: compatible
    assert server.state["requests"] == [] and out["teacher_label"][:] == [2, 2] and out["finish_reason"][:] == ["", ""]
    sampled = OpenAIEndpointBackend(server.url, extra_body={"top_k": 20})
    with pytest.raises(CacheMismatchError, match=r"older version .* did not record the teacher's sampling"):
        generate_rationales(ds, sampled, prompt, old, show_progress=False)


# ---- --retry_failed in the pipeline and the command line ------------------------------------------------------------


def davidson():
    from distil_trainers.data import get_data_dir

    if get_data_dir() is None:
        pytest.skip("no data directory (set DISTIL_TRAINERS_DATA_DIR)")


def test_pipeline_generate_stage_records_failures_and_retry_failed_redoes_only_those(server, tmp_path):
    davidson()
    from distil_trainers.papers import rationale_pipeline as pipeline
    from distil_trainers.trainers.rationale import RationaleSFTConfig

    script = pipeline.RationaleScriptArguments(
        stage="generate", teacher_backend="openai", teacher_base_url=server.url, teacher_concurrency=4,
        teacher_max_retries=0, teacher_max_new_tokens=16, max_train_samples=6, max_eval_samples=3,
    )
    args = RationaleSFTConfig(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True, bf16=False)
    posts_, _, _ = pipeline.load_posts(script, args.seed)
    bad_train, bad_eval = posts_["train"]["text"][1], posts_["eval"]["text"][0]
    server.state["fail_texts"] = {bad_train, bad_eval}  # a content filter refuses these two posts
    out = Path(args.output_dir)
    directory = pipeline.stage_generate(script, args, out)
    report = json.loads((directory / "teacher_report.json").read_text())
    assert report["train"]["failed"] == 1 and report["eval"]["failed"] == 1 and report["eval"]["n"] == 3
    rationales = pipeline.load_rationales(script, out)
    assert len(rationales["train"]) == 5 and bad_train not in rationales["train"]["text"][:]  # not a training target
    assert len(rationales["eval"]) == 3 and rationales["eval"]["error"][0]  # every evaluation post stays

    server.state["requests"].clear()
    assert pipeline.stage_generate(script, args, out) == directory and server.state["requests"] == []  # finished
    server.state["fixed"] = True
    retry = dataclasses.replace(script, retry_failed=True)
    pipeline.stage_generate(retry, args, out)
    assert sorted(server.state["requests"]) == sorted([bad_train, bad_eval])
    rationales = pipeline.load_rationales(script, out)
    assert len(rationales["train"]) == 6 and not any(rationales["eval"]["error"][:])
    report = json.loads((directory / "teacher_report.json").read_text())
    assert report["train"]["failed"] == 0 and report["eval"]["failed"] == 0


def test_command_line_retry_failed(server, tmp_path):
    davidson()
    from distil_trainers.data import load_dataset_by_name
    from distil_trainers.teachers.rationales.__main__ import main

    texts = load_dataset_by_name("davidson", max_samples_per_split={"test": 4})["test"]["text"][:]
    server.state["fail_texts"] = {texts[2]}
    argv = ["--dataset", "davidson", "--split", "test", "--max-samples", "4", "--backend", "openai", "--base-url",
            server.url, "--concurrency", "2", "--max-retries", "0", "--cache", str(tmp_path / "c.jsonl")]
    report = main(argv)
    assert report["failed"] == 1 and report["n"] == 4
    server.state["fixed"] = True
    server.state["requests"].clear()
    assert main(argv)["failed"] == 1 and server.state["requests"] == []  # recorded: not asked again by default
    report = main([*argv, "--retry_failed"])
    assert report["failed"] == 0 and server.state["requests"] == [texts[2]]
