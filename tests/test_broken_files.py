"""Crafted or broken run files (issue #33 item 9): truncated or tampered weights, metadata, configuration,
tokenizer and checkpoint files each end in an error naming the file and what is wrong (models/file_checks.py),
never a library's traceback; the CLI prints it and exits 2."""

import json
import random
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import tiny_classifier
from tunecraft.errors import TunecraftError
from tunecraft.train.checkpoint import STATE, load_checkpoint
from tunecraft.trained import load_trained


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return tiny_classifier(tmp_path_factory.mktemp("broken"), "run")


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage(path):
    path.write_bytes(b"\x00not what it says\xff" * 8)


CASES = [("model.safetensors", truncate, "model weights"), ("model.safetensors", garbage, "model weights"),
         ("tunecraft.json", truncate, "run's metadata"), ("tunecraft.json", garbage, "run's metadata"),
         ("config.json", truncate, "model configuration"), ("config.json", garbage, "model configuration")]


@pytest.mark.parametrize("name, damage, what", CASES, ids=[f"{n}-{d.__name__}" for n, d, _ in CASES])
def test_a_damaged_model_file_is_an_error_naming_it(pristine, tmp_path, name, damage, what):
    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    load_trained(run)  # the copy loads before it is damaged
    damage(run / "model" / name)
    with pytest.raises(TunecraftError) as err:
        load_trained(run)
    assert f"{run / 'model' / name}: cannot read the {what}" in str(err.value)


def test_a_missing_weights_file_and_a_broken_tokenizer_name_the_folder(pristine, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    tokenizer_files = [p for p in (run / "model").iterdir() if p.name.startswith("tokenizer")]
    for path in tokenizer_files:
        garbage(path)
    with pytest.raises(TunecraftError, match="cannot read the tokenizer"):
        load_trained(run)
    (run / "model" / "model.safetensors").unlink()
    with pytest.raises(TunecraftError, match=f"{run / 'model'}: .*model"):
        load_trained(run)


def test_the_cli_prints_the_named_error_not_a_traceback(pristine, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    truncate(run / "model" / "model.safetensors")
    done = subprocess.run([sys.executable, "-m", "tunecraft", "predict", str(run), "a fine film"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "model.safetensors: cannot read the model weights" in done.stderr + done.stdout


@pytest.mark.parametrize("name", ["trainable.safetensors", "optimizer.pt", "scheduler.pt", "rng.json", STATE])
def test_a_damaged_checkpoint_file_is_an_error_naming_it(tmp_path, name):
    step = tmp_path / "step-2"
    step.mkdir()
    save_file({"w": torch.zeros(4)}, str(step / "trainable.safetensors"))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(4))], lr=0.1)
    torch.save(opt.state_dict(), step / "optimizer.pt")
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    torch.save(scheduler.state_dict(), step / "scheduler.pt")
    version, internal, gauss = random.getstate()
    rng = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state().tolist()}
    (step / "rng.json").write_text(json.dumps(rng))
    (step / STATE).write_text("{}")
    assert load_checkpoint(step, scheduler)[2] == {}  # whole, it loads
    truncate(step / name) if name.endswith((".pt", ".safetensors")) else garbage(step / name)
    with pytest.raises(TunecraftError) as err:
        load_checkpoint(step, scheduler)
    assert f"{step / name}: cannot read the checkpoint's" in str(err.value)
