"""task: preference — each loss against a hand computation (and TRL's own function where it has one), the cached
reference log-probs against a separate frozen copy, short DPO and KTO runs that raise their held-out
implicit-reward accuracy, bad files through `tunecraft train`, and the feedback loop closed: a served run's
feedback trains a new run."""

import json
import math
import signal
import sys
from types import SimpleNamespace

import httpx
import pytest
import torch
from safetensors.torch import load_file

from tests.test_serve import start
from tests.tiny_decoder import tiny_base, tiny_run
from tunecraft import predict
from tunecraft.align import losses
from tunecraft.config import build_config
from tunecraft.data.chat import BUNDLED_CHAT
from tunecraft.experiment import experiment
from tunecraft.tasks.preference import REFERENCE_FILE
from tunecraft.train import train

C, R = torch.tensor([-4.0, -9.0]), torch.tensor([-6.0, -5.0])  # policy log-probs of chosen, rejected
RC, RR = torch.tensor([-5.0, -8.0]), torch.tensor([-5.5, -6.0])  # the reference's
NC, NR = torch.tensor([2.0, 3.0]), torch.tensor([4.0, 1.0])  # completion tokens


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_pairwise_losses_equal_hand_computations():
    beta = 0.5
    # DPO: -log σ(β((c - rc) - (r - rr))); first pair: (1) - (-0.5) = 1.5
    for i, delta in enumerate([1.5, (-1.0) - (1.0)]):
        assert losses.dpo(C, R, RC, RR, beta)[i].item() == pytest.approx(-math.log(sig(beta * delta)))
        smooth = -(0.9 * math.log(sig(beta * delta)) + 0.1 * math.log(sig(-beta * delta)))
        assert losses.dpo(C, R, RC, RR, beta, 0.1)[i].item() == pytest.approx(smooth)
    # IPO: ((c - rc)/nc - (r - rr)/nr - 1/(2β))²; first: 1/2 - (-0.5)/4 - 1 = -0.375
    assert losses.ipo(C, R, RC, RR, NC, NR, beta)[0].item() == pytest.approx((-0.375) ** 2)
    # SimPO: -log σ(β(c/nc - r/nr) - γ); first: 0.5 (-2 + 1.5) - 0.3
    assert losses.simpo(C, R, NC, NR, beta, 0.3)[0].item() == pytest.approx(-math.log(sig(0.5 * -0.5 - 0.3)))
    # ORPO: -c/nc - λ log σ(log odds), odds = p / (1 - p) of the mean token log-prob
    a, b = -2.0, -1.5
    log_odds = (a - math.log(1 - math.exp(a))) - (b - math.log(1 - math.exp(b)))
    assert losses.orpo(C, R, NC, NR, 0.2)[0].item() == pytest.approx(2.0 - 0.2 * math.log(sig(log_odds)))


def test_kto_equals_a_hand_computation():
    logps, ref = torch.tensor([-4.0, -9.0]), torch.tensor([-5.0, -8.0])
    mismatched, ref_mismatched = torch.tensor([-7.0, -6.0]), torch.tensor([-7.5, -6.1])
    kl = losses.kto_kl(mismatched, ref_mismatched)
    assert kl.item() == pytest.approx(0.3)  # mean(0.5, 0.1)
    assert losses.kto_kl(ref_mismatched, mismatched).item() == 0  # clamped at 0
    out = losses.kto(logps, ref, torch.tensor([True, False]), kl, 0.5, 1.0, 1.5)
    assert out[0].item() == pytest.approx(1 - sig(0.5 * (1.0 - 0.3)))  # good answer: 1 - σ(β(r - z))
    assert out[1].item() == pytest.approx(1.5 * (1 - sig(0.5 * (0.3 - (-1.0)))))  # bad: w (1 - σ(β(z - r)))


def test_simpo_and_orpo_equal_trl():
    from trl.experimental.cpo.cpo_trainer import CPOTrainer
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    cpu = SimpleNamespace(device="cpu")
    avg_c, avg_r = C / NC, R / NR
    cpo = SimpleNamespace(alpha=0.0, loss_type="simpo", simpo_gamma=0.3, beta=0.5, label_smoothing=0.0,
                          accelerator=cpu)
    theirs, _, _ = CPOTrainer.cpo_loss(cpo, avg_c, avg_r)  # TRL's SimPO takes mean token log-probs
    assert torch.allclose(losses.simpo(C, R, NC, NR, 0.5, 0.3), theirs)
    ratio, _, _, _, _ = ORPOTrainer.odds_ratio_loss(SimpleNamespace(beta=0.2, accelerator=cpu), avg_c, avg_r)
    assert torch.allclose(losses.orpo(C, R, NC, NR, 0.2), -avg_c - ratio)  # TRL: nll - mean(losses)


# -- runs ----------------------------------------------------------------------------------------------------------

BAD = ["I do not know.", "Whatever.", "No idea, sorry.", "Ask someone else."]


def pairs_file(folder, name="pairs.jsonl", start=0, count=48):
    convs = [c for c in BUNDLED_CHAT["chitchat-en"]() if len(c.messages) == 2][start : start + count]
    rows = [{"prompt": c.messages[:1], "chosen": c.messages[1]["content"], "rejected": BAD[i % len(BAD)]}
            for i, c in enumerate(convs)]
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_base(tmp_path_factory.mktemp("preference") / "base")


def preference_config(folder, name, train, held_out, objective="dpo", steps=12, task=None, generation=None, **extra):
    generation = generation or {"max_new_tokens": 8, "eval_samples": 4, "report_samples": 2, "batch_size": 4}
    return build_config({
        "name": name, "output_dir": str(folder), "seed": 0,
        "task": {"name": "preference", "objective": objective, "beta": 0.5, "generation": generation, **(task or {})},
        "model": {"base": str(extra.pop("base")), "max_length": 96},
        "data": {"dataset": None, "train": str(train), "validation": str(held_out), "test": str(held_out),
                 **extra.pop("data", {})},
        "method": {"name": "lora", "r": 8, "alpha": 16},
        "train": {"max_steps": steps, "batch_size": 8, "lr": 1e-2, "warmup_ratio": 0, "num_threads": 1,
                  "eval_every": steps, "eval_each_epoch": False, "progress": False, "tensorboard": False,
                  "precision": "fp32"}, **extra})


@pytest.fixture(scope="module")
def dpo_run(base):
    folder = base.parent
    train, held = pairs_file(folder), pairs_file(folder, "held.jsonl", start=60, count=16)
    config = preference_config(folder, "dpo", train, held, base=base)
    return config, experiment(config)


def test_dpo_raises_held_out_implicit_reward_accuracy(dpo_run):
    config, summary = dpo_run
    m = summary["metrics"]
    assert m["before"]["accuracy"] == 0.5 and m["before"]["margin"] == 0  # its own reference: every pair a tie
    assert m["accuracy"] >= 0.75 and m["margin"] > 0.5
    assert m["chosen_reward"] > m["rejected_reward"]
    assert m["kl"] > 0 and m["kl_prompts"] == 4  # sampled answers score higher under the trained model
    rows = [json.loads(line) for line in (config.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(r["source"].endswith(f"held.jsonl:{i + 1}") for i, r in enumerate(rows))
    gens = [json.loads(line) for line in (config.run_dir / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == 4 and all("before" in g for g in gens)  # base model beside the trained one
    report = (config.run_dir / "report.md").read_text()
    assert "KL to the reference" in report and "logps.png" in report


def test_cached_reference_equals_a_frozen_copy_of_the_base(dpo_run):
    """The reference came from the LoRA model with its adapter off; a separate frozen copy of the base, loaded
    from its folder, gives exactly the same log-probs."""
    from transformers import AutoModelForCausalLM

    config, _ = dpo_run
    cached = load_file(str(config.run_dir / REFERENCE_FILE))
    assert set(cached) == {"train", "validation", "test"} and cached["train"].shape == (48, 2)
    frozen = AutoModelForCausalLM.from_pretrained(config.model.base, dtype=torch.float32).eval()
    from tunecraft.train.job import prepare_job

    job = prepare_job(config)
    again = job.task.infer(frozen, job.train_enc, config.train.batch_size * 2, job.tokenizer.pad_token_id,
                           torch.device("cpu"), None)
    assert torch.equal(again[:, 0:2], cached["train"])

    # a resumed run reads them back: no model is asked (None would fail), the splits get the cached values
    splits = {"train": job.train_enc, "validation": job.val_enc, "test": job.test_enc}
    session = SimpleNamespace(run_dir=config.run_dir, resume=True)
    job.task.before_training(None, splits, session)
    assert all(torch.equal(splits[name].reference, cached[name]) for name in splits)


@pytest.mark.parametrize("objective, constants", [("ipo", {}), ("simpo", {}), ("orpo", {"orpo_lambda": 1.0})])
def test_every_pairwise_objective_raises_its_held_out_accuracy(base, objective, constants):
    """A short real run of each other pairwise objective (DPO above) beats the base model on held-out pairs."""
    folder = base.parent
    pairs, held = pairs_file(folder, f"{objective}.jsonl", count=32), pairs_file(folder, f"{objective}-held.jsonl",
                                                                                 start=60, count=16)
    config = preference_config(folder, objective, pairs, held, objective=objective, base=base,
                               generation={"eval_samples": 0},
                               task=constants)
    m = experiment(config)["metrics"]
    assert m["accuracy"] >= 0.75 and m["accuracy"] > m["before"]["accuracy"]
    assert m["chosen_reward"] > m["rejected_reward"]


def test_kto_on_judged_answers_raises_its_accuracy(base):
    folder = base.parent
    pairs = pairs_file(folder, "k.jsonl", count=32)
    judged = folder / "judged.jsonl"
    judged.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"}) + "\n"
                              for r in map(json.loads, pairs.read_text().splitlines()) for k in ("chosen", "rejected")),
                      encoding="utf-8")
    held = pairs_file(folder, "kheld.jsonl", start=60, count=16)
    config = preference_config(folder, "kto", judged, held, objective="kto", base=base,
                               generation={"eval_samples": 0})
    m = train(config)["metrics"]
    # before the first step the LoRA model is its own reference: every reward 0, accuracy 0.5 (see the DPO test)
    assert m["accuracy"] >= 0.75 and m["chosen_reward"] > m["rejected_reward"]  # pairwise, on held-out pairs


def test_bad_preference_files_stop_train_with_file_line_and_field(base, tmp_path):
    import subprocess

    from tunecraft.errors import DataError
    from tunecraft.train.job import prepare_job

    bad = tmp_path / "bad.jsonl"
    rows = [{"prompt": "Q", "chosen": "a", "rejected": "b"}, {"prompt": "Q", "chosen": "a"}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"task": "preference", "output_dir": str(tmp_path), "model": {"base": str(base)},
                                  "data": {"dataset": None, "train": str(bad)}, "method": {"name": "lora"}}))
    out = subprocess.run([sys.executable, "-m", "tunecraft", "train", str(recipe)], capture_output=True, text=True)
    assert out.returncode != 0 and f"{bad}, line 2, field 'rejected': missing" in out.stderr, out.stderr
    assert not (tmp_path / "run").exists()

    long = tmp_path / "long.jsonl"  # a prompt past max_length: refused (overlong: error), or dropped and counted
    long.write_text("".join(json.dumps(r) + "\n" for r in [rows[0], {"prompt": "word " * 200, "chosen": "a",
                                                                     "rejected": "b"}] * 5), encoding="utf-8")
    config = preference_config(tmp_path, "long", long, long, base=base, task={"overlong": "error"})
    with pytest.raises(DataError, match=f"{long}, line [0-9]+: 2.. tokens .prompt and answer., more than "
                                        "model.max_length=96"):
        prepare_job(config)
    job = prepare_job(preference_config(tmp_path, "long", long, long, base=base))
    assert job.train_enc.truncated == 5 and len(job.train_enc) == 5
    assert all(job.data.train[i].prompt == "Q" for i in job.train_enc.sample)


def test_feedback_from_the_server_trains_the_next_run(base):
    """Serve a causal-LM run, post corrections and ratings through /v1/feedback, train a preference run on the
    store: it names exactly those rows and prefers every corrected answer to the one the model gave."""
    folder = base.parent
    served = tiny_run(folder, base, "served")
    proc, url = start(served, "--precision", "fp32")
    prompts = ["What is AI?", "Tell me a joke.", "Who are you?", "hello", "What is your favourite colour?",
               "Are you a robot?"]
    ids = []
    try:
        for i, p in enumerate(prompts):
            messages = [{"role": "user", "content": p}]
            answer = httpx.post(url + "/v1/chat/completions", timeout=60, json={
                "model": "served", "messages": messages, "max_tokens": 6}).json()["choices"][0]["message"]["content"]
            body = {"model": "served", "messages": messages, "response": answer or "…", "rating": -1,
                    "correction": f"A clear and kind answer number {i}."}
            ids.append(httpx.post(url + "/v1/feedback", json=body).json()["id"])
        thumbs = httpx.post(url + "/v1/feedback", json={"model": "served", "messages": [{"role": "user", "content":
                            "hi"}], "response": "hello there", "rating": 1}).json()["id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    store = served / "feedback.sqlite"
    config = preference_config(folder, "from-feedback", store, store, steps=10, base=served / "model",
                               data={"split": {"validation": 0.0, "test": 0.0}}, generation={"eval_samples": 0})
    summary = experiment(config)
    # the corrections are pairs; the thumbs-up alone is a judged answer, which DPO leaves out
    assert f"feedback rows as pairs {sorted(ids)}, as judged answers [{thumbs}]" in summary["data"]
    rows = [json.loads(line) for line in (config.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert sorted(int(r["source"].rsplit(":", 1)[1]) for r in rows) == sorted(ids)
    assert all(r["reward_chosen"] > r["reward_rejected"] for r in rows)  # every correction now preferred
    assert summary["metrics"]["before"]["accuracy"] == 0.5 and summary["metrics"]["accuracy"] == 1.0

    # the new run is a causal LM: predict and the OpenAI routes serve it as they serve a causal_lm run
    answer = predict(config.run_dir, ["What is AI?"])[0]["response"]
    proc, url = start(config.run_dir, "--precision", "fp32")
    try:
        reply = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": "from-feedback", "messages": [{"role": "user", "content": "What is AI?"}], "max_tokens": 8})
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert answer and reply.status_code == 200 and reply.json()["model"] == "from-feedback"
    assert reply.json()["choices"][0]["message"]["content"] and reply.json()["usage"]["completion_tokens"] <= 8
