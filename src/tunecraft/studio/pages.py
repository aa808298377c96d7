"""The studio's pages (rendered on the server), the key form and the run folders' files."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from ..errors import TunecraftError
from ..evaluate.compare import baseline_cells, compare_runs, header, ranked, table_rows
from ..report import html_sections
from ..runs import RunFolder, read_meta
from ..serve import guards
from ..tasks import TASKS, build_task
from . import form
from .confine import Refused
from .launch import command_for
from .runs import STUDIO_DIR, example_text, predictions
from .state import Studio, StudioState

COOKIE = "tunecraft_key"

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def runs_page(request: Request, studio: StudioState):
    rows = studio.index.rows()
    return studio.page(request, "runs.html", rows=rows, tasks=sorted({r["task"] for r in rows if r["task"]}),
                       now=time.time())


@router.get("/runs/{name}", response_class=HTMLResponse)
async def run_page(request: Request, name: str, studio: StudioState):
    run = studio.run_dir(name)
    row = studio.index.row(run)
    summary = _summary(run)
    report = _cached_report(studio, run, name, summary) if summary else ""
    columns, rows, errors, total = predictions(run)
    files = sorted(p.relative_to(run).as_posix() + ("/" if p.is_dir() else "") for p in run.iterdir()) \
        if run.is_dir() else []
    config = RunFolder(run).config_text()
    task = TASKS.get(row["task"])
    labels = read_meta(run).get("labels") or [] if summary else []
    return studio.page(request, "run.html", run=row, report=report, config=config, files=files,
                       feedback=studio.queue.rows(run), chat_feedback=studio.queue.chat_rows(run), labels=labels,
                       pred_columns=columns, pred_rows=rows, pred_errors=errors, pred_total=total,
                       example=example_text(rows, errors),
                       try_routes=studio.apps.routes(name) if summary else [],
                       launched=studio.launches.record(name) is not None,
                       headline=list(task.HEADLINE) if task else [], robustness=_robustness_html(run, name))


def _summary(run: Path) -> dict | None:
    """The run's summary.json, when it is a fine-tuning task's (pretrain's has its own report.html)."""
    folder = RunFolder(run)
    summary = folder.summary() if folder.is_finished() else None
    return summary if summary is not None and summary.get("task") in TASKS else None


def _cached_report(studio: Studio, run: Path, name: str, summary: dict) -> str:
    stamp = RunFolder(run).summary_file.stat().st_mtime
    if studio.reports.get(name, (None,))[0] != stamp:
        studio.reports[name] = (stamp, _report_html(run, summary, studio.cache / name))
    return studio.reports[name][1]


@router.get("/compare", response_class=HTMLResponse)
async def compare_page(request: Request, studio: StudioState):
    names = request.query_params.getlist("run")
    error, result, image = None, None, None
    try:
        paths = [studio.run_dir(n) for n in names]
        out = studio.cache / ("compare-" + hashlib.sha1("\0".join(names).encode()).hexdigest()[:12])
        result = compare_runs(paths, out)
        image = (out / "comparison.png").relative_to(studio.runs).as_posix()
    except (TunecraftError, HTTPException) as err:
        error = getattr(err, "detail", None) or str(err)
    table = None
    if result is not None:
        task = result["task"]
        first, second = TASKS[task].HEADLINE
        table = {"header": header(task), "rows": table_rows(ranked(task, result["rows"]), first, second),
                 "baseline_header": ["baseline", first, second, "scored by the runs"], "warning": result["warning"],
                 "baselines": baseline_cells(task, result["baselines"])}
    return studio.page(request, "compare.html", names=names, error=error, table=table, image=image,
                       markdown=result and result["markdown"])


@router.get("/launch", response_class=HTMLResponse)
async def launch_page(request: Request, studio: StudioState, recipe: str | None = None, extra: str = ""):
    folder = Path(studio.settings.recipes)
    recipes = sorted(p.as_posix() for p in folder.glob("*.yaml")) if folder.is_dir() else []
    recipes += sorted(p.as_posix() for p in (studio.runs / STUDIO_DIR / "recipes").glob("*.yaml"))
    chosen = recipe or (recipes[0] if recipes else None)
    if chosen and chosen not in recipes:  # e.g. a run's own config.yaml, to train again on its feedback
        recipes.append(chosen)
    sections, error, command, status = [], None, None, 200
    if chosen:
        try:
            studio.confinement.check_recipe(chosen)  # before it is opened: its errors would show its lines
            command = command_for(chosen)
            sections = form.sections(command.load(chosen, []))
        except TunecraftError as err:
            error, status = str(err), 403 if isinstance(err, Refused) else 200
    return studio.page(request, "launch.html", status, recipes=recipes, chosen=chosen, sections=sections,
                       error=error, command=command and command.name, output_dir=str(studio.runs), extra=extra)


@router.get("/key", response_class=HTMLResponse)
async def key_page(request: Request, studio: StudioState):
    return studio.page(request, "key.html", message=None, next="/")


@router.post("/key")
async def key_form(request: Request, studio: StudioState):
    fields = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
    key, target = fields.get("key", [""])[0], fields.get("next", ["/"])[0]
    api_key = studio.settings.api_key
    if api_key is None or not hmac.compare_digest(key.encode(), api_key.encode()):
        return HTMLResponse(studio.templates.get_template("key.html").render(message=guards.KEY_MESSAGE,
                                                                             next=target), 401)
    response = RedirectResponse(target if target.startswith("/") and not target.startswith("//") else "/", 303)
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict")
    return response


@router.get("/files/{path:path}")
async def files(path: str, studio: StudioState):
    target = (studio.runs / path).resolve()
    if not target.is_relative_to(studio.runs.resolve()) or not target.is_file():
        raise HTTPException(404, f"no file {path} in {studio.runs}")
    return FileResponse(target)


def _report_html(run: Path, summary: dict, images: Path) -> str:
    """The run report's sections (evaluate/report.py) with the task's own result blocks (their images drawn
    into `images`); the curves the report drew are reused."""
    from ..evaluate.report import run_sections
    from ..evaluate.views import view_of

    task = build_task(summary["task"])
    plots = {p.stem: p for p in (run / "plots").glob("*.png")} if (run / "plots").is_dir() else {}
    images.mkdir(parents=True, exist_ok=True)
    results = view_of(task.NAME).result_blocks(summary["metrics"], summary["labels"], images) if summary.get(
        "metrics") else []
    sections = run_sections(summary, plots, results, task)
    base = run.parent
    return html_sections(sections, lambda p: "/files/" + urllib.parse.quote(Path(p).relative_to(base).as_posix()),
                         level=3)


def _robustness_html(run: Path, name: str) -> str:
    saved = run / "robustness" / "robustness.json"
    if not saved.is_file():
        return ""
    from ..evaluate.robustness import robustness_sections

    image = run / "robustness" / "reliability.png"
    sections = robustness_sections(json.loads(saved.read_text(encoding="utf-8")), image if image.is_file() else None)
    return html_sections(sections, lambda p: f"/files/{name}/robustness/{Path(p).name}", level=3)
