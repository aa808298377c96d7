"""adapter: Houlsby bottleneck adapters (Houlsby et al. 2019). A small down-projection, non-linearity and
up-projection added to the output of the attention projection and of the feed-forward block in every layer,
before the residual sum and layer norm; only the adapters, the layer norms and the task head train.
`placement: pfeiffer` keeps only the feed-forward adapter (Pfeiffer et al. 2021). The up-projection starts
at zero, so the untrained model equals the base model."""

from typing import Literal

from pydantic import Field
from torch import nn

from .base import MethodSettings, transformer_layers
from .inserted import InsertedMethod, Wrapper, replace_module

# (after attention, after feed-forward) per architecture family, relative to one transformer block
PLACES = {
    "bert": ("attention.output.dense", "output.dense"),
    "llama": ("self_attn.o_proj", "mlp.down_proj"),
}
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


class AdapterSettings(MethodSettings):
    name: Literal["adapter"] = "adapter"
    size: int = Field(64, ge=1)
    """Bottleneck width."""
    placement: Literal["houlsby", "pfeiffer"] = "houlsby"
    """houlsby: after attention and after the feed-forward block; pfeiffer: after the feed-forward block only."""
    activation: Literal["gelu", "relu", "silu", "tanh"] = "gelu"
    train_layer_norms: bool = True
    places: list[str] | None = None
    """Module paths inside each block whose output gets an adapter; null: the defaults for the architecture."""


class Bottleneck(Wrapper):
    def __init__(self, inner: nn.Module, width: int, size: int, activation: str):
        super().__init__()
        self.inner = inner
        self.down = nn.Linear(width, size)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(size, width)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, *args, **kwargs):
        hidden = self.inner(*args, **kwargs)
        return hidden + self.up(self.act(self.down(hidden)))


class Adapter(InsertedMethod):
    name = "adapter"
    Config = AdapterSettings

    def insert(self, model, cfg):
        places = cfg.places or PLACES.get(model.config.model_type)
        if places is None:
            raise ValueError(f"no default adapter places for model type '{model.config.model_type}'; set "
                             "method.places (module paths inside one transformer block)")
        if cfg.places is None and cfg.placement == "pfeiffer":
            places = places[1:]
        layers = transformer_layers(model)
        prefix = next(n for n, m in model.named_modules() if m is layers)
        for i, layer in enumerate(layers):
            for place in places:
                try:
                    inner = layer.get_submodule(place)
                except AttributeError:
                    raise ValueError(f"method.places: block {i} has no module '{place}'") from None
                width = getattr(inner, "out_features", None) or model.config.hidden_size
                replace_module(model, f"{prefix}.{i}.{place}", Bottleneck(inner, width, cfg.size, cfg.activation))
        model._tunecraft_method_settings = cfg.model_dump()
        return model

    def trainable(self, name, cfg):
        return cfg.train_layer_norms and ("LayerNorm" in name or "layernorm" in name or name.endswith("norm.weight"))
