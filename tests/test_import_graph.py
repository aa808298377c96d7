"""The import graph's promises: loading a run does not pull in compress/, the rewards do not reach the task
registry, and an unknown model format names its file and the known ones."""

import json
import subprocess
import sys

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
