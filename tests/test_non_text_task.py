"""A task of another modality enters by one file: a tiny classifier of 8-dim feature vectors into 3 classes, with a
feature extractor as its processor and no tokenizer, defined here and registered for the test only. It trains
through `tunecraft.train` (the run session and the loop), is scored above chance, exports a model folder that
`load_trained` reads back (model and processor) with the same predictions, and is evaluated again from the run
folder (`evaluate_run`) with the same metrics, and is served (`serve.app.create_app`) with POST /v1/predict, the
route every task gets, answering as `predict` does."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel, Wav2Vec2FeatureExtractor
from transformers.modeling_outputs import SequenceClassifierOutput

from tunecraft.config import build_config
from tunecraft.data.dataset import Encoded, LabelMap, TaskData, seeded_split
from tunecraft.errors import DataError
from tunecraft.tasks import TASKS, Task

DIM, LABELS = 8, ["ramp", "fall", "zigzag"]


class TinyVectorConfig(PretrainedConfig):
    model_type = "tiny-vector"

    def __init__(self, dim: int = DIM, hidden: int = 16, **kwargs):
        self.dim, self.hidden = dim, hidden
        super().__init__(**kwargs)


class TinyVectorModel(PreTrainedModel):
    config_class = TinyVectorConfig
    base_model_prefix = "body"

    def __init__(self, config):
        super().__init__(config)
        self.body = nn.Sequential(nn.Linear(config.dim, config.hidden), nn.ReLU())
        self.classifier = nn.Linear(config.hidden, config.num_labels)
        self.post_init()

    def forward(self, input_values, labels=None):
        return SequenceClassifierOutput(logits=self.classifier(self.body(input_values.float())))


@dataclass
class Point:
    vector: list[float]
    label: str


def points(n: int, seed: int) -> list[Point]:
    """n noisy copies of three shapes (rising, falling, alternating), seeded."""
    shapes = torch.stack([torch.linspace(-1, 1, DIM), torch.linspace(1, -1, DIM), torch.tensor([1.0, -1] * (DIM // 2))])
    g = torch.Generator().manual_seed(seed)
    ys = torch.randint(0, len(LABELS), (n,), generator=g)
    xs = shapes[ys] + 0.6 * torch.randn(n, DIM, generator=g)
    return [Point(x.tolist(), LABELS[y]) for x, y in zip(xs, ys.tolist())]


class VectorTask(Task):
    """The whole task: data, features through the processor, head, loss, scores (its report shows the base view:
    its scalar metrics)."""

    NAME = "vectors"
    METRICS = ["accuracy", "loss"]
    HEADLINE = ("accuracy", "loss")
    EARLY_STOPPING = ("accuracy", "max")
    UNIT = "vectors"
    MODEL_CLASS = TinyVectorModel
    PEFT_TASK_TYPE = "SEQ_CLS"

    def load_data(self, data_cfg):
        test, validation, train = seeded_split(points(144, data_cfg.split.seed), [1 / 3, 1 / 6], data_cfg.split.seed)
        return TaskData(train, validation, test, LabelMap(list(LABELS)), description="random vectors")

    def load_eval_examples(self, spec, meta, fmt, split, seed, fractions):
        return getattr(self.load_data(build_config({"data": {"split": {"seed": seed}}}).data), split)

    def training_texts(self, examples):
        return []

    def encode(self, processor, examples, meta, label_map=None):
        features = processor([p.vector for p in examples], sampling_rate=processor.sampling_rate)
        labels = [label_map.label2id[p.label] for p in examples] if label_map else None
        return Encoded.of({"input_values": list(features["input_values"])}, labels)

    def build_model(self, base, label_map, dropout=None):
        config = TinyVectorConfig.from_pretrained(str(base.path), num_labels=len(label_map.labels),
                                                  id2label=label_map.id2label, label2id=label_map.label2id)
        return TinyVectorModel(config)

    def units(self, batch):
        return len(batch["input_values"]), len(batch["input_values"])

    def count(self, batch):
        return len(batch["labels"])

    def loss_sum(self, outputs, batch):
        return nn.functional.cross_entropy(outputs.logits, batch["labels"], reduction="sum")

    def evaluate(self, scores, enc, label_map):
        gold = torch.tensor(enc.labels)
        return {"accuracy": (scores.argmax(-1) == gold).float().mean().item(),
                "loss": nn.functional.cross_entropy(scores, gold).item()}

    def prediction_rows(self, examples, scores, enc, label_map):
        return [{"label": p.label, "predicted": label_map.labels[i]} for p, i in zip(examples, scores.argmax(-1))]

    def predict(self, trained, inputs, batch_size, dtype, warn=True):
        """Inputs: Points or records {"vector": [DIM numbers]}."""
        label_map = LabelMap(trained.meta["labels"])
        enc = self.encode(trained.processor, [as_point(x, i) for i, x in enumerate(inputs)], trained.meta)
        scores = self.infer(trained.model, enc, batch_size, trained.pad_id, torch.device("cpu"), dtype)
        return [{"predicted": label_map.labels[i]} for i in scores.argmax(-1)]


def as_point(item, i: int) -> Point:
    if isinstance(item, Point):
        return item
    vector = item.get("vector") if isinstance(item, dict) else None
    if not (isinstance(vector, list) and len(vector) == DIM and all(isinstance(v, (int, float)) for v in vector)):
        raise DataError("inputs", i, "vector", f"a record {{'vector': [{DIM} numbers]}} is needed, got {item!r}")
    return Point([float(v) for v in vector], "")


@pytest.fixture
def vector_task(monkeypatch):
    """The fake task in the registry, for this test only (the one place that registers it)."""
    monkeypatch.setitem(TASKS, VectorTask.NAME, VectorTask)
    return VectorTask()


@pytest.fixture
def vector_base(tmp_path):
    """A base model folder with no tokenizer: the model's config and a feature extractor (its processor)."""
    folder = tmp_path / "vector-base"
    TinyVectorConfig().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=DIM, do_normalize=True,
                             return_attention_mask=False).save_pretrained(folder)
    return folder


def test_a_vector_task_trains_evaluates_exports_and_loads_back(vector_task, vector_base, tmp_path):
    from tunecraft.evaluate.runs import evaluate_run
    from tunecraft.train import train
    from tunecraft.trained import load_trained

    config = build_config({
        "name": "vectors", "output_dir": str(tmp_path / "runs"), "seed": 3, "task": "vectors",
        "model": {"base": str(vector_base)}, "method": {"name": "full"},
        "train": {"max_steps": 30, "batch_size": 8, "lr": 1e-2, "eval_every": 10, "precision": "fp32",
                  "progress": False, "tensorboard": False, "num_threads": 1},
        "baselines": {"zero_shot": False}})
    summary = train(config)
    run = config.run_dir

    assert summary["eval_split"] == "test" and summary["sizes"] == {"train": 72, "validation": 24, "test": 48}
    assert summary["metrics"]["accuracy"] >= 0.8  # chance is 1/3
    assert (summary["unit"], summary["train_vectors"], summary["padding_fraction"]) == ("vectors", 30 * 8, 0.0)
    assert "tokens_per_second" not in summary and summary["vectors_per_second"] > 0
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all("vectors_per_s" in r and "tokens_per_s" not in r for r in logged if r["type"] == "train")
    assert "training vectors/s (non-padding)" in (run / "report.md").read_text(encoding="utf-8")

    trained = load_trained(run)
    assert isinstance(trained.processor, Wav2Vec2FeatureExtractor) and trained.tokenizer is None
    assert trained.pad_id is None
    test = vector_task.load_data(config.data).test
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["predicted"] for r in vector_task.predict(trained, test, 16, None)] == [r["predicted"] for r in rows]

    again = evaluate_run(run, "random", split="test", precision="fp32")
    assert (again["samples"], again["metrics"]) == (48, summary["metrics"])

    serve_and_check(run, [{"vector": p.vector} for p in test], [r["predicted"] for r in rows])


def serve_and_check(run, inputs, predicted):
    """The run served through the contracts: /health, /v1/predict alone and batched (the same answers), and a
    malformed input a 422 naming it that fails no other request of its micro-batch."""
    import asyncio

    import httpx
    from fastapi.testclient import TestClient

    from tunecraft.serve.app import create_app
    from tunecraft.serve.settings import ServeSettings

    app = create_app(ServeSettings(run=str(run), max_texts=64, max_wait_ms=50))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        health = client.get("/health")
        assert (health.status_code, health.json()["task"], health.json()["labels"]) == (200, "vectors", LABELS)
        alone = client.post("/v1/predict", json={"inputs": inputs})
        assert alone.status_code == 200, alone.text
        assert alone.json() == {"model": run.name, "predictions": [{"predicted": p} for p in predicted]}
        for bad in ({"vector": [1.0] * (DIM - 1)}, "a string"):
            response = client.post("/v1/predict", json={"inputs": [inputs[0], bad]})
            assert response.status_code == 422, response.text
            assert response.json()["detail"].startswith("inputs, line 1, field 'vector': a record")
        assert client.post("/v1/predict", json={"inputs": []}).status_code == 422
        too_many = client.post("/v1/predict", json={"inputs": inputs + inputs})
        assert (too_many.status_code, too_many.json()["detail"]) == (413, "96 texts in one request; the limit is 64")

        async def together():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as ac:
                bodies = [{"inputs": [x]} for x in inputs[:6]] + [{"inputs": [{"vector": "no"}]}]
                return await asyncio.gather(*[ac.post("/v1/predict", json=b) for b in bodies])

        *good, bad = client.portal.call(together)  # on the app's event loop, where its batcher runs
        assert [r.json()["predictions"][0]["predicted"] for r in good] == predicted[:6]
        assert bad.status_code == 422 and "field 'vector'" in bad.json()["detail"]
        sizes = app.state.server.metrics.batch_size.collect()[0].samples
        count = next(s.value for s in sizes if s.name.endswith("_count"))
        total = next(s.value for s in sizes if s.name.endswith("_sum"))
        assert total / count > 1  # the seven requests shared micro-batches, the bad one among them
