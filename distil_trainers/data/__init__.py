"""Datasets: a registry of named text-classification datasets with a common ``id``/``text``/``label`` schema, loading
of any other data (files, folders, ``save_to_disk`` folders, Hub ids) into that schema, class labels aligned to a
model's, multi-task mixing, and tokenisation / collation for models with different tokenizers."""

from .labels import align_labels, encode_labels, label_names_of, model_label_names
from .loading import (
    DatasetArguments,
    TaskDataSpec,
    load_text_classification,
    task_name_of,
    unique_task_names,
)
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

__all__ = [
    "DATA_DIR_ENV",
    "SPLITS",
    "TASK_COLUMN",
    "TEACHER_PREFIX",
    "DatasetArguments",
    "DatasetNotAvailableError",
    "DatasetSpec",
    "MultiTaskBatchSampler",
    "MultiTokenizerCollator",
    "TaskDataSpec",
    "align_labels",
    "concatenate_tasks",
    "encode_labels",
    "get_data_dir",
    "get_dataset_spec",
    "label_names_of",
    "list_datasets",
    "load_dataset_by_name",
    "load_text_classification",
    "model_label_names",
    "register_dataset",
    "subsample_splits",
    "task_name_of",
    "task_probabilities",
    "tokenize_for_models",
    "unique_task_names",
]
