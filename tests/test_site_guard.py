"""A web page cannot drive the studio or the server: DNS-rebinding Hosts refused (400), cross-site state-changing
requests refused by Origin / Sec-Fetch-Site (403), the studio's per-start token required (403); studio launches
confined to its roots, code rewards refused without --allow-code-rewards, and no file's contents echoed."""

import json

import pytest
import yaml
from fastapi.testclient import TestClient

from tunecraft.serve.site_guard import TOKEN_HEADER, TOKEN_MESSAGE, host_name
from tunecraft.studio.app import create_app
from tunecraft.studio.settings import StudioSettings

URL = "http://127.0.0.1:7860"
SECRET = "TOPSECRET-first-line,of,a,private,file"
RECIPE = {"name": "r", "output_dir": "runs", "seed": 7,
          "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": 64},
          "data": {"dataset": "mr", "max_train_samples": 8, "max_eval_samples": 8},
          "train": {"max_steps": 1, "batch_size": 8, "progress": False, "tensorboard": False}}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A studio's folder: recipes/r.yaml, runs/, data/own.csv, and a private file beside them (outside)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "r.yaml").write_text(yaml.safe_dump(RECIPE), encoding="utf-8")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "own.csv").write_text("text,label\na fine film,positive\n", encoding="utf-8")
    (tmp_path / "private.csv").write_text(SECRET + "\n", encoding="utf-8")
    (tmp_path / "outside.yaml").write_text(yaml.safe_dump(RECIPE) + f"# {SECRET}\n", encoding="utf-8")
    return tmp_path


def studio(**settings) -> TestClient:
    app = create_app(StudioSettings(runs="runs", recipes="recipes", **settings))
    return TestClient(app, base_url=URL, headers={TOKEN_HEADER: app.state.token})


def test_host_names_are_read_without_port_case_or_brackets():
    assert [host_name(h) for h in ("LocalHost:7860", "[::1]:8000", "127.0.0.1", "example.com.")] == \
        ["localhost", "::1", "127.0.0.1", "example.com"]


def test_a_dns_rebinding_host_is_refused_by_the_studio(project):
    client = studio()
    refused = client.get("/", headers={"Host": "attacker.example"})
    assert refused.status_code == 400
    assert refused.json()["detail"].startswith("Host 'attacker.example' is not this server's: it answers to "
                                               "127.0.0.1, ::1, localhost")
    assert client.get("/", headers={"Host": "localhost:7860"}).status_code == 200
    assert client.get("/", headers={"Host": "[::1]:7860"}).status_code == 200
    allowed = studio(allowed_hosts=["studio.lan"])
    assert allowed.get("/", headers={"Host": "studio.lan:7860"}).status_code == 200


@pytest.mark.parametrize("headers", [{"Origin": "http://attacker.example"}, {"Origin": "null"},
                                     {"Origin": "http://127.0.0.1:3000"}, {"Sec-Fetch-Site": "cross-site"}])
@pytest.mark.parametrize("key", [None, "k"])
def test_cross_site_posts_are_refused_with_or_without_a_key(project, headers, key):
    client = studio(api_key=key)
    extra = {"X-API-Key": key} if key else {}
    for path in ("/api/runs/r/stop", "/api/runs/r/resume", "/api/launch", "/api/runs/r/explain"):
        refused = client.post(path, json={}, headers={**headers, **extra})
        assert refused.status_code == 403, path
        assert refused.json()["detail"].startswith("cross-site POST refused")


def test_a_post_without_this_starts_token_is_refused(project):
    client = studio()
    for token in ("", "a-token-of-another-start"):
        refused = client.post("/api/check", json={"recipe": "recipes/r.yaml"}, headers={TOKEN_HEADER: token})
        assert (refused.status_code, refused.json()["detail"]) == (403, TOKEN_MESSAGE)
    other = studio()  # a new start: a new token
    assert other.app.state.token != client.app.state.token


def test_the_studios_own_page_carries_the_token_and_its_same_site_calls_pass(project):
    client = TestClient(create_app(StudioSettings(runs="runs", recipes="recipes")), base_url=URL)
    page = client.get("/launch").text
    token = page.split('<meta name="tunecraft-token" content="')[1].split('"')[0]
    assert token == client.app.state.token
    same_site = {TOKEN_HEADER: token, "Origin": URL, "Sec-Fetch-Site": "same-origin"}
    checked = client.post("/api/check", json={"recipe": "recipes/r.yaml"}, headers=same_site)
    assert checked.status_code == 200 and checked.json()["command"].startswith("tunecraft train recipes/r.yaml")


def test_launches_outside_the_roots_are_refused_and_no_contents_are_shown(project):
    client = studio()
    outside = client.post("/api/launch", json={"recipe": str(project / "outside.yaml")})
    assert outside.status_code == 403
    assert outside.json()["error"].startswith(f"recipe {project / 'outside.yaml'}: outside the folders this "
                                              "studio launches from")
    page = client.get("/launch", params={"recipe": str(project / "outside.yaml")})
    assert page.status_code == 403 and "outside the folders" in page.text
    private = ["data.dataset=null", f"data.train={project / 'private.csv'}"]
    data = client.post("/api/launch", json={"recipe": "recipes/r.yaml", "overrides": private})
    assert data.status_code == 403
    assert data.json()["error"].startswith(f"data.train: {project / 'private.csv'} is outside the folders")
    for answer in (outside.text, page.text, data.text):
        assert "TOPSECRET" not in answer
    assert not (project / "runs" / ".studio" / "launches").exists()  # nothing started, no log to read
    inside = client.post("/api/check", json={"recipe": "recipes/r.yaml",
                                             "overrides": ["data.dataset=null", "data.train=data/own.csv"]})
    assert inside.status_code == 200, inside.text
    more = studio(data=["."])  # --data . : the whole project folder
    assert more.post("/api/check", json={"recipe": str(project / "outside.yaml")}).status_code == 200


def test_code_rewards_need_allow_code_rewards(project):
    reward = ["task=rl", 'rl.rewards=[{"function": "json:dumps"}]']
    refused = studio().post("/api/check", json={"recipe": "recipes/r.yaml", "overrides": reward})
    assert refused.status_code == 403
    assert refused.json()["error"] == ("task.rewards.0.function: a reward that imports and runs Python code "
                                       "(json:dumps) is refused from the studio; start it with --allow-code-rewards "
                                       "to allow it")
    allowed = studio(allow_code_rewards=True).post("/api/check", json={"recipe": "recipes/r.yaml",
                                                                       "overrides": reward})
    assert allowed.status_code != 403, allowed.text


def test_serve_refuses_a_rebinding_host_and_cross_site_posts_but_not_plain_clients(tmp_path):
    from tunecraft.serve.app import create_app as serve_app
    from tunecraft.serve.settings import ServeSettings

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "tunecraft.json").write_text(json.dumps({"task": "classification"}), encoding="utf-8")
    client = TestClient(serve_app(ServeSettings(run=str(run))), base_url="http://127.0.0.1:8000")
    refused = client.get("/health", headers={"Host": "attacker.example:8000"})
    assert refused.status_code == 400 and refused.json()["detail"].startswith("Host 'attacker.example:8000' is not")
    assert client.get("/health").status_code == 503  # past the guard: the model is not loaded in this test
    cross = client.post("/v1/classify", json={"texts": ["x"]}, headers={"Origin": "http://attacker.example"})
    assert cross.status_code == 403 and cross.json()["detail"].startswith("cross-site POST refused")
    plain = client.post("/health", json={})  # curl, the openai client: no Origin
    assert plain.status_code == 405  # past the guard, to the routes (/health takes GET)
    wide = TestClient(serve_app(ServeSettings(run=str(run), host="0.0.0.0", allowed_hosts=["api.lan"])))
    assert wide.get("/health", headers={"Host": "10.1.2.3:8000"}).status_code == 503
    assert wide.get("/health", headers={"Host": "api.lan"}).status_code == 503
    assert wide.get("/health", headers={"Host": "other.lan"}).status_code == 400
