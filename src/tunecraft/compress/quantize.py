"""Dynamic int8 quantization of every nn.Linear for CPU (PyTorch eager mode), saved as int8 safetensors.

Backend: `torch.ao.quantization.quantize_dynamic` with per-channel int8 weights (fbgemm kernels). torch 2.13
marks eager-mode torch.ao quantization deprecated in favour of torchao; torchao 0.18 was not adopted here
(its int8 paths target torch.compile/GPU), so this module is the one place to change when torch.ao goes.
The packed weights cannot go to safetensors, so the folder stores each Linear's int8 weight with its
per-channel scales and zero points, and `load` rebuilds the quantized modules from them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification

from ..models import TrainedModel
from .settings import QuantizeSettings
from .variant import write_variant

FORMAT = "torch-int8"
WEIGHTS = "model.int8.safetensors"


def _quantize(model: nn.Module, per_channel: bool) -> nn.Module:
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with warnings.catch_warnings():
        # the eager-mode deprecation notice (see the module docstring); it still runs in torch 2.13
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
        return quantize_dynamic(model, {nn.Linear: qconfig}, dtype=torch.qint8)


class Int8Model(nn.Module):
    """A dynamically quantized model; its forward runs without autocast (int8 kernels take fp32 input)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, **inputs):
        with torch.autocast("cpu", enabled=False):
            return self.model(**inputs)


def make(source: TrainedModel, target: Path, settings: QuantizeSettings, overwrite: bool = False) -> dict:
    """Quantize `source`'s Linear layers to int8 and write the variant folder."""
    import copy

    quantized = _quantize(copy.deepcopy(source.model).float().eval(), settings.per_channel)

    def write(tmp: Path) -> dict:
        state = {}
        linear_names = set()
        for name, module in quantized.named_modules():
            if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
                weight, bias = module._weight_bias()
                linear_names.add(name)
                state[f"{name}.weight"] = weight.int_repr().contiguous()
                if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                    state[f"{name}.weight_scale"] = weight.q_per_channel_scales().float()
                    state[f"{name}.weight_zero_point"] = weight.q_per_channel_zero_points().to(torch.int32)
                else:
                    state[f"{name}.weight_scale"] = torch.tensor([weight.q_scale()], dtype=torch.float32)
                    state[f"{name}.weight_zero_point"] = torch.tensor([weight.q_zero_point()], dtype=torch.int32)
                if bias is not None:
                    state[f"{name}.bias"] = bias.detach().float().contiguous()
        for name, tensor in quantized.state_dict().items():
            if isinstance(tensor, torch.Tensor) and not tensor.is_quantized and \
                    name.rsplit(".", 1)[0] not in linear_names and "_packed_params" not in name:
                state[name] = tensor.detach().contiguous().clone()
        save_file(state, tmp / WEIGHTS)
        source.model.config.save_pretrained(tmp)
        return {"quantization": {"backend": "torch.ao dynamic (fbgemm)", "dtype": "qint8",
                                 "per_channel": settings.per_channel, "modules": sorted(linear_names)}}

    write_variant(target, source, FORMAT, write, overwrite)
    return {"quantized_linear_layers": sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
                                           for m in quantized.modules())}


def load(folder: Path, meta: dict) -> nn.Module:
    config = AutoConfig.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_config(config).eval()
    settings = meta["quantization"]
    model = _quantize(model, settings["per_channel"])
    state = load_file(folder / WEIGHTS)
    modules = dict(model.named_modules())
    for name in settings["modules"]:
        int8 = state.pop(f"{name}.weight")
        scale, zero = state.pop(f"{name}.weight_scale"), state.pop(f"{name}.weight_zero_point")
        if settings["per_channel"]:
            weight = torch._make_per_channel_quantized_tensor(int8, scale.double(), zero.long(), 0)
        else:
            weight = torch._make_per_tensor_quantized_tensor(int8, float(scale[0]), int(zero[0]))
        modules[name].set_weight_bias(weight, state.pop(f"{name}.bias", None))
    # everything else is plain float tensors: copy them into the model's parameters and buffers
    quantized = set(settings["modules"])
    targets = {k: v for k, v in model.state_dict(keep_vars=True).items()
               if isinstance(v, torch.Tensor) and not v.is_quantized and "_packed_params" not in k
               and k.rsplit(".", 1)[0] not in quantized}
    missing = sorted(set(targets) - set(state))
    unexpected = sorted(set(state) - set(targets))
    if missing or unexpected:
        raise RuntimeError(f"{folder / WEIGHTS}: weights do not fit the model (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
    with torch.no_grad():
        for name, value in state.items():
            targets[name].copy_(value)
    return Int8Model(model).eval()
