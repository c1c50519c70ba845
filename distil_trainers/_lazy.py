"""Lazy package namespaces: a package lists the names its submodules define and imports a submodule on first use.

``import distil_trainers`` therefore costs little more than ``import transformers``; TRL, PEFT, scikit-learn and
the LLM backends load only when a name that needs them is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def attach(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package`` whose submodule ``m`` defines the names ``exports[m]``
    (a submodule named in ``exports`` is itself reachable as an attribute)."""
    owner = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name in owner:
            value = getattr(importlib.import_module(f"{package}.{owner[name]}"), name)
        elif name in exports:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(owner) | set(exports) | set(importlib.import_module(package).__dict__))

    return __getattr__, __dir__, sorted(owner)
