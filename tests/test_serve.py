"""A real server process on loopback: every route, the limits, auth, malformed input, feedback, shutdown."""

import asyncio
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from tunecraft import predict
from tunecraft.data.readers import Columns, read_examples

from .conftest import free_port

pytestmark = pytest.mark.slow
KEY = "test-key-123"


def start(run_dir, *extra):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tunecraft", "serve", str(run_dir), "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read())
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not become ready")


@pytest.fixture(scope="module")
def server(lora_run, tmp_path_factory):
    run_dir, _ = lora_run
    db = tmp_path_factory.mktemp("feedback") / "feedback.sqlite"
    proc, url = start(run_dir, "--api-key", KEY, "--max-texts", "8", "--max-body-bytes", "4000",
                      "--feedback-db", str(db))
    yield url, db, run_dir
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def post(url, path, body=None, key=KEY, **kw):
    headers = {"X-API-Key": key} if key else {}
    return httpx.post(url + path, json=body, headers=headers, timeout=30, **kw)


def test_health_openapi_and_docs(server):
    url, _, _ = server
    health = httpx.get(url + "/health").json()
    assert health == {"status": "ok", "ready": True, "model": "lora", "task": "classification",
                      "labels": ["negative", "positive"], "batching": True}
    spec = httpx.get(url + "/openapi.json").json()
    assert {"/v1/classify", "/v1/feedback", "/health", "/metrics"} <= set(spec["paths"])
    docs = httpx.get(url + "/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()  # offline: Swagger UI from the package
    for asset in re.findall(r'(?:src|href)="(/static-offline-docs/[^"]+)"', docs.text) or ["missing"]:
        assert httpx.get(url + asset).status_code == 200, asset
    assert "/static-offline-docs/swagger-ui-bundle.js" in docs.text


def test_classify_gives_the_same_answers_as_predict(server):
    url, _, run_dir = server
    texts = ["a gorgeous, witty, deeply moving film", "a dull, lifeless and boring mess", "it is a film"]
    got = post(url, "/v1/classify", {"texts": texts})
    assert got.status_code == 200
    served = got.json()["predictions"]
    local = predict(run_dir, texts)
    assert [p["label"] for p in served] == [p["label"] for p in local]
    for s, p in zip(served, local):
        for label in ("negative", "positive"):
            assert s["probabilities"][label] == pytest.approx(p["probabilities"][label], abs=2e-3)
    assert served[0]["label"] == "positive" and served[1]["label"] == "negative"


def test_api_key_is_required_on_v1_routes_only(server):
    url, _, _ = server
    assert post(url, "/v1/classify", {"texts": ["fine"]}, key=None).status_code == 401
    wrong = post(url, "/v1/classify", {"texts": ["fine"]}, key="nope")
    assert wrong.status_code == 401 and "API key" in wrong.json()["detail"]
    bearer = httpx.post(url + "/v1/classify", json={"texts": ["fine"]}, headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200
    assert httpx.get(url + "/health").status_code == 200 and httpx.get(url + "/metrics").status_code == 200


def test_limits_answer_413_or_422_with_a_message_and_long_texts_are_cut(server):
    url, _, _ = server
    many = post(url, "/v1/classify", {"texts": ["ok"] * 9})
    assert many.status_code == 413 and many.json()["detail"] == "9 texts in one request; the limit is 8"
    big = post(url, "/v1/classify", {"texts": ["word " * 1000]})
    assert big.status_code == 413 and "larger than 4000 bytes" in big.json()["detail"]
    long = post(url, "/v1/classify", {"texts": ["fine", "word " * 600]})  # 602 tokens; max_length is 128
    assert long.status_code == 200 and [p["truncated"] for p in long.json()["predictions"]] == [False, True]
    empty = post(url, "/v1/classify", {"texts": ["fine", "  "]})
    assert empty.status_code == 422 and empty.json()["detail"] == "texts[1] is empty"
    assert post(url, "/v1/classify", {"texts": []}).status_code == 422


def test_unknown_paths_are_404_naming_the_served_routes_never_500(server):
    """The classification task's router includes the embeddings router; FastAPI keeps an included router as a
    route without a path, and the 404 handler read `.path` off it: every unknown path answered 500."""
    url, _, _ = server
    for method, path in (("GET", "/nope"), ("POST", "/v1/nope"), ("GET", "/v1/classify/x"), ("DELETE", "/")):
        response = httpx.request(method, url + path, headers={"X-API-Key": KEY})
        assert response.status_code == 404, (method, path, response.text)
        detail = response.json()["detail"]
        assert detail.startswith(f"no route {method} {path} for this classification run; it serves: ")
        assert {"/health", "/metrics", "/v1/classify", "/v1/embeddings"} <= set(detail.split(": ")[-1].split(", "))


def test_malformed_and_mistyped_input_is_422_never_5xx(server):
    url, _, _ = server
    headers = {"X-API-Key": KEY, "content-type": "application/json"}
    bad_json = httpx.post(url + "/v1/classify", content=b'{"texts": [', headers=headers)
    assert bad_json.status_code == 422 and bad_json.json()["detail"][0]["type"] == "json_invalid"
    for body in ({"texts": "not a list"}, {"texts": [1, 2]}, {"text": ["x"]}, {"texts": ["x"], "extra": 1},
                 [], None, {"texts": ["x"], "text_pairs": ["y"]}):
        response = post(url, "/v1/classify", body)
        assert response.status_code == 422, (body, response.text)
    garbage = httpx.post(url + "/v1/classify", content=b"\xff\xfe\x00", headers=headers)
    assert garbage.status_code == 422
    assert garbage.json()["detail"] == "the body is not valid UTF-8 (byte 0xff at offset 0)"


def test_feedback_is_durable_before_the_200_and_trains_again(server, tmp_path):
    url, db, _ = server
    ok = post(url, "/v1/feedback", {"text": "not as good as they say", "prediction": "positive", "label": "negative"})
    assert ok.status_code == 200 and ok.json()["stored"] is True
    with sqlite3.connect(db) as conn:  # a separate connection sees the committed row at once
        rows = conn.execute("SELECT text, prediction, label FROM feedback WHERE id = ?", (ok.json()["id"],)).fetchall()
    assert rows == [("not as good as they say", "positive", "negative")]
    unknown = post(url, "/v1/feedback", {"text": "meh", "label": "neutral"})
    assert unknown.status_code == 422 and "unknown label 'neutral'" in unknown.json()["detail"]
    for i in range(30):
        label = "positive" if i % 2 else "negative"
        assert post(url, "/v1/feedback", {"text": f"a {label} review number {i}", "label": label}).status_code == 200
    examples = read_examples(db, Columns("text", "label", None))
    assert len(examples) == 31 and examples[0].label == "negative"

    from tunecraft.config import build_config
    from tunecraft.train import train

    config = build_config({"name": "from-feedback", "output_dir": str(tmp_path), "data": {"dataset": None,
                           "train": str(db)}, "method": {"name": "lora"},
                           "train": {"max_steps": 2, "batch_size": 8, "progress": False, "tensorboard": False}})
    summary = train(config)
    assert summary["sizes"] == {"train": 25, "validation": 3, "test": 3}
    assert summary["labels"] == ["negative", "positive"]


def test_concurrent_requests_are_micro_batched_and_counted(server):
    url, _, _ = server

    async def fire():
        async with httpx.AsyncClient(headers={"X-API-Key": KEY}, timeout=60) as client:
            return await asyncio.gather(*[client.post(url + "/v1/classify", json={"texts": [f"film number {i}"]})
                                          for i in range(64)])

    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    text = httpx.get(url + "/metrics").text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values["tunecraft_batch_size_sum"] / values["tunecraft_batch_size_count"] > 1.5
    assert values['tunecraft_requests_total{route="/v1/classify",status="200"}'] >= 64
    assert values['tunecraft_errors_total{route="/v1/classify",status="401"}'] >= 1
    assert 'tunecraft_request_latency_seconds_bucket{le="0.005",route="/v1/classify"}' in values


def test_graceful_shutdown_drains_in_flight_requests_and_logs_json(lora_run):
    run_dir, _ = lora_run
    proc, url = start(run_dir, "--max-batch-size", "1")

    async def slow_then_stop():
        async with httpx.AsyncClient(timeout=60) as client:
            pending = [asyncio.create_task(client.post(url + "/v1/classify", json={"texts": ["a film"] * 64}))
                       for _ in range(3)]
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*pending)

    responses = asyncio.run(slow_then_stop())
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all(len(r.json()["predictions"]) == 64 for r in responses)
    # uvicorn finishes its shutdown, then re-raises SIGTERM so that supervisors see why it stopped
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    stderr = proc.stderr.read()
    assert "Finished server process" in stderr
    log = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    posts = [entry for entry in log if entry["path"] == "/v1/classify"]
    assert len(posts) == 3 and all(e["status"] == 200 and e["latency_ms"] > 0 for e in posts)


def test_several_worker_processes_serve_the_same_model(lora_run):
    run_dir, _ = lora_run
    proc, url = start(run_dir, "--workers", "2")
    try:
        responses = [httpx.post(url + "/v1/classify", json={"texts": ["a gorgeous, witty film"]}, timeout=30)
                     for _ in range(6)]
        assert [r.json()["predictions"][0]["label"] for r in responses] == ["positive"] * 6
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    pids = {json.loads(line)["pid"] for line in proc.stderr.read().splitlines() if line.startswith("{")}
    assert 1 <= len(pids) <= 2


def test_a_single_worker_start_loads_the_model_once(lora_run, monkeypatch):
    """`tunecraft serve` loads the run before binding the port (a broken run folder fails fast), and the server
    then serves that model: one load, where the lifespan used to load it a second time."""
    import uvicorn
    from fastapi.testclient import TestClient

    from tunecraft import trained as trained_module
    from tunecraft.serve.app import serve
    from tunecraft.serve.settings import ServeSettings

    run_dir, _ = lora_run
    checked = []
    real = trained_module.check_model_folder
    monkeypatch.setattr(trained_module, "check_model_folder", lambda folder: checked.append(folder) or real(folder))
    trained_module.load_trained(run_dir)
    per_load, checked[:] = len(checked), []
    answers = {}

    def run(app, **options):
        with TestClient(app, base_url="http://127.0.0.1") as client:
            answers["health"] = client.get("/health").json()
            answers["classify"] = client.post("/v1/classify", json={"texts": ["a gorgeous, witty film"]}).json()

    monkeypatch.setattr(uvicorn, "run", run)
    serve(ServeSettings(run=str(run_dir)))
    loads = len(checked) / per_load
    assert answers["health"]["ready"] is True
    assert answers["classify"]["predictions"][0]["label"] == predict(run_dir, ["a gorgeous, witty film"])[0]["label"]
    assert loads == 1
