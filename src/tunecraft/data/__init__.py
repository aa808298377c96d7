"""Data: readers (csv, tsv, jsonl, parquet, bundled), label maps, splits, tokenization, batching."""

from .dataset import (
    BundledSets,
    ClassificationData,
    LabelMap,
    TaskData,
    bundled_or_file,
    load_classification_data,
    load_eval_examples,
)
from .readers import Example, read_examples

__all__ = [
    "BundledSets",
    "TaskData",
    "bundled_or_file",
    "ClassificationData",
    "Example",
    "LabelMap",
    "load_classification_data",
    "load_eval_examples",
    "read_examples",
]
