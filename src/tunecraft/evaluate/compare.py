"""`tunecraft report RUN...`: one table over finished runs (method, trainable parameters, score, training
time, throughput, memory), the baselines that needed no training as rows of their own, and a plot."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

from ..errors import TunecraftError
from ..io import write_text
from ..report import plt, save_figure
from ..runs import RunFolder
from ..settings import dotted_keys
from ..tasks import TASKS, build_task
from .baselines import below_baseline

COLUMNS = ["run", "method", "settings", "trainable", "trainable %", "score", "second", "train s", "tokens/s",
           "peak RSS MB", "epochs", "steps"]


def _method_settings(raw: dict, method: str) -> list[str]:
    """The method settings of a run's config.yaml (`raw`) that differ from the method's defaults, e.g.
    ['r=8', 'rslora=True']."""
    settings = raw.get("method") or {}
    from ..methods import get_method

    try:
        defaults = get_method(method).Config().model_dump()
    except KeyError:
        defaults = {}
    return [f"{k}={v}" for k, v in settings.items() if k != "name" and defaults.get(k, object()) != v]


NOT_SETTINGS = {"name", "output_dir", "method.name", "task.name"}
"""Recipe keys that name a run rather than set how it trains (the run and method have columns of their own)."""
MAX_SETTINGS = 6
"""At most this many differing keys in a row's settings cell (then '…')."""


def fill_settings(rows: list[dict]) -> None:
    """Each row's settings cell: its method's non-default settings, then the recipe keys whose values differ
    between the compared runs (e.g. `train.lr=5e-05`); 'defaults' where there is neither."""
    raws = [RunFolder(Path(r["path"])).raw_config() for r in rows]  # each config.yaml read once
    configs = [dotted_keys(raw) for raw in raws]
    keys = sorted({k for c in configs for k in c} - NOT_SETTINGS)
    differ = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1 and not k.startswith("method.")]
    for row, raw, config in zip(rows, raws, configs):
        cells = _method_settings(raw, row["method"]) + [f"{k}={config.get(k)}" for k in differ]
        more = len(cells) > MAX_SETTINGS
        row["settings"] = " ".join(cells[:MAX_SETTINGS]) + (" …" if more else "") or "defaults"


def summary_row(run: Path, s: dict) -> dict:
    """A finished run's row of the comparison: method, parameters, the task's two headline metrics, time (the
    settings cell is left empty: `fill_settings` fills it for the runs compared)."""
    first, second = build_task(s["task"]).HEADLINE
    metrics = s.get("metrics") or {}
    return {
        "run": s.get("name", run.name), "path": str(run), "method": s.get("method", "?"),
        "settings": "", "data": s.get("data", ""),
        "trainable": s.get("trainable_params"), "total": s.get("total_params"),
        "score": metrics.get(first), "second": metrics.get(second), "train_seconds": s.get("train_seconds"),
        "tokens_per_second": s.get("tokens_per_second"), "peak_rss_mb": s.get("peak_rss_mb"),
        "epochs": s.get("epochs_done"), "steps": s.get("steps"), "eval_split": s.get("eval_split"),
        "samples": metrics.get("samples"), "eval_fingerprint": s.get("eval_fingerprint"),
    }


def collect(runs: list[str | Path]) -> tuple[str, list[dict], list[dict]]:
    """(task, one row per run, one row per distinct baseline, with the runs that scored it). All runs must share a
    task."""
    if not runs:
        raise TunecraftError("no runs given")
    rows, baselines, tasks, seen = [], [], set(), {}
    for run in map(Path, runs):
        s = RunFolder(run).summary()
        task = s.get("task")
        if task not in TASKS:
            raise TunecraftError(f"{run}: not a fine-tuning run (its summary.json names no known task)")
        tasks.add(task)
        first, second = build_task(task).HEADLINE
        metrics = s.get("metrics") or {}
        rows.append({**summary_row(run, s),
                     "below_baseline": "; ".join(below_baseline(metrics, s.get("baselines"), (first, second)))})
        for b in s.get("baselines") or []:
            key = (b["name"], s.get("data"), s.get("eval_fingerprint") or metrics.get("samples"))
            if key in seen:  # the same baseline on the same data: one row, naming every run that scored it
                seen[key]["from"] += f", {s.get('name', run.name)}"
                continue
            bm = b.get("metrics") or {}
            spread = f" ± {100 * b['accuracy_std']:.1f}" if b.get("accuracy_std") is not None else ""
            seen[key] = {"name": b["name"], "score": bm.get(first), "second": bm.get(second), "spread": spread,
                         "from": s.get("name", run.name)}
            baselines.append(seen[key])
    if len(tasks) > 1:
        raise TunecraftError(f"runs of different tasks cannot share one table: {sorted(tasks)}")
    fill_settings(rows)
    return tasks.pop(), rows, baselines


def scored_on_different_data(rows: list[dict]) -> str | None:
    """A warning when the runs were not scored on the same examples (by the fingerprint of the scored split, or,
    for runs from before it was recorded, by data source, split and size); None when they were."""
    def key(r):
        return r.get("eval_fingerprint") or (r["data"], r["eval_split"], r["samples"])

    groups: dict = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    if len(groups) < 2:
        return None
    parts = [f"{', '.join(r['run'] for r in g)} ({g[0]['eval_split']} split of {g[0]['data'] or '?'}, "
             f"{g[0]['samples']} examples)" for g in groups.values()]
    return ("Not comparable as a ranking: these runs were scored on different test data — " + "; ".join(parts)
            + ". Score them on one set with `tunecraft eval RUN --data ...`.")


RAW_METRICS = ("loss", "perplexity", "ref_perplexity", "kl", "reward", "margin", "mean_margin")
"""Shown in their own unit (a reward, a KL, a log-probability margin); every other headline metric is a fraction
of examples, shown in %."""
LOWER_IS_BETTER = ("loss", "perplexity", "ref_perplexity", "kl")
"""Ranked lowest first; every other headline metric highest first."""


def score_text(value, metric: str = "accuracy") -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if metric in RAW_METRICS else f"{100 * value:.2f}"


def _scale(metric: str) -> float:
    return 1.0 if metric in RAW_METRICS else 100.0


def _num(value, fmt="{:,.0f}") -> str:
    return "–" if value is None else fmt.format(value)


def table_rows(rows: list[dict], first: str, second: str) -> list[list[str]]:
    out = []
    for r in rows:
        frac = r["trainable"] / r["total"] if r["trainable"] is not None and r["total"] else None
        out.append([r["run"], r["method"], r["settings"], _num(r["trainable"]), _num(frac and 100 * frac, "{:.2f}"),
                    score_text(r["score"], first), score_text(r["second"], second), _num(r["train_seconds"], "{:,.0f}"),
                    _num(r["tokens_per_second"]), _num(r["peak_rss_mb"]), _num(r["epochs"]), _num(r["steps"])])
    return out


def ranked(task: str, rows: list[dict]) -> list[dict]:
    """Best headline score first (lowest for loss, perplexity and KL); runs without a score last."""
    first = build_task(task).HEADLINE[0]
    lower = first in LOWER_IS_BETTER
    worst, sign = (float("inf"), 1) if lower else (float("-inf"), -1)
    return sorted(rows, key=lambda r: sign * (worst if r["score"] is None else r["score"]))


def header(task: str) -> list[str]:
    """The table's column names, with the task's two headline metrics for score and second."""
    first, second = build_task(task).HEADLINE
    return [c if c not in ("score", "second") else (first if c == "score" else second) for c in COLUMNS]


def baseline_cells(task: str, baselines: list[dict]) -> list[list[str]]:
    first, second = build_task(task).HEADLINE
    return [[b["name"], score_text(b["score"], first) + b["spread"], score_text(b["second"], second), b["from"]]
            for b in baselines]



def markdown(task: str, rows: list[dict], baselines: list[dict], sort: bool = True) -> str:
    first, second = build_task(task).HEADLINE
    if sort:
        rows = ranked(task, rows)
    header_ = header(task)
    lines = ["| " + " | ".join(header_) + " |", "|" + "---|" * len(header_)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows, first, second)]
    text = "\n".join(lines)
    splits = {(r["eval_split"], r["samples"]) for r in rows}
    note = ", ".join(f"{split} split, {n} examples" for split, n in sorted(splits, key=str))
    unit = "" if first in RAW_METRICS else " in %"
    text += f"\n\nScores{unit} on the {note}; `{second}` beside `{first}`. Train s: wall time of training only."
    different = scored_on_different_data(rows)
    if different:
        text += f"\n\n**Warning.** {different}"
    below = [f"- {r['run']}: {r['below_baseline']}" for r in rows if r.get("below_baseline")]
    if below:
        text += "\n\nRuns below a bar baseline scored on their own split:\n\n" + "\n".join(below)
    if baselines:
        text += ("\n\nBaselines (scored on the same split; only TF-IDF + LinearSVC and the few-shot fine-tunes "
                 "train):\n\n"
                 f"| baseline | {first} | {second} | scored by the runs |\n|---|---|---|---|\n")
        text += "\n".join("| " + " | ".join(cells) + " |" for cells in baseline_cells(task, baselines))
    return text + "\n"


def plot(task: str, rows: list[dict], baselines: list[dict], path: Path) -> Path:
    first = build_task(task).HEADLINE[0]
    scale = _scale(first)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, key, label, log in ((axes[0], "trainable", "trainable parameters", True),
                                (axes[1], "train_seconds", "training wall time (s)", False)):
        for r in rows:
            if r[key] is None or r["score"] is None:
                continue
            ax.scatter(r[key], scale * r["score"], s=30)
            ax.annotate(r["run"], (r[key], scale * r["score"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        for i, b in enumerate(baselines):
            if b["score"] is not None:
                ax.axhline(scale * b["score"], ls=("--", ":", "-.")[i % 3], lw=1, color=("k", "C3", "C0")[i // 3 % 3],
                           label=b["name"])
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(first if first in RAW_METRICS else f"{first} (%)")
    if baselines:
        axes[0].legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def compare_runs(runs: list[str | Path], out: str | Path | None = None) -> dict:
    """The comparison as markdown; with `out`, also comparison.md, comparison.csv and comparison.png there."""
    if out is not None:  # a glob such as runs/* may catch the output folder of an earlier report
        runs = [r for r in runs if Path(r).resolve() != Path(out).resolve()]
    task, rows, baselines = collect(runs)
    text = markdown(task, rows, baselines)
    result = {"task": task, "rows": rows, "baselines": baselines, "markdown": text,
              "warning": scored_on_different_data(rows)}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        write_text(out / "comparison.md",
                   f"# Comparison of {len(rows)} runs ({stamp})\n\n{text}\n![](comparison.png)\n")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_text(out / "comparison.csv", buf.getvalue())
        plot(task, rows, baselines, out / "comparison.png")
        result["files"] = [str(out / n) for n in ("comparison.md", "comparison.csv", "comparison.png")]
    return result
