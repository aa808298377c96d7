"""Install extras: the core dependencies train without the serving/compression/search stacks, and a command whose
extra is missing says which extra to install."""

import tomllib
from pathlib import Path

import pytest

from tunecraft import extras

PROJECT = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in requirements}


def test_the_core_dependencies_leave_the_extras_out():
    core, optional = _names(PROJECT["dependencies"]), PROJECT["optional-dependencies"]
    for extra in ("serve", "compress", "tune"):
        assert not core & _names(optional[extra]), extra
    assert "trl" in _names(optional["dev"]) and "trl" not in core
    assert optional["all"] == ["tunecraft[serve,studio,compress,tune]"]
    # every package a command checks for is in that command's extra (studio's through serve)
    for extra, modules in extras.EXTRAS.items():
        wanted = _names(optional[extra]) | (_names(optional["serve"]) if extra == "studio" else set())
        assert {m.replace("_", "-") for m in modules} <= wanted, extra


def test_a_missing_package_names_its_extra(monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "serve", ("fastapi", "no_such_module_xyz"))
    with pytest.raises(ImportError) as err:
        extras.require("serve")
    assert str(err.value) == ("tunecraft serve needs the 'serve' extra (missing: no_such_module_xyz); install it "
                              "with: pip install 'tunecraft[serve]'")
    extras.require("tune")  # installed here: nothing raised
