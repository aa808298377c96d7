"""Load a trained run's model for eval, predict, compress and serve: any task, any variant format (int8,
head-pruned, ONNX), with its adapter where the method keeps one apart."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .errors import TunecraftError
from .methods import get_method
from .models import NON_TEXT_FILES, TrainedModel, load_processor
from .models.file_checks import check_model_folder
from .runs import META, load_model, read_meta, reading, run_model_dir
from .tasks import TASKS, build_task


def load_trained(run: str | Path) -> TrainedModel:
    folder = run_model_dir(run)
    meta = read_meta(folder)
    if meta.get("task") not in TASKS:
        raise TunecraftError(f"{folder}/{META}: unknown task '{meta.get('task')}'")
    fmt = meta.get("format", "transformers")
    if fmt != "transformers":  # a compressed variant: int8, head-pruned, ONNX
        with reading(folder, f"{fmt} model"):
            model = load_model(folder, meta)
    else:
        check_model_folder(folder)
        with reading(folder, "model"):
            model = build_task(meta).MODEL_CLASS.from_pretrained(str(folder))
    if meta.get("adapter_required"):  # prompt, prefix, adapter: model/ is the base, adapter/ the trained part
        adapter = folder.parent / "adapter"
        if not adapter.is_dir():
            raise TunecraftError(f"{folder}: a '{meta['method']}' model needs its adapter in {adapter}")
        check_model_folder(adapter)
        with reading(adapter, "adapter"):
            model = get_method(meta["method"]).load_adapter(model, adapter)
    model.eval()
    what = "processor" if any((folder / name).is_file() for name in NON_TEXT_FILES) else "tokenizer"
    with reading(folder, what):  # a text run's processor is its tokenizer: the error names it so
        processor = load_processor(folder)
    return TrainedModel(model, processor, meta, folder)


@lru_cache(maxsize=4)
def _loaded_once(folder: str) -> TrainedModel:
    return load_trained(folder)


def predict_with_run(folder: str, texts: list[str]) -> list[dict]:
    """A run's `predict` rows for texts, as `tunecraft predict` would give them; the run's model is loaded once per
    process (rollouts score with it every step). Handed to the tasks (`Task.hand_runs`) by their callers."""
    trained = _loaded_once(str(folder))
    return build_task(trained.meta).predict(trained, texts, 64, None)
