"""Datasets: a registry of named text-classification datasets with a common ``id``/``text``/``label`` schema."""

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
    "DatasetNotAvailableError",
    "DatasetSpec",
    "get_data_dir",
    "get_dataset_spec",
    "list_datasets",
    "load_dataset_by_name",
    "register_dataset",
    "subsample_splits",
]
