"""The strict settings base and the command line generated from settings classes (fast: no model is loaded)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field

from tunecraft.cli import build_parser, main
from tunecraft.cli_options import PredictArgs, TrainArgs
from tunecraft.compress.settings import DistillSettings, Options, PruneSettings
from tunecraft.errors import ConfigError
from tunecraft.serve.settings import ServeSettings
from tunecraft.settings import Strict, add_options, from_args

SRC = Path(__file__).resolve().parents[1] / "src" / "tunecraft"


def help_of(*command: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "tunecraft", *command, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return " ".join(proc.stdout.split())  # argparse wraps lines: compare with single spaces


def squeeze(text: str) -> str:
    return "".join(text.split())  # argparse may also break a line after a hyphen


def test_the_strict_base_is_the_only_extra_forbid_in_the_source():
    forbid = re.compile(r"""\bextra\s*=\s*["']forbid""")
    found = [str(path.relative_to(SRC)) for path in SRC.rglob("*.py")
             if forbid.search(path.read_text(encoding="utf-8"))]
    assert found == ["settings.py"]


def test_serve_help_shows_every_settings_field_with_its_doc_and_default():
    text = help_of("serve")
    for name, field in ServeSettings.model_fields.items():
        flag = name if field.is_required() else ("--no-" if field.default is True else "--") + name.replace("_", "-")
        assert flag in text, flag
        assert squeeze(field.description) in squeeze(text), flag
    assert "--port PORT The port to listen on. (default: 8000)" in text
    assert "--no-batching Put the items of concurrent requests" in text
    assert "--precision {auto,fp32,bf16}" in text


def test_compress_help_shows_the_options_borrowed_from_the_job_settings():
    text = help_of("compress")
    assert "--recover-lr RECOVER_LR Learning rate of the recovery fine-tuning. (default: 3e-05)" in text
    assert "--distill-lr DISTILL_LR Learning rate of the student. (default: 0.0001)" in text
    for name, field in Options.model_fields.items():
        assert "--" + name.replace("_", "-") in text and squeeze(field.description) in squeeze(text), name
    # one default, in the job settings class: the compress options borrow it
    assert Options().recover_lr == PruneSettings(kind="layers").recover_lr
    assert Options().distill_epochs == DistillSettings().epochs


def test_generated_options_leave_defaults_to_the_class_and_name_the_flag_on_errors():
    class Demo(Strict):
        path: str
        """Where."""
        rate: float = Field(0.5, gt=0)
        """How fast."""
        fast: bool = True
        mode: str = "a"

    parser = build_parser().__class__(prog="demo")
    add_options(parser, Demo)
    args = parser.parse_args(["p", "--no-fast"])
    assert from_args(Demo, args) == Demo(path="p", rate=0.5, fast=False)
    with pytest.raises(ConfigError, match=r"--rate: Input should be greater than 0"):
        from_args(Demo, parser.parse_args(["p", "--rate", "-1"]))


def test_options_may_come_before_the_texts():
    parser = build_parser()
    before = from_args(PredictArgs, parser.parse_args(["predict", "runs/x", "--json", "a witty film", "a dull mess"]))
    after = from_args(PredictArgs, parser.parse_args(["predict", "runs/x", "a witty film", "a dull mess", "--json"]))
    assert before == after == PredictArgs(run="runs/x", texts=["a witty film", "a dull mess"], as_json=True)
    train = parser.parse_args(["train", "r.yaml", "--resume", "train.lr=3e-4", "--no-progress", "method.r=16"])
    assert from_args(TrainArgs, train) == TrainArgs(recipe="r.yaml", overrides=["train.lr=3e-4", "method.r=16"],
                                                    resume=True, progress=False)
    compress = parser.parse_args(["compress", "runs/x", "prune-50", "--recover-steps", "10", "int8"])
    assert compress.variants == ["prune-50", "int8"] and compress.recover_steps == 10


def test_serve_settings_come_from_the_options(monkeypatch):
    args = build_parser().parse_args(["serve", "runs/x", "--port", "9000", "--no-batching", "--max-wait-ms", "2"])
    settings = from_args(ServeSettings, args)
    assert settings == ServeSettings(run="runs/x", port=9000, batching=False, max_wait_ms=2)
    assert main(["serve", "runs/x", "--port", "70000"]) == 2


def test_report_skips_folders_that_are_not_runs(tmp_path, capsys):
    summary = {"task": "classification", "name": "a", "method": "full", "eval_split": "test",
               "metrics": {"accuracy": 0.8125, "samples": 16}, "trainable_params": 10, "total_params": 100}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "report-old").mkdir()
    (tmp_path / "report-old" / "comparison.md").write_text("# an earlier report\n")
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "report-old")]) == 0
    out, err = capsys.readouterr()
    assert re.search(r"\| a \| full \|.*\| 81\.25 \|", out)
    assert f"note: skipping {tmp_path / 'report-old'} (not a run folder" in err
    assert main(["report", str(tmp_path / "report-old")]) == 2  # nothing left to compare


def test_compress_is_an_attribute_of_the_package():
    import tunecraft

    assert callable(tunecraft.compress.compress) and tunecraft.compress.Options is Options
