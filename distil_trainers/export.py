"""Export a saved sequence-classification student for CPU inference: ONNX, and ONNX with int8 weights.

:func:`export_student` reads a folder as the trainers' ``save_model`` (or any ``save_pretrained``) writes it (config,
weights, tokenizer) and writes a folder holding ``model.onnx``, the config, the tokenizer and ``export.json`` (what was
exported, how, with which versions, and how far the exported logits are from PyTorch's on a check batch):

* ``"onnx"``: the fp32 model, traced with PyTorch's ONNX exporter (``torch.onnx.export(..., dynamo=True)``), batch
  size and sequence length dynamic. Its logits match PyTorch's to float rounding.
* ``"onnx-int8"``: the same graph with the weights of its matrix multiplications and embeddings stored as int8 and
  the activations quantised on the fly (``onnxruntime.quantization.quantize_dynamic``, per output channel by
  default): about a quarter of the size; predictions change slightly (measure on your data).

``optimize=True`` (``--optimize``) writes a graph with fused transformer operators instead: the model is traced with
eager attention by PyTorch's TorchScript-based exporter (``dynamo=False``), whose graph onnxruntime's transformer
optimizer (``onnxruntime.transformers.optimizer``, model type ``bert``) recognises, and each attention block, the
embeddings with their layer norm, the bias + GELU and the residual + layer norm become one onnxruntime operator each;
``onnx-int8`` then quantises the fused attention too. BERT-family encoders only (BERT, DistilBERT, RoBERTa,
XLM-RoBERTa, ELECTRA); ``export.json`` records which operators were fused.

:func:`load_exported` runs the folder with onnxruntime and is called like ``pipeline("text-classification")``::

    from distil_trainers.export import export_student, load_exported

    export_student("runs/annealing_quickstart/student", "runs/student-int8", format="onnx-int8")
    classify = load_exported("runs/student-int8")
    classify("you are all wonderful")   # [{'label': ..., 'score': ...}]

The command line does the same: ``distil-trainers export --model <dir> --output <dir> --format onnx-int8``.
Exporting needs ``pip install "distil-trainers[export]"`` (onnx, onnxruntime, and onnxscript for PyTorch's exporter);
loading needs onnxruntime only. Importing this module imports none of them.

Not offered: a PyTorch int8 checkpoint. ``torch.ao.quantization.quantize_dynamic`` is deprecated (PyTorch warns it
will be removed) and its packed weights save neither as safetensors nor through ``save_pretrained``, so the result
would not load with ``from_pretrained`` or ``pipeline``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["EXPORT_FORMATS", "FP32_TOLERANCE", "ExportedClassifier", "export_student", "load_exported"]

EXPORT_FORMATS = ("onnx", "onnx-int8")
"""The formats :func:`export_student` writes."""

FUSABLE_MODEL_TYPES = ("bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra")
"""``config.model_type`` of the encoders ``optimize=True`` takes (onnxruntime's ``bert`` fusions)."""

ONNX_FILE = "model.onnx"
MANIFEST_FILE = "export.json"
INSTALL_HINT = 'pip install "distil-trainers[export]"'
_EXPORT_MODULES = ("onnx", "onnxruntime", "onnxscript")  # torch's ONNX exporter imports onnxscript
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
)  # fmt: skip
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_CHECK_TEXTS = (
    "An example sentence, long enough to need a few more tokens than the others.",
    "Short one.",
    "A third text of middling length.",
)
FP32_TOLERANCE = 1e-3
"""Largest absolute difference between the ONNX and PyTorch logits an fp32 export may have on its check batch."""


def _require(modules: Sequence[str], what: str) -> None:
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(f"{what} needs {', '.join(missing)}, not installed here: {INSTALL_HINT}")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _check_model_dir(model_dir: Path):
    """The config and tokenizer of a saved sequence classifier; every problem raised before any work."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such folder (give the folder a trainer's save_model wrote)")
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json: not a saved model folder")
    if not any(any(model_dir.glob(pattern)) for pattern in _WEIGHT_PATTERNS):
        raise FileNotFoundError(f"{model_dir} has no weights (*.safetensors or pytorch_model.bin)")
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir)
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise ValueError(
            f"{model_dir} is not a sequence classifier (config.architectures = {architectures or None}); export "
            "needs a *ForSequenceClassification model, as the classifier trainers save their students. A multi-task "
            "model or a bare encoder has no single classification head to export."
        )
    if not any((model_dir / name).is_file() for name in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{model_dir} has no tokenizer: save it beside the model (tokenizer.save_pretrained(folder), or give the "
            "trainer processing_class=tokenizer so save_model writes it)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{model_dir}: the tokenizer does not load: {exc}") from exc
    return config, tokenizer


@contextlib.contextmanager
def _quiet_export():
    """Hide the exporter's and quantiser's progress chatter (kept: errors)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [log.level for log in loggers]

    class _NoPreprocessAdvice(logging.Filter):  # onnxruntime's quantiser advises pre-processing, which the
        def filter(self, record):  # exported graph does not need (symbolic shape inference fails on it), and
            message = record.getMessage()  # notes every fused operator's output it types as float
            return not any(text in message for text in ("pre-processing before quantization",
                                                        "Quantization parameters for tensor",
                                                        "returns DefaultTensorType"))  # fmt: skip

    advice = _NoPreprocessAdvice()
    root = logging.getLogger()
    root.addFilter(advice)
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*axis name.*")
            yield
    finally:
        root.removeFilter(advice)
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def _model_inputs(model, tokenizer) -> list[str]:
    """The tokenizer outputs the model's forward takes, in the tokenizer's order."""
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    names = [name for name in tokenizer.model_input_names if name in accepted]
    if "input_ids" not in names:
        raise ValueError(f"the tokenizer gives {tokenizer.model_input_names}: no input_ids for the model")
    return names


def _sane_limit(value) -> int | None:
    return value if isinstance(value, int) and 0 < value < 1_000_000 else None  # tokenizers without a limit say 1e30


def _max_length(model, tokenizer) -> int | None:
    """The longest input the model takes: its position table, less the offset of RoBERTa-style embeddings (their
    positions start after the padding index), and at most the tokenizer's own limit."""
    limits = [_sane_limit(tokenizer.model_max_length)]
    positions = _sane_limit(getattr(model.config, "max_position_embeddings", None))
    if positions is not None:
        padding_idx = getattr(getattr(model.base_model, "embeddings", None), "padding_idx", None)
        limits.append(positions - (padding_idx + 1 if isinstance(padding_idx, int) else 0))
    limits = [n for n in limits if n]
    return min(limits) if limits else None


def _example_inputs(model, tokenizer, input_names: list[str]) -> dict:
    """The inputs the exporters trace with: two texts padded to 16 tokens (the check uses other shapes)."""
    example = tokenizer(list(_CHECK_TEXTS[:2]), padding="max_length", truncation=True,
                        max_length=min(16, _max_length(model, tokenizer) or 16), return_tensors="pt")  # fmt: skip
    return {name: example[name] for name in input_names}


def _export_onnx(model, tokenizer, input_names: list[str], path: Path, opset: int | None) -> None:
    import torch

    max_length = _max_length(model, tokenizer)
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=max_length) if max_length else torch.export.Dim("sequence")
    with _quiet_export():
        torch.onnx.export(
            model,
            (),
            str(path),
            kwargs=_example_inputs(model, tokenizer, input_names),
            input_names=input_names,
            output_names=["logits"],
            dynamic_shapes={name: {0: batch, 1: sequence} for name in input_names},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def _export_onnx_fusable(model, tokenizer, input_names: list[str], path: Path, opset: int | None) -> None:
    """The TorchScript-based exporter on a model with eager attention: a graph whose attention onnxruntime fuses."""
    import inspect

    import torch

    # this exporter names the graph's inputs in the order of forward's parameters, whatever the tokenizer's order
    order = list(inspect.signature(model.forward).parameters)
    input_names = sorted(input_names, key=order.index)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    with _quiet_export(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the traced masks hold for every length (checked)
        warnings.filterwarnings("ignore", message="Exporting aten::index")  # non-negative indices here (checked)
        torch.onnx.export(
            model,
            (),
            str(path),
            kwargs=_example_inputs(model, tokenizer, input_names),
            input_names=input_names,
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
            opset_version=opset or 17,
            dynamo=False,
        )


def _fuse_onnx(path: Path, config) -> dict[str, int]:
    """onnxruntime's BERT fusions, in place; returns how many operators of each kind were fused."""
    from onnxruntime.transformers.optimizer import optimize_model

    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 0)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", 0)
    # the optimizer's modules log every fusion at INFO under top-level names (fusion_*, onnx_model*)
    chatty = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
              if name.startswith(("fusion_", "onnx_model"))]  # fmt: skip
    levels = [log.level for log in chatty]
    try:
        for log in chatty:
            log.setLevel(logging.WARNING)
        with _quiet_export():
            optimized = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden,
                                       opt_level=0)  # fmt: skip
            optimized.save_model_to_file(str(path))
    finally:
        for log, level in zip(chatty, levels):
            log.setLevel(level)
    return {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}


def _quantize_onnx(source: Path, target: Path, per_channel: bool, reduce_range: bool) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_export():
        quantize_dynamic(
            source, target, per_channel=per_channel, reduce_range=reduce_range, weight_type=QuantType.QInt8,
            # ONNX shape inference does not type the outputs of onnxruntime's fused operators: they are float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def _check_logits(model, tokenizer, input_names: list[str], onnx_path: Path) -> float:
    """Largest |ONNX - PyTorch| logit on batches of 3 and 1 texts (other shapes than the traced ones)."""
    import torch

    session = _session(onnx_path, threads=None, providers=None)
    worst = 0.0
    max_length = _max_length(model, tokenizer)
    for texts in (list(_CHECK_TEXTS), [_CHECK_TEXTS[2]]):
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            expected = model(**{name: encoded[name] for name in input_names}).logits.float().numpy()
        got = session.run(["logits"], {name: encoded[name].numpy().astype(np.int64) for name in input_names})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def export_student(
    model_dir: str | Path,
    output_dir: str | Path,
    *,
    format: str = "onnx",
    per_channel: bool = True,
    reduce_range: bool = False,
    opset: int | None = None,
    optimize: bool = False,
    overwrite: bool = False,
) -> Path:
    """Export a saved sequence-classification model (config, weights and tokenizer in ``model_dir``) to ONNX.

    Args:
        model_dir: folder written by a trainer's ``save_model`` or ``save_pretrained`` (with the tokenizer).
        output_dir: folder to write ``model.onnx``, ``config.json``, the tokenizer files and ``export.json`` to.
        format: ``"onnx"`` (fp32) or ``"onnx-int8"`` (dynamic int8 quantisation by onnxruntime).
        per_channel: ``onnx-int8``: one scale per output channel of each weight (about half the logit error of one
            scale per tensor in a check on all-MiniLM-L6-v2).
        reduce_range: ``onnx-int8``: 7-bit weights, for CPUs without VNNI where 8-bit products can saturate.
        opset: ONNX opset (default: the exporter's; 17 with ``optimize``).
        optimize: fuse attention, embeddings + layer norm, bias + GELU and residual + layer norm into onnxruntime's
            transformer operators (BERT-family encoders, see :data:`FUSABLE_MODEL_TYPES`); faster on CPU, the same
            logits to float rounding.
        overwrite: replace the files of an earlier export in ``output_dir``.

    Returns:
        ``output_dir`` as a :class:`~pathlib.Path`; load it with :func:`load_exported`.

    Raises:
        ValueError: unknown ``format``, not a sequence classifier, a tokenizer that does not load, ``optimize`` on a
            model type it does not know, or an fp32 export whose logits differ from PyTorch's by more than
            :data:`FP32_TOLERANCE`.
        FileNotFoundError: no such folder, no config, no weights or no tokenizer in it.
        FileExistsError: ``output_dir`` holds files and ``overwrite`` is False, or is ``model_dir`` itself.
        ImportError: onnx, onnxruntime or onnxscript is missing (``pip install "distil-trainers[export]"``).
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    config, tokenizer = _check_model_dir(model_dir)
    if optimize and config.model_type not in FUSABLE_MODEL_TYPES:
        raise ValueError(
            f"optimize=True fuses the operators of BERT-family encoders ({', '.join(FUSABLE_MODEL_TYPES)}); "
            f"{model_dir} is a {config.model_type!r} model: export it without optimize"
        )
    _require(_EXPORT_MODULES, f"export to {format}")
    if output_dir.resolve() == model_dir.resolve():
        raise FileExistsError(f"{output_dir}: the output folder must not be the model folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir} is not empty: choose another folder or pass overwrite=True")

    import torch
    from transformers import AutoModelForSequenceClassification

    # the fusions recognise the eager attention's graph (matmul, scale, mask, softmax, matmul), not SDPA's
    attention = {"attn_implementation": "eager"} if optimize else {}
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32, **attention).eval()
    input_names = _model_inputs(model, tokenizer)
    target = output_dir / ONNX_FILE
    with tempfile.TemporaryDirectory(prefix="distil_export_") as scratch:
        fp32_path = Path(scratch) / ONNX_FILE
        logger.info("Exporting %s to ONNX (%s)", model_dir, ", ".join(input_names))
        fused = None
        if optimize:
            _export_onnx_fusable(model, tokenizer, input_names, fp32_path, opset)
            fused = _fuse_onnx(fp32_path, model.config)
            if not fused.get("Attention"):
                logger.warning("onnxruntime fused no attention block of %s (fused: %s): the graph is exported, not "
                               "sped up", model_dir, fused or "nothing")  # fmt: skip
        else:
            _export_onnx(model, tokenizer, input_names, fp32_path, opset)
        difference = _check_logits(model, tokenizer, input_names, fp32_path)
        if difference > FP32_TOLERANCE:
            raise ValueError(
                f"the ONNX export of {model_dir} gives logits up to {difference:.2e} away from PyTorch's (tolerance "
                f"{FP32_TOLERANCE:g}); nothing was written"
            )
        quantization = None
        output_dir.mkdir(parents=True, exist_ok=True)
        if format == "onnx-int8":
            logger.info("Quantising the weights to int8 (onnxruntime dynamic quantisation)")
            _quantize_onnx(fp32_path, target, per_channel, reduce_range)
            quantization = {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                            "per_channel": per_channel, "reduce_range": reduce_range}  # fmt: skip
            difference = _check_logits(model, tokenizer, input_names, target)
        else:
            shutil.copyfile(fp32_path, target)
    import onnx

    opsets = {entry.domain or "ai.onnx": entry.version for entry in onnx.load(str(target), load_external_data=False)
              .opset_import}  # fmt: skip
    model.config.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    manifest = {
        "format": format,
        "source": str(model_dir),
        "file": ONNX_FILE,
        "inputs": input_names,
        "output": "logits",
        "max_length": _max_length(model, tokenizer),
        "opset": opsets,
        "quantization": quantization,
        "optimization": None if fused is None else {
            "exporter": "torch.onnx.export(dynamo=False), eager attention",
            "fusions": "onnxruntime.transformers.optimizer, model_type bert", "fused_operators": fused},
        "check": {"max_abs_logit_difference_vs_pytorch": difference, "texts": len(_CHECK_TEXTS) + 1},
        "versions": {name: _version(name) for name in
                     ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "distil-trainers")},
    }  # fmt: skip
    (output_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    logger.info("Wrote %s (%.1f MB); largest logit difference to PyTorch on the check batch: %.2e",
                target, target.stat().st_size / 2**20, difference)  # fmt: skip
    return output_dir


def _session(path: Path, threads: int | None, providers: Sequence[str] | None, options=None):
    import onnxruntime

    options = options or onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))


_NOT_GIVEN = object()


class ExportedClassifier:
    """A classifier exported by :func:`export_student`, run by onnxruntime, called like
    ``pipeline("text-classification")``: the same arguments (``top_k``, ``function_to_apply``) and the same output
    shapes, with the class names of the saved ``config.id2label``.

    Attributes:
        config: the model's :class:`~transformers.PretrainedConfig`.
        tokenizer: its tokenizer.
        session: the :class:`onnxruntime.InferenceSession`.
        manifest: the contents of ``export.json`` (empty if the folder has none).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        session_options=None,
    ) -> None:
        path = Path(path)
        if not (path / ONNX_FILE).is_file():
            raise FileNotFoundError(f"{path} has no {ONNX_FILE}: export a model there with export_student first")
        _require(["onnxruntime"], "running an exported model")
        from transformers import AutoConfig, AutoTokenizer

        self.path = path
        self.config = AutoConfig.from_pretrained(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.session = _session(path / ONNX_FILE, threads, providers, session_options)
        self.input_names = [node.name for node in self.session.get_inputs()]
        manifest = path / MANIFEST_FILE
        self.manifest: dict[str, Any] = json.loads(manifest.read_text()) if manifest.is_file() else {}
        self.id2label = {int(k): str(v) for k, v in self.config.id2label.items()}
        # the longest input the model takes (written by export_student; else the position table and the tokenizer)
        limits = (getattr(self.config, "max_position_embeddings", None), self.tokenizer.model_max_length)
        fallback = min((n for n in map(_sane_limit, limits) if n), default=None)
        self.max_length: int | None = self.manifest.get("max_length", fallback)

    def __repr__(self) -> str:
        return f"ExportedClassifier({str(self.path)!r}, format={self.manifest.get('format')!r})"

    @property
    def label_names(self) -> list[str]:
        """Class names in id order (``config.id2label``)."""
        return [self.id2label[i] for i in range(len(self.id2label))]

    def logits(self, texts: str | Sequence[str], *, batch_size: int = 64, max_length: int | None = None) -> np.ndarray:
        """Raw logits, shape ``(len(texts), num_labels)``; texts are truncated to ``max_length`` tokens (default:
        the model's position limit)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not all(isinstance(text, str) for text in texts):
            raise TypeError("texts must be a string or a list of strings")
        max_length = max_length or self.max_length
        out = []
        for start in range(0, len(texts), batch_size):
            encoded = self.tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=max_length is not None,
                max_length=max_length,
                return_tensors="np",
            )
            feed = {name: encoded[name].astype(np.int64) for name in self.input_names}
            out.append(self.session.run(["logits"], feed)[0])
        return np.concatenate(out) if out else np.zeros((0, len(self.id2label)), dtype=np.float32)

    def _function(self, function_to_apply: str | None) -> str:
        if function_to_apply is not None:
            name = str(getattr(function_to_apply, "value", function_to_apply)).lower()
            if name not in ("softmax", "sigmoid", "none"):
                raise ValueError(f"function_to_apply must be softmax, sigmoid or none, got {function_to_apply!r}")
            return name
        problem = getattr(self.config, "problem_type", None)
        if problem == "regression":
            return "none"
        if problem == "multi_label_classification" or self.config.num_labels == 1:
            return "sigmoid"
        return "softmax"

    def __call__(self, inputs: str | Sequence[str], top_k: Any = _NOT_GIVEN, function_to_apply: str | None = None,
                 batch_size: int = 64, max_length: int | None = None) -> list:  # fmt: skip
        """Classify one text or a list of texts, as ``pipeline("text-classification")`` does: without ``top_k``,
        one ``{"label", "score"}`` per text (in a list, also for a single text); with ``top_k`` (``None``: every
        class), the ``top_k`` best classes of each text, best first (a list of lists for a list of texts)."""
        logits = self.logits(inputs, batch_size=batch_size, max_length=max_length).astype(np.float64)
        function = self._function(function_to_apply)
        if function == "softmax":
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            scores = shifted / shifted.sum(axis=-1, keepdims=True)
        elif function == "sigmoid":
            scores = 1.0 / (1.0 + np.exp(-logits))
        else:
            scores = logits
        legacy = top_k is _NOT_GIVEN
        results = []
        for row in scores:
            if legacy:
                best = int(row.argmax())
                results.append({"label": self.id2label[best], "score": float(row[best])})
                continue
            ranked = sorted(({"label": self.id2label[i], "score": float(s)} for i, s in enumerate(row)),
                            key=lambda item: item["score"], reverse=True)  # fmt: skip
            results.append(ranked if top_k is None else ranked[:top_k])
        if isinstance(inputs, str) and not legacy:
            return results[0]
        return results


def load_exported(
    path: str | Path,
    *,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    session_options=None,
) -> ExportedClassifier:
    """Load a folder written by :func:`export_student` as a callable with the interface of
    ``pipeline("text-classification")``::

        classify = load_exported("runs/student-int8")
        classify(["first post", "second post"])   # [{'label': ..., 'score': ...}, {...}]
        classify.logits(["first post"])            # numpy array (1, num_labels)

    Args:
        path: the export folder.
        threads: onnxruntime intra-op threads (default: onnxruntime's choice, one per core).
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).
        session_options: an :class:`onnxruntime.SessionOptions` to start from (``threads`` is applied to it).
    """
    return ExportedClassifier(path, threads=threads, providers=providers, session_options=session_options)
