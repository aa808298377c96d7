"""Compression of a fine-tuned run: distillation, pruning, int8 quantization, ONNX export, and the
measured trade-off report. One module per job (distill, prune, quantize, onnx_export), each with a
settings class; `variant` holds what their output folders share, `bench` the measurement, `job` the command."""

__all__ = ["ALL", "Options", "compress", "parse_variants"]


def __getattr__(name):
    # the command (job.py) loads trained runs; loading a variant folder needs only variant.py and its format
    # module, so importing the package must not import the command
    if name in __all__:
        from . import job

        return getattr(job, name)
    raise AttributeError(name)
