"""Serving: a FastAPI app for a run folder, with micro-batching, limits, auth, metrics and feedback."""

from .app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
