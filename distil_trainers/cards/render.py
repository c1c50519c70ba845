"""A :class:`CardContext` rendered to ``README.md``: the Jinja template (shipped, or your own), the Hub metadata
(:class:`huggingface_hub.ModelCardData`, with a model-index)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .context import (
    _BREAZU,
    _MKD_BERT,
    _TINYBERT,
    CARD_METRICS,
    DEFAULT_TEMPLATE,
    METHODS,
    TEMPLATE_ENV,
    CardContext,
    card_languages,
)


def _environment(template_dir: str | os.PathLike | None = None):
    import jinja2  # only where a card is rendered: `import distil_trainers` stays light

    loaders: list[jinja2.BaseLoader] = []
    for folder in (template_dir, os.environ.get(TEMPLATE_ENV)):
        if folder:
            loaders.append(jinja2.FileSystemLoader(str(folder)))
    loaders.append(jinja2.PackageLoader("distil_trainers", "model_cards"))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def load_template(name: str = DEFAULT_TEMPLATE, template_dir: str | os.PathLike | None = None):
    """The Jinja template ``name``: from ``template_dir`` / ``$DISTIL_TRAINERS_CARD_TEMPLATES`` if it is there, else
    the one shipped in the package."""
    return _environment(template_dir).get_template(name)


def card_metadata(context: CardContext) -> ModelCardData:
    """The card's YAML metadata as :class:`huggingface_hub.ModelCardData`: license, language, library, pipeline tag,
    tags (method, distillation, hate speech), datasets (Hub ids), metrics, base_model and a model-index with this
    model's results."""
    method = METHODS[context.method]
    tags = ["text-classification", "knowledge-distillation", "distil-trainers", *method.tags, *context.tags]
    if context.llm_teacher:
        tags.append("llm-teacher")
    if any(
        "hate" in (d.name + (d.hub_id or "")).lower() or d.name.startswith(("davidson", "hasoc"))
        for d in context.datasets
    ):
        tags.append("hate-speech")
    tags = list(dict.fromkeys(tags))
    eval_results = []
    for row in context.metrics:
        if row.get("model") not in (None, context.model_name, "this model"):
            continue
        ds = next((d for d in context.datasets if d.name == row.get("dataset")), None)
        if ds is None or ds.hub_id is None:
            continue
        for metric, value in row["values"].items():
            if metric in CARD_METRICS and isinstance(value, (int, float)):
                eval_results.append(
                    EvalResult(
                        task_type="text-classification",
                        task_name="Text Classification",
                        dataset_type=ds.hub_id,
                        dataset_name=ds.name,
                        dataset_split=row.get("split"),
                        metric_type=metric.split("_")[0],
                        metric_name=metric,
                        metric_value=round(float(value), 4),
                        metric_args={"average": "macro"} if metric.endswith("_macro") else None,
                    )
                )
    return ModelCardData(
        model_name=context.model_name,
        license=context.license,
        language=card_languages(context),
        library_name="transformers",
        # a rationale student is a language model that writes its label and explanation
        pipeline_tag="text-generation" if context.method == "rationale" else "text-classification",
        tags=tags,
        datasets=[d.hub_id for d in context.datasets if d.hub_id] or None,
        metrics=["accuracy", "precision", "recall", "f1"],
        base_model=context.base_model,
        eval_results=eval_results or None,
    )


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else str(value)


def render_model_card(
    context: CardContext, template: str = DEFAULT_TEMPLATE, template_dir: str | os.PathLike | None = None
) -> str:
    """The card's Markdown: YAML metadata (:func:`card_metadata`) and the body rendered from ``template``. The text
    is parsed back with :class:`huggingface_hub.ModelCard` before it is returned, so a card whose metadata the Hub
    would not read raises here."""
    method = METHODS[context.method]
    citations = _unique_citations([*method.citations, *context.citations])
    if context.feature_matching and context.method != "mse":
        citations += [_MKD_BERT, _BREAZU]
    if context.feature_matching and "attention" in context.feature_matching:
        citations.append(_TINYBERT)
    from .. import __version__

    summary = (
        f"A {'student distilled' if context.method != 'finetune' else 'model fine-tuned'} with "
        "distil_trainers for text classification"
        + (f" on {', '.join(d.name for d in context.datasets)}" if context.datasets else "")
        + (f", from the teacher `{context.teacher}`" if context.teacher else "")
        + "."
    )
    text = load_template(template, template_dir).render(
        card_data=card_metadata(context).to_yaml(),
        model_name=context.model_name,
        summary=summary,
        method=method,
        base_model=context.base_model,
        student_description=context.student_description,
        params_text=f"{context.params / 1e6:.1f}M" if context.params else "-",
        teacher=context.teacher,
        peers=context.peers,
        label_names=context.label_names,
        library_version=__version__,
        feature_matching=context.feature_matching,
        datasets=context.datasets,
        hyperparameters={k: _plain(v) for k, v in context.hyperparameters.items()},
        metrics=[{**row, "values": {k: _percent(v) for k, v in row["values"].items()}} for row in context.metrics],
        metric_columns=_metric_columns(context),
        metrics_note=context.metrics_note,
        intended_use=context.intended_use or _default_intended_use(context),
        limitations=context.limitations,
        domain=context.domain,
        llm_teacher=context.llm_teacher,
        citations=_unique_citations(citations),
        trainer_class=context.trainer_class,
        trainer_name=context.trainer_name,
    )
    ModelCard(text, ignore_metadata_errors=False)  # raises on metadata the Hub could not read
    return text


def _unique_citations(citations: Sequence[str]) -> list[str]:
    """The citations in order, each paper once (a trainer's ``_paper`` and the method may cite the same paper)."""
    seen, out = set(), []
    for citation in citations:
        title = re.search(r"title\s*=\s*[{\"](.+?)[}\"],?\s*\n", citation, re.S)
        key = re.sub(r"[^a-z0-9]", "", (title.group(1) if title else citation).lower())
        if key not in seen:
            seen.add(key)
            out.append(citation)
    return out


def _metric_columns(context: CardContext) -> list[str]:
    """The card's metric columns: the macro metrics, then per-class F1 in class order."""
    from ..metrics import per_class_keys  # (imports `evaluate`: only where a card is rendered)

    present = {k for row in context.metrics for k in row["values"]}
    columns = [m for m in CARD_METRICS if m in present]
    per_class = sorted(k for k in present if k.startswith("f1_") and k not in CARD_METRICS and k != "f1_weighted")
    order: list[str] = []
    # the classes of each dataset in turn (a multi-task model: task by task), then the model's own
    for names in [*(d.label_names for d in context.datasets), context.label_names]:
        if names:
            order += [f"f1_{k}" for k in per_class_keys(names, len(names)) if f"f1_{k}" not in order]
    per_class.sort(key=lambda k: order.index(k) if k in order else len(order))
    return columns + per_class


def _plain(value: Any) -> Any:
    """Hyper-parameter values as the card prints them (enums by their value)."""
    return getattr(value, "value", value)


def _default_intended_use(context: CardContext) -> str:
    classes = f" ({', '.join(context.label_names)})" if context.label_names else ""
    return (
        f"Research on knowledge distillation and a fast first-pass classifier{classes} for English social-media text "
        "like its training data, e.g. to prioritise posts for human review or to measure the prevalence of abusive "
        "language in a corpus. It is not meant to make decisions about people or content on its own."
    )


def write_model_card(context: CardContext, folder: str | os.PathLike, **kwargs: Any) -> Path:
    """Render the card and write it to ``<folder>/README.md``; returns the path."""
    path = Path(folder) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_model_card(context, **kwargs))
    return path
