"""`tunecraft report RUN...`: one table over real finished runs, their baselines, and a plot."""

import csv
import json

import pytest

from tunecraft.cli import main
from tunecraft.errors import TunecraftError
from tunecraft.evaluate.compare import compare_runs


def test_report_compares_runs_with_their_numbers_and_baselines(lora_run, full_run, tmp_path, capsys):
    (lora_dir, lora), (full_dir, full) = lora_run, full_run
    out = tmp_path / "cmp"
    assert main(["report", str(lora_dir), str(full_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith("| ") and "|---" not in line]
    header, body = table[0], table[1:]
    assert "accuracy" in header and "trainable" in header and "train s" in header
    runs = [row.split(" | ")[0].strip("| ") for row in body if row.split(" | ")[1] in ("lora", "full")]
    # sorted by the headline score, best first
    best_first = sorted([("lora", lora), ("full", full)], key=lambda x: -x[1]["metrics"]["accuracy"])
    assert runs == [name for name, _ in best_first]
    for name, summary in best_first:
        row = next(r for r in body if r.startswith(f"| {name} |"))
        assert f"{100 * summary['metrics']['accuracy']:.2f}" in row
        assert f"{summary['trainable_params']:,}" in row
    # the zero-shot baseline the lora run scored is a row of its own, with its score
    zero = next(b for b in lora["baselines"] if b["name"].startswith("zero-shot"))
    assert f"| {zero['name']} | {100 * zero['metrics']['accuracy']:.2f}" in printed
    rows = list(csv.DictReader((out / "comparison.csv").open(encoding="utf-8")))
    assert {r["run"]: float(r["score"]) for r in rows} == {"lora": lora["metrics"]["accuracy"],
                                                          "full": full["metrics"]["accuracy"]}
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![](comparison.png)" in (out / "comparison.md").read_text(encoding="utf-8")


def test_report_shows_the_settings_that_differ_from_the_method_defaults(lora_run, tmp_path):
    run_dir, _ = lora_run
    copy = tmp_path / "variant"
    copy.mkdir()
    (copy / "summary.json").write_text((run_dir / "summary.json").read_text())
    config = (run_dir / "config.yaml").read_text().replace("rslora: false", "rslora: true")
    (copy / "config.yaml").write_text(config)
    rows = compare_runs([copy])["rows"]
    assert rows[0]["settings"] == "rslora=True"


def test_report_refuses_unfinished_runs_and_bad_summaries(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    assert main(["report", str(tmp_path / "half")]) == 2
    assert f"{tmp_path / 'half'}: not a finished run (no summary.json)" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{not json")
    with pytest.raises(TunecraftError, match=r"bad/summary.json: not valid JSON"):
        compare_runs([tmp_path / "bad"])
    (tmp_path / "ner").mkdir()
    (tmp_path / "ner" / "summary.json").write_text(json.dumps({"task": "token_classification", "metrics": {}}))
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "summary.json").write_text(json.dumps({"task": "classification", "metrics": {}}))
    with pytest.raises(TunecraftError, match="runs of different tasks cannot share one table"):
        compare_runs([tmp_path / "ner", tmp_path / "cls"])


def test_each_metric_is_shown_in_its_own_unit_and_ranked_its_own_way():
    """A reward of 0.7833 is 0.783, not "78.33 %"; RL runs rank by highest reward (a negative one included, a
    run without a score last); perplexity lowest first; accuracy is a fraction shown in %."""
    from tunecraft.evaluate.compare import ranked, score_text
    from tunecraft.studio.app import _score

    assert score_text(0.78333, "reward") == "0.783" and _score(0.78333, "reward") == "0.783"
    assert score_text(0.5, "kl") == "0.500" and _score(0.8612, "accuracy") == "86.12 %"
    rows = [{"run": "a", "score": -0.2}, {"run": "b", "score": None}, {"run": "c", "score": 0.4}]
    assert [r["run"] for r in ranked("rl", rows)] == ["c", "a", "b"]
    lm = [{"run": "a", "score": 12.0}, {"run": "b", "score": None}, {"run": "c", "score": 8.0}]
    assert [r["run"] for r in ranked("causal_lm", lm)] == ["c", "a", "b"]


def test_settings_baselines_by_run_and_a_warning_for_different_test_data(lora_run, full_run, tmp_path):
    """The settings cell is filled with what differs between the compared runs (train.lr, train.epochs); a baseline
    both runs scored on the same data is one row naming both; runs scored on different examples are compared with
    a warning naming the groups, in the markdown and in the result the studio shows."""
    (lora_dir, lora), (full_dir, full) = lora_run, full_run
    assert lora["eval_fingerprint"] == full["eval_fingerprint"]  # the same 400 test texts of mr
    result = compare_runs([lora_dir, full_dir])
    settings = {r["run"]: r["settings"] for r in result["rows"]}
    assert "train.lr=0.001" in settings["lora"] and "train.lr=5e-05" in settings["full"]
    assert "train.epochs=2" in settings["lora"] and "train.epochs=1" in settings["full"]
    tfidf = next(b for b in result["baselines"] if b["name"].startswith("TF-IDF"))
    assert tfidf["from"] == "lora, full"
    assert result["warning"] is None and "Warning" not in result["markdown"]

    other = tmp_path / "other"
    other.mkdir()
    summary = {**full, "name": "other", "eval_fingerprint": "0" * 16, "metrics": {**full["metrics"], "samples": 200}}
    (other / "summary.json").write_text(json.dumps(summary))
    (other / "config.yaml").write_text((full_dir / "config.yaml").read_text())
    result = compare_runs([lora_dir, full_dir, other])
    assert result["warning"].startswith("Not comparable as a ranking: these runs were scored on different test data")
    assert "lora, full (test split" in result["warning"] and "other (test split" in result["warning"]
    assert "200 examples" in result["warning"] and f"**Warning.** {result['warning']}" in result["markdown"]
    assert next(b for b in result["baselines"] if b["name"].startswith("TF-IDF"))["from"] == "lora, full"


def test_a_zero_shot_note_lists_a_few_descriptions_and_counts_the_rest():
    from tunecraft.evaluate.report import descriptions_note

    few = {"positive": "a good film", "negative": "a bad film"}
    assert descriptions_note(few) == "descriptions positive: 'a good film', negative: 'a bad film'"
    many = {f"type {i}": f"a question about {i}" for i in range(50)}
    note = descriptions_note(many)
    assert note.endswith("type 3: 'a question about 3' and 46 more") and "type 4:" not in note
