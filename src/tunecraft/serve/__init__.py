"""Serving: a FastAPI app for a run folder, with micro-batching, limits, auth, metrics and feedback."""

from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name):
    # the app imports torch and FastAPI; the settings alone stay light (the command line reads them)
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
