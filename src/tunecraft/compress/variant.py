"""What every compressed variant shares: an atomically written model folder, its format, sizes (which module loads
each format: runs/formats.py)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from pathlib import Path

from ..io import refuse_existing, write_folder, write_json
from ..models import TrainedModel
from ..runs import META, run_model_dir


def write_variant(target: Path, source: TrainedModel, fmt: str, write: Callable[[Path], dict],
                  overwrite: bool) -> Path:
    """Write a variant model folder atomically: `write(tmp)` puts the weights there and returns the meta
    additions; the processor (the tokenizer, for text) and the source's meta (labels, columns, max_length) are
    copied alongside."""
    refuse_existing(target, overwrite)

    def fill(tmp: Path) -> None:
        extra = write(tmp)
        if source.processor is not None:
            source.processor.save_pretrained(tmp)
        write_json(tmp / META, {**source.meta, "format": fmt, "compressed_from": str(source.path), **extra})

    return write_folder(target, fill)


def update_meta(folder: Path, **changes) -> None:
    """Add keys to a model folder's tunecraft.json (e.g. the format of a model a training run exported)."""
    folder = run_model_dir(folder)
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    write_json(folder / META, {**meta, **changes})


def weight_files(folder: Path) -> list[Path]:
    folder = run_model_dir(folder)
    return sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".onnx", ".data", ".bin", ".gguf"))


def size_mb(folder: Path) -> float:
    """Size on disk of the model's weight files (tokenizer and config excluded), in MB (10^6 bytes)."""
    return sum(p.stat().st_size for p in weight_files(folder)) / 1e6


def gzip_mb(folder: Path) -> float:
    """The weight files' size after zlib (level 1): where unstructured sparsity does shrink a model."""
    total = 0
    for path in weight_files(folder):
        packer = zlib.compressobj(1)
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                total += len(packer.compress(chunk))
        total += len(packer.flush())
    return total / 1e6


def count_params(folder: Path) -> int:
    """Parameters stored in the weight files: int8 weights count once; quantization scales and zero points,
    and ONNX shape constants, are not counted."""
    total = 0
    for path in weight_files(folder):
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as fh:
                total += sum(_numel(fh.get_slice(name).get_shape()) for name in fh.keys()
                             if not name.endswith(SCALE_SUFFIXES))
        elif path.suffix == ".onnx":
            import onnx

            weights = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                       onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
            for init in onnx.load(str(path), load_external_data=False).graph.initializer:
                if init.data_type in weights and not init.name.endswith(SCALE_SUFFIXES):
                    total += _numel(init.dims)
    return total


SCALE_SUFFIXES = ("_scale", "_zero_point")


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
