"""A :class:`CardContext` from a finished run directory (a saved model and its trainer state), from a results
table's rows, and from an LLM teacher's cache."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .context import CARD_METRICS, CardContext, DatasetInfo, PeerInfo, dataset_info

_RECIPE_METHODS = {
    "bam": "bam",
    "annealing": "bam",
    "jafari": "jafari",
    "kd": "hinton",
    "none": "hinton",
    "mse": "mse",
    "ffn": "mse",
    "ffn_cls": "mse",
    "baseline": "finetune",
}
_STATE_HPARAMS = ("train_batch_size", "num_train_epochs", "max_steps", "global_step")


def saved_model_method(folder: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """The method a recipe trained the model in ``folder`` with, from its ``training_complete.json`` (the students
    of a mutual-learning run: ``ddml``; teachers and baselines: ``finetune``), and that file's content."""
    folder = Path(folder)
    info: dict[str, Any] = {}
    marker = folder / "training_complete.json"
    if marker.is_file():
        import json

        info = json.loads(marker.read_text())
    if (folder.parent / "students.json").is_file():
        return "ddml", info
    method = info.get("method") or info.get("annealing")
    if method in _RECIPE_METHODS:
        return _RECIPE_METHODS[method], info
    if "generation" in info:  # a born-again multi-task student of the cross-lingual recipe (teacher annealing)
        return "bam", info
    return "finetune", info


def saved_card_context(
    folder: str | os.PathLike,
    name: str,
    summary: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    split: str = "test",
    teacher: str | None = None,
    base_model: str | None = None,
    peers: Sequence[str] = (),
    task_summaries: Mapping[str, Mapping[str, Any]] | None = None,
    **overrides: Any,
) -> CardContext:
    """A :class:`CardContext` for a model saved by a recipe, without its trainer: the method from
    ``training_complete.json``, the classes and size from its config, the training schedule from the
    ``trainer_state.json`` of its last checkpoint if one is kept, and the metrics from a report's ``summary`` entry
    (:func:`distil_trainers.papers.reports.build_report`; "mean ± std" when it aggregates seeds).

    A multi-task model (:class:`~distil_trainers.models.MultiTaskModel`) takes ``task_summaries`` instead,
    ``{task: summary entry}``: one metrics row per task, evaluated on the dataset named like the task; its classes are
    listed as ``task: class``."""
    import json

    from transformers import AutoConfig

    folder = Path(folder)
    method, info = saved_model_method(folder)
    config = AutoConfig.from_pretrained(folder)
    id2label = getattr(config, "id2label", None) or {}
    label_names = [id2label[i] for i in sorted(id2label)] or None
    task_names = getattr(config, "task_label_names", None) if getattr(config, "tasks", None) else None
    if getattr(config, "tasks", None):  # a multi-task model: its heads' classes, not the config's default id2label
        label_names = [f"{t}: {n}" for t in config.tasks for n in (task_names or {}).get(t, [])] or None
    hparams: dict[str, Any] = {}
    states = sorted(folder.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1]))
    if states:
        state = json.loads(states[-1].read_text())
        hparams = {k: state[k] for k in _STATE_HPARAMS if state.get(k) is not None}
    if info.get("feature_matches"):
        kinds = sorted({f"{m.get('feature', 'embeddings')}/{m.get('loss', 'kl')}" for m in info["feature_matches"]})
        overrides.setdefault("feature_matching", f"{len(info['feature_matches'])} matches ({', '.join(kinds)}).")
    metrics, note, params = [], None, None
    entries = dict(task_summaries) if task_summaries else ({None: summary} if summary is not None else {})
    for task, entry in entries.items():
        stats = entry["metrics"]
        values = {k: v["mean"] for k, v in stats.items() if k in CARD_METRICS or k.startswith("f1_")}
        values.pop("f1_weighted", None)
        where = task or dataset or "evaluation set"
        metrics.append({"model": "this model", "dataset": where, "split": split, "values": values})
        if len(entry.get("seeds", [])) > 1:
            note = f"mean over {len(entry['seeds'])} runs (seeds {entry['seeds']})"
        params = int(stats["params"]["mean"]) if "params" in stats else params
    if task_summaries:
        infos = [dataset_info(t, label_names=(task_names or {}).get(t)) for t in task_summaries]
    else:
        infos = [dataset_info(dataset)] if dataset else []
    context = CardContext(
        model_name=name,
        method=method,
        base_model=base_model,
        params=params,
        teacher=teacher if method != "finetune" else None,
        peers=[PeerInfo(name=p) for p in peers],
        datasets=infos,
        label_names=label_names,
        hyperparameters=hparams,
        metrics=metrics,
        metrics_note=note,
    )
    for key, value in overrides.items():
        setattr(context, key, value)
    return context


def rows_to_card_metrics(
    rows: Sequence[Mapping[str, Any]], this: str, split: str = "test", compare: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Card metric rows from a recipe's result rows (``{"model", "task", "accuracy", ...}``): the row labelled
    ``this`` becomes "this model" (and the card's model-index), the rows labelled in ``compare`` (teacher,
    baselines…) are kept under their labels for comparison."""
    out = []
    for row in rows:
        label = row.get("model")
        if label != this and label not in compare:
            continue
        values = {k: v for k, v in row.items() if (k in CARD_METRICS or k.startswith("f1_")) and k != "f1_weighted"}
        out.append(
            {
                "model": "this model" if label == this else label,
                "dataset": row.get("task"),
                "split": split,
                "values": values,
            }
        )
    return out


def llm_teacher_summary(
    meta: Mapping[str, Any], gold_labels: bool | None = None, prompt_source: str | None = None
) -> dict[str, Any]:
    """What a student's card says about the LLM that labelled its training data, from the ``meta`` of the LLM
    teacher-output cache (:func:`~distil_trainers.teachers.precompute_llm_teacher_outputs`): the model and backend,
    the prompt (``{text}`` standing for each text; the chat messages for a first-token backend), the label words per
    class, the scoring and the calibration. ``gold_labels``: whether the student also saw the gold labels (``None``:
    not said). ``prompt_source``: where a prompt the LLM was trained to answer comes from (a
    :class:`~distil_trainers.teachers.SavedClassifierPrompt`'s ``source``); without it the prompt is described as
    zero- or few-shot.

    Raises:
        ValueError: ``meta`` is not that of an LLM teacher (no ``meta["llm"]``).
    """
    llm = meta.get("llm")
    if not isinstance(llm, Mapping):
        raise ValueError("not the meta of an LLM teacher-output cache (it has no 'llm' entry)")
    backend = dict(llm.get("backend") or {})
    record = meta.get("calibration") or {}
    methods = list(record.get("methods") or [])
    parts = []
    if "contextual" in methods:
        prior = ", ".join(f"{k} {v:.3f}" for k, v in (record.get("content_free_distribution") or {}).items())
        inputs = ", ".join(repr(t) for t in record.get("content_free_inputs") or [])
        parts.append(f"contextual calibration (Zhao et al. 2021): divided by the class distribution of the "
                     f"content-free inputs {inputs} ({prior}) and renormalised")
    if "temperature" in methods:
        temperature = f"temperature T = {record['temperature']:.3f}"
        if record.get("temperature_fitted"):
            temperature += (f", fitted on {record['dev_examples']} labelled examples (NLL {record['dev_nll_before']:.3f}"
                            f" -> {record['dev_nll_after']:.3f})")
        parts.append(temperature)
    if llm.get("scoring") == "first_token":
        scoring = (f"probability of the first answer token among the server's top-{llm.get('top_logprobs')} "
                   "(an approximation: see distil_trainers.teachers.OpenAILogprobBackend)")
        prompt = "\n".join(f"[{m['role']}] {m['content']}" for m in llm.get("messages") or [])
    else:
        scoring = (f"log-probability of each label word after the prompt, {llm.get('normalization')} over its tokens; "
                   "a class sums its words' probabilities, renormalised over the classes")
        prompt = llm.get("prompt_text", "")
    shots = len((llm.get("prompt") or {}).get("demonstrations") or [])
    if prompt_source:
        asked = f"asked the label prompt it was trained to answer ({prompt_source})"
    else:
        asked = f"read as a {f'{shots}-shot' if shots else 'zero-shot'} classifier"
    return {
        "asked": asked,
        "model": llm.get("model") or backend.get("model"),
        "backend": backend.get("backend", "unknown"),
        "backend_details": {k: f"{v / 2**20:.1f} MiB" if k == "size" and isinstance(v, int) else v
                            for k, v in backend.items()
                            if k not in ("backend", "model") and not k.endswith("sha256") and v is not None},
        "scoring": scoring,
        "prompt": prompt,
        "chat_template": bool(llm.get("chat_template")),
        "label_words": {str(k): list(v) for k, v in (llm.get("label_words") or {}).items()},
        "calibration": "; ".join(parts) if parts else "none",
        "gold_labels": gold_labels,
    }


def datasets_of(suite: Any) -> list[DatasetInfo]:
    """:class:`DatasetInfo` of every task of a :class:`~distil_trainers.papers.workflow.TaskSuite` (split sizes, classes)."""
    return [
        dataset_info(task.name, {split: len(ds) for split, ds in task.splits.items()}, task.label_names)
        for task in suite.tasks
    ]


def describe_student_spec(spec: Mapping[str, Any]) -> str | None:
    """A phrase for a student spec of :func:`~distil_trainers.models.students.build_student` (the DDML recipe's
    ``students``): ``layers [0, 2, 4] of <base>`` or ``a 2-layer distilbert (hidden 256) trained from scratch…``."""
    if "base" in spec:
        return f"encoder layers {list(spec['layers'])} of {spec['base']}" if spec.get("layers") else None
    parts = [f"a {spec.get('num_layers', '?')}-layer {spec.get('architecture', 'transformer')}"]
    if spec.get("hidden_size"):
        parts.append(f"(hidden size {spec['hidden_size']})")
    parts.append("trained from scratch")
    if spec.get("vocab_size"):
        parts.append(f"with its own {spec['vocab_size']:,}-token vocabulary learnt from the training texts")
    return " ".join(parts)
