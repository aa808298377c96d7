"""The JSON calls of the studio's pages: run rows, live curves and logs, recipe checks and launches, reviews of
the feedback queue, explanations, and stop/resume of launched runs."""

from __future__ import annotations

import json
import urllib.parse
from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from ..errors import ConfigError, TunecraftError
from ..runs import RunFolder, read_meta, run_model_dir
from ..serve.feedback import EMPTY_CHAT_FEEDBACK, unknown_label
from ..serve.routes.openai import ChatFeedback
from ..settings import Strict, borrow
from . import form
from .confine import Refused
from .feedback import STORE
from .launch import run_command
from .runs import read_history
from .state import StudioState

router = APIRouter(prefix="/api")


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


@router.get("/runs")
async def api_runs(studio: StudioState):
    return studio.index.rows()


@router.get("/runs/{name}/metrics")
async def api_metrics(name: str, studio: StudioState, after: int = 0):
    run = studio.run_dir(name)
    records = read_history(run, after)
    row = studio.index.row(run)
    return {"records": records, "next": after + len(records), "status": row["status"],
            "headline": [m for m in (row["metric"], row["second_metric"]) if m],
            "about": " · ".join(row[k] for k in ("task", "base", "method") if row[k])}


@router.get("/runs/{name}/log")
async def api_log(name: str, studio: StudioState, after: int = 0):
    text, offset = studio.launches.log(name, after)
    return {"text": text, "next": offset}


@router.post("/check")
@router.post("/launch")
async def api_check_or_launch(req: LaunchRequest, request: Request, studio: StudioState) -> JSONResponse:
    """Check a recipe and its overrides as the CLI would (the command line, or the CLI's message by field),
    and on /api/launch start it."""
    launch = request.url.path == "/api/launch"
    recipe = req.recipe
    try:
        if req.upload is not None:
            recipe = str(studio.launches.save_recipe(req.filename, req.upload))
        if not recipe:
            raise ConfigError("choose a recipe or upload one")
        if launch:
            name = studio.launches.launch(recipe, req.overrides, req.resume, req.overwrite)
            return JSONResponse({"run": name, "url": f"/runs/{name}"})
        kind, config = studio.launches.check(recipe, req.overrides, req.resume, req.overwrite)
    except TunecraftError as err:
        message = str(err)
        return JSONResponse({"error": message, "fields": form.field_errors(message)},
                            403 if isinstance(err, Refused) else 422)
    command = run_command(kind, recipe, req.overrides, req.resume, req.overwrite)
    return JSONResponse({"run": config.run_dir.name, "command": " ".join(["tunecraft", *command[3:]])})


@router.post("/runs/{name}/feedback/{row}")
async def api_review(name: str, row: int, request: Request, studio: StudioState):
    run = studio.run_dir(name)
    label = (json.loads(await request.body() or b"{}") or {}).get("label")
    labels = read_meta(run).get("labels") or []
    if label not in labels:  # the server's own message for a label the model does not know
        raise HTTPException(422, unknown_label(label, labels))
    if row not in {r["id"] for r in studio.queue.rows(run)}:
        raise HTTPException(404, f"no feedback row {row} in {name}/{STORE}")
    studio.queue.review(run, row, label)
    return {"id": row, "label": label}


@router.post("/runs/{name}/chat-feedback/{row}")
async def api_review_chat(name: str, row: int, review: ChatReview, studio: StudioState):
    run = studio.run_dir(name)
    fields = review.model_dump(exclude_unset=True)
    if not fields:
        raise HTTPException(422, EMPTY_CHAT_FEEDBACK)
    if row not in {r["id"] for r in studio.queue.chat_rows(run)} or not studio.queue.review_chat(run, row, **fields):
        raise HTTPException(404, f"no chat feedback row {row} in {name}/{STORE}")
    return {"id": row, **fields}


@router.post("/runs/{name}/feedback-run")
async def api_feedback_run(name: str, req: FeedbackRun, studio: StudioState):
    """The run's own recipe on the launch page, with the overrides that train it on its feedback: the
    reviewed label rows as data.train; or the chat feedback store itself as the preference task's data."""
    run = studio.run_dir(name)
    overrides = [f"name={name}-feedback"]
    if req.kind == "chat":
        rows = sum(r["trains_as"] is not None for r in studio.queue.chat_rows(run))
        if not rows:
            raise HTTPException(409, "no chat feedback to learn from yet: rate or edit some answers first")
        # the store is the preference task's data file (config.py data.train); the run's model its base
        overrides += ["task.name=preference", f"model.base={run_model_dir(run).resolve()}", "data.dataset=null",
                      f"data.train={(run / STORE).resolve()}", "data.validation=null", "data.test=null"]
    else:
        meta = read_meta(run)
        path, rows = studio.queue.export(run, meta.get("text_column") or "text", meta.get("label_column") or "label")
        if not rows:
            raise HTTPException(409, "no reviewed feedback yet: confirm or correct some rows first")
        overrides.append(f"data.train={path.resolve()}")
    query = urllib.parse.urlencode({"recipe": str(RunFolder(run).config_file), "extra": "\n".join(overrides)})
    return {"rows": rows, "url": f"/launch?{query}"}


@router.post("/runs/{name}/explain")
async def api_explain(name: str, request: Request, studio: StudioState):
    from ..evaluate.explain import attribution_html, explain

    run = studio.run_dir(name)
    text = (json.loads(await request.body() or b"{}") or {}).get("text", "")
    if not isinstance(text, str) or not text.strip():
        raise HTTPException(422, "text: give a non-empty text")
    try:
        attr, _ = explain(run, text, steps=32, html_path=studio.cache / name / "explanation.html")
    except TunecraftError as err:
        raise HTTPException(422, str(err)) from None
    return {"html": attribution_html(attr)}


@router.post("/runs/{name}/{action}")  # last: the routes above with a word of their own come first
async def api_stop_or_resume(name: str, action: Literal["stop", "resume"], studio: StudioState):
    """Stop (SIGINT, the CLI's graceful stop) or resume (the same command with --resume) a launched run."""
    studio.run_dir(name)
    try:
        getattr(studio.launches, action)(name)
    except Refused as err:
        raise HTTPException(403, str(err)) from None
    except TunecraftError as err:
        raise HTTPException(409, str(err)) from None
    return {action: name, "url": f"/runs/{name}"}
