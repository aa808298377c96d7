"""How `tunecraft studio` runs (light: the command line reads these without torch)."""

from __future__ import annotations

from pydantic import Field

from ..serve.settings import ServeSettings
from ..settings import Strict, borrow


class StudioSettings(Strict):
    """The settings of one studio; `tunecraft studio`'s options are generated from these fields."""

    runs: str = "runs"
    """The folder of run folders the studio shows, and where runs launched from it are written (output_dir)."""
    recipes: str = "recipes"
    """The folder of recipes offered on the launch page."""
    host: str = "127.0.0.1"
    """The address to bind (loopback by default: the studio launches processes; 0.0.0.0 only with --api-key)."""
    port: int = Field(7860, ge=0, le=65535)
    """The port to listen on."""
    allowed_hosts: list[str] = borrow(ServeSettings, "allowed_hosts")
    data: list[str] = ["data"]
    """Folders a launch may read data from, beside the recipes and runs folders (a recipe naming a file or
    folder elsewhere is refused, 403). Repeated."""
    allow_code_rewards: bool = False
    """Let launches use `task.rewards[].function` rewards, which import and run Python code (refused otherwise)."""
    api_key: str | None = None
    """Require this key on every page and call (X-API-Key, Authorization: Bearer, or the key form's cookie); the
    command line's default is $TUNECRAFT_API_KEY, else no key."""
    max_body_bytes: int = borrow(ServeSettings, "max_body_bytes")
    body_timeout: float = borrow(ServeSettings, "body_timeout")
    loaded_models: int = Field(2, ge=1)
    """Runs kept loaded for "try it" at once (the least recently used is unloaded)."""
