"""The command line end to end, in real subprocesses: train, eval, predict."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def tunecraft(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tunecraft", *args], capture_output=True, text=True, cwd=cwd)


def test_train_a_user_csv_from_the_command_line(tmp_path):
    from tunecraft.data.bundled import read_bundled

    rows = read_bundled("mr")[:600]
    lines = ["review,sentiment"] + ['"{}",{}'.format(e.text.replace('"', '""'), e.label[:3]) for e in rows]
    (tmp_path / "reviews.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "recipe.yaml").write_text(
        "name: csv-freeze\n"
        f"output_dir: {tmp_path}/runs\n"
        "data: {dataset: null, train: reviews.csv, text_column: review, label_column: sentiment}\n"
        "method: {name: freeze, layers: 4}\n"
        "train: {epochs: 1, batch_size: 16, lr: 1.0e-4, eval_every: 10}\n",
        encoding="utf-8",
    )
    proc = tunecraft("train", "recipe.yaml", "train.max_steps=20", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "test: accuracy" in proc.stdout and "report: " in proc.stdout
    run = tmp_path / "runs" / "csv-freeze"
    meta = json.loads((run / "model" / "tunecraft.json").read_text())
    assert meta["labels"] == ["neg", "pos"] and meta["text_column"] == "review"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [e["step"] for e in evals] == [10, 20]
    assert "max_steps: 20" in (run / "config.yaml").read_text()

    again = tunecraft("train", "recipe.yaml", "--no-progress", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_eval_on_another_dataset_and_predict(lora_run):
    run_dir, _ = lora_run
    proc = tunecraft("eval", str(run_dir), "--data", "amazon", "--split", "all")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run_dir / "evals" / "amazon-all" / "metrics.json").read_text())
    assert metrics["samples"] == 2_943
    assert metrics["accuracy"] >= 0.70  # movie reviews → Amazon snippets, out of domain
    assert (run_dir / "evals" / "amazon-all" / "predictions.jsonl").is_file()

    proc = tunecraft("predict", str(run_dir), "--json", "a gorgeous, witty, deeply moving film",
                     "a dull, lifeless and boring mess")  # options may come before the texts (issue #24)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["label"] for r in rows] == ["positive", "negative"]
    assert all(0.5 < r["score"] <= 1 and abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)


def test_predict_from_a_file_and_errors_without_traceback(lora_run, tmp_path):
    run_dir, _ = lora_run
    (tmp_path / "texts.txt").write_text("a triumph\n\nan utter waste of time\n", encoding="utf-8")
    proc = tunecraft("predict", str(run_dir), "--file", str(tmp_path / "texts.txt"))
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == ["positive", "negative"]
    from tunecraft.evaluate.runs import predict

    proc = tunecraft("predict", str(run_dir), "--precision", "fp32", "--json", "a triumph")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == predict(run_dir, ["a triumph"], precision="fp32")[0]  # the fp32 numbers

    bad = tunecraft("eval", str(tmp_path), "--data", "amazon")
    assert bad.returncode == 2 and "not a tunecraft run folder" in bad.stderr and "Traceback" not in bad.stderr
    bad = tunecraft("eval", str(run_dir), "--data", "imdb")
    assert bad.returncode == 2 and "neither a bundled dataset" in bad.stderr
