"""`tunecraft eval` and `tunecraft predict`: use a finished run folder on new data or raw text."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..config import AugmentConfig, DataConfig, SplitConfig, build_config
from ..data import LabelMap
from ..data.long_documents import RUN_ADVICE, report_long_texts
from ..data.readers import Columns, read_examples
from ..errors import DataError, TunecraftError
from ..io import write_json, write_jsonl
from ..runs import RunFolder
from ..runtime.precision import resolve as resolve_precision
from ..tasks import build_task
from ..trained import load_trained, predict_with_run
from .report import write_eval_report
from .views import view_of

logger = logging.getLogger(__name__)


def _saved_data(run: Path) -> DataConfig | None:
    """The run's data settings, read through the schema (None for a folder without config.yaml: a model folder
    or a compressed variant)."""
    folder = RunFolder(run)
    return folder.config(build_config).data if folder.has_config() else None


def _split_settings(run: Path) -> tuple[int, tuple[float, float]]:
    """The run's own split seed and fractions, so `--data mr` evaluates on the run's held-out part."""
    saved = _saved_data(run)
    split = saved.split if saved is not None else SplitConfig()
    return split.seed, (split.validation, split.test)


def _file_of(saved: DataConfig | None, split: str) -> str | None:
    """The file the run's `split` came from (None: carved out of the training data, or no config)."""
    return getattr(saved, split) if saved is not None and split in ("train", "validation", "test") else None


def _stratified(run: Path) -> bool:
    """Whether the run's split was stratified: a config.yaml written before splits were stratified has no
    data.split.stratify, and its run was split by one permutation of the whole file."""
    return "stratify" in ((RunFolder(run).raw_config().get("data") or {}).get("split") or {})


def _same_file(a: str | None, b: str) -> bool:
    return bool(a) and Path(a).resolve() == Path(b).resolve()


RUN_PRECISIONS = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}
"""summary.json's `precision` (accelerate's mixed-precision value the run trained and scored in) → --precision."""


def scoring_precision(run: Path, precision: str) -> str:
    """`auto`: the precision the run scored its held-out split in (its summary.json), so that `eval` on the run's
    own split gives the run's own score on any machine (fp16 only where CUDA is); otherwise `precision` as given.
    A folder without a summary (a model folder, a compressed variant) keeps `auto`."""
    folder = RunFolder(run)
    if precision != "auto" or not folder.is_finished():
        return precision
    chosen = RUN_PRECISIONS.get(folder.summary().get("precision"), "auto")
    return "auto" if chosen == "fp16" and not torch.cuda.is_available() else chosen


def run_file_split(run: Path, task, data: str, split: str) -> tuple[list, str] | None:
    """When `data` is a file the run trained from: (the examples of the run's own `split` of it, a note),
    re-derived as training split it (seed, fractions, sample limits); None for any other file or split
    'all'. Training rows are never scored as test rows."""
    saved = _saved_data(run)
    own_file = split != "train" and _same_file(_file_of(saved, split), data)  # e.g. test: test.csv
    if split == "all" or own_file or not _same_file(_file_of(saved, "train"), data):
        return None
    if _file_of(saved, split) and split != "train":
        raise TunecraftError(f"{data} is the run's training file; its {split} split came from "
                             f"{_file_of(saved, split)}: evaluate on that file")
    settings = saved.split.model_copy(update={"stratify": saved.split.stratify and _stratified(run)})
    parts = task.load_data(saved.model_copy(update={"split": settings, "augment": AugmentConfig()}))
    examples = getattr(parts, split)
    if not examples:
        raise TunecraftError(f"the run has no {split} split in {data}")
    seed = saved.split.seed
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
        if is_file and split != "all" and not _same_file(_file_of(_saved_data(run), split), data):
            note = (f"scoring every row of {data} ({len(examples):,} rows): it is not the run's training file, so "
                    f"--split {split} does not apply; make sure it holds no training rows")
            logger.warning(note)
        else:
            note = None
    label_map = LabelMap(meta["labels"])
    enc = task.encode(trained.processor, examples, meta, label_map)
    report_long_texts(enc, "evaluated texts", meta["max_length"], RUN_ADVICE)
    mixed, dtype = resolve_precision(scoring_precision(run, precision), task.AUTO_PRECISION)
    logits = task.infer(trained.model, enc, batch_size, trained.pad_id, torch.device("cpu"), dtype)
    metrics = task.evaluate(logits, enc, label_map)
    # a generative task also scores generated answers (exact match, ROUGE-L); the others add nothing
    gen = meta.get("generation") or {}
    metrics.update(task.generation_eval(trained.model, trained.tokenizer, examples, gen, dtype))
    generations = metrics.pop("generations", [])
    if generations:
        metrics["samples_shown"] = generations[: gen["report_samples"]]
    name = (Path(data).stem if is_file else data) + ("" if is_file and own is None else f"-{split}")
    out = RunFolder(run / "evals" / name)
    out.path.mkdir(parents=True, exist_ok=True)
    write_json(out.path / "metrics.json", metrics)
    write_jsonl(out.predictions_file, task.prediction_rows(examples, logits, enc, label_map))
    if generations:
        write_jsonl(out.generations_file, generations)
    report = write_eval_report(out.report_file, f"Evaluation of {run} on {name}", metrics, label_map.labels,
                               task)
    return {"metrics": metrics, "report": str(report), "samples": len(examples), "task": meta["task"],
            "note": note, "precision": RUN_PRECISIONS[mixed]}


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
