"""Step plug-ins: the one way into the training step.

Everything that reaches into a step is a `StepPlugin`: regularisers (label smoothing, R-Drop), adversarial
training (FGM/PGD), distillation, EWC / LwF / replay penalties, AdaLoRA's budget, pruning masks, a tuning
trial's reporter. The loop calls them in this order, for each micro-batch and then once per optimizer step:

    forward → task.loss_sum + Σ plugin.loss(...) → backward → plugin.after_backward(...)   (each micro-batch)
    clip → optimizer step → plugin.after_step(loop)                                         (each step)

A loss term is a *sum* over the micro-batch's loss terms, like `Objective.loss_sum`, so gradient accumulation
stays exact. `after_step` runs with the gradients still in place (AdaLoRA's importance scores read them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class StepPlugin:
    """Override what the plug-in needs; every hook does nothing by default."""

    def loss(self, model, outputs, batch: dict, objective) -> torch.Tensor | None:
        """A term added to the micro-batch's summed loss before backward (may run extra forward passes)."""
        return None

    def after_backward(self, model, batch: dict, objective, backward: Callable[[torch.Tensor], None]) -> None:
        """Extra forward/backward passes after the micro-batch's backward; `backward(loss_sum)` scales a summed
        loss as the loop does and backpropagates it."""

    def after_step(self, loop) -> None:
        """After each optimizer step (gradients still in place)."""


class LossTerm(StepPlugin):
    """A plug-in from a function `term(model, outputs, batch)` returning a summed loss term."""

    def __init__(self, term: Callable):
        self.term = term

    def loss(self, model, outputs, batch, objective):
        return self.term(model, outputs, batch)


class AfterStep(StepPlugin):
    """A plug-in from a function `hook(loop)` run after each optimizer step."""

    def __init__(self, hook: Callable):
        self.hook = hook

    def after_step(self, loop) -> None:
        self.hook(loop)
