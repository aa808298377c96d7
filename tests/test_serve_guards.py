"""Hostile input against a real server process on loopback (a tiny scratch model): every case is a 4xx with
a message, never a 5xx; slow clients are cut off; long texts are cut as predict cuts them."""

import asyncio
import json
import signal
import socket

import httpx
import pytest
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from tunecraft import predict
from tunecraft.config import build_config
from tunecraft.serve.guards import http_error, validation_error
from tunecraft.train import train

from .test_serve import start

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]
KEY = "guard-key-1"
MAX_LENGTH = 32
BODY_TIMEOUT = 2
MAX_CONNECTIONS = 8


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    config = build_config({
        "name": "tiny-serve", "output_dir": str(tmp_path_factory.mktemp("guards")), "seed": 7,
        "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": MAX_LENGTH},
        "data": {"dataset": "mr", "max_train_samples": 64, "max_eval_samples": 16}, "method": {"name": "full"},
        "train": {"max_steps": 2, "batch_size": 8, "precision": "fp32", "progress": False, "tensorboard": False},
        "baselines": {"zero_shot": False}})
    train(config)
    return config.run_dir


@pytest.fixture(scope="module")
def server(tiny_run):
    proc, url = start(tiny_run, "--api-key", KEY, "--max-body-bytes", "100000", "--body-timeout", str(BODY_TIMEOUT),
                      "--max-connections", str(MAX_CONNECTIONS))
    yield url, tiny_run
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def raw(url: str, body: bytes, key: str | None = KEY, path: str = "/v1/classify") -> httpx.Response:
    headers = {"content-type": "application/json", **({"X-API-Key": key} if key else {})}
    return httpx.post(url + path, content=body, headers=headers, timeout=30)


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout bounds the wait)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


HOSTILE = [  # (name, route, body, status, the message's start)
    ("lone surrogate in a text", "/v1/classify", rb'{"texts": ["fine", "\ud800"]}', 422,
     "texts[1] holds a lone UTF-16 surrogate (\\ud800 at character 0), which is not text"),
    ("lone surrogate in feedback", "/v1/feedback", rb'{"text": "a\udfffb", "label": "positive"}', 422,
     "text holds a lone UTF-16 surrogate (\\udfff at character 1), which is not text"),
    ("lone surrogate in a feedback label", "/v1/feedback", rb'{"text": "ok", "label": "\ud83d"}', 422,
     "label holds a lone UTF-16 surrogate"),
    ("lone surrogate in a key", "/v1/classify", rb'{"texts": ["ok"], "\udc00": 1}', 422,
     "\\udc00 holds a lone UTF-16 surrogate"),
    ("NaN in texts", "/v1/classify", b'{"texts": [NaN]}', 422,
     "the JSON body holds NaN, which is not a JSON number; numbers must be finite"),
    ("Infinity in an extra field", "/v1/classify", b'{"texts": ["x"], "extra": Infinity}', 422,
     "the JSON body holds Infinity, which is not a JSON number"),
    ("-Infinity in feedback", "/v1/feedback", b'{"text": "x", "label": -Infinity}', 422,
     "the JSON body holds -Infinity, which is not a JSON number"),
    ("1e999 as a feedback label", "/v1/feedback", b'{"text": "x", "label": 1e999}', 422,
     "the JSON body holds the number 1e999, which is out of range for a float"),
    ("invalid UTF-8", "/v1/classify", b'{"texts": ["\xff\xfe"]}', 422,
     "the body is not valid UTF-8 (byte 0xff at offset 12)"),
    ("a 5,000-digit integer", "/v1/classify", b'{"texts": ["x"], "n": ' + b"9" * 5000 + b"}", 422,
     "the JSON body holds an integer of 5000 digits; the limit is 4300"),
    ("50,000-deep nesting", "/v1/classify", b"[" * 50000 + b"]" * 50000, 422,
     "the JSON body is nested deeper than 32 levels"),
    ("40-deep nesting in an extra field", "/v1/classify", b'{"texts": ["x"], "e": ' + b"[" * 40 + b"]" * 40 + b"}",
     422, "the JSON body is nested deeper than 32 levels"),
]


@pytest.mark.parametrize("name,route,body,status,message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_json_is_a_4xx_with_a_message(server, name, route, body, status, message):
    url, _ = server
    response = raw(url, body, path=route)
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(message), response.json()


def test_malformed_json_and_wrong_types_keep_fastapis_422(server):
    url, _ = server
    bad = raw(url, b'{"texts": [')
    assert bad.status_code == 422 and bad.json()["detail"][0]["type"] == "json_invalid"
    typed = raw(url, b'{"texts": ["ok"], "extra": "\\u00e9"}')
    assert typed.status_code == 422 and typed.json()["detail"][0]["type"] == "extra_forbidden"
    assert typed.json()["detail"][0]["input"] == "\u00e9"


def test_the_key_is_checked_before_the_body_is_read(server):
    url, _ = server
    for body in (b'{"texts": [NaN]}', b"\xff", b"[" * 50000, b"x" * 200_000):
        response = raw(url, body, key=None)
        assert response.status_code == 401 and "API key" in response.json()["detail"], response.text
        assert response.headers["www-authenticate"] == "Bearer"
    metrics = httpx.get(url + "/metrics").text
    assert 'tunecraft_errors_total{route="/v1/classify",status="401"}' in metrics


def test_a_big_body_is_413_with_or_without_content_length(server):
    url, _ = server
    declared = raw(url, b'{"texts": ["' + b"a" * 200_000 + b'"]}')
    assert declared.status_code == 413 and declared.json()["detail"] == "request body is larger than 100000 bytes"
    sock = socket.create_connection(address(url), timeout=10)
    try:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"X-API-Key: " + KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"a" * 65536)
        try:
            for _ in range(20 * 16):  # 20 MB
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed without reading the rest
        answer = read_response(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'{"detail":"request body is larger than 100000 bytes"}' in answer.replace(b": ", b":")


def test_openapi_does_not_publish_the_run_path(server):
    url, run_dir = server
    spec = httpx.get(url + "/openapi.json").text
    assert str(run_dir.resolve()) not in spec and str(run_dir.parent) not in spec
    assert "Serving the tunecraft run tiny-serve" in spec


def test_stalled_clients_get_408_and_are_closed_and_the_connection_cap_answers_503(server):
    url, _ = server
    stalled = []
    try:
        for _ in range(MAX_CONNECTIONS - 1):  # uvicorn refuses when the open connections reach the cap
            sock = socket.create_connection(address(url), timeout=BODY_TIMEOUT + 20)
            sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"X-API-Key: " + KEY.encode() + b"\r\nContent-Length: 100\r\n\r\n" + b'{"texts": ["a')
            stalled.append(sock)
        over = raw(url, b'{"texts": ["fine"]}')
        assert over.status_code == 503 and over.text == "Service Unavailable"  # uvicorn's own answer
        answers = [read_response(sock) for sock in stalled]  # each ends when the server closes it
    finally:
        for sock in stalled:
            sock.close()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert f"the request body did not arrive within {BODY_TIMEOUT} seconds".encode() in answer
        assert b"connection: close" in answer.lower()
    assert raw(url, b'{"texts": ["fine"]}').status_code == 200


def test_a_long_text_is_cut_as_predict_cuts_it_and_the_answer_says_so(server):
    url, run_dir = server
    texts = ["a gorgeous, witty film " * 20, "fine"]
    answer = raw(url, httpx.Request("POST", "/", json={"texts": texts}).content)
    assert answer.status_code == 200
    served = answer.json()["predictions"]
    assert [p["truncated"] for p in served] == [True, False]
    local = predict(run_dir, texts)
    assert [p["truncated"] for p in local] == [True, False]
    assert [p["label"] for p in served] == [p["label"] for p in local]
    for s, p in zip(served, local):
        assert s["score"] == pytest.approx(p["score"], abs=2e-3)


def test_feedback_db_is_created_by_the_first_feedback_not_by_serve(server):
    url, run_dir = server
    db = run_dir / "feedback.sqlite"
    assert httpx.get(url + "/health").status_code == 200 and not db.exists()
    stored = raw(url, b'{"text": "a fine film", "label": "positive"}', path="/v1/feedback")
    assert stored.status_code == 200 and stored.json() == {"id": 1, "stored": True}
    assert db.is_file()


def test_the_error_handlers_leave_out_or_escape_what_they_cannot_serialise():
    errors = [{"type": "float_type", "loc": ["body", "x"], "msg": "bad", "input": float("nan")},
              {"type": "string_type", "loc": ["body", "y"], "msg": "bad", "input": "\ud800"},
              {"type": "extra_forbidden", "loc": ["body", "z"], "msg": "bad", "input": "fine"}]
    answer = asyncio.run(validation_error(None, RequestValidationError(errors)))
    assert answer.status_code == 422
    assert json.loads(answer.body)["detail"] == [
        {"type": "float_type", "loc": ["body", "x"], "msg": "bad"},
        {"type": "string_type", "loc": ["body", "y"], "msg": "bad"},
        {"type": "extra_forbidden", "loc": ["body", "z"], "msg": "bad", "input": "fine"}]
    escaped = asyncio.run(http_error(None, HTTPException(422, "unknown label '\ud800'")))
    assert escaped.status_code == 422 and json.loads(escaped.body) == {"detail": "unknown label '\\ud800'"}
