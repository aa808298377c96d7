"""The OpenAI API's error shape on a causal-LM server's /v1/* routes (validation, 401, 404, 413, 500) and the
request fields beyond plain chat: max_completion_tokens, the developer role, text content parts, and the OpenAI
fields this server does not honour refused by name. In process (FastAPI's TestClient) on the tiny decoder."""

import openai
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from tests.tiny_decoder import tiny_base, tiny_run
from tunecraft.serve.app import create_app
from tunecraft.serve.settings import ServeSettings

KEY = "k3y"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    base = tiny_base(tmp_path_factory.mktemp("shape") / "base")
    run = tiny_run(base.parent, base, "chat")
    settings = ServeSettings(run=str(run), api_key=KEY, allowed_hosts=["testserver"], max_body_bytes=20_000,
                             max_new_tokens=16, precision="fp32")
    app = create_app(settings)

    @app.get("/v1/crash")
    async def crash():
        raise RuntimeError("boom")

    @app.get("/v1/busy")
    async def busy():  # no route refuses with 429 today; a proxy-like limit would raise it like this
        raise HTTPException(429, "too many requests; retry in 1 s")

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def chat(http, **fields):
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3, **fields}
    return http.post("/v1/chat/completions", json=body, headers=AUTH)


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_validation_errors_take_the_openai_shape_naming_the_field(http):
    error = error_of(chat(http, n=0), 422)
    assert error["param"] == "n" and error["code"] == "greater_than_equal" and error["message"].startswith("n: ")
    error = error_of(chat(http, messages=[{"role": "robot", "content": "x"}]), 422)
    assert error["param"] == "messages[0].role" and error["type"] == "invalid_request_error"
    assert error_of(chat(http, tempreature=1), 422)["param"] == "tempreature"  # a typo is no OpenAI field
    bad = http.post("/v1/chat/completions", content=b'{"model": "chat", "messages": [',
                    headers={**AUTH, "content-type": "application/json"})
    error = error_of(bad, 422)
    assert error["code"] == "json_invalid" and error["param"] is None


def test_auth_size_unknown_model_and_route_and_crash_errors_take_the_openai_shape(http):
    error = error_of(http.post("/v1/chat/completions", json={}), 401)  # refused before the body, by the guard
    assert error["code"] == "invalid_api_key" and "missing or wrong API key" in error["message"]
    assert error_of(http.get("/v1/models", headers={"Authorization": "Bearer no"}), 401)["type"] == \
        "authentication_error"
    big = error_of(chat(http, stop="x" * 30_000), 413)
    assert big["message"] == "request body is larger than 20000 bytes" and big["code"] == "request_too_large"
    model = error_of(chat(http, model="gpt-4"), 404)
    assert model["param"] == "model" and model["code"] == "model_not_found" and "this server serves: chat" in \
        model["message"]
    route = error_of(http.get("/v1/nothing", headers=AUTH), 404)
    assert route["message"].startswith("no route GET /v1/nothing for this causal_lm run; it serves: ")
    assert error_of(http.get("/v1/busy", headers=AUTH), 429) == {
        "message": "too many requests; retry in 1 s", "type": "rate_limit_error", "param": None,
        "code": "rate_limit_exceeded"}
    crash = error_of(http.get("/v1/crash", headers=AUTH), 500)
    assert crash == {"message": "internal error: RuntimeError", "type": "server_error", "param": None,
                     "code": "internal_error"}


def test_routes_outside_v1_answer_as_before(http):
    response = http.get("/nothing")
    assert response.status_code == 404 and set(response.json()) == {"detail"}
    assert http.get("/health").json()["ready"] is True


def test_max_completion_tokens_is_max_tokens_and_a_differing_pair_is_refused(http):
    one = chat(http, max_tokens=None, max_completion_tokens=2, temperature=0).json()
    assert one["usage"]["completion_tokens"] <= 2
    assert chat(http, max_tokens=2, temperature=0).json()["choices"] == one["choices"]
    assert chat(http, max_tokens=2, max_completion_tokens=2).status_code == 200
    error = error_of(chat(http, max_tokens=2, max_completion_tokens=3), 400)
    assert error["param"] == "max_completion_tokens" and error["code"] == "conflicting_parameters"
    assert error["message"] == "max_tokens (2) and max_completion_tokens (3) differ; give one of them"


def test_developer_role_is_system_and_text_parts_are_joined(http):
    def answer(messages):
        response = chat(http, messages=messages, temperature=0, max_tokens=4)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"]

    system = answer([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a\nb"}])
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert answer([{"role": "developer", "content": "Be brief."}, {"role": "user", "content": parts}]) == system
    image = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "x"}}]
    error = error_of(chat(http, messages=[{"role": "user", "content": image}]), 400)
    assert error["param"] == "messages[0].content[1].type" and '"image_url"' in error["message"]


REFUSED = [("logprobs", True), ("top_logprobs", 2), ("frequency_penalty", 0.5), ("presence_penalty", -1.0),
           ("logit_bias", {"50": 10}), ("response_format", {"type": "json_object"}),
           ("tools", [{"type": "function", "function": {"name": "f"}}]), ("tool_choice", "auto"),
           ("parallel_tool_calls", True), ("function_call", "auto")]


@pytest.mark.parametrize(("field", "value"), REFUSED)
def test_an_openai_field_not_honoured_is_refused_naming_it(http, field, value):
    error = error_of(chat(http, **{field: value}), 400)
    assert error["param"] == field and error["code"] == "unsupported_parameter"
    assert error["message"].startswith(f"{field}=") and "is not supported by this server" in error["message"]


def test_the_no_op_values_of_those_fields_are_accepted(http):
    response = chat(http, logprobs=False, frequency_penalty=0, presence_penalty=0.0, logit_bias={}, tools=[],
                    tool_choice="none", response_format={"type": "text"})
    assert response.status_code == 200, response.text
    def complete(**fields):
        return http.post("/v1/completions", headers=AUTH, json={"model": "chat", "prompt": "hi", "max_tokens": 2,
                                                                 **fields})

    assert complete(echo=False, best_of=1, suffix="", logprobs=False).status_code == 200
    for field, value in (("echo", True), ("best_of", 3), ("suffix", "end"), ("logprobs", 2)):
        assert error_of(complete(**{field: value}), 400)["param"] == field
    assert error_of(chat(http, echo=True), 422)["code"] == "extra_forbidden"  # no chat field


def test_the_official_client_raises_our_message(http):
    client = openai.OpenAI(base_url="http://testserver/v1", api_key=KEY, http_client=http, max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], logprobs=True)
    ours = "logprobs=true is not supported by this server; leave logprobs out"
    assert raised.value.message == f"Error code: 400 - {ours}"  # the client found our message in the body
    assert raised.value.body["message"] == ours
    assert raised.value.param == "logprobs" and raised.value.code == "unsupported_parameter"
    with pytest.raises(openai.AuthenticationError, match="missing or wrong API key"):
        openai.OpenAI(base_url="http://testserver/v1", api_key="no", http_client=http, max_retries=0).models.list()
