"""examples/minimal.py, the smallest training program (a task, a method, the session and the loop), runs as
documented and leaves a complete run folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_the_minimal_example_trains_and_exports_a_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "minimal.py"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    run = tmp_path / "minimal"
    assert printed["run"] == str(run)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["metrics"]["accuracy"] == printed["accuracy"]
    assert json.loads((run / "metrics.json").read_text(encoding="utf-8")) == summary["metrics"]
    meta = json.loads((run / "model" / "tunecraft.json").read_text(encoding="utf-8"))
    assert (meta["task"], meta["method"], meta["base_model"]) == ("classification", "full", "scratch:encoder-tiny")
