"""Several LoRA runs of one base model served side by side: the base once in memory, each run's adapter loaded
beside it under the run's serving name (peft's named adapters), chosen per batch by the request's `model`."""

from __future__ import annotations

from pathlib import Path

import torch

from ...errors import TunecraftError
from ...models import TrainedModel, resolve_base
from ...runs import read_meta, run_model_dir


def _base_path(meta: dict) -> str:
    base = meta.get("base_model")
    return str(base) if base and Path(base).is_dir() else str(resolve_base(base))


def _adapter_dir(run: str | Path) -> Path:
    folder = run_model_dir(run).parent / "adapter"
    if not (folder / "adapter_config.json").is_file():
        raise TunecraftError(f"{run}: serving several runs on one base needs LoRA runs with their adapter/ "
                             f"(none in {folder})")
    return folder


def load_adapters(runs: dict[str, str | Path]) -> tuple[TrainedModel, dict[str, dict]]:
    """One peft model holding every run's adapter by name (the first run's tokenizer and folder), and each run's
    meta (tunecraft.json) by name. All runs must share the same base model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    metas = {name: read_meta(run_model_dir(run)) for name, run in runs.items()}
    bases = {name: _base_path(meta) for name, meta in metas.items()}
    first = next(iter(runs))
    for name, base in bases.items():
        if Path(base).resolve() != Path(bases[first]).resolve():
            raise TunecraftError(f"--lora {name}: trained on {base}, but {first} on {bases[first]}; adapters "
                                 "served together must share one base model")
    model = AutoModelForCausalLM.from_pretrained(bases[first], dtype=torch.float32)
    names = iter(runs.items())
    name, run = next(names)
    model = PeftModel.from_pretrained(model, str(_adapter_dir(run)), adapter_name=name)
    for name, run in names:
        model.load_adapter(str(_adapter_dir(run)), adapter_name=name)
    model.eval()
    folder = run_model_dir(runs[first])
    return TrainedModel(model, AutoTokenizer.from_pretrained(str(folder)), metas[first], folder), metas
