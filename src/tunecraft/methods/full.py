"""full: every parameter is trained."""

from typing import Literal

from .base import Method, MethodSettings


class FullConfig(MethodSettings):
    name: Literal["full"] = "full"


class Full(Method):
    name = "full"
    Config = FullConfig

    def apply(self, model, cfg, task):
        model.requires_grad_(True)
        return model
