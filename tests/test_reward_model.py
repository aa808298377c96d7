"""task: reward_model — the Bradley–Terry loss against a hand computation, the bundled human-rating pairs, bad pair
files, every method on a tiny encoder, exact accumulation, a decoder head, and a short real MiniLM run scored
through eval, predict and the HTTP route."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_decoder import tiny_base
from tunecraft.config import build_config
from tunecraft.data.rated_pairs import MIN_GAP, bundled_pairs_split, rated_sentences
from tunecraft.errors import ConfigError, DataError
from tunecraft.evaluate.runs import evaluate_run, predict
from tunecraft.experiment import experiment
from tunecraft.methods import METHODS
from tunecraft.tasks import build_task
from tunecraft.train import train
from tunecraft.trained import load_trained

TASK = build_task("reward_model")


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


class Outputs:
    def __init__(self, logits):
        self.logits = logits


# -- the loss ---------------------------------------------------------------------------------------------------

def test_bradley_terry_loss_equals_a_hand_computation_with_and_without_margin():
    # rewards of 2 pairs: the batch holds the chosen rows, then the rejected rows
    logits = torch.tensor([[1.0], [-0.5], [0.0], [0.5]])

    def nls(x):  # −log σ(x)
        return math.log(1 + math.exp(-x))

    plain = TASK.loss_sum(Outputs(logits), {"labels": torch.tensor([0.0, 0.0])})
    assert plain.item() == pytest.approx(nls(1.0 - 0.0) + nls(-0.5 - 0.5), abs=1e-6)
    with_margin = TASK.loss_sum(Outputs(logits), {"labels": torch.tensor([0.5, 2.0])})
    assert with_margin.item() == pytest.approx(nls(1.0 - 0.0 - 0.5) + nls(-0.5 - 0.5 - 2.0), abs=1e-6)
    assert TASK.count({"labels": torch.tensor([0.5, 2.0])}) == 2  # pairs, not rows


def test_pairwise_metrics_count_ties_half_and_bin_the_calibration():
    scores = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.3, 0.3], [5.0, 1.0]])
    m = TASK.evaluate(scores, _Enc([0.0] * 4, [1.0, 2.0, 3.0, 4.0]))
    assert m["accuracy"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert m["mean_margin"] == pytest.approx((2 - 1 + 0 + 4) / 4)
    assert sum(r["pairs"] for r in m["calibration"]) == 4
    assert sum(r["pairs"] for r in m["accuracy_by_data_margin"]) == 4


class _Enc:
    def __init__(self, labels, margins):
        self.labels, self.margins = labels, margins


# -- the bundled human-rating pairs -----------------------------------------------------------------------------

def test_bundled_rating_pairs_keep_held_out_sentences_out_of_training_and_prefer_the_higher_rating():
    parts = bundled_pairs_split("mr-pairs", 42, (0.1, 0.1))
    ratings = {text: rating for text, rating, _, _ in rated_sentences("mr")}
    sentences = {split: {t for p in pairs for t in (p.chosen, p.rejected)} for split, pairs in parts.items()}
    assert not sentences["test"] & sentences["train"] and not sentences["validation"] & sentences["train"]
    assert not sentences["test"] & sentences["validation"]
    for pairs in parts.values():
        for p in pairs[:500]:
            gap = ratings[p.chosen] - ratings[p.rejected]
            assert gap >= MIN_GAP and p.margin == pytest.approx(gap, abs=1e-4) and p.prompt == ""
    assert len(parts["train"]) > 10_000 and len(parts["test"]) > 1_000
    assert bundled_pairs_split("mr-pairs", 42, (0.1, 0.1))["test"] == parts["test"]  # fixed by the seed


# -- bad pair files ---------------------------------------------------------------------------------------------

def _data(path, **data):
    return build_config({"task": "reward_model", "data": {"dataset": None, "train": path, **data}}).data


@pytest.mark.parametrize("row, field, message", [
    ({"prompt": "q", "chosen": "a"}, "rejected", "missing"),
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "rejected", "the same text as chosen"),
    ({"prompt": "q", "chosen": "", "rejected": "b"}, "chosen", "is empty"),
    ({"chosen": "a", "rejected": "b", "margin": "big"}, "margin", "expected a number"),
])
def test_bad_pair_files_stop_with_file_line_and_field(write, row, field, message):
    path = write("pairs.jsonl", jsonl([{"chosen": "fine", "rejected": "poor"}, row]))
    with pytest.raises(DataError, match=message) as err:
        TASK.load_data(_data(path))
    assert (err.value.line, err.value.field) == (2, field) and "pairs.jsonl" in str(err.value)


def test_prompt_less_pairs_read_and_overlong_pairs_are_refused_or_dropped_and_counted(write):
    rows = [{"chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(9)]
    rows.append({"prompt": "p " * 200, "chosen": "good", "rejected": "bad"})  # line 10: too long
    path = write("pairs.jsonl", jsonl(rows))
    data = TASK.load_data(_data(path, split={"validation": 0.0, "test": 0.0}))
    assert [p.prompt for p in data.train].count("") == 9
    from transformers import AutoTokenizer

    from tunecraft.assets import model_path
    tokenizer = AutoTokenizer.from_pretrained(str(model_path("minilm-l6")))
    meta = {"max_length": 32, "reward_model": {"margin_scale": 0.0, "overlong": "error"}}
    with pytest.raises(DataError, match="more than model.max_length=32") as err:
        TASK.encode(tokenizer, data.train, meta)
    assert err.value.line == 10
    enc = TASK.encode(tokenizer, data.train, {**meta, "reward_model": {"margin_scale": 0.0, "overlong": "drop"}})
    assert (len(enc), enc.truncated) == (9, 1)


def test_settings_the_task_cannot_honour_are_refused():
    config = build_config({"task": "reward_model", "data": {"dataset": "mr-pairs"},
                           "train": {"label_smoothing": 0.1}})
    with pytest.raises(ConfigError, match="train.label_smoothing"):
        build_task(config.task).check_config(config)


# -- tiny models: every method, exact accumulation, a decoder ---------------------------------------------------

def _pairs_file(tmp, n=48, prompt=None):
    words = ["great", "fine", "superb", "lovely"], ["awful", "poor", "dull", "bad"]
    rows = [{**({"prompt": prompt} if prompt else {}), "chosen": f"a {words[0][i % 4]} film number {i}",
             "rejected": f"a {words[1][i % 4]} film number {i}", "margin": 1.0 + i % 3} for i in range(n)]
    path = tmp / "pairs.jsonl"
    path.write_text(jsonl(rows), encoding="utf-8")
    return str(path)


def _tiny(tmp, name, method, **train_cfg):
    path = _pairs_file(tmp)
    return build_config({
        "name": name, "output_dir": str(tmp), "seed": 3, "task": {"name": "reward_model", "margin_scale": 0.5},
        "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": 48, "dropout": 0.0},
        "data": {"dataset": None, "train": path, "validation": path, "test": path},
        "method": method,
        "train": {"max_steps": 2, "batch_size": 8, "lr": 1e-2, "precision": "fp32", "warmup_ratio": 0.0,
                  "num_threads": 1, "eval_each_epoch": False, "progress": False, "tensorboard": False,
                  **train_cfg}})


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_and_its_exported_run_scores_as_in_training(tmp_path, method):
    """The held-out rewards written during training (the in-memory model) equal the exported run's `predict`:
    the reward head is trained, saved and loaded back under every method (LoRA: peft's modules_to_save)."""
    settings = {"name": method, **({"layers": 1} if method == "freeze" else {})}
    config = _tiny(tmp_path, method, settings)
    train(config)
    rows = [json.loads(line) for line in (config.run_dir / "predictions.jsonl").read_text().splitlines()]
    scored = predict(config.run_dir, [r["chosen"] for r in rows[:8]] + [r["rejected"] for r in rows[:8]],
                     precision="fp32")
    expected = [r["reward_chosen"] for r in rows[:8]] + [r["reward_rejected"] for r in rows[:8]]
    assert [s["reward"] for s in scored] == pytest.approx(expected, abs=1e-4)
    assert len({round(r, 4) for r in expected}) > 2  # texts get different rewards


def test_gradient_accumulation_2x4_equals_1x8(tmp_path):
    """count() is the number of pairs, so two micro-batches of 4 pairs make the update of one batch of 8."""
    def weights(name, batch_size, grad_accum):
        config = _tiny(tmp_path, name, {"name": "lora"}, batch_size=batch_size, grad_accum=grad_accum,
                       group_by_length=False, lr=1e-3)
        train(config)
        return load_file(config.run_dir / "adapter" / "adapter_model.safetensors")  # with the reward head

    big, small = weights("one", 8, 1), weights("two", 4, 2)
    # the head's bias cancels in r_chosen − r_rejected: its gradient is 0 in one batch and float noise over two,
    # which Adam turns into a full step; it changes no margin, so it is left out of the comparison
    compared = [k for k in big if not k.endswith("classifier.bias")]
    assert len(compared) == len(big) - 1
    for key in compared:
        torch.testing.assert_close(small[key], big[key], atol=2e-5, rtol=1e-4, msg=key)
    other = weights("other", 4, 1)  # a control: another batch really differs
    assert any(not torch.allclose(other[k], big[k], atol=1e-4) for k in big)


def test_a_decoder_reward_model_learns_and_scores_answers_to_prompts(tmp_path):
    """A tiny scratch Llama with a score head on the last non-padding token: it learns the tiny preference, and
    scoring a batch of answers of different lengths equals scoring each alone (padding is not read)."""
    base = tiny_base(tmp_path / "base")
    path = _pairs_file(tmp_path, n=64, prompt="Review the film.")
    config = build_config({
        "name": "decoder", "output_dir": str(tmp_path), "seed": 0, "task": "reward_model",
        "model": {"base": str(base), "max_length": 48},
        "data": {"dataset": None, "train": path, "validation": path, "test": path},
        "method": {"name": "full"},
        "train": {"epochs": 4, "batch_size": 8, "lr": 3e-3, "precision": "fp32", "warmup_ratio": 0.0,
                  "num_threads": 1, "eval_each_epoch": False, "progress": False, "tensorboard": False}})
    summary = experiment(config)
    untrained = next(b for b in summary["baselines"] if b["name"] == "untrained head")["metrics"]["accuracy"]
    assert summary["metrics"]["accuracy"] >= 0.9 > untrained + 0.2
    trained = load_trained(config.run_dir)
    assert trained.model.config.pad_token_id == trained.tokenizer.pad_token_id is not None
    answers = ["a superb film", "a dull film number 3, long and slow and longer still"]
    asked = [{"prompt": "Review the film.", "text": a} for a in answers]
    together = TASK.predict(trained, asked, 8, None)
    alone = [TASK.predict(trained, [a], 1, None)[0] for a in asked]
    assert [r["reward"] for r in together] == pytest.approx([r["reward"] for r in alone], abs=1e-5)
    assert together[0]["reward"] > together[1]["reward"]


# -- a short real run: MiniLM + LoRA on human-rating pairs ------------------------------------------------------

@pytest.fixture(scope="module")
def mr_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reward")
    config = build_config({
        "name": "mr-reward", "output_dir": str(tmp), "seed": 7, "task": "reward_model",
        "model": {"base": "minilm-l6", "max_length": 48},
        "data": {"dataset": "mr-pairs", "max_train_samples": 320, "max_eval_samples": 128},
        "method": {"name": "lora", "r": 8, "alpha": 16},
        "train": {"epochs": 1, "batch_size": 16, "lr": 2e-3, "progress": False, "tensorboard": False}})
    return config, experiment(config)


@pytest.mark.slow
def test_a_short_real_run_learns_human_rating_pairs_well_above_its_untrained_head(mr_run):
    config, summary = mr_run
    metrics = summary["metrics"]
    baselines = {b["name"]: b["metrics"] for b in summary["baselines"]}
    assert metrics["accuracy"] >= 0.62 and metrics["accuracy"] >= baselines["untrained head"]["accuracy"] + 0.1
    assert 0.0 <= baselines["text length"]["accuracy"] <= 1.0
    report = (config.run_dir / "report.md").read_text(encoding="utf-8")
    assert "| pairwise accuracy |" in report and "calibration.png" in report and "| untrained head |" in report
    # `tunecraft eval` on a file of the run's own held-out pairs (prompt-less) scores them as training did
    rows = [json.loads(line) for line in (config.run_dir / "predictions.jsonl").read_text().splitlines()]
    held_out = config.run_dir.parent / "held-out.jsonl"
    held_out.write_text(jsonl({"chosen": r["chosen"], "rejected": r["rejected"], "margin": r["margin"]}
                              for r in rows), encoding="utf-8")
    again = evaluate_run(config.run_dir, str(held_out), precision=summary["precision"])
    assert again["samples"] == metrics["samples"] == len(rows)
    assert again["metrics"]["accuracy"] == pytest.approx(metrics["accuracy"], abs=0.02)


@pytest.mark.slow
def test_predict_and_the_reward_route_agree(mr_run):
    from fastapi.testclient import TestClient

    from tunecraft.serve.app import ServeSettings, create_app

    config, _ = mr_run
    texts = ["a gorgeous, witty, moving film", "a dull and lifeless mess"]
    alone = predict(config.run_dir, texts, precision="fp32")
    tabbed = predict(config.run_dir, [f"Review:\t{t}" for t in texts], precision="fp32")  # PROMPT<TAB>TEXT
    assert tabbed[0]["prompt"] == "Review:" and tabbed[0]["text"] == texts[0]
    with TestClient(create_app(ServeSettings(run=str(config.run_dir), batching=False, precision="fp32")),
                    base_url="http://127.0.0.1") as client:
        served = client.post("/v1/reward", json={"texts": texts}).json()["rewards"]
        prompted = client.post("/v1/reward", json={"texts": texts, "prompts": ["Review:"] * 2}).json()["rewards"]
        bad = client.post("/v1/reward", json={"texts": texts, "prompts": ["Review:"]})
    assert [s["reward"] for s in served] == pytest.approx([a["reward"] for a in alone], abs=1e-5)
    assert [s["reward"] for s in prompted] == pytest.approx([t["reward"] for t in tabbed], abs=1e-5)
    assert served[0]["reward"] > served[1]["reward"]
    assert bad.status_code == 422 and "1 prompts for 2 texts" in bad.json()["detail"]
