"""The GPU check's CPU dry run (`bash gpu/check.sh --cpu`), so that the script cannot rot between GPU runs: the
comparisons that can run on a CPU run and pass, the CUDA-only ones are skipped with their reason."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp / "out"), "GPU_CHECK_WORK": str(tmp / "work"),
           "GPU_CHECK_DATA": str(tmp / "data"),  # exported now: the dry run needs no gpu/carry
           "GPU_CHECK_WHEELS": str(tmp / "no-wheels")}
    env.pop("GPU_CHECK_CPU_FSDP", None)
    proc = subprocess.run(["bash", str(ROOT / "gpu" / "check.sh"), "--cpu"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=400)
    summary = tmp / "out" / "summary.json"
    assert summary.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(summary.read_text()), proc.stdout, tmp


def test_the_steps_that_can_run_on_a_cpu_run_and_pass(dry_run):
    summary, stdout, _ = dry_run
    steps = summary["steps"]
    failed = {k: v.get("reason") or v.get("error") for k, v in steps.items() if v["status"] == "failed"}
    assert not failed, failed
    assert summary["status"] == "passed" and summary["mode"] == "cpu"
    for name in ("data", "env", "precision", "accumulation", "resume", "speed"):
        assert steps[name]["status"] == "passed", name
    # one final line per step, then the overall line
    for name in steps:
        assert f"\n{name}: {steps[name]['status']}" in stdout
    assert "overall: passed" in stdout
    assert summary["versions"]["torch"] and summary["versions"]["transformers"]


def test_cuda_only_steps_are_skipped_with_their_reason(dry_run):
    steps = dry_run[0]["steps"]
    assert "CPU dry run" in steps["install"]["reason"]
    assert "needs CUDA" in steps["fsdp"]["reason"]
    assert "QLoRA needs CUDA" in steps["qlora"]["reason"]
    assert "CUDA allocator" in steps["plan"]["reason"]
    assert steps["serving"]["reason"] == ("the causal-LM server runs on CPU (docs/serving.md); its GPU check is not "
                                          "written yet")
    assert steps["precision"]["not_run"] == ["fp16 (needs CUDA)"]
    # the skipped GPU jobs still ran here in their CPU form: plain LoRA instead of 4-bit, plan without allocator
    assert steps["qlora"]["rehearsal_ok"] and steps["qlora"]["adapter_saved"] and steps["qlora"]["quantize"] == "none"
    assert steps["plan"]["plan_parts_sum_mb"] > 0 and steps["plan"]["real_tokens_per_s"] > 0


def test_correctness_comparisons_hold_on_cpu(dry_run):
    steps = dry_run[0]["steps"]
    accum = steps["accumulation"]
    assert accum["weights_max_abs_diff"] <= 2e-5 and accum["control_1x8_weights_max_abs_diff"] > 1e-4
    resume = steps["resume"]
    assert resume["same_weights_bitwise"] and resume["same_metrics_log"] and resume["interrupted_at"] < resume["steps"]
    for model in ("encoder", "decoder"):
        row = steps["precision"]["runs"]["bf16"][model]
        assert row["ok"] and row["finite"]


def test_speed_runs_both_sides_and_judges_no_goal_on_cpu(dry_run):
    speed = dry_run[0]["steps"]["speed"]
    assert speed["goals_met"].startswith("not judged")
    for job in ("encoder", "decoder"):
        sides = speed["jobs"][job]["sides"]
        assert sides["tunecraft"]["train_tokens"] == sides["trainer"]["train_tokens"] > 0
        assert sides["tunecraft"]["tokens_per_s"] > 0 and sides["trainer"]["mfu"] > 0
