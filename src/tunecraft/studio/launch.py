"""Runs launched from the studio: `python -m tunecraft COMMAND RECIPE key=value ...` as a child process (so the
run is the CLI's own, byte for byte), its output in a log, stopped with SIGINT (the CLI's graceful stop:
"interrupted; resume with --resume") and, for the commands that take it, resumed with --resume. COMMAND is the
one whose recipe schema the recipe is written in (train, tune, tokenizer, pretrain, continual)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from ..config import load_config, load_recipe, read_recipe
from ..errors import ConfigError, TunecraftError
from ..io import refuse_existing, write_json, write_text
from ..train.session import check_run_dir
from .confine import Confinement
from .runs import STUDIO_DIR

STOPPED = (130, -signal.SIGINT)
"""Exit statuses of a run stopped by SIGINT: the CLI's own (130), or the signal's when it came before the CLI
could answer it."""


@dataclass(frozen=True)
class RecipeCommand:
    """A CLI command that runs a YAML recipe (a row of cli.py `COMMANDS`), with the loader it validates it by."""

    name: str
    load: Callable[[str | Path, list[str]], BaseModel]
    resume: bool
    """Whether the command takes --resume (its runs keep checkpoints)."""
    applies: Callable[[BaseModel], bool] = lambda config: True


def _tokenizer(path, overrides):
    from ..pretrain.config import TokenizerRecipe

    return load_recipe(path, overrides, TokenizerRecipe)


def _pretrain(path, overrides):
    from ..pretrain.config import PretrainRecipe

    return load_recipe(path, overrides, PretrainRecipe)


def _continual(path, overrides):
    from ..continual.recipe import load_continual

    return load_continual(path, overrides)


RECIPE_COMMANDS = (
    RecipeCommand("tune", load_config, False, applies=lambda config: config.tune is not None),
    RecipeCommand("train", load_config, True),
    RecipeCommand("tokenizer", _tokenizer, False),
    RecipeCommand("pretrain", _pretrain, True),
    RecipeCommand("continual", _continual, False),
)
"""In the order a recipe is matched: the first schema that takes it (a train recipe with a `tune:` section is a
search). `plan` is left out: it measures a recipe, it makes no run."""


def command_for(recipe: str | Path) -> RecipeCommand:
    """The command that runs a recipe file: the first whose schema validates it. A recipe that none takes gets
    the message of the schema it is closest to (the fewest errors), as that command would print it."""
    read_recipe(recipe)  # a missing file or bad YAML: one message, whichever the command
    errors = []
    for command in RECIPE_COMMANDS:
        try:
            config = command.load(recipe, [])
        except ConfigError as err:
            errors.append(str(err))
            continue
        if command.applies(config):
            return command
    raise ConfigError(min(errors, key=lambda e: e.count("\n")))


def run_command(command: RecipeCommand, recipe: str | Path, overrides: list[str], resume: bool = False,
                overwrite: bool = False) -> list[str]:
    """The command line of `tunecraft COMMAND` for a recipe and its overrides."""
    return [sys.executable, "-m", "tunecraft", command.name, str(recipe), *overrides,
            *(["--resume"] if resume else []), *(["--overwrite"] if overwrite else [])]


class Launches:
    """The runs this studio started: their processes, and a record per run in RUNS/.studio/launches/ (the
    command, recipe, overrides, pid, exit status) that outlives the studio."""

    def __init__(self, runs: Path, cwd: Path | None = None, confinement: Confinement | None = None):
        self.runs, self.cwd = runs, cwd or Path.cwd()
        self.confinement = confinement or Confinement([runs], cwd=self.cwd)
        self.folder = runs / STUDIO_DIR / "launches"
        self.procs: dict[str, subprocess.Popen] = {}

    def check(self, recipe: str | Path, overrides: list[str], resume: bool = False,
              overwrite: bool = False) -> tuple[RecipeCommand, BaseModel]:
        """The CLI's own checks, before any process starts: the recipe and overrides through its command's
        schema (the same message the command prints), then the run folder (refused when it would be lost). The
        recipe and what it names must lie in the studio's roots (confine.py: confine.Refused otherwise)."""
        self.confinement.check_recipe(recipe)
        command = command_for(recipe)
        if resume and not command.resume:
            raise ConfigError(f"tunecraft {command.name} does not resume: launch it again (--overwrite)")
        config = command.load(recipe, overrides)
        self.confinement.check_config(config)
        if config.run_dir.resolve().parent != self.runs.resolve():
            raise ConfigError(f"output_dir: the run would be written to {config.run_dir.parent}, outside the "
                              f"studio's runs folder {self.runs}; set output_dir={self.runs}")
        if self.status(config.run_dir.name) == "running":
            raise TunecraftError(f"{config.run_dir.name} is running; stop it first")
        if command.resume:
            check_run_dir(config, resume, overwrite)
        else:  # what the command itself refuses first
            refuse_existing(config.run_dir, overwrite, "or name=... for a new one")
        return command, config

    def launch(self, recipe: str | Path, overrides: list[str], resume: bool = False, overwrite: bool = False) -> str:
        kind, config = self.check(recipe, overrides, resume, overwrite)
        name = config.run_dir.name
        self.folder.mkdir(parents=True, exist_ok=True)
        command = run_command(kind, recipe, overrides, resume, overwrite)
        log = self.folder / f"{name}.log"
        with open(log, "ab" if resume else "wb") as out:
            # its own session: a Ctrl-C in the studio's terminal is not a stop of every run it launched
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.cwd, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"})
        self.procs[name] = proc
        write_json(self.folder / f"{name}.json", {"command": command, "recipe": str(recipe), "overrides": overrides,
                                                  "pid": proc.pid, "started": time.time()})
        return name

    def record(self, name: str) -> dict | None:
        path = self.folder / f"{name}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def status(self, name: str) -> str | None:
        """running, finished, stopped or failed for a run this studio started; None when the run folder tells
        (one the studio did not start)."""
        record = self.record(name)
        if record is None:
            return None
        proc = self.procs.get(name)
        if proc is not None and proc.pid == record["pid"]:
            code = proc.poll()
            if code is None:
                return "running"
            if "returncode" not in record:
                record["returncode"] = code
                write_json(self.folder / f"{name}.json", record)
        elif "returncode" not in record:
            return "running" if _alive(record["pid"]) else None
        code = record.get("returncode")
        if code is None:
            return None
        if code == 0:  # a run folder with summary.json tells more (finished or stopped early)
            return "finished"
        return "stopped" if code in STOPPED else "failed"

    def stop(self, name: str) -> None:
        if self.status(name) != "running":
            raise TunecraftError(f"{name} is not running")
        os.kill(self.record(name)["pid"], signal.SIGINT)

    def resume(self, name: str) -> str:
        record = self.record(name)
        if record is None:
            raise TunecraftError(f"{name} was not launched from the studio: resume it with "
                                 f"`tunecraft train RECIPE ... --resume`")
        return self.launch(record["recipe"], record["overrides"], resume=True)

    def log(self, name: str, offset: int = 0) -> tuple[str, int]:
        path = self.folder / f"{name}.log"
        if not path.is_file():
            return "", 0
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
        return data.decode("utf-8", "replace"), offset + len(data)

    def save_recipe(self, filename: str, text: str) -> Path:
        """An uploaded recipe, kept in RUNS/.studio/recipes/ (launched from there, like a file on disk)."""
        stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(filename).stem) or "uploaded"
        return write_text(self.runs / STUDIO_DIR / "recipes" / f"{stem}.yaml", text)

    def close(self) -> None:
        """Leave running children running (they are the CLI's runs); reap the finished ones."""
        for proc in self.procs.values():
            proc.poll()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
