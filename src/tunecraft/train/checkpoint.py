"""Atomic, resumable checkpoints: trainable weights (safetensors), optimizer, scheduler, RNG, loop state."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..io import write_folder
from ..runs import reading

STATE = "trainer_state.json"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise RuntimeError(f"checkpoint has parameters the model lacks: {missing[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def save_weights(target: Path, weights: dict[str, torch.Tensor]) -> None:
    """`weights`: trainable_state(model), or sharded.trainable_weights under FSDP."""
    write_folder(target, lambda d: save_file(weights, d / "trainable.safetensors"))


def read_weights(source: Path) -> dict[str, torch.Tensor]:
    return load_file(source / "trainable.safetensors")


def load_weights(source: Path, model: torch.nn.Module) -> None:
    load_trainable_state(model, read_weights(source))


def save_checkpoint(target: Path, weights: dict[str, torch.Tensor], optimizer_state: dict, scheduler,
                    state: dict) -> None:
    """Full (unsharded) tensors only, as one process holds them: see sharded.trainable_weights and
    sharded.optimizer_state, which gather them under FSDP."""
    def write(d: Path) -> None:
        save_file(weights, d / "trainable.safetensors")
        torch.save(optimizer_state, d / "optimizer.pt")
        torch.save(scheduler.state_dict(), d / "scheduler.pt")
        rng = {"python": random.getstate(), "torch": torch.get_rng_state().tolist()}
        if torch.cuda.is_available():
            rng["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
        (d / "rng.json").write_text(json.dumps(rng))
        (d / STATE).write_text(json.dumps(state, indent=2))

    write_folder(target, write)


def load_checkpoint(source: Path, scheduler) -> tuple[dict, dict, dict]:
    """Restore the scheduler and the RNG; return (trainable weights, optimizer state, loop state) for the
    caller to load into the model and optimizer (sharded.load_weights_into, sharded.load_optimizer_state).
    Nothing is unpickled (weights_only loading)."""
    with reading(source / "trainable.safetensors", "checkpoint's weights"):
        weights = read_weights(source)
    with reading(source / "optimizer.pt", "checkpoint's optimizer state"):
        optimizer_state = torch.load(source / "optimizer.pt", weights_only=True)
    with reading(source / "scheduler.pt", "checkpoint's scheduler state"):
        scheduler.load_state_dict(torch.load(source / "scheduler.pt", weights_only=True))
    with reading(source / "rng.json", "checkpoint's random state"):
        rng = json.loads((source / "rng.json").read_text())
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
        torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in rng["cuda"]])
    with reading(source / STATE, "checkpoint's loop state"):
        return weights, optimizer_state, json.loads((source / STATE).read_text())


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("step-*"), key=lambda p: int(p.name.split("-")[1])) if folder.is_dir() else []
    return found[-1] if found else None


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Keep the newest `keep` step checkpoints, and no leftovers of unfinished writes."""
    found = sorted(folder.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    remove_unfinished(folder)


def remove_unfinished(folder: Path) -> list[Path]:
    """Clear what a process killed inside io.write_folder left behind: a `.<name>-old` whose <name> is gone
    is the last complete copy and goes back into place; every other dot-folder (a half-written temporary
    one) is removed. Returns the removed folders."""
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not (path.name.startswith(".") and path.is_dir()):
            continue
        if path.name.endswith("-old") and not (folder / path.name[1:-4]).exists():
            os.replace(path, folder / path.name[1:-4])
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
