"""The command line: a thin layer over tunecraft's Python functions."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .errors import TunecraftError


def _cmd_train(args) -> int:
    from .config import load_config
    from .train import train

    config = load_config(args.recipe, args.overrides)
    if args.no_progress:
        config.train.progress = False
    from .tasks import get_task

    summary = train(config, resume=args.resume, overwrite=args.overwrite)
    m = summary.get("metrics") or {}
    print(f"\n{summary['name']}: {summary['method']} on {summary['base_model']}, "
          f"{summary['trainable_params']:,} trainable parameters, {summary['steps']} steps, "
          f"{summary['train_seconds']:.0f} s training ({summary['tokens_per_second']:.0f} tokens/s)")
    if m:
        print(f"{summary['eval_split']}: {get_task(summary['task']).summary_line(m)}")
    print(f"report: {summary.get('report')}")
    return 0


def _cmd_continual(args) -> int:
    from .continual import load_continual, run_continual
    from .continual.report import COMPARISON_HEADER, comparison_rows

    config = load_continual(args.recipe, args.overrides)
    if args.no_progress:
        config.train["progress"] = False
    results = run_continual(config, overwrite=args.overwrite)
    print("\n" + "  ".join(COMPARISON_HEADER[:4]))
    for row in comparison_rows(results):
        print("  ".join(str(c) for c in row[:4]))
    print(f"report: {results['report']}")
    return 0


def _cmd_eval(args) -> int:
    from .evaluate.runs import evaluate_run
    from .tasks import get_task

    result = evaluate_run(args.run, args.data, split=args.split, fmt=args.format)
    print(f"{args.data}: {get_task(result['task']).summary_line(result['metrics'])}")
    print(f"report: {result['report']}")
    return 0


def _cmd_predict(args) -> int:
    from .evaluate.runs import format_predictions, predict, read_texts

    texts = list(args.texts)
    if args.file:
        texts += read_texts(args.file, args.text_column)
    if not texts:
        raise TunecraftError("give texts as arguments or --file FILE")
    from .models import run_task

    print(format_predictions(predict(args.run, texts), args.json, run_task(args.run)))
    return 0


def _cmd_serve(args) -> int:
    from .serve.app import ServeSettings, serve

    settings = ServeSettings(
        run=args.run, host=args.host, port=args.port, workers=args.workers, batching=not args.no_batching,
        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, max_body_bytes=args.max_body_bytes,
        max_texts=args.max_texts, max_input_tokens=args.max_input_tokens,
        api_key=args.api_key or os.environ.get("TUNECRAFT_API_KEY") or None, feedback_db=args.feedback_db,
        precision=args.precision, drain_seconds=args.drain_seconds,
    )
    serve(settings)
    return 0


def _cmd_assets(args) -> int:
    from . import assets

    if args.action == "fetch":
        for line in assets.fetch():
            print(line)
    else:
        print("models:   " + ", ".join(assets.MODELS))
        print("datasets: " + ", ".join(assets.VADER_FILES))
        print(f"asset folder: {assets.home()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunecraft", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune and evaluate from a recipe")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.lr=3e-4 method.r=16")
    p.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("continual", help="learn a stream of tasks one after another; measure what is forgotten")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.max_steps=30 seed=1")
    p.add_argument("--overwrite", action="store_true", help="replace an existing continual run folder")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_continual)

    p = sub.add_parser("eval", help="evaluate a run on a bundled dataset or a file")
    p.add_argument("run")
    p.add_argument("--data", required=True, help="mr, amazon, tweets, nyt, pd-ner, or a CSV/TSV/JSONL/Parquet/"
                                                 "CoNLL file")
    p.add_argument("--split", default="test", choices=["train", "validation", "test", "all"],
                   help="for bundled sets: which seeded split (the run's own seed), or all")
    p.add_argument("--format", default="auto", choices=["auto", "csv", "tsv", "jsonl", "parquet", "conll"],
                   help="auto: from the suffix (for NER runs: .jsonl spans, anything else CoNLL)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="label texts with a run's model (NER runs: entities with character offsets)")
    p.add_argument("run")
    p.add_argument("texts", nargs="*")
    p.add_argument("--file", help="a .txt file (one text per line) or CSV/TSV/JSONL/Parquet")
    p.add_argument("--text-column", default="text")
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("serve", help="serve a run over HTTP (FastAPI): /v1/classify, /v1/feedback, /health, /metrics")
    p.add_argument("run")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-batching", action="store_true", help="one forward pass per request item")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="extra wait for a fuller batch (default 0: batch what queued during the last pass)")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000)
    p.add_argument("--max-texts", type=int, default=64)
    p.add_argument("--max-input-tokens", type=int, default=512)
    p.add_argument("--api-key", help="require this key (X-API-Key or Authorization: Bearer); "
                                     "default: $TUNECRAFT_API_KEY, else no key")
    p.add_argument("--feedback-db", help="SQLite file for /v1/feedback (default: RUN/feedback.sqlite)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--drain-seconds", type=float, default=30, help="graceful-shutdown drain limit")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("assets", help="fetch or list the bundled models and datasets")
    p.add_argument("action", choices=["fetch", "list"])
    p.set_defaults(func=_cmd_assets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except TunecraftError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
