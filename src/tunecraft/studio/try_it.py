""""Try it": each run is served by `tunecraft serve`'s own app (serve/app.py `create_app`: the task's routes,
limits, micro-batching, its inference), started on first use inside the studio and reached at
/try/<run>/<route>. The studio's key check stands in front, so the run's app takes no key of its own."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from contextlib import AsyncExitStack
from pathlib import Path

from ..errors import TunecraftError
from ..runs import RunFolder
from ..serve.app import create_app
from ..serve.settings import ServeSettings


class RunApps:
    """ASGI app: /<run>/<path> → that run's server app at <path>. At most `keep` runs stay loaded (the least
    recently used one is stopped: its model freed, its feedback store closed)."""

    def __init__(self, runs: Path, keep: int, max_body_bytes: int, body_timeout: float):
        self.runs, self.keep = runs, keep
        self.limits = {"max_body_bytes": max_body_bytes, "body_timeout": body_timeout}
        self.apps: OrderedDict[str, tuple[object, AsyncExitStack]] = OrderedDict()
        self.lock = asyncio.Lock()

    def routes(self, name: str) -> list[str]:
        """The paths the run's task serves (without loading the model), e.g. ['/v1/classify', ...]."""
        paths = create_app(self._settings(name)).openapi()["paths"]  # the routes as the API documents them
        return sorted(p for p in paths if p.startswith("/v1/"))

    def _settings(self, name: str) -> ServeSettings:
        # any Host: the studio's own SiteGuard checked it (and the Origin, and its token) before this app
        return ServeSettings(run=str(self.runs / name), allowed_hosts=["*"], **self.limits)

    async def app(self, name: str):
        async with self.lock:
            if name in self.apps:
                self.apps.move_to_end(name)
                return self.apps[name][0]
            app = create_app(self._settings(name))
            stack = AsyncExitStack()
            await stack.enter_async_context(app.router.lifespan_context(app))  # loads the model
            self.apps[name] = (app, stack)
            while len(self.apps) > self.keep:
                _, (_, old) = self.apps.popitem(last=False)
                await old.aclose()
            return app

    async def close(self) -> None:
        while self.apps:
            _, (_, stack) = self.apps.popitem()
            await stack.aclose()

    async def __call__(self, scope, receive, send):
        name, _, rest = scope["path"].removeprefix(scope.get("root_path", "")).lstrip("/").partition("/")
        run = self.runs / name
        if not name or name.startswith(".") or not RunFolder(run).is_finished():
            return await _json(send, 404, f"no finished run '{name}' in {self.runs}")
        try:
            app = await self.app(name)
        except (TunecraftError, OSError, ValueError) as err:
            return await _json(send, 409, f"{name} cannot be served: {err}")
        path = "/" + rest
        await app(dict(scope, path=path, raw_path=path.encode(), root_path=""), receive, send)


async def _json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
