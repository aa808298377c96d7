"""Training: the loop, optimizers and schedules, checkpoints, and the `train` job."""

from .job import train

__all__ = ["train"]
