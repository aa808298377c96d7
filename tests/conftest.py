import os
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tunecraft.config import build_config  # noqa: E402
from tunecraft.experiment import experiment  # noqa: E402


def free_port() -> int:
    """A TCP port free on loopback now (for a server or a process group the test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_classifier(output_dir, name: str, train_samples: int = 64, eval_samples: int = 16, **train_settings):
    """A full fine-tune of the tiny scratch character encoder on `mr` (fp32, one thread, no zero-shot baseline;
    2 steps of 8 unless `train_settings` say otherwise): a real run folder in seconds. Returns the run folder."""
    from tunecraft.train import train

    config = build_config({
        "name": name, "output_dir": str(output_dir), "seed": 7,
        "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": 64},
        "data": {"dataset": "mr", "max_train_samples": train_samples, "max_eval_samples": eval_samples},
        "method": {"name": "full"},
        "train": {"max_steps": 2, "batch_size": 8, "precision": "fp32", "progress": False, "tensorboard": False,
                  "num_threads": 1, **train_settings},
        "baselines": {"zero_shot": False}})
    train(config)
    return config.run_dir


@pytest.fixture
def write(tmp_path):
    """write(name, text_or_bytes) -> path of a file in a fresh temporary folder."""

    def _write(name: str, content) -> str:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return str(path)

    return _write


def recipe(tmp, name, **sections):
    raw = {"name": name, "output_dir": str(tmp), "seed": 7,
           "data": {"dataset": "mr", "max_train_samples": 2000, "max_eval_samples": 400},
           "train": {"epochs": 2, "batch_size": 32, "progress": False, "tensorboard": False}}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value) if isinstance(value, dict) else raw.__setitem__(key, value)
    return build_config(raw)


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def lora_run(runs):
    config = recipe(runs, "lora", method={"name": "lora", "r": 8, "alpha": 16}, train={"lr": 1e-3})
    return config.run_dir, experiment(config)


@pytest.fixture(scope="session")
def full_run(runs):
    config = recipe(runs, "full", method={"name": "full"}, train={"lr": 5e-5, "epochs": 1})
    return config.run_dir, experiment(config)


