"""Datasets: a registry of named text-classification datasets with a common ``id``/``text``/``label`` schema, loading
of any other data (files, folders, ``save_to_disk`` folders, Hub ids) into that schema, class labels aligned to a
model's, multi-task mixing, and tokenisation / collation for models with different tokenizers."""

from typing import TYPE_CHECKING

from .._lazy import attach

_EXPORTS = {
    "balance": ["balanced_binary_subsample"],
    "arguments": ["DatasetArguments", "TaskDataSpec", "task_name_of", "unique_task_names"],
    "labels": ["align_labels", "encode_labels", "label_names_of", "model_label_names"],
    "loading": ["load_text_classification"],
    "multitask": ["TASK_COLUMN", "MultiTaskBatchSampler", "concatenate_tasks", "task_probabilities"],
    "processing": ["TEACHER_PREFIX", "MultiTokenizerCollator", "tokenize_for_models"],
    "registry": [
        "DATA_DIR_ENV",
        "SPLITS",
        "DatasetNotAvailableError",
        "DatasetSpec",
        "get_data_dir",
        "get_dataset_spec",
        "list_datasets",
        "load_dataset_by_name",
        "register_dataset",
        "subsample_splits",
    ],
}
__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .arguments import DatasetArguments, TaskDataSpec, task_name_of, unique_task_names
    from .balance import balanced_binary_subsample
    from .labels import align_labels, encode_labels, label_names_of, model_label_names
    from .loading import load_text_classification
    from .multitask import TASK_COLUMN, MultiTaskBatchSampler, concatenate_tasks, task_probabilities
    from .processing import TEACHER_PREFIX, MultiTokenizerCollator, tokenize_for_models
    from .registry import (
        DATA_DIR_ENV,
        SPLITS,
        DatasetNotAvailableError,
        DatasetSpec,
        get_data_dir,
        get_dataset_spec,
        list_datasets,
        load_dataset_by_name,
        register_dataset,
        subsample_splits,
    )
