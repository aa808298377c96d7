"""Run folders: the one `RunFolder` type (paths, the config read through the schema, summary, metrics, meta),
the run header of the recipes (`RunRecipe`) and the model-format registry that compress registers into. A leaf:
imports nothing of tunecraft but `errors` and `settings`."""

from .folder import (
    ADAPTER,
    CHECKPOINTS,
    CONFIG,
    GENERATIONS,
    META,
    METRICS,
    MODEL,
    PLOTS,
    PREDICTIONS,
    REPORT,
    REPORT_HTML,
    SAFE_LOADER,
    SUMMARY,
    RunFolder,
    read_meta,
    run_model_dir,
    run_task,
)
from .formats import FORMATS, TRANSFORMERS, load_model, register_format
from .reading import READ_ERRORS, reading
from .recipe import RunRecipe

__all__ = ["ADAPTER", "CHECKPOINTS", "CONFIG", "FORMATS", "GENERATIONS", "META", "METRICS", "MODEL", "PLOTS",
           "PREDICTIONS", "READ_ERRORS", "REPORT", "REPORT_HTML", "SAFE_LOADER", "SUMMARY", "TRANSFORMERS",
           "RunFolder", "RunRecipe", "load_model", "read_meta", "reading", "register_format", "run_model_dir",
           "run_task"]
