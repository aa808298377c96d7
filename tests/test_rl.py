"""task: rl (GRPO / RLOO): the advantages, the clipped objective and the k3 KL against hand computations; batched
rollouts that stop at end of sequence; a short real run that raises its held-out reward; rewards refused early;
the run-folder reward equal to the classifier's own predict probability."""

import json
import math
import random

import pytest
import torch

from tests.conftest import tiny_classifier
from tests.tiny_decoder import tiny_base
from tunecraft.align.rewards import RunReward, build_rewards
from tunecraft.align.settings import RewardConfig
from tunecraft.config import build_config
from tunecraft.errors import ConfigError, TunecraftError
from tunecraft.tasks import build_task
from tunecraft.tasks.rl import group_advantages, joined, per_token_loss, sample, summed_loss

WORDS = "the cat dog sat ran on a mat house tree red blue big small".split()


def _prompts(path, n, seed):
    rng = random.Random(seed)
    path.write_text("".join(json.dumps({"prompt": " ".join(rng.choice(WORDS) for _ in range(4))}) + "\n"
                            for _ in range(n)), encoding="utf-8")
    return str(path)


def _config(tmp_path, base, rewards, **rl):
    train = _prompts(tmp_path / "train.jsonl", 32, 0)
    test = _prompts(tmp_path / "test.jsonl", 8, 1)
    return build_config({
        "name": "rl", "output_dir": str(tmp_path / "runs"), "seed": 0,
        "task": {"name": "rl", "group_size": 8, "max_new_tokens": 2, "temperature": 1.0, "eval_samples": 8,
                 "rewards": rewards, **rl},
        "model": {"base": str(base), "max_length": 64},
        "data": {"dataset": None, "train": train, "validation": test, "test": test},
        "method": {"name": "lora", "r": 8, "alpha": 16},
        "train": {"max_steps": 10, "batch_size": 4, "lr": 3e-2, "warmup_ratio": 0, "num_threads": 1,
                  "eval_each_epoch": False, "progress": False, "tensorboard": False, "log_every": 5}})


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_base(tmp_path_factory.mktemp("tiny-decoder"))


@pytest.fixture(scope="module")
def steerable_base(tmp_path_factory):
    """The tiny decoder with one shared direction added to the embeddings of the tokens that start with a space
    (and taken from the others): a rule reward on that property is then learnable by a LoRA in a few steps,
    which a random 32-wide decoder over 49k unrelated tokens would not allow."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_base(tmp_path_factory.mktemp("steerable"))
    model, tokenizer = AutoModelForCausalLM.from_pretrained(str(folder)), AutoTokenizer.from_pretrained(str(folder))
    spaced = torch.tensor([t.startswith("Ġ") for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))])
    u = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.get_input_embeddings().weight += 0.6 * torch.where(spaced, 1.0, -1.0)[:, None] * (u / u.norm())
    model.save_pretrained(str(folder))
    return folder


def test_group_advantages_equal_a_hand_computation():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    std = math.sqrt(4 * 0.5**2 / 3)  # unbiased, as TRL's nanstd
    want = [0.5 / (std + 1e-4), -0.5 / (std + 1e-4), -0.5 / (std + 1e-4), 0.5 / (std + 1e-4), 0, 0, 0, 0]
    assert torch.allclose(group_advantages(rewards, 4, "grpo"), torch.tensor(want))
    # leave-one-out: r − mean of the other three
    assert torch.allclose(group_advantages(rewards, 4, "rloo"),
                          torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0, 0, 0, 0]))


def test_clipped_objective_and_k3_kl_equal_a_hand_computation():
    p, old, ref = [0.5, 0.3, 0.9], [0.4, 0.5, 0.9], [0.4, 0.3, 0.6]
    logps = torch.log(torch.tensor([p, p]))
    old_logps = torch.log(torch.tensor([old, old]))
    ref_logps = torch.log(torch.tensor([ref, ref]))
    advantages = torch.tensor([1.0, -1.0])
    got = per_token_loss(logps, old_logps, ref_logps, advantages, epsilon=0.2, beta=0.1)
    ratios = [a / b for a, b in zip(p, old)]  # 1.25, 0.6, 1.0: two of them outside [0.8, 1.2]
    k3 = [r / q - math.log(r / q) - 1 for r, q in zip(ref, p)]
    want = []
    for adv in (1.0, -1.0):
        want.append([-min(r * adv, min(max(r, 0.8), 1.2) * adv) + 0.1 * kl for r, kl in zip(ratios, k3)])
    # by hand: A>0 clips 1.25 to 1.2 and keeps 0.6; A<0 keeps 1.25 and clips 0.6 to 0.8
    assert [round(w - 0.1 * kl, 6) for w, kl in zip(want[0], k3)] == [-1.2, -0.6, -1.0]
    assert [round(w - 0.1 * kl, 6) for w, kl in zip(want[1], k3)] == [1.25, 0.8, 1.0]
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    assert torch.allclose(summed_loss(got, mask, "grpo"), (got[0, :2].sum() / 2 + got[1].sum() / 3))
    assert torch.allclose(summed_loss(got, mask, "dapo"), got[0, :2].sum() + got[1].sum())


class _Fixed:
    """A stand-in model whose generate appends fixed completions (and counts its calls)."""

    def __init__(self, completions):
        self.completions, self.calls = completions, 0

    def generate(self, input_ids, attention_mask, **kwargs):
        self.calls += 1
        return torch.cat([input_ids, self.completions[: input_ids.shape[0]]], dim=1)


def test_completion_masks_stop_at_the_first_end_of_sequence(base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    eos = tokenizer.eos_token_id
    model = _Fixed(torch.tensor([[5, 6, eos, eos], [7, eos, 8, eos], [9, 10, 11, 12], [eos, eos, eos, eos]]))
    ids, mask = torch.tensor([[0, 3, 4], [3, 4, 4]]), torch.tensor([[0, 1, 1], [1, 1, 1]])
    completion, cmask = sample(model, tokenizer, ids, mask, 2, 4, 1.0)
    assert model.calls == 1
    assert cmask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    rows = joined(ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0), completion, cmask, eos)
    # the prompt's left padding is gone: prompt tokens, then the completion through its end of sequence
    assert rows["input_ids"][0].tolist() == [3, 4, 5, 6, eos, eos, eos]  # right-padded to the longest row
    assert rows["completion_mask"][0].tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert rows["attention_mask"][0].tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert rows["input_ids"][2].tolist() == [3, 4, 4, 9, 10, 11, 12]


def test_rollouts_are_one_generate_call_for_k_times_the_prompts(base, tmp_path):
    from tunecraft.train.job import prepare_job

    config = _config(tmp_path, base, [{"length": 2}], group_size=3, max_new_tokens=5)
    job = prepare_job(config)
    calls = []
    generate = job.model.generate
    job.model.generate = lambda *a, **kw: calls.append(kw["input_ids"].shape[0]) or generate(*a, **kw)
    batch = job.task.prepare(job.model, job.task.collate(job.train_enc, [0, 1, 2, 3], job.tokenizer.pad_token_id))
    assert calls == [4 * 3]  # one call, every prompt's k completions in it
    labels = batch["labels"]
    assert batch["input_ids"].shape[0] == 12 and labels["advantages"].shape == (12,)
    assert job.task.count(batch) == 12  # loss_type grpo: one term per completion
    assert labels["ref_logps"].shape == (12, batch["input_ids"].shape[1] - 1)
    # with the adapter still at zero the policy is the reference: the k3 KL of every token is 0
    logps = torch.log_softmax(job.model(input_ids=batch["input_ids"]).logits[:, :-1].float(), -1)
    token = logps.gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    m = labels["completion_mask"][:, 1:].bool()
    assert torch.allclose(token[m], labels["ref_logps"][m], atol=1e-5)
    # what the training log shows beside the loss: the rollouts' mean reward, and their KL to the reference (0 here)
    outputs = job.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    terms = job.task.step_terms(outputs, batch)
    assert terms["reward"] == (float(labels["reward_terms"]["reward"].sum()), 12) and set(terms) == {"reward", "kl"}
    assert terms["kl"][1] == 12 and abs(terms["kl"][0]) < 1e-3


def test_a_short_run_raises_the_held_out_reward(steerable_base, tmp_path):
    from tunecraft.experiment import experiment
    from tunecraft.trained import load_trained

    config = _config(tmp_path, steerable_base, [{"regex": "^\\s", "text": "completion"}])
    summary = experiment(config)
    metrics = summary["metrics"]
    before, after = metrics["before"]["reward"], metrics["reward"]
    assert after >= before + 0.1, (before, after)
    assert metrics["before"]["kl"] == 0.0 and metrics["kl"] > 0.0
    assert len(metrics["shown"]) == len(metrics["before"]["shown"]) > 0
    # the run is a causal LM like any other: it loads, and predict continues a text
    trained = load_trained(config.run_dir)
    rows = build_task(trained.meta).predict(trained, ["the cat sat on"], 4, None)
    assert rows[0]["prompt"] == "the cat sat on" and isinstance(rows[0]["response"], str)
    assert (config.run_dir / "adapter").is_dir()
    # reward and KL per logged step (log_every 5 of 10 steps), drawn in the report
    logged = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [r for r in logged if r["type"] == "train"]
    assert [r["step"] for r in steps] == [5, 10] and all("reward" in r and r["kl"] == r["kl"] for r in steps)
    assert 0.0 <= steps[0]["reward"] <= 1.0  # a regex reward is 0 or 1 per completion
    report = (config.run_dir / "report.md").read_text(encoding="utf-8")
    assert "rollout_reward.png" in report and "rollout_kl.png" in report


def test_bad_reward_configs_are_refused_naming_the_key(base, tmp_path):
    def refused(rewards, **extra):
        with pytest.raises(ConfigError) as err:
            config = _config(tmp_path, base, rewards)
            if extra:
                config = build_config({**config.model_dump(mode="json"), **extra})
            build_task(config.task).check_config(config)
        return str(err.value)

    assert "task.rewards.0.run" in refused([{"run": str(tmp_path / "nowhere"), "label": "positive"}])
    assert "task.rewards:" in refused([])
    assert "task.rewards.1.regex" in refused([{"length": 3}, {"regex": "(unclosed"}])
    assert "task.rewards.0.function" in refused([{"function": "no_such_module:fn"}])
    assert "task.rewards.0" in refused([{"regex": "a", "length": 3}])  # two kinds in one entry
    assert "method:" in refused([{"length": 3}], method={"name": "full"})


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return tiny_classifier(tmp_path_factory.mktemp("clf"), "clf")


def test_run_reward_is_the_classifiers_own_predict_probability(classifier, base, tmp_path):
    from tunecraft.trained import load_trained, predict_with_run

    reward = build_rewards([RewardConfig(run=str(classifier), label="positive")], predict_run=predict_with_run)[0]
    prompts, completions = ["A film that", "The plot is"], [" soars.", " a dull mess."]
    got = reward.score(prompts, completions, [None, None])
    trained = load_trained(classifier)
    own = build_task("classification").predict(trained, [p + c for p, c in zip(prompts, completions)], 8, None)
    assert got == [row["probabilities"]["positive"] for row in own]
    # a field of the predict row works the same way; a label the run does not know is refused
    by_field = RunReward(RewardConfig(run=str(classifier), field="score"), "k", predict_with_run)
    assert by_field.score(prompts, completions, [None] * 2) \
        == [row["score"] for row in own]
    with pytest.raises(ConfigError, match="task.rewards.0.label: unknown label 'happy'"):
        build_rewards([RewardConfig(run=str(classifier), label="happy")])
    with pytest.raises(ConfigError, match="k.field: 'reward' is not a number"):
        RunReward(RewardConfig(run=str(classifier), field="reward"), "k", predict_with_run)
    # the rewards import neither the run loader nor the task registry: without a predictor handed down, refused
    with pytest.raises(TunecraftError, match=r"task.rewards.0.run: no run predictor was handed to the rewards"):
        build_rewards([RewardConfig(run=str(classifier), label="positive")])[0].score(prompts, completions, [None] * 2)
