"""Compression of a fine-tuned run: distillation, pruning, int8 quantization, ONNX export, and the
measured trade-off report. One module per job (distill, prune, quantize, onnx_export); their settings
classes in `settings` (light, for the command line); `variant` holds what their output folders share,
`bench` the measurement, `job` the command."""

from .settings import Options

__all__ = ["ALL", "Options", "compress", "parse_variants"]


def __getattr__(name):
    # the jobs import torch and load trained runs; the settings alone stay light (the command line reads them),
    # and loading a variant folder needs only variant.py and its format module, not the command
    if name in ("ALL", "compress", "parse_variants"):
        from . import job

        return getattr(job, name)
    raise AttributeError(name)
