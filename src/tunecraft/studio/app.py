"""The studio's web app: pages rendered on the server (Jinja2) over the run folders, a little JavaScript of its
own (static/, no CDN), and JSON calls for what changes while a page is open (curves, logs, launches).

`create_app` assembles it: the typed state (state.py `Studio`, on `app.state.studio`), the guards (SiteGuard
outermost, then the key, then the body limits), the static files, the "try it" mount, and the route modules
(pages.py, api.py: `APIRouter`s that take the state through the `StudioState` dependency)."""

from __future__ import annotations

import hmac
import json
import threading
import time
import urllib.parse
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from ..errors import TunecraftError
from ..evaluate.compare import RAW_METRICS, score_text
from ..report import fmt
from ..serve import guards
from ..serve.site_guard import SiteGuard
from . import api, pages
from .pages import COOKIE
from .settings import StudioSettings
from .state import Studio

HERE = Path(__file__).parent
OPEN = ("/static/", "/key")
"""Paths served without the key: the page's own script and style, and the key form."""


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
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters.update(num=_num, score=_score, when=_when, cell=_cell)
    state = Studio.open(settings, templates)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # read every run's row once in the background, so that the first page load finds them cached
        threading.Thread(target=state.index.rows, daemon=True, name="studio-index").start()
        yield
        await state.apps.close()
        state.launches.close()

    app = FastAPI(title="tunecraft studio", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.studio, app.state.token = state, state.token
    guards.install(app, settings.max_body_bytes, settings.body_timeout, None)  # limits; the key is StudioKey's
    app.add_middleware(StudioKey, api_key=settings.api_key, templates=templates)
    # outermost: the Host, Origin and token checks come before the key (the key form, /key, takes no token)
    app.add_middleware(SiteGuard, bound=settings.host, allowed=settings.allowed_hosts, token=state.token,
                       open_paths=("/key",))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.mount("/try", state.apps)
    app.include_router(pages.router)
    app.include_router(api.router)
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


def studio(settings: StudioSettings) -> None:
    import uvicorn

    if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        raise TunecraftError(f"--host {settings.host}: the studio launches processes; bind another address than "
                             "loopback only with --api-key")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
