"""The import graph's promises: loading a run does not pull in compress/, the rewards do not reach the task
registry, an unknown model format names its file and the known ones, nothing outside runs/ spells a run
folder's file names and nothing below compress/ imports it."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunecraft.errors import TunecraftError
from tunecraft.runs import FORMATS, load_model


def _loaded_after(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_loading_a_run_does_not_import_compress():
    loaded = _loaded_after("tunecraft.trained")
    assert not {m for m in loaded if m.startswith("tunecraft.compress")}
    assert "tunecraft.runs.formats" in loaded


def test_the_rewards_import_neither_the_run_loader_nor_the_tasks():
    loaded = _loaded_after("tunecraft.align.rewards")
    assert "tunecraft.trained" not in loaded
    assert not {m for m in loaded if m.startswith("tunecraft.tasks")}


def test_the_session_takes_the_version_from_the_leaf():
    from tunecraft import __version__
    from tunecraft.train import session
    from tunecraft.version import __version__ as leaf

    assert session.__version__ == leaf == __version__


def test_an_unknown_model_format_names_the_file_and_the_known_formats(tmp_path):
    with pytest.raises(TunecraftError) as err:
        load_model(tmp_path, {"format": "zip"})
    assert str(err.value) == (f"{tmp_path / 'tunecraft.json'}: unknown model format 'zip'; known: transformers, "
                              + ", ".join(FORMATS))
    assert FORMATS["torch-int8"] == "tunecraft.compress.quantize"


def _imports_of(path, package: str) -> set[str]:
    """Every module `path` imports, at module level or inside a function, relative imports resolved."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_no_task_module_imports_the_server_the_evaluate_layer_or_the_report():
    from pathlib import Path

    import tunecraft.tasks

    above = ("tunecraft.serve", "tunecraft.evaluate", "tunecraft.report")
    folder = Path(tunecraft.tasks.__file__).parent
    reached = {f"{path.name}: {module}" for path in sorted(folder.glob("*.py"))
               for module in _imports_of(path, "tunecraft.tasks")
               if any(module == m or module.startswith(m + ".") for m in above)}
    assert reached == set()


# -- the run folder (issue #32 item 4) -------------------------------------------------------------------
SRC = Path(__file__).resolve().parents[1] / "src" / "tunecraft"
RUN_FILES = ('"config.yaml"', "'config.yaml'", '"summary.json"', "'summary.json'", '"metrics.jsonl"',
             "'metrics.jsonl'", '"tunecraft.json"', "'tunecraft.json'")
ABOVE_COMPRESS = {"compress", "cli", "studio", "experiment", "continual", "tune"}
"""The packages that may import compress/: itself and the layers above it (commands, orchestration)."""


def _imports(path: Path) -> set[str]:
    """The tunecraft modules a file imports, at module level or inside functions (relative ones resolved)."""
    package = ["tunecraft", *path.relative_to(SRC).with_suffix("").parts][:-1]  # a module's (or __init__'s) own
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found |= {module, *(f"{module}.{a.name}" for a in node.names)}
    return {m for m in found if m.startswith("tunecraft")}


def _top(path: Path) -> str:
    return path.relative_to(SRC).with_suffix("").parts[0]


def test_nothing_outside_runs_spells_a_run_folder_file_name():
    spelled = [f"{p.relative_to(SRC)}: {name}" for p in SRC.rglob("*.py") if _top(p) != "runs"
               for name in RUN_FILES if name in p.read_text(encoding="utf-8")]
    assert spelled == []


def test_nothing_below_compress_imports_it():
    below = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if _top(p) not in ABOVE_COMPRESS
                   and any(m == "tunecraft.compress" or m.startswith("tunecraft.compress.") for m in _imports(p)))
    assert below == []
    assert "tunecraft.compress.job" in _imports(SRC / "cli.py")  # the check sees function-level imports


def test_runs_is_a_leaf():
    leaf = {"tunecraft.errors", "tunecraft.settings"}
    reached = {m for p in (SRC / "runs").glob("*.py") for m in _imports(p)
               if not m.startswith("tunecraft.runs") and m not in leaf and m.rsplit(".", 1)[0] not in leaf}
    assert reached == set()
