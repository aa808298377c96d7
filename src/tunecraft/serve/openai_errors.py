"""Errors in the OpenAI API's shape, `{"error": {"message", "type", "param", "code"}}`, for the paths a server
declares OpenAI-shaped (`Server.openai_shaped`): the official `openai` client then raises them with our message.
A thin layer over FastAPI's exception handlers: each one answers as before, and on those paths its `{"detail"}`
body is re-shaped (status and headers kept); other paths answer exactly as before."""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
CODES = {401: "invalid_api_key", 404: "not_found", 408: "request_timeout", 413: "request_too_large",
         429: "rate_limit_exceeded"}


def body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict:
    kind = "server_error" if status >= 500 else TYPES.get(status, "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code or CODES.get(status)}}


def _where(loc: list) -> str:
    """messages[0].role for ["body", "messages", 0, "role"]."""
    parts = [p for p in loc if p != "body"] if len(loc) > 1 else list(loc)
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" if i else str(p) for i, p in enumerate(parts))


def from_detail(status: int, detail) -> dict:
    """A `{"detail": ...}` body (a message, or FastAPI's list of validation errors) in the OpenAI shape."""
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        message = "; ".join(f"{_where(e.get('loc', []))}: {e.get('msg', '')}" for e in detail)
        loc = detail[0].get("loc", [])
        named = len(loc) > 1 and isinstance(loc[1], str) or len(loc) == 1  # not a place in malformed JSON
        return body(status, message, detail[0].get("type"), _where(loc) if named else None)
    return body(status, detail if isinstance(detail, str) else json.dumps(detail))


def reshape(response: Response) -> Response:
    """A JSON `{"detail"}` response re-shaped, its status and headers kept (content-length recomputed)."""
    detail = json.loads(response.body).get("detail")
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    return JSONResponse(from_detail(response.status_code, detail), response.status_code, headers)


def install(app: FastAPI, shaped: Callable[[str], bool]) -> None:
    """Wrap the app's handlers for validation errors and HTTP errors, and answer an unhandled error (500), in
    the OpenAI shape on the paths `shaped` accepts. Call it after the app's own handlers are registered."""
    for cls in (RequestValidationError, StarletteHTTPException):
        fallback = app.exception_handlers[cls]

        async def handler(request: Request, exc, fallback=fallback):
            response = await fallback(request, exc)
            return reshape(response) if shaped(request.url.path) else response
        app.add_exception_handler(cls, handler)

    async def crashed(request: Request, exc: Exception):
        if shaped(request.url.path):
            return JSONResponse(body(500, f"internal error: {type(exc).__name__}", "internal_error"), 500)
        return PlainTextResponse("Internal Server Error", 500)  # Starlette's own answer
    app.add_exception_handler(Exception, crashed)
