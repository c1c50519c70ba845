"""Teacher generation through an OpenAI-compatible server: answers per second at several client concurrencies.

For each concurrency (``--concurrency 1 2 4``) ``generate_rationales`` asks the server for ``--posts`` Davidson test
posts with the default three-shot prompt (``OpenAIEndpointBackend(concurrency=c)``, greedy, ``--max-new-tokens``),
into a fresh cache; the wall time gives answers/s and generated tokens/s, and the llama.cpp server's CPU time per
answer (user + system, from its process) the work it did, whatever share of a shared machine it got. Settings run
round-robin ``--reps`` times (medians are reported) after one warm-up request.

Two servers:

* ``llamacpp``: ``python -m llama_cpp.server`` (through ``distil_trainers.teachers.llamacpp``) serving the packaged
  SmolLM2-135M-Instruct GGUF on ``--n-threads`` threads. This server answers ONE request at a time (llama-cpp-python
  0.3 has no parallel slots: its app takes a lock around the model), so concurrency cannot make it faster; the rows
  measure what it does.
* ``simulated`` (``--simulated``): a stand-in server in this process with ``--slots`` parallel slots that answers
  every request after ``--latency`` seconds (what a batching server such as vLLM looks like from the client: more
  requests in flight, same time per request). It measures the client side: whether c requests really are in flight.

Resumable: every finished (server, concurrency, repetition) is stored in ``<workdir>/results.json`` and not run again
(``--fresh`` starts over); an interrupted one is run again from an empty cache (a half-filled cache would time fewer
posts). At the end the table is printed and written as a section of ``benchmarks/RESULTS.md`` (replacing the section
an earlier run wrote; ``--no-results-md`` leaves the file alone), with the command that made it.

    python benchmarks/teacher_concurrency.py --posts 24 --max-new-tokens 48 --concurrency 1 2 4 --reps 2 --simulated
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# section markers of pymdownx.snippets: docs/rationale_teacher.md includes the section
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import replace_marked_section  # noqa: E402

START, END = "<!-- --8<-- [start:teacher_concurrency] -->", "<!-- --8<-- [end:teacher_concurrency] -->"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_server(n_threads: int, n_ctx: int, log_path: Path):
    """``python -m llama_cpp.server`` on the packaged SmolLM2 GGUF; yields its ``/v1`` URL and process id."""
    import requests

    from distil_trainers.teachers.rationales import packaged_smollm2_gguf

    port = free_port()
    cmd = [sys.executable, "-m", "distil_trainers.teachers.llamacpp", "--model", packaged_smollm2_gguf(),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(n_threads),
           "--n_threads_batch", str(n_threads)]  # prompt processing too (its default: every core)
    url = f"http://127.0.0.1:{port}/v1"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 300
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}: see {log_path}")
                with contextlib.suppress(requests.ConnectionError, requests.Timeout):
                    if requests.get(f"{url}/models", timeout=2).status_code == 200:
                        break
                if time.time() > deadline:
                    raise RuntimeError(f"llama_cpp.server did not answer within 300 s: see {log_path}")
                time.sleep(0.5)
            yield url, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _SimulatedHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, payload):
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "simulated", "object": "model"}]})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.slots:  # at most `slots` requests are being answered; the others wait for a slot
            time.sleep(self.server.latency)
        text = "Explanation: a simulated answer.\nLabel: neither"
        self._send({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"completion_tokens": self.server.tokens}})


@contextlib.contextmanager
def simulated_server(slots: int, latency: float, tokens: int):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SimulatedHandler)
    httpd.daemon_threads = True
    httpd.slots, httpd.latency, httpd.tokens = threading.BoundedSemaphore(slots), latency, tokens
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", None
    finally:
        httpd.shutdown()
        httpd.server_close()


def cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system) used so far by process ``pid`` (the server), None without one."""
    if pid is None:
        return None
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run_setting(url: str, pid: int | None, posts, names, concurrency: int, max_new_tokens: int, cache: Path) -> dict:
    from distil_trainers.teachers.rationales import (
        OpenAIEndpointBackend,
        default_prompt,
        generate_rationales,
        teacher_report,
    )

    cache.unlink(missing_ok=True)
    backend = OpenAIEndpointBackend(url, concurrency=concurrency, timeout=600, max_retries=2)
    try:
        start, cpu_start = time.perf_counter(), cpu_seconds(pid)
        out = generate_rationales(posts, backend, default_prompt(names), cache, max_new_tokens=max_new_tokens,
                                  show_progress=False)
        seconds = time.perf_counter() - start
        server_cpu = None if pid is None else cpu_seconds(pid) - cpu_start
    finally:
        backend.close()
    tokens = sum(json.loads(line)["num_tokens"] for line in cache.read_text().splitlines()[1:])
    report = teacher_report(out, names)
    return {"seconds": round(seconds, 3), "answers": len(out), "tokens": tokens,
            "answers_per_s": round(len(out) / seconds, 3), "tokens_per_s": round(tokens / seconds, 2),
            "failed": report.get("failed", 0), "truncated": report.get("truncated", 0),
            "parse_rate": round(report["parse_rate"], 3),
            "server_cpu_s_per_answer": None if server_cpu is None else round(server_cpu / len(out), 3)}


def warm_up(url: str, max_new_tokens: int) -> None:
    from distil_trainers.teachers.rationales import OpenAIEndpointBackend

    backend = OpenAIEndpointBackend(url, timeout=600)
    backend.generate([[{"role": "user", "content": "Say hello."}]], max_new_tokens=min(8, max_new_tokens))


def table(rows: list[dict], server: str) -> list[str]:
    base = [r["answers_per_s"] for r in rows if r["server"] == server and r["concurrency"] == 1]
    base_median = statistics.median(base) if base else None
    out = ["| concurrency | posts | wall s (median) | answers/s (median) | per repetition | tokens/s "
           "| vs concurrency 1 | server CPU s / answer | failed | truncated |",
           "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for c in sorted({r["concurrency"] for r in rows if r["server"] == server}):
        runs = [r for r in rows if r["server"] == server and r["concurrency"] == c]
        aps = statistics.median(r["answers_per_s"] for r in runs)
        ratio = f"{aps / base_median:.2f}x" if base_median else "-"
        each = " / ".join(f"{r['answers_per_s']:.2f}" for r in runs)
        out.append(
            f"| {c} | {runs[0]['answers']} | {statistics.median(r['seconds'] for r in runs):.1f} | {aps:.2f} | "
            f"{each} | "
            f"{statistics.median(r['tokens_per_s'] for r in runs):.1f} | {ratio} | {server_cpu(runs)} | "
            f"{sum(r['failed'] for r in runs)} | {sum(r['truncated'] for r in runs)} |"
        )
    return out


def server_cpu(runs: list[dict]) -> str:
    values = [r.get("server_cpu_s_per_answer") for r in runs]
    return "-" if None in values else f"{statistics.median(values):.2f}"


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "n/a"


def write_results_md(path: Path, section: str) -> None:
    replace_marked_section(path, START, END, section)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=24, help="Davidson test posts per setting")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--reps", type=int, default=2, help="repetitions of every setting (round-robin)")
    parser.add_argument("--n-threads", type=int, default=os.cpu_count() or 1, help="llama.cpp server threads")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--no-llamacpp", action="store_true", help="skip the llama.cpp server")
    parser.add_argument("--simulated", action="store_true", help="also measure the simulated parallel server")
    parser.add_argument("--slots", type=int, default=4, help="parallel slots of the simulated server")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per request of the simulated server")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "bench_teacher_concurrency"))
    parser.add_argument("--fresh", action="store_true", help="forget the results of an earlier run")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--results-md", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--no-results-md", action="store_true")
    args = parser.parse_args(argv)
    command = "python benchmarks/teacher_concurrency.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    from distil_trainers.data import load_dataset_by_name

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "results.json"
    settings = {"posts": args.posts, "max_new_tokens": args.max_new_tokens, "n_threads": args.n_threads,
                "slots": args.slots, "latency": args.latency}
    saved = json.loads(store.read_text()) if store.exists() and not args.fresh else {}
    if saved.get("settings") != settings:
        saved = {"settings": settings, "rows": []}
    rows: list[dict] = saved["rows"]
    done = {(r["server"], r["concurrency"], r["rep"]) for r in rows}

    posts = load_dataset_by_name("davidson", max_samples_per_split={"test": args.posts})["test"]
    names = posts.features["label"].names
    servers = ([] if args.no_llamacpp else ["llamacpp"]) + (["simulated"] if args.simulated else [])
    load_before, measured = load_average(), False
    for server in servers:
        todo = [(rep, c) for rep in range(args.reps) for c in args.concurrency if (server, c, rep) not in done]
        if not todo:
            continue
        if server == "llamacpp":
            context = llama_server(args.n_threads, args.n_ctx, workdir / "llama_server.log")
        else:
            context = simulated_server(args.slots, args.latency, args.max_new_tokens)
        with context as (url, pid):
            warm_up(url, args.max_new_tokens)
            for rep, c in todo:
                cache = workdir / f"cache_{server}_c{c}.jsonl"
                result = run_setting(url, pid, posts, names, c, args.max_new_tokens, cache)
                row = {"server": server, "concurrency": c, "rep": rep, **result}
                print(f"[{server}] concurrency {c}, repetition {rep + 1}: {result}", flush=True)
                rows.append(row)
                measured = True
                store.write_text(json.dumps(saved, indent=1))
    if measured or "header" not in saved:  # a rerun that measured nothing keeps the header of the run that did
        versions = {name: _version(name) for name in ("llama_cpp_python", "requests", "distil-trainers")}
        saved["header"] = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
            "load_average_before": load_before, "load_average_after": load_average(), "cores": os.cpu_count(),
            "versions": versions,
        }
        store.write_text(json.dumps(saved, indent=1))
    header = saved["header"]

    lines = [f"`{header['command']}` ({header['date']}; {header['cores']} cores, shared: load average "
             f"{header['load_average_before']} before, {header['load_average_after']} after; "
             + ", ".join(f"{k} {v}" for k, v in header["versions"].items()) + ")", ""]
    threads = f"{args.n_threads} thread{'s' if args.n_threads != 1 else ''}"
    titles = {
        "llamacpp": f"llama.cpp server (`python -m llama_cpp.server`, SmolLM2-135M-Instruct Q4_1 GGUF, {threads} for "
                    f"generation and prompt processing; it answers one request at a time), Davidson test posts, "
                    f"three-shot prompt, greedy, max_new_tokens {args.max_new_tokens}:",
        "simulated": f"Simulated server with {args.slots} parallel slots, {args.latency} s per request (the client "
                     "side alone):",
    }
    for server in ("llamacpp", "simulated"):
        if any(r["server"] == server for r in rows):
            lines += [titles[server], "", *table(rows, server), ""]
    lines += [
        "- `python -m llama_cpp.server` (llama-cpp-python 0.3) has no parallel slots: its app holds a lock around the "
        "model, so requests in flight only wait in its queue and concurrency changes nothing there (the server's CPU "
        "time per answer is the same at every concurrency). A server that batches requests (vLLM, TGI, "
        "`llama-server --parallel N`) is where concurrency pays.",
        "- The simulated server shows the client side: with c requests in flight, answers/s grow with c up to the "
        "server's slots (the client keeps the window full across batches and writes each answer as it arrives).",
        "- `--n-threads` sets the server's prompt-processing threads too (`--n_threads_batch`, whose default is "
        "every core): with two such threads, prompt processing slowed down erratically on this shared 2-core machine "
        "in earlier runs of this script, which made the rows incomparable.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(saved, indent=1))
    if not args.no_results_md:
        section = ("## Teacher generation at server speed (`benchmarks/teacher_concurrency.py`)\n\n"
                   "Answers per second of `generate_rationales` through `OpenAIEndpointBackend` at several client "
                   "concurrencies (requests in flight), each setting into a fresh cache, medians over the "
                   "repetitions (run round-robin).\n\n" + text)
        write_results_md(Path(args.results_md), section)
    return saved


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
