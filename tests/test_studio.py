"""tunecraft studio in a real headless Chromium (Debian's, driven by Playwright): what a person sees on the runs
page, a comparison, a launch from the form with its live curve, try it (classify, entities, chat, explain), the
feedback queues, the schema's message for a bad override, a recipe of another command, and the key. With
TUNECRAFT_STUDIO_SCREENSHOTS=DIR the pages are saved there as studio-*.png (docs/studio.md)."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tunecraft.config import build_config, dump_config, load_config, load_recipe
from tunecraft.data.preferences import read_store_table
from tunecraft.experiment import experiment
from tunecraft.pretrain.config import TokenizerRecipe
from tunecraft.serve.feedback import FeedbackStore

from .conftest import free_port
from .ner_data import write_english_ner
from .tiny_decoder import tiny_base, tiny_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
KEY = "studio-key-123"
SHOTS = os.environ.get("TUNECRAFT_STUDIO_SCREENSHOTS")
TINY = {"task": "classification", "seed": 7,
        "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": 64},
        "data": {"dataset": "mr", "max_train_samples": 400, "max_eval_samples": 100},
        "train": {"max_steps": 20, "batch_size": 32, "eval_every": 10, "log_every": 5, "progress": False,
                  "tensorboard": False, "num_threads": 1},
        "baselines": {"zero_shot": False}}


def tiny(name: str, output_dir, **train) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw.update(name=name, output_dir=str(output_dir))
    raw["train"].update(train)
    return raw


@pytest.fixture(scope="module")
def studio_runs(tmp_path_factory):
    """Two finished tiny classification runs (a scratch encoder, 20 steps), a tiny NER run (a scratch encoder,
    100 steps on the template sentences of ner_data.py), a tiny chat run (tiny_decoder.py), and a recipes
    folder with a tiny train recipe and a tiny tokenizer recipe."""
    folder = tmp_path_factory.mktemp("studio")
    runs = folder / "runs"
    summaries = {name: experiment(build_config(tiny(name, runs, lr=lr))) for name, lr in (("tiny-a", 3e-3),
                                                                                          ("tiny-b", 1e-3))}
    train_file, test_file = write_english_ner(folder, n_train=300, n_test=40)
    experiment(build_config({
        "name": "tiny-ner", "output_dir": str(runs), "seed": 7, "task": "token_classification",
        "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": 64},
        "data": {"dataset": None, "train": train_file, "test": test_file, "split": {"validation": 0.1}},
        "train": {"max_steps": 100, "batch_size": 32, "lr": 3e-3, "eval_each_epoch": False, "progress": False,
                  "tensorboard": False, "num_threads": 1},
        "baselines": {"zero_shot": False}}))
    tiny_run(runs, tiny_base(folder / "decoder"), "tiny-chat")
    recipes = folder / "recipes"
    recipes.mkdir()
    recipe = tiny("from-form", "runs", max_steps=120, eval_every=10, log_every=2, checkpoint_every=10)
    (recipes / "tiny.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    (folder / "data").mkdir()  # the studio's default data folder: launches read only its roots (--data)
    (folder / "data" / "corpus.txt").write_text("\n\n".join(f"line {i} of a small corpus, {i * 7 % 13} words" for i in
                                                   range(200)) + "\n", encoding="utf-8")
    (recipes / "tok.yaml").write_text(yaml.safe_dump({"name": "tok", "kind": "chars", "vocab_size": 100,
                                                      "min_frequency": 1, "corpus": {"files": ["data/corpus.txt"]}}),
                                      encoding="utf-8")
    return folder, runs, recipes / "tiny.yaml", summaries


@pytest.fixture(scope="module")
def studio(studio_runs):
    folder, runs, _, _ = studio_runs
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tunecraft", "studio", "--runs", str(runs), "--recipes", "recipes",
                             "--port", str(port), "--api-key", KEY], cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read())
        try:
            httpx.get(url + "/key", timeout=1)
            break
        except httpx.HTTPError:
            if time.time() > deadline:
                proc.kill()
                raise RuntimeError("the studio did not start") from None
            time.sleep(0.3)
    yield url
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (make install puts it there: apt-get install -y chromium)")
        pytest.skip("chromium is not installed: apt-get install -y chromium (make install does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, studio):
    context = browser.new_context(base_url=studio, viewport={"width": 1280, "height": 800},
                                  extra_http_headers={"X-API-Key": KEY})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def shot(page, name: str, full_page: bool = False) -> None:
    """The page as a small PNG (a 64-colour palette: a UI has few colours) for docs/studio.md."""
    if SHOTS:
        path = Path(SHOTS) / f"studio-{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=full_page)
        small(path)


def small(path: Path) -> None:
    from PIL import Image

    Image.open(path).convert("RGB").quantize(colors=64).save(path, optimize=True)


def test_runs_page_shows_each_run_and_its_accuracy(page, studio_runs):
    _, _, _, summaries = studio_runs
    page.goto("/")
    for name, summary in summaries.items():
        row = page.locator(f"#runs tr[data-name='{name}']")
        assert row.locator("td").nth(2).inner_text() == "classification"
        assert f"accuracy {100 * summary['metrics']['accuracy']:.2f} %" in row.inner_text()
        assert "finished" in row.inner_text()
        warns = sum(f["severity"] == "warn" for f in summary.get("doctor") or [])
        assert (f"{warns} doctor" in row.inner_text()) == (warns > 0)  # the doctor's count beside the name
    shot(page, "runs")
    page.fill("#filter", "tiny-b")
    assert page.locator("#runs tr[data-name='tiny-a']").is_hidden()
    page.set_viewport_size({"width": 390, "height": 800})
    page.fill("#filter", "")
    shot(page, "runs-narrow")


def test_compare_two_runs(page, studio_runs):
    _, _, _, summaries = studio_runs
    page.goto("/")
    page.check("input.pick[value='tiny-a']")
    page.check("input.pick[value='tiny-b']")
    page.click("#compare")
    page.wait_for_url("**/compare?run=tiny-a&run=tiny-b")
    table = page.locator("#comparison")
    for name, summary in summaries.items():
        row = table.locator(f"tr:has(a:text-is('{name}'))")
        assert f"{100 * summary['metrics']['accuracy']:.2f}" in row.inner_text()
        assert f"train.lr={ {'tiny-a': 0.003, 'tiny-b': 0.001}[name]}" in row.inner_text()  # the settings cell
    assert page.locator("#different-data").count() == 0  # both scored on the same 100 test texts
    assert page.locator("img.plot").evaluate("img => img.complete && img.naturalWidth > 0")
    shot(page, "compare")


def test_run_page_try_it_classifies_a_text(page, studio_runs):
    _, runs, _, summaries = studio_runs
    page.goto("/runs/tiny-a")
    assert "Predictions" in page.inner_text("main")
    assert page.locator("#predictions tr.wrong").count() == summaries["tiny-a"]["metrics"]["samples"] - round(
        summaries["tiny-a"]["metrics"]["accuracy"] * summaries["tiny-a"]["metrics"]["samples"])
    from tunecraft import predict

    rows = [json.loads(line) for line in (runs / "tiny-a" / "predictions.jsonl").read_text().splitlines()]
    right = [r["text"] for r in rows if r["label"] == r["prediction"]]
    assert page.input_value("#try-classify textarea") == right[0]  # an example from the run's own test data
    page.wait_for_selector("#loss-plot .legend")
    legends = page.locator("#loss-plot .legend").count()
    assert legends >= 2 and page.locator("#loss-plot .swatch").count() == legends  # each name has its colour key
    text = "a gorgeous, witty, moving film"
    expected = predict(runs / "tiny-a", [text])[0]["label"]
    page.fill("#try-classify textarea", text)
    page.click("#try-classify button[type=submit]")
    page.wait_for_selector("#classify-result .label")
    assert page.inner_text("#classify-result .label").startswith(expected + " (")
    shot(page, "run", full_page=False)


def test_try_it_shows_the_top_labels_most_probable_first(page, studio_runs):
    """With many labels (15 here, answered by a stand-in for the run's server) the bars are the 10 most probable,
    highest first, and one line sums the other 5."""
    probs = {f"label-{i:02d}": p for i, p in enumerate([0.02] * 5 + [0.05] * 8 + [0.15, 0.25])}  # sums to 1
    body = {"predictions": [{"label": "label-14", "score": 0.25, "probabilities": probs}]}
    page.route("**/try/tiny-a/v1/classify", lambda route: route.fulfill(json=body))
    page.goto("/runs/tiny-a")
    page.click("#try-classify button[type=submit]")
    page.wait_for_selector("#classify-result .bar-more")
    bars = page.locator("#classify-result .bar").all_inner_texts()
    values = [float(b.split()[-1]) for b in bars]
    assert len(bars) == 10 and values == sorted(values, reverse=True) and bars[0].startswith("label-14")
    assert page.inner_text("#classify-result .bar-more") == "5 more labels, 0.100 together"


def test_try_it_highlights_the_entities_predict_finds(page, studio_runs):
    _, runs, _, _ = studio_runs
    from tunecraft import predict

    text = "Maria Lopez visited Paris last week ."
    expected = [(e["text"], e["type"]) for e in predict(runs / "tiny-ner", [text])[0]["entities"]]
    assert expected  # the tiny model finds names it was trained on
    page.goto("/runs/tiny-ner")
    page.fill("#try-entities textarea", text)
    page.click("#try-entities button[type=submit]")
    page.wait_for_selector("#entities-result p.tagged")
    marks = page.locator("#entities-result mark")
    # each entity `tunecraft predict` gives, highlighted in the text with its label
    assert [(m.evaluate("m => m.firstChild.textContent"), m.get_attribute("data-type"))
            for m in marks.all()] == expected
    assert page.inner_text("#entities-result p.tagged").replace("\n", "").startswith(expected[0][0])
    page.locator("#try").scroll_into_view_if_needed()
    shot(page, "try-entities")


def test_try_it_chat_streams_the_greedy_answer_and_rates_it(page, studio_runs):
    _, runs, _, _ = studio_runs
    from tunecraft import predict

    expected = predict(runs / "tiny-chat", ["What is AI?"])[0]["response"]
    assert expected
    page.goto("/runs/tiny-chat")
    page.fill("#try-chat textarea", "What is AI?")
    with page.expect_response(lambda r: r.url.endswith("/v1/chat/completions")) as response:
        page.click("#try-chat button[type=submit]")
    page.wait_for_selector("#chat-log .msg.assistant.done")
    chunks = [response.value.text()]  # the answer arrived as server-sent events, one delta at a time
    assert page.inner_text("#chat-log .msg.assistant") == expected  # the run's greedy answer, as predict gives it
    deltas = [json.loads(line[6:])["choices"][0]["delta"].get("content") for line in chunks[0].splitlines()
              if line.startswith("data: {")]
    assert "".join(d for d in deltas if d) == expected and sum(bool(d) for d in deltas) > 1
    page.click(".rate-answer button[data-rating='1']")
    page.wait_for_selector(".rate-answer button[data-rating='1'][aria-pressed='true']")
    page.locator("#try").scroll_into_view_if_needed()
    shot(page, "try-chat")
    # through the server's /v1/feedback
    stored = read_store_table(runs / "tiny-chat" / "feedback.sqlite", "chat_feedback")
    assert [(json.loads(r["messages"]), r["response"], r["rating"]) for r in stored] == [
        ([{"role": "user", "content": "What is AI?"}], expected, 1)]


def test_explain_colours_one_span_per_token(page, studio_runs):
    _, runs, _, _ = studio_runs
    from tunecraft.evaluate.explain import explain

    text = "a gorgeous, witty, moving film"
    attr, _ = explain(runs / "tiny-a", text, steps=32, html_path=runs.parent / "explained.html")
    page.goto("/runs/tiny-a")
    page.fill("#try-classify textarea", text)
    page.click("#explain")
    page.wait_for_selector("#explain-result span[title]")
    spans = page.locator("#explain-result span[title]")
    assert [s.inner_text() for s in spans.all()] == attr.tokens  # one coloured span per token
    colours = [re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)", c).groups() for c in
               spans.evaluate_all("ss => ss.map(s => getComputedStyle(s).backgroundColor)")]
    # green for the label, red against, each as strong as its attribution
    assert [c[:3] for c in colours] == [("0", "160", "0") if a >= 0 else ("210", "0", "0") for a in attr.scores]
    strongest = max(range(len(attr.scores)), key=lambda i: abs(attr.scores[i]))
    assert colours[strongest][3] is None  # full strength: no transparency left
    assert all(c[3] is None or float(c[3]) < 1 for c in colours)
    page.locator("#explain-result").scroll_into_view_if_needed()
    shot(page, "explain")


def test_invalid_override_shows_the_schema_message(page, studio_runs):
    _, _, recipe, _ = studio_runs
    page.goto("/launch")
    page.fill("input[data-key='train.lr']", "-1")
    page.click("#check")
    error = page.locator(".field[data-key='train.lr'] .field-error")
    error.wait_for()
    error.scroll_into_view_if_needed()
    with pytest.raises(Exception) as cli:  # the message `tunecraft train recipe train.lr=-1` prints
        load_config(recipe, ["train.lr=-1"])
    line = str(cli.value).splitlines()[1].strip()
    assert error.inner_text() == line == "train.lr: Input should be greater than 0 (got -1)"
    shot(page, "launch-invalid")


def test_launch_from_the_form_watch_the_curve_stop_and_resume(page, studio_runs):
    folder, runs, recipe, _ = studio_runs
    page.goto("/launch")
    page.fill("input[data-key='name']", "launched")
    shot(page, "launch")
    page.click("#go")
    page.wait_for_url("**/runs/launched")
    count = "document.querySelectorAll('#loss-plot circle.point').length"
    page.wait_for_function(f"{count} > 0")
    first = page.evaluate(count)
    page.wait_for_function(f"{count} > {first}")  # the curve gains points while the run trains
    page.wait_for_function("document.querySelector('#status').textContent === 'running'")
    page.click("#stop")  # SIGINT: the CLI's own interruption, exit status 130
    page.wait_for_function("document.querySelector('#status').textContent === 'stopped'")
    stopped = yaml.safe_load((runs / ".studio" / "launches" / "launched.json").read_text())["returncode"]
    assert stopped == 130 and not (runs / "launched" / "summary.json").exists()
    page.click("#resume")  # the same command with --resume
    page.wait_for_function("document.querySelector('#status').textContent === 'finished'", timeout=180_000)
    history = [yaml.safe_load(line) for line in (runs / "launched" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history if r["type"] == "train"] == list(range(2, 121, 2))  # no step twice
    shot(page, "live")
    # the run is the CLI's: the command recorded is `tunecraft train RECIPE overrides --resume`, and its
    # config.yaml is what the CLI writes for that recipe and those overrides
    overrides = ["name=launched", f"output_dir={runs}"]
    record = yaml.safe_load((runs / ".studio" / "launches" / "launched.json").read_text())
    assert record["command"][1:] == ["-m", "tunecraft", "train", "recipes/tiny.yaml", *overrides, "--resume"]
    with_cwd = os.getcwd()
    os.chdir(folder)
    try:
        expected = dump_config(load_config("recipes/tiny.yaml", overrides))
    finally:
        os.chdir(with_cwd)
    assert (runs / "launched" / "config.yaml").read_text(encoding="utf-8") == expected


def test_feedback_queue_confirm_correct_and_train_on_the_reviewed_rows(page, studio_runs):
    _, runs, _, _ = studio_runs
    store = FeedbackStore(runs / "tiny-b" / "feedback.sqlite")  # what the run's server stores on /v1/feedback
    store.add("a dull, lifeless mess", "negative", "positive", None, "tiny-b")
    store.add("one of the best films of the year", "negative", "negative", None, "tiny-b")
    store.close()
    page.goto("/runs/tiny-b")
    rows = page.locator("#feedback-queue tr[data-id]")
    assert rows.count() == 2
    rows.nth(0).locator("button.review").click()  # confirm: negative
    rows.nth(1).locator("select").select_option("positive")  # correct
    rows.nth(1).locator("button.review").click()
    page.wait_for_function("[...document.querySelectorAll('#feedback-queue button.review')]"
                           ".every(b => b.textContent === 'Saved')")
    page.locator("#feedback").scroll_into_view_if_needed()
    shot(page, "feedback")
    page.click("#feedback button.feedback-run")
    page.wait_for_url("**/launch?**")
    csv_path = runs / ".studio" / "feedback" / "tiny-b.csv"
    with open(csv_path, newline="", encoding="utf-8") as fh:
        assert list(csv.reader(fh)) == [["text", "label"], ["a dull, lifeless mess", "negative"],
                                        ["one of the best films of the year", "positive"]]
    assert page.input_value("#extra") == f"name=tiny-b-feedback\ndata.train={csv_path.resolve()}"
    page.click("#check")  # the run's own recipe with the reviewed rows as its training file: valid
    page.wait_for_function("document.querySelector('#command').textContent.includes('data.train=')")
    assert page.locator("#launch-error").is_hidden()


def test_chat_feedback_rate_edit_and_train_a_preference_run(page, studio_runs):
    _, runs, _, _ = studio_runs
    run = runs / "tiny-chat"
    store = FeedbackStore(run / "feedback.sqlite")  # what the run's server stores on /v1/feedback
    asked = [{"role": "user", "content": "Who are you?"}]
    first = store.add_chat(json.dumps(asked), "blue blue blue", -1, None, "tiny-chat")
    second = store.add_chat(json.dumps([{"role": "user", "content": "hello"}]), "hello there", 1, None, "tiny-chat")
    store.close()
    page.goto("/runs/tiny-chat")
    row = page.locator(f"#chat-queue tr[data-id='{first}']")
    assert row.locator(".msg.user").inner_text() == "Who are you?" and row.locator(".answer").inner_text() == \
        "blue blue blue"
    row.locator("textarea").fill("I am a small chat model.")
    row.locator("button.edit").click()  # the edited answer: a correction
    page.locator(f"#chat-queue tr[data-id='{second}'] button.rate[data-rating='-1']").click()  # thumbs down
    page.wait_for_selector(f"#chat-queue tr[data-id='{second}'] button.rate[data-rating='-1'][aria-pressed='true']")
    page.wait_for_function(f"document.querySelector(\"#chat-queue tr[data-id='{first}'] button.edit\").textContent "
                           "=== 'Saved'")
    rows = {r["id"]: r for r in read_store_table(run / "feedback.sqlite", "chat_feedback")}  # in the server's store
    assert (rows[first]["rating"], rows[first]["correction"]) == (-1, "I am a small chat model.")
    assert (rows[second]["rating"], rows[second]["correction"]) == (-1, None)
    token = page.get_attribute("meta[name='tunecraft-token']", "content")  # this start's (site_guard.py)
    refused = httpx.post(page.url.split("/runs/")[0] + f"/api/runs/tiny-chat/chat-feedback/{first}", json={},
                         headers={"X-API-Key": KEY, "X-Tunecraft-Token": token})
    assert refused.status_code == 422 and refused.json()["detail"] == \
        "give a rating, a correction (an edited answer), or both"  # the server's own message
    page.reload()
    assert page.locator(f"#chat-queue tr[data-id='{first}'] .trains-as").inner_text() == "pair"
    assert page.locator(f"#chat-queue tr[data-id='{second}'] .trains-as").inner_text() == "bad"
    page.locator("#chat-feedback").scroll_into_view_if_needed()
    shot(page, "chat-feedback")

    page.click("#chat-feedback button.feedback-run")
    page.wait_for_url("**/launch?**")
    overrides = page.input_value("#extra").splitlines() + ["train.max_steps=2", "train.batch_size=2"]
    page.fill("#extra", "\n".join(overrides))
    assert page.inner_text("#recipe-command") == "tunecraft train"
    page.click("#go")
    page.wait_for_url("**/runs/tiny-chat-feedback")
    page.wait_for_function("document.querySelector('#status').textContent === 'finished'", timeout=120_000)
    # the CLI's run: `tunecraft train RUN/config.yaml` with these overrides, a preference run on the store
    record = json.loads((runs / ".studio" / "launches" / "tiny-chat-feedback.json").read_text())
    assert record["command"][1:] == ["-m", "tunecraft", "train", str(run / "config.yaml"), *record["overrides"]]
    assert "task.name=preference" in record["overrides"] and f"data.train={(run / 'feedback.sqlite').resolve()}" in \
        record["overrides"]
    config = load_config(run / "config.yaml", record["overrides"])
    assert (runs / "tiny-chat-feedback" / "config.yaml").read_text(encoding="utf-8") == dump_config(config)
    summary = json.loads((runs / "tiny-chat-feedback" / "summary.json").read_text())
    assert f"feedback rows as pairs [{first}], as judged answers [" in summary["data"]


def test_launch_a_recipe_of_another_command(page, studio_runs):
    folder, runs, _, _ = studio_runs
    page.goto("/launch?recipe=recipes/tok.yaml")
    assert page.inner_text("#recipe-command") == "tunecraft tokenizer"
    assert page.input_value("input[data-key='vocab_size']") == "100"  # TokenizerRecipe's fields, not a run's
    assert page.locator("input[data-key='train.lr']").count() == 0
    page.fill("input[data-key='vocab_size']", "5")
    page.click("#check")
    error = page.locator(".field[data-key='vocab_size'] .field-error")
    error.wait_for()
    with pytest.raises(Exception) as cli:  # the message `tunecraft tokenizer recipes/tok.yaml vocab_size=5` prints
        load_recipe(folder / "recipes" / "tok.yaml", ["vocab_size=5"], TokenizerRecipe)
    assert error.inner_text() == str(cli.value).splitlines()[1].strip() == \
        "vocab_size: Input should be greater than or equal to 100 (got 5)"
    page.fill("input[data-key='vocab_size']", "100")
    page.click("#go")
    page.wait_for_url("**/runs/tok")
    page.wait_for_function("document.querySelector('#status').textContent === 'finished'", timeout=60_000)
    record = json.loads((runs / ".studio" / "launches" / "tok.json").read_text())
    assert record["command"][1:] == ["-m", "tunecraft", "tokenizer", "recipes/tok.yaml", f"output_dir={runs}"]
    assert (runs / "tok" / "tokenizer.json").is_file()


def test_a_request_without_the_key_is_refused(browser, studio):
    context = browser.new_context(base_url=studio, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    response = page.goto("/")
    assert response.status == 401
    assert page.inner_text("#refused") == "missing or wrong API key (send it as X-API-Key or Authorization: Bearer)"
    refused = httpx.post(studio + "/try/tiny-a/v1/classify", json={"texts": ["x"]})
    # the site guard stands before the key: a state change without this start's token is refused first
    assert refused.status_code == 403 and "X-Tunecraft-Token" in refused.text
    shot(page, "key")
    page.fill("input[name=key]", KEY)
    page.click("button[type=submit]")
    page.wait_for_selector("#runs")
    assert page.locator("#runs tr[data-name='tiny-a']").count() == 1
    context.close()


def test_every_shipped_yaml_recipe_has_its_command_and_form():
    """The launch page's recipes: each YAML recipe in recipes/ is matched to the CLI command that runs it, whose
    parser takes it (with --resume exactly where the command has it), and its form is generated."""
    from tunecraft.cli import build_parser
    from tunecraft.studio import form
    from tunecraft.studio.launch import RECIPE_COMMANDS, command_for

    parser = build_parser()
    for command in RECIPE_COMMANDS:
        args = parser.parse_args([command.name, "r.yaml", "a.b=1", "--overwrite"])
        assert (args.recipe, args.overrides, hasattr(args, "resume")) == ("r.yaml", ["a.b=1"], command.resume)
    root = Path(__file__).parent.parent / "recipes"
    found = {p.name: command_for(p).name for p in sorted(root.glob("*.yaml"))}
    assert {found[n] for n in found} == {c.name for c in RECIPE_COMMANDS}
    assert (found["mr-lora.yaml"], found["mr-lora-tune.yaml"], found["pd-char-tokenizer.yaml"],
            found["pd-pretrain-mlm.yaml"], found["mixed-stream.yaml"]) == ("train", "tune", "tokenizer", "pretrain",
                                                                          "continual")
    for name, command in found.items():
        sections = dict(form.sections(next(c for c in RECIPE_COMMANDS if c.name == command).load(root / name, [])))
        assert {f["key"] for f in sections["run"]} >= {"name", "output_dir"}
