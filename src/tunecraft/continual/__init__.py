"""Continual learning: a stream of tasks learned one after another, strategies against forgetting, metrics."""

from .recipe import ContinualConfig, build_continual, load_continual
from .strategies import STRATEGIES
from .stream import run_continual

__all__ = ["STRATEGIES", "ContinualConfig", "build_continual", "load_continual", "run_continual"]
