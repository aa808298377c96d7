"""Knowledge distillation: a smaller student learns from a fine-tuned teacher run in the ordinary training
loop, through one extra loss term (temperature-scaled KL between the logits) next to the hard-label loss."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForSequenceClassification

from ..errors import ConfigError
from ..methods.base import transformer_layers
from ..models import TrainedModel
from ..runtime.inference import autocast_context
from .prune import keep_layers
from .settings import DistillSettings


def student_layers(teacher_layers: int, settings: DistillSettings) -> list[int]:
    if settings.layers >= teacher_layers:
        raise ConfigError(f"distill layers={settings.layers}: the student must have fewer layers than the "
                          f"teacher ({teacher_layers})")
    if settings.layer_map is not None:
        if len(settings.layer_map) != settings.layers:
            raise ConfigError(f"distill layer_map has {len(settings.layer_map)} entries for "
                              f"layers={settings.layers}")
        return list(settings.layer_map)
    step = teacher_layers / settings.layers
    return [int(i * step) for i in range(settings.layers)]


def build_student(teacher: TrainedModel, settings: DistillSettings) -> tuple[nn.Module, dict]:
    """A copy of the teacher cut to `settings.layers` layers, or a fresh model of that size."""
    count = len(transformer_layers(teacher.model))
    indices = student_layers(count, settings)
    if settings.init == "teacher":
        student = keep_layers(copy.deepcopy(teacher.model).float(), indices)
        return student, {"init": "teacher", "teacher_layers": indices}
    config = copy.deepcopy(teacher.model.config)
    config.num_hidden_layers = settings.layers
    return AutoModelForSequenceClassification.from_config(config), {"init": "scratch"}


class DistillationLoss:
    """Loss term for the training loop: weight · T² · KL(teacher_T ‖ student_T), summed over the batch's
    examples, as task.loss_sum is (so gradient accumulation scales it the same way)."""

    def __init__(self, teacher: nn.Module, temperature: float, weight: float, dtype: torch.dtype | None):
        self.teacher = teacher.eval()
        self.temperature, self.weight, self.dtype = temperature, weight, dtype

    def __call__(self, model, outputs, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        device = inputs["input_ids"].device
        self.teacher.to(device)
        with torch.no_grad(), autocast_context(device, self.dtype):
            target = self.teacher(**inputs).logits.float()
        t = self.temperature
        kl = F.kl_div(F.log_softmax(outputs.logits.float() / t, dim=-1), F.log_softmax(target / t, dim=-1),
                      log_target=True, reduction="sum")
        return self.weight * t * t * kl
