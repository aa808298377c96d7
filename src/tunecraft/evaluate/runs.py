"""`tunecraft eval` and `tunecraft predict`: use a finished run folder on new data or raw text."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import yaml

from ..config import DataConfig, without_legacy_data_keys
from ..data import LabelMap
from ..data.long_documents import RUN_ADVICE, report_long_texts
from ..data.readers import Columns, read_examples
from ..errors import DataError, TunecraftError
from ..io import write_json, write_jsonl
from ..runtime.precision import resolve as resolve_precision
from ..tasks import build_task
from ..trained import load_trained, predict_with_run
from .report import write_eval_report
from .views import view_of

logger = logging.getLogger(__name__)


def _split_settings(run: Path) -> tuple[int, tuple[float, float]]:
    """The run's own split seed and fractions, so `--data mr` evaluates on the run's held-out part."""
    saved = run / "config.yaml"
    if saved.is_file():
        split = (yaml.safe_load(saved.read_text(encoding="utf-8")).get("data") or {}).get("split") or {}
        return split.get("seed", 42), (split.get("validation", 0.1), split.get("test", 0.1))
    return 42, (0.1, 0.1)


def _saved_data(run: Path) -> dict:
    saved = run / "config.yaml"
    if not saved.is_file():
        return {}
    return (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("data") or {}


def _same_file(a: str | None, b: str) -> bool:
    return bool(a) and Path(a).resolve() == Path(b).resolve()


def run_file_split(run: Path, task, data: str, split: str) -> tuple[list, str] | None:
    """When `data` is a file the run trained from: (the examples of the run's own `split` of it, a note),
    re-derived as training split it (seed, fractions, sample limits); None for any other file or split
    'all'. Training rows are never scored as test rows."""
    saved = _saved_data(run)
    own_file = split != "train" and _same_file(saved.get(split), data)  # e.g. test: test.csv
    if split == "all" or own_file or not _same_file(saved.get("train"), data):
        return None
    if saved.get(split) and split != "train":
        raise TunecraftError(f"{data} is the run's training file; its {split} split came from {saved[split]}: "
                             f"evaluate on that file")
    # a run saved before splits were stratified was split by one permutation of the whole file
    split_settings = {"stratify": False, **(saved.get("split") or {})}
    saved = without_legacy_data_keys(saved)  # a run folder written before task: held them
    parts = task.load_data(DataConfig.model_validate({**saved, "split": split_settings, "augment": {}}))
    examples = getattr(parts, split)
    if not examples:
        raise TunecraftError(f"the run has no {split} split in {data}")
    seed = (saved.get("split") or {}).get("seed", 42)
    return examples, (f"{data} is the run's training file: scoring the run's own {split} split of it "
                      f"({len(examples):,} rows, split by seed {seed} as in training), not every row")


def evaluate_run(run: str | Path, data: str, split: str = "test", batch_size: int = 64,
                 precision: str = "auto", fmt: str = "auto") -> dict:
    """Score a run on a bundled set's split (by the run's own seed) or a file. The run's training file gives
    the run's own `split` of it; any other file is scored whole (with a warning unless split is 'all')."""
    run = Path(run)
    trained = load_trained(run)
    meta = trained.meta
    task = build_task(meta).hand_runs(predict_with_run)
    seed, fractions = _split_settings(run)
    is_file = Path(data).exists()
    own = run_file_split(run, task, data, split) if is_file else None
    if own is not None:
        examples, note = own
        logger.warning(note)
    else:
        examples = task.load_eval_examples(data, meta, fmt, split, seed, fractions)
        saved = _saved_data(run)
        if is_file and split != "all" and not _same_file(saved.get(split), data):
            note = (f"scoring every row of {data} ({len(examples):,} rows): it is not the run's training file, so "
                    f"--split {split} does not apply; make sure it holds no training rows")
            logger.warning(note)
        else:
            note = None
    label_map = LabelMap(meta["labels"])
    enc = task.encode(trained.processor, examples, meta, label_map)
    report_long_texts(enc, "evaluated texts", meta["max_length"], RUN_ADVICE)
    _, dtype = resolve_precision(precision, task.AUTO_PRECISION)
    logits = task.infer(trained.model, enc, batch_size, trained.pad_id, torch.device("cpu"), dtype)
    metrics = task.evaluate(logits, enc, label_map)
    # a generative task also scores generated answers (exact match, ROUGE-L); the others add nothing
    gen = meta.get("generation") or {}
    metrics.update(task.generation_eval(trained.model, trained.tokenizer, examples, gen, dtype))
    generations = metrics.pop("generations", [])
    if generations:
        metrics["samples_shown"] = generations[: gen["report_samples"]]
    name = (Path(data).stem if is_file else data) + ("" if is_file and own is None else f"-{split}")
    out = run / "evals" / name
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    write_jsonl(out / "predictions.jsonl", task.prediction_rows(examples, logits, enc, label_map))
    if generations:
        write_jsonl(out / "generations.jsonl", generations)
    report = write_eval_report(out / "report.md", f"Evaluation of {run} on {name}", metrics, label_map.labels, task)
    return {"metrics": metrics, "report": str(report), "samples": len(examples), "task": meta["task"],
            "note": note}


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
    task = build_task(trained.meta)
    _, dtype = resolve_precision(precision, task.AUTO_PRECISION)
    return task.predict(trained, texts, batch_size, dtype)


def format_predictions(rows: list[dict], as_json: bool, task: str) -> str:
    if as_json:
        return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    return "\n".join(view_of(task).format_prediction(r) for r in rows)
