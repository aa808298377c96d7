"""FSDP (accelerate's FSDP2): the one place that knows each process holds only shards of the parameters and
of the optimizer state. Checkpoints and the exported model always hold full (unsharded) tensors in the layout
of a one-process run, so a run saved by N processes, sharded or not, resumes on M. Saving gathers the shards
(a collective: every process calls these functions, process 0 gets the tensors, on the CPU); loading gives
every process the full tensors and keeps its own shard."""

from __future__ import annotations

import copy
import os

import torch
from accelerate.utils import DistributedType

from ..errors import TunecraftError
from .checkpoint import load_trainable_state, trainable_state

# methods whose models were trained and checked under FSDP (the others change the model during training,
# or keep state outside its parameters, that these functions do not gather)
FSDP_METHODS = ("full", "lora")


def fsdp_requested() -> bool:
    """`accelerate launch` with an FSDP config (it sets this for every process)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_fsdp_on_cpu(acc) -> None:
    """Without a GPU accelerate turns an FSDP launch into DDP over gloo (MULTI_CPU) without a word. torch's
    FSDP2 (`fully_shard`) runs on CPU over gloo, so switch the state to accelerate's FSDP2 path, the one a GPU
    launch takes: the same preparation, gradient clipping and no_sync."""
    if acc.distributed_type != DistributedType.MULTI_CPU or not fsdp_requested():
        return
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()  # from the launch's FSDP_* variables
    if plugin.fsdp_version != 2:
        raise TunecraftError("FSDP on CPU needs fsdp_version: 2 in the accelerate config (torch's fully_shard); "
                             "see recipes/accelerate/cpu-fsdp-2proc.yaml")
    from accelerate.state import PartialState

    acc.state.distributed_type = DistributedType.FSDP
    acc.state.fsdp_plugin = plugin
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as AcceleratorState does on GPU


def is_sharded(acc) -> bool:
    return acc.distributed_type == DistributedType.FSDP


def refuse_under_fsdp(config, generative: bool, extras: list) -> None:
    """Before the run folder is touched: what these functions do not cover under FSDP. `extras`: the caller's
    step plug-ins (distillation, pruning masks and the like change or read the model outside the step)."""
    if config.method.name not in FSDP_METHODS:
        raise TunecraftError(f"method '{config.method.name}' is not supported under FSDP (only "
                             f"{', '.join(FSDP_METHODS)}); use a DDP config such as recipes/accelerate/gpu-ddp.yaml")
    if extras or config.train.adversarial.method != "none":
        raise TunecraftError("FSDP: step plug-ins (distillation, pruning masks, regularisers) and "
                             "train.adversarial are not supported under FSDP; use a DDP config")
    if generative and config.task.generation.eval_samples:
        # generation is process 0's alone, and under FSDP every forward needs every process
        raise TunecraftError("FSDP: held-out generation is not supported under FSDP; set "
                             "task.generation.eval_samples=0 (perplexity only) or use a DDP config")


def prepare_for_sharding(acc, model: torch.nn.Module) -> torch.nn.Module | None:
    """Before acc.prepare: pick the blocks to wrap and return (on process 0) an unsharded CPU copy of the
    model, into which `unsharded` loads the trained weights for the export. None when not sharded."""
    if not is_sharded(acc):
        return None
    if not acc.is_fsdp2:
        raise TunecraftError("tunecraft supports FSDP2 only: set fsdp_version: 2 in the accelerate config "
                             "(recipes/accelerate/fsdp.yaml)")
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    plugin = acc.state.fsdp_plugin
    if plugin.auto_wrap_policy is transformer_auto_wrap_policy and plugin.transformer_cls_names_to_wrap is None:
        # accelerate wraps the classes in _no_split_modules, then the input embedding on its own; BERT lists
        # BertEmbeddings there, and sharding its word embeddings a second time fails: wrap the blocks only
        embed = model.get_input_embeddings()
        holders = {type(m).__name__ for m in model.modules() if any(c is embed for c in m.modules())}
        plugin.transformer_cls_names_to_wrap = [n for n in getattr(model, "_no_split_modules", None) or []
                                                if n not in holders]
    return copy.deepcopy(model) if acc.is_main_process else None


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def trainable_weights(acc, model) -> dict[str, torch.Tensor] | None:
    """The trainable parameters, full, on the CPU: on process 0 (None elsewhere under FSDP)."""
    if not is_sharded(acc):
        return trainable_state(acc.unwrap_model(model)) if acc.is_main_process else None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    # frozen parameters (a LoRA base) are not gathered
    full = get_model_state_dict(model, options=_options(cpu_offload=True, ignore_frozen_params=True))
    if not acc.is_main_process:
        return None
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return {n: full[n].contiguous().clone() for n in names}


def load_weights_into(acc, model, weights: dict[str, torch.Tensor]) -> None:
    """Full trainable weights (as trainable_weights returns them) into the model; every process calls it."""
    if not is_sharded(acc):
        load_trainable_state(acc.unwrap_model(model), weights)
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    params = {n for n, _ in model.named_parameters()}
    missing = [n for n in weights if n not in params]
    if missing:
        raise RuntimeError(f"checkpoint has parameters the model lacks: {missing[:3]}")
    set_model_state_dict(model, dict(weights), options=_options(strict=False))


def _order(model, optimizer) -> list[str]:
    """The optimizer's parameters by name, in the order optimizer.state_dict() numbers them."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def optimizer_state(acc, model, optimizer) -> dict | None:
    """optimizer.state_dict() as a one-process run writes it (state by parameter number), full tensors."""
    if not is_sharded(acc):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    full = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))
    if not acc.is_main_process:
        return None
    number = {name: i for i, name in enumerate(_order(model, optimizer))}
    return {"state": {number[name]: value for name, value in full["state"].items()},
            "param_groups": [{**g, "params": [number[name] for name in g["params"]]} for g in full["param_groups"]]}


def load_optimizer_state(acc, model, optimizer, saved: dict) -> None:
    if not is_sharded(acc):
        optimizer.load_state_dict(saved)
        return
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    order = _order(model, optimizer)
    by_name = {"state": {order[i]: value for i, value in saved["state"].items()},
               "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in saved["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, by_name, options=_options())


def unsharded(acc, model, spare: torch.nn.Module | None) -> torch.nn.Module | None:
    """The model to export: under FSDP the full state gathered into `spare` (process 0's copy from
    prepare_for_sharding; None elsewhere), otherwise the model itself."""
    if not is_sharded(acc):
        return acc.unwrap_model(model, keep_fp32_wrapper=False)
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    full = get_model_state_dict(model, options=_options(cpu_offload=True))
    if spare is not None:
        spare.load_state_dict(full)
    return spare
