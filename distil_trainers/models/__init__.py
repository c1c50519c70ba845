from .multitask import MultiTaskConfig, MultiTaskModel
from .paths import packaged_model_path, resolve_model_name_or_path
from .students import make_student

__all__ = ["MultiTaskConfig", "MultiTaskModel", "make_student", "packaged_model_path", "resolve_model_name_or_path"]
