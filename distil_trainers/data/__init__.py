"""Datasets: a registry of named text-classification datasets with a common ``id``/``text``/``label`` schema,
multi-task mixing, and tokenisation / collation for models with different tokenizers."""

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
    "DatasetNotAvailableError",
    "DatasetSpec",
    "MultiTaskBatchSampler",
    "MultiTokenizerCollator",
    "concatenate_tasks",
    "get_data_dir",
    "get_dataset_spec",
    "list_datasets",
    "load_dataset_by_name",
    "register_dataset",
    "subsample_splits",
    "task_probabilities",
    "tokenize_for_models",
]
