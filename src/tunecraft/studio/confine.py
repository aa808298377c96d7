"""What a studio launch may read: recipes and every file or folder a recipe names must lie in the studio's roots
(its recipes folder, its runs folder, and its data folders: `--data DIR`, repeated), and a reward that imports
and calls Python code (`task.rewards[].function`) needs `--allow-code-rewards`. The studio is driven by whoever
reaches its page: without these, a launch could read any file its process can read, and the reader's error
would show a line of it in the launch log. Refusals name the field and the path, never a file's contents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from ..errors import TunecraftError


class Refused(TunecraftError):
    """A launch the studio does not make (answered 403)."""


class Confinement:
    def __init__(self, roots: list[str | Path], allow_code_rewards: bool = False, cwd: Path | None = None):
        self.cwd = cwd or Path.cwd()
        self.roots = [self.resolve(r) for r in roots]
        self.allow_code_rewards = allow_code_rewards

    def resolve(self, path: str | Path) -> Path:
        """`path` as the launched process sees it (relative paths from its working folder), links resolved."""
        path = Path(path).expanduser()
        return (path if path.is_absolute() else self.cwd / path).resolve()

    def inside(self, path: str | Path) -> bool:
        target = self.resolve(path)
        return any(target.is_relative_to(root) for root in self.roots)

    def where(self) -> str:
        return ", ".join(str(r) for r in self.roots)

    def check_recipe(self, recipe: str | Path) -> None:
        """Refuse a recipe file outside the roots before it is opened."""
        if not self.inside(recipe):
            raise Refused(f"recipe {recipe}: outside the folders this studio launches from ({self.where()}); "
                          "start the studio with --recipes or --data naming its folder")

    def check_config(self, config: BaseModel) -> None:
        """Refuse a recipe (as loaded, with its overrides) that names a file or folder outside the roots, or a
        code reward without --allow-code-rewards."""
        for key, value in _strings(config.model_dump()):
            if key.endswith(".function") and ".rewards." in f".{key}" and not self.allow_code_rewards:
                raise Refused(f"{key}: a reward that imports and runs Python code ({value}) is refused from the "
                              "studio; start it with --allow-code-rewards to allow it")
            if _names_a_path(value, self.cwd) and not self.inside(value):
                raise Refused(f"{key}: {value} is outside the folders this studio launches from ({self.where()}); "
                              "start the studio with --data naming its folder")


def _strings(value, key: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, value) of every string in a dumped config: `task.rewards.0.function`."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _strings(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings(item, f"{key}.{i}" if key else str(i))


def _names_a_path(value: str, cwd: Path) -> bool:
    """Whether a config string names something on disk (what a reader would open); a name that is nothing on
    disk (a column, an asset, a template) is not a path."""
    if not value.strip() or "\n" in value or len(value) > 4096:
        return False
    path = Path(value).expanduser()
    try:
        return (path if path.is_absolute() else cwd / path).exists()
    except (OSError, ValueError):
        return False
