"""Page load of tunecraft studio's runs table over 200 run folders: the time from request to the whole HTML page
(server side, in process), the first load (every summary read) and the next ones (rows cached by the summary's
modification time). One tiny run is trained, then copied 199 times under other names.

    python benchmarks/studio_runs_page.py [--runs 200] [--loads 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from tunecraft.config import build_config
    from tunecraft.experiment import experiment
    from tunecraft.studio.app import create_app
    from tunecraft.studio.settings import StudioSettings

    folder = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    try:
        runs = folder / "runs"
        config = build_config({
            "name": "run-000", "output_dir": str(runs), "task": "classification",
            "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": 64},
            "data": {"dataset": "mr", "max_train_samples": 200, "max_eval_samples": 64},
            "train": {"max_steps": 10, "log_every": 2, "progress": False, "tensorboard": False},
            "baselines": {"zero_shot": False}})
        experiment(config)
        for i in range(1, args.runs):
            target = runs / f"run-{i:03d}"
            shutil.copytree(config.run_dir, target, ignore=shutil.ignore_patterns("model", "checkpoints"))
            summary = json.loads((target / "summary.json").read_text())
            summary["name"] = target.name
            (target / "summary.json").write_text(json.dumps(summary))
        with TestClient(create_app(StudioSettings(runs=str(runs)))) as client:
            times = []
            for _ in range(args.loads + 1):
                start = time.perf_counter()
                page = client.get("/")
                times.append(time.perf_counter() - start)
                assert page.status_code == 200 and page.text.count("<tr data-name=") == args.runs
        print(f"{dt.date.today()}: runs page with {args.runs} run folders: first load {times[0] * 1000:.0f} ms, "
              f"next {args.loads} loads median {statistics.median(times[1:]) * 1000:.0f} ms "
              f"(max {max(times[1:]) * 1000:.0f} ms), page {len(page.content) / 1024:.0f} KiB")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
