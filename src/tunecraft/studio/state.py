"""What one studio holds while it runs (its run folders, launches, feedback queue, loaded runs, templates and the
start's token), as one typed object on `app.state.studio`; the route modules (pages.py, api.py) take it through
the `StudioState` dependency, as FastAPI's bigger-applications layout recommends, instead of closing over it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from .confine import Confinement
from .feedback import FeedbackQueue
from .launch import Launches
from .runs import STUDIO_DIR, RunIndex, is_run
from .settings import StudioSettings
from .try_it import RunApps


@dataclass
class Studio:
    settings: StudioSettings
    templates: Jinja2Templates
    runs: Path
    confinement: Confinement
    launches: Launches
    queue: FeedbackQueue
    index: RunIndex
    apps: RunApps
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    """New at each start: state-changing calls need it (site_guard.py)."""
    reports: dict[str, tuple[float, str]] = field(default_factory=dict)
    """run → (summary.json's time, its report as HTML)."""

    @classmethod
    def open(cls, settings: StudioSettings, templates: Jinja2Templates) -> Studio:
        runs = Path(settings.runs)
        runs.mkdir(parents=True, exist_ok=True)
        confinement = Confinement([settings.recipes, runs, *settings.data], settings.allow_code_rewards)
        launches = Launches(runs, confinement=confinement)
        apps = RunApps(runs, settings.loaded_models, settings.max_body_bytes, settings.body_timeout)
        studio = cls(settings, templates, runs, confinement, launches, FeedbackQueue(runs), RunIndex(runs, launches),
                     apps)
        templates.env.globals.update(keyed=settings.api_key is not None, token=studio.token)
        return studio

    @property
    def cache(self) -> Path:
        return self.runs / STUDIO_DIR / "cache"

    def run_dir(self, name: str) -> Path:
        path = self.runs / name
        if name.startswith(".") or "/" in name or not (is_run(path) or self.launches.record(name) is not None):
            raise HTTPException(404, f"no run '{name}' in {self.runs}")
        return path  # a run just launched may have no folder yet

    def page(self, request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
        return self.templates.TemplateResponse(request, template, {"runs_folder": str(self.runs), **context},
                                               status_code=status)


def _studio(request: Request) -> Studio:
    return request.app.state.studio


StudioState = Annotated[Studio, Depends(_studio)]
"""A route's parameter `studio: StudioState` is the app's Studio."""
