"""Offline preference losses as plain functions of completion log-probabilities, one value per pair (or judged
answer). The definitions are TRL 1.16's (DPOTrainer, CPOTrainer's SimPO, ORPOTrainer, KTOTrainer), written
out here because TRL computes them inside its trainers; tests pin each against a hand computation and, where
TRL exposes a callable, against TRL's own function.

Arguments: summed log-probs of the policy (`chosen`, `rejected`) and of the reference (`ref_chosen`,
`ref_rejected`), and completion token counts (`n_chosen`, `n_rejected`), each a tensor with one value per pair.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def dpo(chosen, rejected, ref_chosen, ref_rejected, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO: Rafailov et al. 2023, "Direct Preference Optimization", Eq. 7 (TRL loss_type="sigmoid").
    `label_smoothing` ε > 0 is conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"): the
    label is taken to be flipped with probability ε."""
    logits = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def ipo(chosen, rejected, ref_chosen, ref_rejected, n_chosen, n_rejected, beta: float) -> torch.Tensor:
    """IPO: Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human Preferences",
    Eq. 17, with TRL's per-token normalisation of each log-ratio (confirmed with the IPO authors, says TRL)."""
    delta = (chosen - ref_chosen) / n_chosen.clamp(min=1) - (rejected - ref_rejected) / n_rejected.clamp(min=1)
    return (delta - 1 / (2 * beta)) ** 2


def simpo(chosen, rejected, n_chosen, n_rejected, beta: float, gamma: float) -> torch.Tensor:
    """SimPO: Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward", Eq. 6:
    length-normalised log-probs, a target margin `gamma`, no reference (TRL CPOTrainer loss_type="simpo",
    cpo_alpha=0)."""
    logits = chosen / n_chosen.clamp(min=1) - rejected / n_rejected.clamp(min=1) - gamma / beta
    return -F.logsigmoid(beta * logits)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (Mächler 2012)."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo(chosen, rejected, n_chosen, n_rejected, lam: float) -> torch.Tensor:
    """ORPO: Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model", Eq. 6-7:
    the chosen answer's NLL (mean over its tokens) minus λ · log σ(log odds ratio), with per-token mean
    log-probs (TRL ORPOTrainer, whose `beta` is λ)."""
    avg_c, avg_r = chosen / n_chosen.clamp(min=1), rejected / n_rejected.clamp(min=1)
    log_odds = (avg_c - avg_r) - (log1mexp(avg_c) - log1mexp(avg_r))
    return -avg_c - lam * F.logsigmoid(log_odds)


def kto_kl(policy_mismatched, ref_mismatched) -> torch.Tensor:
    """KTO's reference point z₀: the batch's mean log-ratio on mismatched (prompt, other answer) pairs, clamped
    at 0 and not differentiated (Ethayarajh et al. 2024, §4.1; TRL KTOTrainer)."""
    return (policy_mismatched - ref_mismatched).mean().clamp(min=0).detach()


def kto(logps, ref_logps, desirable, kl, beta: float, desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0) -> torch.Tensor:
    """KTO: Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization", Eq. 7 (TRL
    KTOTrainer loss_type="kto"): 1 - σ(β(r - z₀)) for a desirable answer, 1 - σ(β(z₀ - r)) for an undesirable one,
    each weighted; `desirable` is a bool tensor."""
    ratio = logps - ref_logps
    good = desirable_weight * (1 - torch.sigmoid(beta * (ratio - kl)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (kl - ratio)))
    return torch.where(desirable, good, bad)
