"""What the server holds and answers per precision (serve/precision.py), on a tiny scratch encoder: bf16 linear
weights give exactly the logits of bf16 autocast over fp32 weights (what `tunecraft predict` runs), and an ONNX
Runtime int8 variant answers through the same routes as its own `tunecraft predict`."""

import pytest
import torch
from fastapi.testclient import TestClient

from tests.conftest import tiny_classifier
from tunecraft import predict
from tunecraft.compress import compress
from tunecraft.serve.app import ServeSettings, create_app
from tunecraft.serve.precision import serving_model
from tunecraft.serve.routes.embeddings import run_embeddings
from tunecraft.trained import load_trained

TEXTS = ["a gorgeous, witty, deeply moving film", "a dull, lifeless and boring mess", "it is a film",
         "one of the best performances of the year", "the plot is thin"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return tiny_classifier(tmp_path_factory.mktemp("runs"), "tiny", 256, 32, max_steps=8, batch_size=16, lr=1e-3)


def classify(run, precision: str, texts=TEXTS) -> list[dict]:
    with TestClient(create_app(ServeSettings(run=str(run), precision=precision)),
                    base_url="http://127.0.0.1") as client:
        reply = client.post("/v1/classify", json={"texts": texts})
        assert reply.status_code == 200, reply.text
        return reply.json()["predictions"]


def test_bf16_linear_weights_give_exactly_the_logits_of_bf16_autocast(tiny_run):
    reference = load_trained(tiny_run)
    held, dtype = serving_model(load_trained(tiny_run), "bf16")
    linears = [m for m in held.model.modules() if type(m) is torch.nn.Linear]
    assert dtype == torch.bfloat16 and linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    embeddings = held.model.get_input_embeddings().weight
    assert embeddings.dtype == torch.float32  # a lookup is not autocast: left in fp32
    batch = held.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference.model(**batch).logits
        got = held.model(**batch).logits
    assert torch.equal(got, expected)
    fp32, none = serving_model(load_trained(tiny_run), "fp32")
    assert none is None and all(p.dtype == torch.float32 for p in fp32.model.parameters())


def test_a_bf16_server_answers_exactly_as_predict_in_bf16_and_embeds_under_autocast(tiny_run):
    served = classify(tiny_run, "bf16")
    local = predict(tiny_run, TEXTS, precision="bf16")
    assert [p["label"] for p in served] == [p["label"] for p in local]
    assert [p["probabilities"] for p in served] == [p["probabilities"] for p in local]
    own = run_embeddings(load_trained(tiny_run), TEXTS)  # fp32
    with TestClient(create_app(ServeSettings(run=str(tiny_run), precision="bf16")),
                    base_url="http://127.0.0.1") as client:
        reply = client.post("/v1/embeddings", json={"model": "tiny", "input": TEXTS})
    assert reply.status_code == 200, reply.text
    got = torch.tensor([d["embedding"] for d in reply.json()["data"]])
    assert got.shape == own.shape and torch.allclose(got, own, atol=0.05)  # bf16: ~3 significant digits


def test_an_onnx_int8_variant_is_served_with_the_schema_and_answers_of_its_own_predict(tiny_run, tmp_path):
    compress(tiny_run, ["onnx-int8-dynamic"], out=tmp_path, measure=False, progress=False)
    variant = tmp_path / "onnx-int8-dynamic"
    served = classify(variant, "auto")
    local = predict(variant, TEXTS)
    assert [set(p) for p in served] == [{"label", "score", "probabilities", "truncated"}] * len(TEXTS)
    assert [p["label"] for p in served] == [p["label"] for p in local]
    assert [p["probabilities"] for p in served] == [p["probabilities"] for p in local]
    assert classify(tiny_run, "fp32")[0].keys() == served[0].keys()  # the same schema as the PyTorch run
