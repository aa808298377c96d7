"""Compression of a fine-tuned run: distillation, pruning, int8 quantization, ONNX export, and the
measured trade-off report. One module per job (distill, prune, quantize, onnx_export), each with a
settings class; `variant` holds what their output folders share, `bench` the measurement, `job` the command."""

from .job import ALL, Options, compress, parse_variants

__all__ = ["ALL", "Options", "compress", "parse_variants"]
