"""Compression of a real fine-tuned MiniLM run on mr slices: every variant is made once (module fixture),
then each test checks an outcome: ONNX logits, sparsity, int8 accuracy, the student, loading, errors."""

import json

import pytest
import torch
from fastapi.testclient import TestClient

from tunecraft import evaluate_run, predict
from tunecraft.cli import main
from tunecraft.compress import Options, compress, parse_variants
from tunecraft.compress.prune import sparsity_of
from tunecraft.errors import ConfigError, TunecraftError
from tunecraft.methods.base import transformer_layers
from tunecraft.serve.app import ServeSettings, create_app
from tunecraft.trained import load_trained

VARIANTS = ["int8", "onnx", "onnx-int8-dynamic", "onnx-int8-static", "prune-30", "heads-25", "layers-2",
            "distill-3l"]
TEXTS = ["a gorgeous, witty, moving film", "a dull, lifeless mess"]


@pytest.fixture(scope="module")
def made(full_run, tmp_path_factory):
    run_dir, summary = full_run
    out = tmp_path_factory.mktemp("compressed")
    result = compress(run_dir, VARIANTS, out=out, measure=True, progress=False,
                      options=Options(distill_max_steps=60, calibration_samples=32, latency_samples=4, rounds=1))
    return run_dir, summary, out, result


@pytest.mark.slow
def test_onnx_logits_match_pytorch_and_int8_runs_in_onnx_runtime(made):
    run_dir, _, out, result = made
    assert result["variants"]["onnx"]["max_abs_logit_diff"] <= 1e-4
    assert result["variants"]["onnx"]["check_examples"] >= 32
    meta = json.loads((out / "onnx" / "tunecraft.json").read_text())
    assert meta["format"] == "onnx" and meta["onnx"]["tolerance"] == 1e-4
    original = load_trained(run_dir)
    batch = original.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = original.model(**batch).logits
    for name in ("onnx", "onnx-int8-dynamic", "onnx-int8-static"):
        got = load_trained(out / name).model(**batch).logits
        assert torch.equal(got.argmax(-1), expected.argmax(-1)), name
    assert (got - expected).abs().max() < 1.0  # int8 is close, not exact


@pytest.mark.slow
def test_pruned_sparsity_is_what_was_asked(made):
    _, _, out, result = made
    assert result["variants"]["prune-30"]["measured_sparsity"] == pytest.approx(0.30, abs=1e-6)
    assert sparsity_of(load_trained(out / "prune-30").model) == pytest.approx(0.30, abs=1e-6)


@pytest.mark.slow
def test_int8_accuracy_is_within_a_margin_of_the_original(made):
    _, _, _, result = made
    rows = {r["variant"]: r for r in result["measured"]["rows"]}
    for name in ("int8", "onnx-int8-dynamic"):
        assert rows[name]["accuracy"] >= rows["original"]["accuracy"] - 0.02, name
    assert rows["int8"]["size_mb"] < 0.7 * rows["original"]["size_mb"]
    assert rows["onnx-int8-dynamic"]["size_mb"] < 0.3 * rows["original"]["size_mb"]


@pytest.mark.slow
def test_distilled_student_has_three_layers_and_beats_chance(made):
    _, summary, out, result = made
    student = load_trained(out / "distill-3l")
    assert student.model.config.num_hidden_layers == 3 and len(transformer_layers(student.model)) == 3
    assert student.meta["distillation"]["teacher_layers"] == [0, 2, 4]
    rows = {r["variant"]: r for r in result["measured"]["rows"]}
    assert rows["distill-3l"]["accuracy"] >= 0.70
    assert rows["distill-3l"]["params"] < rows["original"]["params"]


@pytest.mark.slow
def test_structured_pruning_removes_heads_and_layers(made):
    _, _, out, _ = made
    heads = load_trained(out / "heads-25")
    kept = sum(layer.attention.self.num_attention_heads for layer in transformer_layers(heads.model))
    assert kept == 72 - 18
    assert load_trained(out / "layers-2").model.config.num_hidden_layers == 4


@pytest.mark.slow
def test_every_variant_loads_in_eval_predict_and_serve(made, write):
    _, _, out, result = made
    rows = "".join(f"{t},{label}\n" for t, label in [("a gorgeous and witty film", "positive"),
                                                      ("a dull and lifeless mess", "negative"),
                                                      ("one of the best films of the year", "positive"),
                                                      ("boring and far too long", "negative")])
    data = write("small.csv", "text,label\n" + rows)
    for name in VARIANTS:
        rows = predict(out / name, TEXTS)
        assert [r["label"] for r in rows] and all(0 <= r["score"] <= 1 for r in rows), name
        assert evaluate_run(out / name, data)["metrics"]["samples"] == 4, name
    for name in ("onnx-int8-dynamic", "int8", "heads-25"):
        with TestClient(create_app(ServeSettings(run=str(out / name))), base_url="http://127.0.0.1") as client:
            reply = client.post("/v1/classify", json={"texts": TEXTS})
            assert reply.status_code == 200, reply.text
            assert len(reply.json()["predictions"]) == 2
    report = (out / "report.md").read_text()
    assert all(f"| {name} |" in report for name in VARIANTS)
    assert (out / "accuracy_latency.png").stat().st_size > 1000


def test_unknown_variant_and_impossible_student_are_clear_errors(full_run, tmp_path, capsys):
    run_dir, _ = full_run
    with pytest.raises(ConfigError, match="unknown variant 'int4'"):
        parse_variants(["int4"])
    with pytest.raises(ConfigError, match="1..99"):
        parse_variants(["prune-100"])
    with pytest.raises(ConfigError, match="fewer layers than the teacher"):
        compress(run_dir, ["distill-6l"], out=tmp_path / "c", measure=False, progress=False)
    assert main(["compress", str(run_dir), "layers-6", "--out", str(tmp_path / "d"), "--no-bench"]) == 2
    assert "at least one must stay" in capsys.readouterr().err
    with pytest.raises(TunecraftError, match="not a tunecraft run folder"):
        compress(tmp_path, ["int8"])
