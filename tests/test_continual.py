"""Continual learning: metric formulas, reservoir memory, EWC and LwF terms, adapters isolation, a real stream."""

import json
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tunecraft.cli import main
from tunecraft.continual import build_continual, run_continual
from tunecraft.continual.metrics import average_accuracy, backward_transfer, forgetting_per_task, summarize
from tunecraft.continual.recipe import EwcConfig, LwfConfig, NaiveConfig, ReplayConfig
from tunecraft.continual.strategies import Ewc, Lwf, Naive, Replay, Reservoir, diagonal_fisher, get_strategy
from tunecraft.continual.stream import load_stream
from tunecraft.data.dataset import Encoded
from tunecraft.data.readers import Example
from tunecraft.errors import ConfigError
from tunecraft.runtime.inference import predict_logits
from tunecraft.tasks import build_task

# -- metrics on a hand-made accuracy matrix ---------------------------------------------------------------

R = [[0.90, 0.50, 0.40],
     [0.70, 0.80, 0.45],
     [0.60, 0.85, 0.70]]


def test_average_accuracy_backward_transfer_and_forgetting_by_hand():
    assert average_accuracy(R) == pytest.approx((0.60 + 0.85 + 0.70) / 3)
    # GEM: mean over j < T-1 of R[T-1][j] - R[j][j] = ((0.60-0.90) + (0.85-0.80)) / 2
    assert backward_transfer(R) == pytest.approx(-0.125)
    # Chaudhry: task 0's best after learning it is 0.90 → 0.30 lost; task 1 peaked at 0.80, ends at 0.85 → -0.05
    assert forgetting_per_task(R) == pytest.approx([0.30, -0.05])
    assert summarize(R)["forgetting"] == pytest.approx(0.125)


def test_forgetting_takes_the_best_accuracy_not_the_first():
    peaked_later = [[0.60, 0.0], [0.90, 0.80], [0.70, 0.80]]
    assert forgetting_per_task(peaked_later) == pytest.approx([0.20, 0.0])
    assert summarize([[0.7]]) == {"average_accuracy": 0.7, "backward_transfer": None, "forgetting": None,
                                  "forgetting_per_task": []}


def test_upper_triangle_may_be_unscored():
    with_gaps = [[0.9, None], [0.8, 0.7]]
    assert summarize(with_gaps)["forgetting"] == pytest.approx(0.1)
    assert backward_transfer(with_gaps) == pytest.approx(-0.1)


# -- replay memory --------------------------------------------------------------------------------------


def test_reservoir_is_bounded_uniform_and_reproducible_by_seed():
    def fill(seed):
        memory = Reservoir(100, seed)
        for item in range(10_000):
            memory.add(item)
        return memory

    a, b, c = fill(1), fill(1), fill(2)
    assert len(a.items) == 100 and a.seen == 10_000
    assert a.items == b.items and a.items != c.items
    # uniform over the stream: each tenth of it holds about a tenth of the memory (over many seeds)
    counts = Counter(item // 1000 for seed in range(200) for item in fill(seed).items)
    assert all(1700 <= counts[k] <= 2300 for k in range(10)), counts
    small = Reservoir(5, 0)
    for item in range(3):
        small.add(item)
    assert small.items == [0, 1, 2]


# -- EWC and LwF terms on a small model ---------------------------------------------------------------------


class Toy(nn.Module):
    """Embedding bag + linear head, with the pieces of a transformers classifier the strategies use."""

    def __init__(self, labels=2):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 8)
        self.classifier = nn.Linear(8, labels)
        self.num_labels = labels
        self.config = SimpleNamespace(id2label={}, label2id={})

    def _init_weights(self, module):
        nn.init.normal_(module.weight, std=0.5)
        nn.init.zeros_(module.bias)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)
        return SimpleNamespace(logits=self.classifier(pooled))


ENC = Encoded(input_ids=[[1, 2, 3], [4, 5], [6, 7, 8, 9], [3, 3]], token_type_ids=None, labels=[0, 1, 1, 0],
              truncated=0)
BATCH = {"input_ids": torch.tensor([[1, 2, 3, 0], [6, 7, 8, 9]]),
         "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]), "labels": torch.tensor([0, 1])}


def _strategy(cls, cfg, model):
    stream = SimpleNamespace(autocast_dtype=None, pad_id=0, config=SimpleNamespace(seed=0))
    strategy = cls(cfg, stream)
    strategy.model = model
    return strategy


def test_fisher_is_the_mean_squared_per_example_gradient():
    model = Toy()
    fisher = diagonal_fisher(model, ENC, pad_id=0)
    assert all(p.grad is None for p in model.parameters())  # nothing left behind for the next optimizer step
    expected = torch.zeros_like(model.classifier.weight)
    for k in range(len(ENC)):
        model.zero_grad()
        ids = torch.tensor([ENC.input_ids[k]])
        logits = model(ids, torch.ones_like(ids)).logits
        nn.functional.cross_entropy(logits, torch.tensor([ENC.labels[k]])).backward()
        expected += model.classifier.weight.grad ** 2
    torch.testing.assert_close(fisher[model.classifier.weight], expected / len(ENC))
    assert all(f.sum() > 0 for f in fisher.values())


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_away_from_it():
    model = Toy()
    ewc = _strategy(Ewc, EwcConfig(strength=100.0), model)
    ewc.fisher = diagonal_fisher(model, ENC, pad_id=0)
    ewc.anchor = {p: p.detach().clone() for p in ewc.fisher}
    assert ewc.penalty().item() == 0.0
    outputs = model(BATCH["input_ids"], BATCH["attention_mask"])
    assert ewc.term(model, outputs, BATCH).item() == 0.0
    with torch.no_grad():
        model.classifier.weight.add_(0.1)
    small = ewc.penalty().item()
    with torch.no_grad():
        model.classifier.weight.add_(0.1)
    assert 0 < small < ewc.penalty().item()
    # exactly λ/2 Σ F Δ² (only the moved weight contributes)
    expected = 50.0 * (ewc.fisher[model.classifier.weight] * 0.2 ** 2).sum()
    torch.testing.assert_close(ewc.penalty(), expected)
    # the loop divides terms by the batch's example count: one full penalty per step
    assert ewc.term(model, outputs, BATCH).item() == pytest.approx(2 * ewc.penalty().item())


@pytest.mark.parametrize("next_labels", [("negative", "positive"), ("a", "b", "c")],
                         ids=["same-labels", "new-label-set"])
def test_lwf_term_is_zero_for_the_previous_model_and_grows_as_the_model_moves(next_labels):
    """With a new label set the next task gets a new head, and LwF distils through the old one."""
    model = Toy()
    lwf = _strategy(Lwf, LwfConfig(), model)
    lwf.use_head(("negative", "positive"))
    lwf.after(0)  # the previous model: a frozen copy of this one
    lwf.use_head(next_labels)
    lwf.before(1)
    outputs = model(BATCH["input_ids"], BATCH["attention_mask"])
    assert outputs.logits.shape == (2, len(next_labels))
    assert lwf.distillation(model, outputs, BATCH).item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        model.embed.weight.add_(torch.randn_like(model.embed.weight))
    outputs = model(BATCH["input_ids"], BATCH["attention_mask"])
    assert lwf.distillation(model, outputs, BATCH).item() > 1e-3


def test_replay_sends_other_label_sets_through_their_own_head():
    model = Toy()
    tokenizer = SimpleNamespace()
    stream = SimpleNamespace(autocast_dtype=None, pad_id=0, config=SimpleNamespace(seed=0),
                             base=SimpleNamespace(tokenizer=tokenizer), classifier=build_task("classification"))
    replay = Replay(ReplayConfig(memory_size=10), stream)
    replay.model = model
    replay.use_head(("negative", "positive"))
    old_head = model.classifier
    for k in range(4):
        replay.memory.add((("negative", "positive"), Example(text=f"t{k}", label="positive")))
    task = SimpleNamespace(labels=("a", "b", "c"), meta={"max_length": 8, "label_column": "label"},
                           data=SimpleNamespace(train=[Example(text="x", label="a")] * 8))
    stream.tasks = [None, task]
    replay.use_head(task.labels)
    assert replay.replayed(1) == []  # nothing of this label set to mix into the data
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stream.classifier, "encode",
                   lambda tok, examples, meta, lmap: Encoded([[1 + int(e.text[1:]), 2] for e in examples], None,
                                                             [lmap.label2id[e.label] for e in examples], 0))
        replay.before(1)
    assert replay.share[("negative", "positive")] == pytest.approx(4 / 12)
    outputs = model(BATCH["input_ids"], BATCH["attention_mask"])
    loss = replay.foreign_replay(model, outputs, BATCH)
    assert loss.item() > 0
    loss.backward()
    assert model.embed.weight.grad.abs().sum() > 0  # the shared encoder learns from the replayed examples
    assert old_head.weight.grad is None and not old_head.weight.requires_grad  # the set-aside head stays fixed
    replay.after(1)
    assert replay.tap is None and len(replay.memory.items) == 10


def test_heads_are_kept_per_label_set():
    model = Toy()
    naive = _strategy(Naive, NaiveConfig(), model)
    naive.use_head(("negative", "positive"))
    before = model(BATCH["input_ids"], BATCH["attention_mask"]).logits
    naive.use_head(("a", "b", "c"))
    assert model(BATCH["input_ids"], BATCH["attention_mask"]).logits.shape == (2, 3)
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    naive.use_head(("negative", "positive"))
    assert torch.equal(model(BATCH["input_ids"], BATCH["attention_mask"]).logits, before)


# -- recipes ----------------------------------------------------------------------------------------------


def _raw(tmp_path, strategies=({"name": "naive"},), **extra):
    raw = {"name": "stream", "output_dir": str(tmp_path), "seed": 3,
           "model": {"max_length": 48},
           "data": {"max_train_samples": 48, "max_eval_samples": 40},
           "train": {"max_steps": 2, "batch_size": 8, "progress": False, "tensorboard": False, "num_threads": 1},
           "stream": [{"name": "mr", "data": {"dataset": "mr"}}, {"name": "nyt", "data": {"dataset": "nyt"}}],
           "strategies": [dict(s) for s in strategies]}
    raw.update(extra)
    return raw


@pytest.mark.parametrize("change, message", [
    ({"stream": []}, "stream: empty"),
    ({"strategies": [{"name": "rehearsal"}]}, "unknown strategy 'rehearsal'; choose one of naive, replay"),
    ({"stream": [{"name": "mr", "data": {"dataset": "mr"}}, {"name": "mr", "data": {"dataset": "amazon"}}]},
     "duplicate task name(s) mr"),
    ({"strategies": [{"name": "ewc"}, {"name": "ewc"}]}, "ewc listed twice"),
    ({"strategies": [{"name": "replay", "memory": 5}]},
     "unknown key 'strategies.0.memory' (did you mean 'memory_size'?)"),
    ({"train": {"max_steps": 2, "lrr": 1e-3}},
     "invalid continual recipe\n  unknown key 'train.lrr' (did you mean 'lr'?)"),
    ({"model": {"bas": "minilm-l6"}}, "unknown key 'model.bas' (did you mean 'base'?)"),
    ({"method": {"name": "lora", "rank": 4}}, "unknown key 'method.rank' (did you mean 'r'?)"),
    ({"stream": [{"name": "mr", "data": {"dataset": "mr", "max_train_sample": 5}}]},
     "stream[0] (mr): invalid configuration\n"
     "  unknown key 'data.max_train_sample' (did you mean 'max_train_samples'?)"),
])
def test_bad_recipes_are_refused_with_a_message_that_names_the_field(tmp_path, change, message):
    with pytest.raises(ConfigError) as err:
        build_continual({**_raw(tmp_path), **change}, source="my.yaml")
    assert message in str(err.value) and str(err.value).startswith("my.yaml")


def test_the_shipped_stream_recipes_resolve_to_typed_train_configs():
    import yaml

    from tunecraft.continual import load_continual
    from tunecraft.continual.recipe import dump_continual

    config = load_continual("recipes/sentiment-stream.yaml")
    assert config.train.max_steps == 60 and config.model.max_length == 64 and config.method.name == "full"
    amazon = config.task_config(1, "naive")
    assert amazon.data.dataset == "amazon" and amazon.data.max_train_samples == 1000
    assert amazon.train.max_steps == 60 and amazon.train.lr == 5e-5 and amazon.train.tensorboard is False
    assert amazon.data.split.validation == 0.0 and amazon.train.early_stopping.metric == "accuracy"
    for recipe in ("recipes/sentiment-stream.yaml", "recipes/mixed-stream.yaml"):  # the saved config.yaml reloads
        config = load_continual(recipe)
        assert build_continual(yaml.safe_load(dump_continual(config))) == config


def test_missing_stream_and_cli_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="missing 'stream'"):
        build_continual({"name": "x"})
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("stream: []\n", encoding="utf-8")
    assert main(["continual", str(recipe)]) == 2
    assert "stream: empty" in capsys.readouterr().err


def test_sequential_strategies_refuse_lora(tmp_path):
    config = build_continual(_raw(tmp_path, method={"name": "lora"}))
    strategy = get_strategy(config.strategies[0], SimpleNamespace(config=config))
    with pytest.raises(ConfigError, match="needs method full or freeze"):
        strategy.check()


# -- real training on the bundled MiniLM and sentiment data -------------------------------------------------


@pytest.mark.slow
def test_adapters_leave_earlier_tasks_bit_identical(tmp_path):
    config = build_continual(_raw(tmp_path, strategies=[{"name": "adapters", "r": 4}]))
    stream = load_stream(config)
    adapters = get_strategy(config.strategies[0], stream)
    adapters.learn(0)
    first = adapters.logits(0)
    assert adapters.logits(1) is None
    adapters.learn(1)
    assert torch.equal(adapters.logits(0), first)
    nyt = adapters.logits(1)
    adapters.model.set_adapter("mr")  # the same inputs through task 0's adapter: a different model
    through_mr = predict_logits(adapters.model, stream.tasks[1].test_enc, 64, stream.pad_id, torch.device("cpu"),
                                stream.autocast_dtype)
    assert nyt.shape == through_mr.shape and not torch.equal(nyt, through_mr)
    assert adapters.trainable["mr"] == adapters.trainable["nyt"] < 0.05 * 22_700_000


@pytest.mark.slow
def test_a_two_task_stream_runs_end_to_end(tmp_path):
    strategies = [{"name": "naive"}, {"name": "replay", "memory_size": 16}, {"name": "ewc", "fisher_samples": 8},
                  {"name": "lwf"}, {"name": "adapters", "r": 4}]
    config = build_continual(_raw(tmp_path, strategies=strategies))
    results = run_continual(config)
    run_dir = tmp_path / "stream"
    saved = json.loads((run_dir / "continual.json").read_text())
    assert saved["tasks"] == ["mr", "nyt"]
    by_name = saved["strategies"]
    for name, r in by_name.items():
        assert r["steps_per_task"] == [2, 2], name
        assert (run_dir / "plots" / f"heatmap-{name}.png").stat().st_size > 1000
        assert r == {**r, **summarize(r["matrix"])}
        assert all(0 <= v <= 1 for row in r["matrix"] for v in row if v is not None)
        assert (run_dir / name / "1-nyt" / "summary.json").is_file()
    # every sequential strategy learns task 0 the same way (same seed; nothing to replay or protect yet)
    first_rows = {name: by_name[name]["matrix"][0] for name in ("naive", "replay", "ewc", "lwf")}
    assert len({tuple(row) for row in first_rows.values()}) == 1, first_rows
    assert by_name["adapters"]["matrix"][0][1] is None and by_name["adapters"]["forgetting"] == 0.0
    assert by_name["naive"]["extra_memory_bytes"] == 0
    assert by_name["replay"]["extra_memory_bytes"] > 0
    assert by_name["ewc"]["extra_memory_bytes"] == 2 * 4 * by_name["ewc"]["total_params"]
    assert by_name["ewc"]["penalty_at_end_of_each_task"][0] is None
    assert by_name["ewc"]["penalty_at_end_of_each_task"][1] > 0
    report = (run_dir / "report.md").read_text()
    for name in by_name:
        assert f"## Strategy: {name}" in report and f"plots/heatmap-{name}.png" in report
    assert "| forgetting (pts) |" in report or "forgetting (pts)" in report
    assert "data:image/png;base64," in (run_dir / "report.html").read_text()
    assert results["report"] == str(run_dir / "report.md")
    with pytest.raises(Exception, match="already exists"):
        run_continual(config)
