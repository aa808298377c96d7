"""The studio's web app: pages rendered on the server (Jinja2) over the run folders, a little JavaScript of its
own (static/, no CDN), and JSON calls for what changes while a page is open (curves, logs, launches)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.parse
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import Field

from ..errors import ConfigError, TunecraftError
from ..evaluate.compare import RAW_METRICS, baseline_cells, compare_runs, header, ranked, score_text, table_rows
from ..report import fmt, html_sections
from ..runs import RunFolder, read_meta, run_model_dir
from ..serve import guards
from ..serve.feedback import EMPTY_CHAT_FEEDBACK, unknown_label
from ..serve.routes.openai import ChatFeedback
from ..serve.site_guard import SiteGuard
from ..settings import Strict, borrow
from ..tasks import TASKS, build_task
from . import form
from .confine import Confinement, Refused
from .feedback import STORE, FeedbackQueue
from .launch import Launches, command_for, run_command
from .runs import STUDIO_DIR, RunIndex, is_run, predictions, read_history
from .settings import StudioSettings
from .try_it import RunApps

HERE = Path(__file__).parent
COOKIE = "tunecraft_key"
OPEN = ("/static/", "/key")
"""Paths served without the key: the page's own script and style, and the key form."""


class LaunchRequest(Strict):
    recipe: str | None = None
    """A recipe file (from the recipes folder, the runs folder or a --data folder: confine.py)."""
    upload: str | None = None
    """A recipe's YAML text, uploaded from the page (saved to RUNS/.studio/recipes/<filename>)."""
    filename: str = "uploaded.yaml"
    overrides: list[str] = Field(default_factory=list)
    resume: bool = False
    overwrite: bool = False


class ChatReview(Strict):
    """A person's review of a stored answer: a thumbs up/down, an edited answer, or both (the server's limits)."""

    rating: int | None = borrow(ChatFeedback, "rating")
    correction: str | None = borrow(ChatFeedback, "correction")


class FeedbackRun(Strict):
    kind: Literal["labels", "chat"] = "labels"
    """Train on the reviewed label rows, or on the chat feedback (a preference run)."""


class StudioKey:
    """ASGI middleware: with an API key set, every path but OPEN needs it (guards.key_matches: X-API-Key or
    Authorization: Bearer; or the cookie the key form sets), checked before any body is read. A page answers
    401 with the key form, an API call 401 with guards.KEY_MESSAGE."""

    def __init__(self, app, api_key: str | None, templates: Jinja2Templates):
        self.app, self.api_key, self.templates = app, api_key, templates

    def allowed(self, scope) -> bool:
        headers = dict(scope.get("headers") or [])
        if guards.key_matches(headers, self.api_key):
            return True
        cookies = {}
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            cookies[name] = urllib.parse.unquote(value)
        return hmac.compare_digest(cookies.get(COOKIE, "").encode(), self.api_key.encode())

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or self.api_key is None or scope["path"].startswith(OPEN)
                or self.allowed(scope)):
            return await self.app(scope, receive, send)
        if scope["path"].startswith(("/api/", "/try/", "/files/")):
            response = JSONResponse({"detail": guards.KEY_MESSAGE}, 401, headers={"WWW-Authenticate": "Bearer"})
        else:
            page = self.templates.get_template("key.html").render(message=guards.KEY_MESSAGE, next=scope["path"])
            response = HTMLResponse(page, 401)
        await response(scope, receive, send)


def create_app(settings: StudioSettings) -> FastAPI:
    runs = Path(settings.runs)
    runs.mkdir(parents=True, exist_ok=True)
    cache = runs / STUDIO_DIR / "cache"
    confinement = Confinement([settings.recipes, runs, *settings.data], settings.allow_code_rewards)
    launches = Launches(runs, confinement=confinement)
    queue = FeedbackQueue(runs)
    index = RunIndex(runs, launches)
    apps = RunApps(runs, settings.loaded_models, settings.max_body_bytes, settings.body_timeout)
    reports: dict[str, tuple[float, str]] = {}  # run → (summary.json's time, its report as HTML)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters.update(num=_num, score=_score, when=_when, cell=_cell)
    templates.env.globals["keyed"] = settings.api_key is not None
    token = secrets.token_urlsafe(32)  # new at each start: state-changing calls need it (site_guard.py)
    templates.env.globals["token"] = token

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # read every run's row once in the background, so that the first page load finds them cached
        threading.Thread(target=index.rows, daemon=True, name="studio-index").start()
        yield
        await apps.close()
        launches.close()

    app = FastAPI(title="tunecraft studio", lifespan=lifespan, docs_url=None, redoc_url=None)
    guards.install(app, settings.max_body_bytes, settings.body_timeout, None)  # limits; the key is StudioKey's
    app.add_middleware(StudioKey, api_key=settings.api_key, templates=templates)
    # outermost: the Host, Origin and token checks come before the key (the key form, /key, takes no token)
    app.add_middleware(SiteGuard, bound=settings.host, allowed=settings.allowed_hosts, token=token,
                       open_paths=("/key",))
    app.state.token = token
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.mount("/try", apps)

    def run_dir(name: str) -> Path:
        path = runs / name
        if name.startswith(".") or "/" in name or not (is_run(path) or launches.record(name) is not None):
            raise HTTPException(404, f"no run '{name}' in {runs}")
        return path  # a run just launched may have no folder yet

    def page(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
        return templates.TemplateResponse(request, template, {"runs_folder": str(runs), **context},
                                          status_code=status)

    # -- pages ------------------------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    async def runs_page(request: Request):
        rows = index.rows()
        return page(request, "runs.html", rows=rows, tasks=sorted({r["task"] for r in rows if r["task"]}),
                    now=time.time())

    @app.get("/runs/{name}", response_class=HTMLResponse)
    async def run_page(request: Request, name: str):
        run = run_dir(name)
        row = index.row(run)
        folder = RunFolder(run)
        summary = folder.summary() if folder.is_finished() else None
        if summary is not None and summary.get("task") not in TASKS:  # e.g. pretrain's: its own report.html
            summary = None
        report = ""
        if summary:
            stamp = folder.summary_file.stat().st_mtime
            if reports.get(name, (None,))[0] != stamp:
                reports[name] = (stamp, _report_html(run, summary, cache / name))
            report = reports[name][1]
        columns, rows, errors, total = predictions(run)
        files = sorted(p.relative_to(run).as_posix() + ("/" if p.is_dir() else "") for p in run.iterdir()) \
            if run.is_dir() else []
        config = folder.config_text()
        task = TASKS.get(row["task"])
        labels = read_meta(run).get("labels") or [] if summary else []
        return page(request, "run.html", run=row, report=report, config=config, files=files,
                    feedback=queue.rows(run), chat_feedback=queue.chat_rows(run), labels=labels,
                    pred_columns=columns, pred_rows=rows, pred_errors=errors, pred_total=total,
                    try_routes=apps.routes(name) if summary else [], launched=launches.record(name) is not None,
                    headline=list(task.HEADLINE) if task else [], robustness=_robustness_html(run, name))

    @app.get("/compare", response_class=HTMLResponse)
    async def compare_page(request: Request):
        names = request.query_params.getlist("run")
        error, result, image = None, None, None
        try:
            paths = [run_dir(n) for n in names]
            out = cache / ("compare-" + hashlib.sha1("\0".join(names).encode()).hexdigest()[:12])
            result = compare_runs(paths, out)
            image = (out / "comparison.png").relative_to(runs).as_posix()
        except (TunecraftError, HTTPException) as err:
            error = getattr(err, "detail", None) or str(err)
        table = None
        if result is not None:
            task = result["task"]
            first, second = build_task(task).HEADLINE
            table = {"header": header(task), "rows": table_rows(ranked(task, result["rows"]), first, second),
                     "baseline_header": ["baseline", first, second],
                     "baselines": baseline_cells(task, result["baselines"])}
        return page(request, "compare.html", names=names, error=error, table=table, image=image,
                    markdown=result and result["markdown"])

    @app.get("/launch", response_class=HTMLResponse)
    async def launch_page(request: Request, recipe: str | None = None, extra: str = ""):
        folder = Path(settings.recipes)
        recipes = sorted(p.as_posix() for p in folder.glob("*.yaml")) if folder.is_dir() else []
        recipes += sorted(p.as_posix() for p in (runs / STUDIO_DIR / "recipes").glob("*.yaml"))
        chosen = recipe or (recipes[0] if recipes else None)
        if chosen and chosen not in recipes:  # e.g. a run's own config.yaml, to train again on its feedback
            recipes.append(chosen)
        sections, error, command, status = [], None, None, 200
        if chosen:
            try:
                confinement.check_recipe(chosen)  # before it is opened: its errors would show its lines
                command = command_for(chosen)
                sections = form.sections(command.load(chosen, []))
            except TunecraftError as err:
                error, status = str(err), 403 if isinstance(err, Refused) else 200
        return page(request, "launch.html", status, recipes=recipes, chosen=chosen, sections=sections, error=error,
                    command=command and command.name, output_dir=str(runs), extra=extra)

    @app.get("/key", response_class=HTMLResponse)
    async def key_page(request: Request):
        return page(request, "key.html", message=None, next="/")

    @app.post("/key")
    async def key_form(request: Request):
        fields = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
        key, target = fields.get("key", [""])[0], fields.get("next", ["/"])[0]
        if settings.api_key is None or not hmac.compare_digest(key.encode(), settings.api_key.encode()):
            return HTMLResponse(templates.get_template("key.html").render(message=guards.KEY_MESSAGE, next=target),
                                401)
        response = RedirectResponse(target if target.startswith("/") and not target.startswith("//") else "/", 303)
        response.set_cookie(COOKIE, key, httponly=True, samesite="strict")
        return response

    @app.get("/files/{path:path}")
    async def files(path: str):
        target = (runs / path).resolve()
        if not target.is_relative_to(runs.resolve()) or not target.is_file():
            raise HTTPException(404, f"no file {path} in {runs}")
        return FileResponse(target)

    # -- calls of the pages' scripts ----------------------------------------------------------------------------
    @app.get("/api/runs")
    async def api_runs():
        return index.rows()

    @app.get("/api/runs/{name}/metrics")
    async def api_metrics(name: str, after: int = 0):
        run = run_dir(name)
        records = read_history(run, after)
        row = index.row(run)
        return {"records": records, "next": after + len(records), "status": row["status"],
                "headline": [m for m in (row["metric"], row["second_metric"]) if m],
                "about": " · ".join(row[k] for k in ("task", "base", "method") if row[k])}

    @app.get("/api/runs/{name}/log")
    async def api_log(name: str, after: int = 0):
        text, offset = launches.log(name, after)
        return {"text": text, "next": offset}

    @app.post("/api/check")
    @app.post("/api/launch")
    async def api_check_or_launch(req: LaunchRequest, request: Request) -> JSONResponse:
        """Check a recipe and its overrides as the CLI would (the command line, or the CLI's message by field),
        and on /api/launch start it."""
        launch = request.url.path == "/api/launch"
        recipe = req.recipe
        try:
            if req.upload is not None:
                recipe = str(launches.save_recipe(req.filename, req.upload))
            if not recipe:
                raise ConfigError("choose a recipe or upload one")
            if launch:
                name = launches.launch(recipe, req.overrides, req.resume, req.overwrite)
                return JSONResponse({"run": name, "url": f"/runs/{name}"})
            kind, config = launches.check(recipe, req.overrides, req.resume, req.overwrite)
        except Refused as err:
            return JSONResponse({"error": str(err), "fields": form.field_errors(str(err))}, 403)
        except TunecraftError as err:
            message = str(err)
            return JSONResponse({"error": message, "fields": form.field_errors(message)}, 422)
        command = run_command(kind, recipe, req.overrides, req.resume, req.overwrite)
        return JSONResponse({"run": config.run_dir.name, "command": " ".join(["tunecraft", *command[3:]])})

    @app.post("/api/runs/{name}/feedback/{row}")
    async def api_review(name: str, row: int, request: Request):
        run = run_dir(name)
        label = (json.loads(await request.body() or b"{}") or {}).get("label")
        labels = read_meta(run).get("labels") or []
        if label not in labels:  # the server's own message for a label the model does not know
            raise HTTPException(422, unknown_label(label, labels))
        if row not in {r["id"] for r in queue.rows(run)}:
            raise HTTPException(404, f"no feedback row {row} in {name}/{STORE}")
        queue.review(run, row, label)
        return {"id": row, "label": label}

    @app.post("/api/runs/{name}/chat-feedback/{row}")
    async def api_review_chat(name: str, row: int, review: ChatReview):
        run = run_dir(name)
        fields = review.model_dump(exclude_unset=True)
        if not fields:
            raise HTTPException(422, EMPTY_CHAT_FEEDBACK)
        if row not in {r["id"] for r in queue.chat_rows(run)} or not queue.review_chat(run, row, **fields):
            raise HTTPException(404, f"no chat feedback row {row} in {name}/{STORE}")
        return {"id": row, **fields}

    @app.post("/api/runs/{name}/feedback-run")
    async def api_feedback_run(name: str, req: FeedbackRun):
        """The run's own recipe on the launch page, with the overrides that train it on its feedback: the
        reviewed label rows as data.train; or the chat feedback store itself as the preference task's data."""
        run = run_dir(name)
        overrides = [f"name={name}-feedback"]
        if req.kind == "chat":
            rows = sum(r["trains_as"] is not None for r in queue.chat_rows(run))
            if not rows:
                raise HTTPException(409, "no chat feedback to learn from yet: rate or edit some answers first")
            # the store is the preference task's data file (config.py data.train); the run's model its base
            overrides += ["task.name=preference", f"model.base={run_model_dir(run).resolve()}", "data.dataset=null",
                          f"data.train={(run / STORE).resolve()}", "data.validation=null", "data.test=null"]
        else:
            meta = read_meta(run)
            path, rows = queue.export(run, meta.get("text_column") or "text", meta.get("label_column") or "label")
            if not rows:
                raise HTTPException(409, "no reviewed feedback yet: confirm or correct some rows first")
            overrides.append(f"data.train={path.resolve()}")
        query = urllib.parse.urlencode({"recipe": str(RunFolder(run).config_file), "extra": "\n".join(overrides)})
        return {"rows": rows, "url": f"/launch?{query}"}

    @app.post("/api/runs/{name}/explain")
    async def api_explain(name: str, request: Request):
        from ..evaluate.explain import attribution_html, explain

        run = run_dir(name)
        text = (json.loads(await request.body() or b"{}") or {}).get("text", "")
        if not isinstance(text, str) or not text.strip():
            raise HTTPException(422, "text: give a non-empty text")
        try:
            attr, _ = explain(run, text, steps=32, html_path=cache / name / "explanation.html")
        except TunecraftError as err:
            raise HTTPException(422, str(err)) from None
        return {"html": attribution_html(attr)}

    @app.post("/api/runs/{name}/{action}")  # last: the routes above with a word of their own come first
    async def api_stop_or_resume(name: str, action: Literal["stop", "resume"]):
        """Stop (SIGINT, the CLI's graceful stop) or resume (the same command with --resume) a launched run."""
        run_dir(name)
        try:
            getattr(launches, action)(name)
        except Refused as err:
            raise HTTPException(403, str(err)) from None
        except TunecraftError as err:
            raise HTTPException(409, str(err)) from None
        return {action: name, "url": f"/runs/{name}"}

    return app


def _num(value, pattern: str = "{:,.1f}") -> str:
    return "–" if value is None else pattern.format(value)


def _score(value, metric: str) -> str:
    return score_text(value, metric) + ("" if metric in RAW_METRICS else " %")


def _when(stamp: float | None) -> str:
    return "–" if not stamp else time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def _cell(value) -> str:
    if isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 120 else text[:117] + "…"
    return fmt(value)


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


def studio(settings: StudioSettings) -> None:
    import uvicorn

    if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        raise TunecraftError(f"--host {settings.host}: the studio launches processes; bind another address than "
                             "loopback only with --api-key")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
