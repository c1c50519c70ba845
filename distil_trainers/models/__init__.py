from typing import TYPE_CHECKING

from .._lazy import attach

_EXPORTS = {
    "multitask": ["MultiTaskConfig", "MultiTaskModel"],
    "paths": ["packaged_model_path", "resolve_model_name_or_path"],
    "students": ["make_student"],
}
__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .multitask import MultiTaskConfig, MultiTaskModel
    from .paths import packaged_model_path, resolve_model_name_or_path
    from .students import make_student
