"""The install extras (pyproject.toml [project.optional-dependencies]) and the check a command makes before it
imports one: a missing package is an ImportError naming the extra that brings it."""

from __future__ import annotations

from importlib.util import find_spec

EXTRAS = {
    "serve": ("fastapi", "fastapi_offline", "uvicorn", "prometheus_client"),
    "studio": ("fastapi", "uvicorn"),
    "compress": ("onnx", "onnxscript", "onnxruntime", "torchao"),
    "tune": ("optuna",),
}


def require(extra: str) -> None:
    """Raise ImportError when a package of `extra` is not installed (checked by name, nothing is imported)."""
    missing = [name for name in EXTRAS[extra] if find_spec(name) is None]
    if missing:
        raise ImportError(f"tunecraft {extra} needs the '{extra}' extra (missing: {', '.join(missing)}); install "
                          f"it with: pip install 'tunecraft[{extra}]'")
