"""The step plug-ins a training config turns on: label smoothing, R-Drop, FGM/PGD adversarial training.

Each is a `StepPlugin` (tunecraft/plugins.py): a term added to the summed task loss before backward, or extra
forward/backward passes after it. Logits of shape [..., classes] with labels of shape [...] and -100 for
ignored positions cover sequence and token classification alike.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..plugins import StepPlugin

IGNORE = -100


def _inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


def _flat(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of the positions that count (labels != -100), as [n, classes] and [n]."""
    logits, labels = logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1)
    keep = labels != IGNORE
    return logits[keep], labels[keep]


class LabelSmoothing(StepPlugin):
    """Adds eps * (mean_k -log p_k - (-log p_y)) per term, so that task CE + this term is exactly
    torch's `cross_entropy(..., label_smoothing=eps)`, summed."""

    def __init__(self, eps: float):
        self.eps = eps

    def loss(self, model, outputs, batch, objective) -> torch.Tensor:
        logits, labels = _flat(outputs.logits, batch["labels"])
        logp = F.log_softmax(logits, dim=-1)
        uniform = -logp.mean(dim=-1)
        gold = -logp.gather(1, labels[:, None]).squeeze(1)
        return self.eps * (uniform - gold).sum()


def symmetric_kl_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(KL(p_a || p_b) + KL(p_b || p_a)) / 2, summed over rows, from logits [n, classes]."""
    la, lb = F.log_softmax(a.float(), dim=-1), F.log_softmax(b.float(), dim=-1)
    kl_ab = (la.exp() * (la - lb)).sum(-1)
    kl_ba = (lb.exp() * (lb - la)).sum(-1)
    return 0.5 * (kl_ab + kl_ba).sum()


class RDrop(StepPlugin):
    """R-Drop (Liang et al. 2021): a second forward pass with fresh dropout; the loss becomes the mean of
    the two passes' CE plus alpha times their symmetric KL. With dropout 0 the passes agree and the term is 0."""

    def __init__(self, alpha: float):
        self.alpha = alpha
        self.last_kl: float | None = None  # the KL sum of the last micro-batch

    def loss(self, model, outputs, batch, objective) -> torch.Tensor:
        second = model(**_inputs(batch))
        first_ce = objective.loss_sum(outputs, batch)
        second_ce = objective.loss_sum(second, batch)
        a, _ = _flat(outputs.logits, batch["labels"])
        b, _ = _flat(second.logits, batch["labels"])
        kl = symmetric_kl_sum(a, b)
        self.last_kl = float(kl.detach())
        return 0.5 * (second_ce - first_ce) + self.alpha * kl


class EmbeddingAdversary(StepPlugin):
    """FGM (Miyato et al. 2017) and PGD (Madry et al. 2018) on the word-embedding *output*, per example.

    The embedding weights are never written: a forward hook adds a perturbation r to the embedding layer's
    output during the adversarial passes only, so frozen embeddings (LoRA, freeze) work too, and after the
    step the model is exactly what it was. On the clean pass the hook adds a zero leaf tensor whose
    gradient is dL/d(embeddings); FGM takes r = epsilon * g / ||g|| per example; PGD takes `steps` steps of
    size alpha along g / ||g||, projecting r back into the epsilon ball, and only the last step's loss is
    backpropagated into the parameters (the others only into r).
    """

    def __init__(self, method: str, epsilon: float, alpha: float = 0.3, steps: int = 1, weight: float = 1.0):
        self.method, self.epsilon, self.alpha = method, epsilon, alpha
        self.steps = 1 if method == "fgm" else steps
        self.weight = weight
        self.handle = None
        self.module = None
        self.probe: torch.Tensor | None = None  # zero leaf added on the clean pass
        self.delta: torch.Tensor | None = None  # perturbation added on an adversarial pass
        self.last_delta: torch.Tensor | None = None  # for tests and logging: the final r of the last step

    def attach(self, model) -> None:
        module = model.get_input_embeddings()
        if module is self.module:
            return
        if self.handle is not None:
            self.handle.remove()
        self.module, self.handle = module, module.register_forward_hook(self._hook)

    def detach(self) -> None:
        if self.handle is not None:
            self.handle.remove()
        self.handle = self.module = None

    def _hook(self, module, args, output):
        if not (module.training and torch.is_grad_enabled()):
            return None
        if self.delta is not None:
            return output + self.delta.to(output.dtype)
        if self.probe is None:  # the first training pass of a micro-batch (R-Drop's second pass is not)
            self.probe = torch.zeros_like(output, requires_grad=True)
            return output + self.probe
        return None

    @staticmethod
    def _unit(g: torch.Tensor) -> torch.Tensor:
        norm = g.float().flatten(1).norm(dim=1).clamp_min(1e-12)
        return g.float() / norm.view(-1, *([1] * (g.ndim - 1)))

    def _project(self, r: torch.Tensor) -> torch.Tensor:
        norm = r.flatten(1).norm(dim=1).clamp_min(1e-12)
        scale = (self.epsilon / norm).clamp(max=1.0)
        return r * scale.view(-1, *([1] * (r.ndim - 1)))

    def after_backward(self, model, batch, objective, backward: Callable[[torch.Tensor], None]) -> None:
        probe, self.probe = self.probe, None
        if probe is None or probe.grad is None:
            raise RuntimeError("adversarial training: the embedding layer did not take part in the clean pass")
        g = probe.grad.detach()
        mask = batch["attention_mask"].unsqueeze(-1).float()  # padding positions are never perturbed
        inputs = _inputs(batch)
        try:
            if self.method == "fgm":
                r = self.epsilon * self._unit(g) * mask
            else:
                r = torch.zeros_like(g, dtype=torch.float32)
                for _ in range(self.steps - 1):
                    r = self._project(r + self.alpha * self._unit(g)) * mask
                    self.delta = r.detach().requires_grad_(True)
                    loss = objective.loss_sum(model(**inputs), batch)
                    (g,) = torch.autograd.grad(loss, self.delta)
                r = self._project(r + self.alpha * self._unit(g)) * mask
            self.delta = r.detach()
            self.last_delta = self.delta
            backward(self.weight * objective.loss_sum(model(**inputs), batch))
        finally:
            self.delta = None


def config_plugins(cfg, model) -> list[StepPlugin]:
    """The plug-ins a TrainConfig turns on, attached to `model` (which may be wrapped)."""
    plugins: list[StepPlugin] = []
    if cfg.label_smoothing:
        plugins.append(LabelSmoothing(cfg.label_smoothing))
    if cfg.rdrop.alpha:
        plugins.append(RDrop(cfg.rdrop.alpha))
    adv = cfg.adversarial
    if adv.method != "none":
        adversary = EmbeddingAdversary(adv.method, adv.epsilon, adv.alpha, adv.steps, adv.weight)
        adversary.attach(getattr(model, "module", model))  # DDP keeps the model in .module
        plugins.append(adversary)
    return plugins
