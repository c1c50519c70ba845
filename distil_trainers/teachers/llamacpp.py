"""llama-cpp-python on CPUs with Intel AMX: weight repacking off, and an OpenAI-compatible server that does the same.

llama.cpp moves the weights of some quantisation types (Q4_0, Q4_1, Q8_0, ...) into "extra buffer types" at load time
so that its AMX (and other repacked) kernels can use them. With llama-cpp-python 0.3.x on a CPU that reports
``amx_int8``, the first ``llama_decode`` then crashes the interpreter with a segmentation fault (seen with the
packaged SmolLM2-135M-Instruct Q4_1 GGUF: any ``Llama.eval``, ``create_completion`` or ``create_chat_completion``).
Loading the model with ``llama_model_params.use_extra_bufts = False`` (llama.cpp's ``--no-repack``) avoids it; the
weights are then used as stored, which gives the same results with the plain CPU kernels.

llama-cpp-python does not expose that field, so :func:`no_weight_repacking` sets it while a ``Llama`` is constructed
(by wrapping ``llama_cpp.llama_model_default_params``). :func:`repacking_is_safe` is the default rule: repacking stays
on unless the CPU reports AMX.

The same applies to ``python -m llama_cpp.server``; this module runs it with repacking off where needed::

    python -m distil_trainers.teachers.llamacpp --model model.gguf --host 127.0.0.1 --port 8000 --n_ctx 2048

(the arguments are those of ``python -m llama_cpp.server``; ``--repack`` keeps repacking on regardless of the CPU).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

logger = logging.getLogger(__name__)

__all__ = ["cpu_has_amx", "main", "no_weight_repacking", "repacking_is_safe"]


def cpu_has_amx() -> bool:
    """True when ``/proc/cpuinfo`` lists an AMX feature (``amx_int8``, ``amx_bf16`` or ``amx_tile``); False
    elsewhere, including on systems without ``/proc/cpuinfo``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="ignore") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[-1].split())
                    return bool(flags & {"amx_int8", "amx_bf16", "amx_tile"})
    except OSError:
        return False
    return False


def repacking_is_safe() -> bool:
    """Whether llama.cpp's weight repacking (extra buffer types) can stay on here: not on AMX CPUs (see the module
    docstring). ``DISTIL_TRAINERS_LLAMA_REPACK=1`` or ``=0`` overrides the rule."""
    forced = os.environ.get("DISTIL_TRAINERS_LLAMA_REPACK")
    if forced is not None and forced.strip() != "":
        return forced.strip().lower() not in ("0", "false", "no", "off")
    return not cpu_has_amx()


def _patch_default_params():
    """Wrap ``llama_model_default_params`` (in ``llama_cpp.llama_cpp`` and its re-export ``llama_cpp``) so that
    every model loaded afterwards has ``use_extra_bufts = False``. Returns a function that undoes it."""
    import llama_cpp
    import llama_cpp.llama_cpp as low_level

    original = low_level.llama_model_default_params

    def without_extra_buffers():
        params = original()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    low_level.llama_model_default_params = without_extra_buffers
    previous_export = getattr(llama_cpp, "llama_model_default_params", None)
    llama_cpp.llama_model_default_params = without_extra_buffers

    def undo() -> None:
        low_level.llama_model_default_params = original
        if previous_export is not None:
            llama_cpp.llama_model_default_params = previous_export

    return undo


@contextlib.contextmanager
def no_weight_repacking(enabled: bool = True) -> Iterator[None]:
    """Within the block, ``llama_cpp.Llama(...)`` loads models with weight repacking off (``use_extra_bufts=False``).

    Args:
        enabled: False makes the block a no-op (convenient for ``with no_weight_repacking(not repack):``).

    Example::

        with no_weight_repacking(not repacking_is_safe()):
            llm = llama_cpp.Llama(model_path=path, logits_all=True)
    """
    if not enabled:
        yield
        return
    undo = _patch_default_params()
    try:
        yield
    finally:
        undo()


def main(argv: list[str] | None = None) -> None:
    """``python -m llama_cpp.server`` with weight repacking off on AMX CPUs (``--repack`` keeps it on)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    repack = "--repack" in argv
    argv = [a for a in argv if a != "--repack"]
    if not (repack or repacking_is_safe()):
        _patch_default_params()
        logger.warning("AMX CPU: llama.cpp weight repacking is off (see distil_trainers.teachers.llamacpp).")
    from llama_cpp.server.__main__ import main as server_main

    sys.argv = ["llama_cpp.server", *argv]
    server_main()


if __name__ == "__main__":
    main()
