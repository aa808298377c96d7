"""Continual-learning metrics over the accuracy matrix R[i][j] (task j's test accuracy after training task i)."""

from __future__ import annotations

Matrix = list[list[float | None]]
"""R[i][j]; None where task j cannot be scored after task i (the adapters strategy has no adapter for it yet)."""


def average_accuracy(R: Matrix) -> float:
    """Mean test accuracy over all tasks after the last one: (1/T) Σ_j R[T-1][j]."""
    return sum(R[-1]) / len(R[-1])


def backward_transfer(R: Matrix) -> float | None:
    """GEM (Lopez-Paz & Ranzato 2017): (1/(T-1)) Σ_{j<T-1} (R[T-1][j] − R[j][j]); negative = forgetting."""
    T = len(R)
    if T < 2:
        return None
    return sum(R[-1][j] - R[j][j] for j in range(T - 1)) / (T - 1)


def forgetting_per_task(R: Matrix) -> list[float]:
    """Chaudhry et al. 2018: f_j = max_{k in [j, T-2]} R[k][j] − R[T-1][j], for every task j but the last
    (the best accuracy task j ever had after it was learned, minus its accuracy at the end)."""
    T = len(R)
    return [max(R[k][j] for k in range(j, T - 1)) - R[-1][j] for j in range(T - 1)]


def average_forgetting(R: Matrix) -> float | None:
    per_task = forgetting_per_task(R)
    return sum(per_task) / len(per_task) if per_task else None


def summarize(R: Matrix) -> dict:
    return {"average_accuracy": average_accuracy(R), "backward_transfer": backward_transfer(R),
            "forgetting": average_forgetting(R), "forgetting_per_task": forgetting_per_task(R)}
