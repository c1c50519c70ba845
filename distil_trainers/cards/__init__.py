"""Model cards for distilled students, rendered from Jinja templates.

The templates live in ``distil_trainers/model_cards/`` (shipped as package data, so they load from an installed
package; the checkout's top-level ``model_cards/`` is a link to that folder). A folder of your own templates with the
same file names takes precedence: ``template_dir=`` or the ``DISTIL_TRAINERS_CARD_TEMPLATES`` environment variable.

A card holds: the method and its paper citation (from a trainer also the trainer class, its ``_name``, its
``_tag_names`` as Hub tags and its ``_paper`` citation, as TRL's trainers carry them), teacher and peer students (for
an LLM teacher: which LLM labelled the data and how, :func:`llm_teacher_summary`), datasets and splits,
hyper-parameters, the metrics table, intended use and limitations, and YAML metadata (license, tags, datasets, metrics,
base_model, model-index) built with :class:`huggingface_hub.ModelCardData`, so the Hub reads it.

Example::

    context = card_context_from_trainer(trainer, datasets=[dataset_info("davidson", {"train": 2000})])
    write_model_card(context, "runs/x/student")          # runs/x/student/README.md

The code is in four modules: :mod:`.context` (:class:`CardContext` and what it holds), :mod:`.render` (templates and
metadata), :mod:`.from_trainer` and :mod:`.from_run` (a context from a trainer, or from a finished run directory).
"""

from .context import (
    CARD_METRICS,
    DEFAULT_TEMPLATE,
    METHODS,
    TEMPLATE_ENV,
    CardContext,
    DatasetInfo,
    Method,
    PeerInfo,
    card_languages,
    dataset_info,
    hub_id_of,
)
from .from_run import (
    datasets_of,
    describe_student_spec,
    llm_teacher_summary,
    rows_to_card_metrics,
    saved_card_context,
    saved_model_method,
)
from .from_trainer import card_context, card_context_from_trainer, method_of, model_label
from .render import card_metadata, load_template, render_model_card, write_model_card

__all__ = [
    "METHODS",
    "TEMPLATE_ENV",
    "CardContext",
    "DatasetInfo",
    "PeerInfo",
    "card_context",
    "card_context_from_trainer",
    "card_metadata",
    "dataset_info",
    "datasets_of",
    "describe_student_spec",
    "hub_id_of",
    "llm_teacher_summary",
    "load_template",
    "method_of",
    "model_label",
    "render_model_card",
    "rows_to_card_metrics",
    "write_model_card",
]
