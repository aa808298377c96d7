"""The causal-LM variant formats: torchao weight-only (a transformers folder whose config.json carries the
quantization) and GGUF (one file, read back by transformers' GGUF loader). `runs/formats.py` FORMATS points here."""

from __future__ import annotations

from pathlib import Path

import torch

from .variant import write_variant

INT4_GROUP = 32  # SmolLM2's widths (576, 1536) split into groups of 32, not of 128


def _torchao_config(name: str):
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerGroup

    if name == "int8":
        return Int8WeightOnlyConfig()
    return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(INT4_GROUP))


def make_torchao(source, target: Path, name: str, overwrite: bool) -> dict:
    """Quantize model/'s Linear weights with torchao through transformers' TorchAoConfig, so the folder's
    config.json records the quantization and a plain `from_pretrained` loads it back."""
    from transformers import AutoModelForCausalLM, TorchAoConfig

    model = AutoModelForCausalLM.from_pretrained(str(source.path), dtype=torch.float32,
                                                 quantization_config=TorchAoConfig(_torchao_config(name)))

    def write(tmp: Path) -> dict:
        model.save_pretrained(tmp)
        return {"quantization": {"library": "torchao", "scheme": name,
                                 **({"group_size": INT4_GROUP} if name == "int4" else {})}}

    write_variant(target, source, "torchao", write, overwrite)
    return {}


def make_gguf(source, target: Path, gguf_type: str, overwrite: bool) -> dict:
    from ..export.gguf_file import write_gguf

    def write(tmp: Path) -> dict:
        write_gguf(source.model, source.tokenizer, tmp / "model.gguf", gguf_type, name=source.path.parent.name)
        return {"gguf": {"file": "model.gguf", "type": gguf_type}}

    write_variant(target, source, "gguf", write, overwrite)
    return {}


def load(folder: Path, meta: dict):
    """The model of a torchao or GGUF variant folder (runs/formats.py FORMATS points here)."""
    if meta["format"] == "gguf":
        from ..export.gguf_file import load_gguf

        return load_gguf(folder / meta["gguf"]["file"])[0]
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder))
