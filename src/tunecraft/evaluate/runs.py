"""`tunecraft eval` and `tunecraft predict`: use a finished run folder on new data or raw text."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from ..data import LabelMap
from ..data.readers import Columns, read_examples
from ..errors import DataError, TunecraftError
from ..io import write_json, write_jsonl
from ..tasks import get_task
from ..train.precision import resolve as resolve_precision
from ..trained import load_trained
from .report import write_eval_report


def _split_settings(run: Path) -> tuple[int, tuple[float, float]]:
    """The run's own split seed and fractions, so `--data mr` evaluates on the run's held-out part."""
    saved = run / "config.yaml"
    if saved.is_file():
        split = (yaml.safe_load(saved.read_text(encoding="utf-8")).get("data") or {}).get("split") or {}
        return split.get("seed", 42), (split.get("validation", 0.1), split.get("test", 0.1))
    return 42, (0.1, 0.1)


def evaluate_run(run: str | Path, data: str, split: str = "test", batch_size: int = 64,
                 precision: str = "auto", fmt: str = "auto") -> dict:
    run = Path(run)
    trained = load_trained(run)
    meta = trained.meta
    task = get_task(meta["task"])
    seed, fractions = _split_settings(run)
    examples = task.load_eval_examples(data, meta, fmt, split, seed, fractions)
    label_map = LabelMap(meta["labels"])
    enc = task.encode(trained.tokenizer, examples, meta, label_map)
    _, dtype = resolve_precision(precision)
    logits = task.infer(trained.model, enc, batch_size, trained.tokenizer.pad_token_id, torch.device("cpu"), dtype)
    metrics = task.evaluate(logits, enc, label_map)
    # a generative task also scores generated answers (exact match, ROUGE-L); the others add nothing
    gen = meta.get("generation") or {}
    metrics.update(task.generation_eval(trained.model, trained.tokenizer, examples, gen, dtype))
    generations = metrics.pop("generations", [])
    if generations:
        metrics["samples_shown"] = generations[: gen["report_samples"]]
    name = (Path(data).stem if Path(data).exists() else data) + ("" if Path(data).exists() else f"-{split}")
    out = run / "evals" / name
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    write_jsonl(out / "predictions.jsonl", task.prediction_rows(examples, logits, enc, label_map))
    if generations:
        write_jsonl(out / "generations.jsonl", generations)
    report = write_eval_report(out / "report.md", f"Evaluation of {run} on {name}", metrics, label_map.labels, task)
    return {"metrics": metrics, "report": str(report), "samples": len(examples), "task": meta["task"]}


def read_texts(path: str | Path, text_column: str = "text") -> list[str]:
    """Texts to predict: a .txt file has one per line; CSV/TSV/JSONL/Parquet use the text column."""
    path = Path(path)
    if path.suffix.lower() in (".txt", ""):
        if not path.is_file():
            raise DataError(path, None, None, "file not found")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise DataError(path, None, None, f"not valid UTF-8: {err}") from None
        texts = [line for line in lines if line.strip()]
        if not texts:
            raise DataError(path, None, None, "no text lines")
        return texts
    return [e.text for e in read_examples(path, Columns(text_column, None, None))]


def predict(run: str | Path, texts: list[str], batch_size: int = 64, precision: str = "auto") -> list[dict]:
    if not texts:
        raise TunecraftError("no texts to predict")
    for i, text in enumerate(texts, start=1):
        if not text.strip():
            raise TunecraftError(f"text {i} is empty")
    trained = load_trained(run)
    _, dtype = resolve_precision(precision)
    return get_task(trained.meta["task"]).predict(trained, texts, batch_size, dtype)


def format_predictions(rows: list[dict], as_json: bool, task: str) -> str:
    if as_json:
        return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    return "\n".join(get_task(task).format_prediction(r) for r in rows)
