"""What stands between a socket and the routes: the API key before the body, a bounded and timed body read,
JSON the routes can take, and error handlers that never echo what they cannot serialise. Every refusal is a
4xx with a message."""

from __future__ import annotations

import asyncio
import hmac
import json
import math

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from . import openai_errors

MAX_DEPTH = 32
"""Nesting levels a JSON body may have; the API's bodies have three. Deeper bodies made json.loads raise
RecursionError (a 400 from FastAPI) and, in an extra field, the 422 handler fail while echoing it."""
MAX_INT_DIGITS = 4300
"""Python's own limit for int(str) (sys.get_int_max_str_digits), which FastAPI answered with 400."""
PROTECTED = "/v1/"
"""Routes that need the API key when one is set; /health, /metrics and the OpenAPI page stay open."""
KEY_MESSAGE = "missing or wrong API key (send it as X-API-Key or Authorization: Bearer)"


class Gone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


class Refused(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def key_matches(headers: dict[bytes, bytes], api_key: str) -> bool:
    """The key from X-API-Key or Authorization: Bearer, compared in constant time."""
    given = headers.get(b"x-api-key")
    auth = headers.get(b"authorization", b"")
    if given is None and auth.lower().startswith(b"bearer "):
        given = auth[7:]
    return given is not None and hmac.compare_digest(given, api_key.encode())


def _no_constant(name: str):
    raise Refused(422, f"the JSON body holds {name}, which is not a JSON number; numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Refused(422, f"the JSON body holds the number {text[:40]}, which is out of range for a float")
    return value


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise Refused(422, f"the JSON body holds an integer of {digits} digits; the limit is {MAX_INT_DIGITS}")
    return int(text)


def _where(path: list) -> str:
    """texts[0], or body.key for a key; a key's own lone surrogates are shown escaped."""
    shown = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" if i else str(p) for i, p in enumerate(path))
    return shown.encode("utf-8", "backslashreplace").decode("utf-8") or "the body"


def check_json(body: bytes) -> None:
    """Refuse (422) a body that is not UTF-8, holds NaN/Infinity or a number no float holds, an integer over
    MAX_INT_DIGITS digits, nesting deeper than MAX_DEPTH, or a string with a lone UTF-16 surrogate (valid JSON
    escapes, but not text: tokenizers, SQLite and the JSON encoder all fail on it). A body that is not JSON at
    all is left to FastAPI, which answers 422 json_invalid."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Refused(422, f"the body is not valid UTF-8 (byte 0x{body[err.start]:02x} at offset {err.start})"
                      ) from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except json.JSONDecodeError:
        return
    except RecursionError:
        raise Refused(422, f"the JSON body is nested deeper than {MAX_DEPTH} levels") from None
    stack = [(value, [], 1)]
    while stack:  # iterative: a recursive walk would hit the recursion limit it is checking for
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Refused(422, f"the JSON body is nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as err:
                raise Refused(422, f"{_where(path)} holds a lone UTF-16 surrogate (\\u{ord(item[err.start]):04x} at "
                              f"character {err.start}), which is not text") from None
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, path + [key], depth))
                stack.append((child, path + [key], depth + 1))
        elif isinstance(item, list):
            stack.extend((child, path + [i], depth + 1) for i, child in enumerate(item))


class RequestGuard:
    """ASGI middleware, outside FastAPI's body parsing: 401 before the body is read, 413 for a body over the
    limit (by Content-Length or by counting a chunked one), 408 when the body does not arrive within
    `body_timeout` seconds, 422 for JSON the routes cannot take (check_json). The body it read is handed on."""

    def __init__(self, app, router, max_body_bytes: int, body_timeout: float, api_key: str | None,
                 shaped=lambda path: False):
        self.app, self.router, self.shaped = app, router, shaped
        self.limit, self.timeout, self.api_key = max_body_bytes, body_timeout, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            body = await self._admit(scope, receive)
        except Gone:
            return
        except Refused as refusal:
            self._name_route(scope)
            return await self._refuse(send, refusal, close=refusal.status in (408, 413),
                                      openai=self.shaped(scope["path"]))
        if body is None:
            return await self.app(scope, receive, send)
        handed = False

        async def replay():
            nonlocal handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _admit(self, scope, receive) -> bytes | None:
        """The checked body, or None for a request without one (GET, HEAD...)."""
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and scope["path"].startswith(PROTECTED) and not key_matches(headers, self.api_key):
            raise Refused(401, KEY_MESSAGE)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return None
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            raise Refused(413, f"request body is larger than {self.limit} bytes")
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        raise Gone
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.limit:
                        raise Refused(413, f"request body is larger than {self.limit} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise Refused(408, f"the request body did not arrive within {self.timeout:g} seconds") from None
        body = b"".join(chunks)
        if body:
            check_json(body)
        return body

    def _name_route(self, scope) -> None:
        """Set the route a refused request was for, so that metrics count it under that route."""
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                scope.setdefault("route", route)
                return

    @staticmethod
    async def _refuse(send, refusal: Refused, close: bool, openai: bool) -> None:
        shown = openai_errors.from_detail(refusal.status, refusal.detail) if openai else {"detail": refusal.detail}
        body = json.dumps(shown).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if refusal.status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        if close:  # the rest of the body is unread: the connection cannot carry another request
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _serialisable(value) -> bool:
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError):
        return False
    return True


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, except that an error's `input`/`ctx` is left out when it cannot be serialised."""
    errors = []
    for error in exc.errors():
        item = {key: error[key] for key in ("type", "loc", "msg") if key in error}
        for key in ("input", "ctx"):
            if key in error:
                try:
                    encoded = jsonable_encoder(error[key])
                except (ValueError, TypeError, RecursionError):
                    continue
                if _serialisable(encoded):
                    item[key] = encoded
        errors.append(item)
    return JSONResponse({"detail": errors}, status_code=422)


async def http_error(request: Request, exc: StarletteHTTPException):
    """FastAPI's answer to an HTTPException, with a detail that cannot be serialised shown escaped instead."""
    if not _serialisable(exc.detail):
        exc.detail = str(exc.detail).encode("utf-8", "backslashreplace").decode("utf-8")
    return await http_exception_handler(request, exc)


def install(app: FastAPI, max_body_bytes: int, body_timeout: float, api_key: str | None,
            shaped=lambda path: False) -> None:
    """`shaped(path)`: whether the path's refusals take the OpenAI API's error shape (serve/openai_errors.py)."""
    app.add_middleware(RequestGuard, router=app.router, max_body_bytes=max_body_bytes, body_timeout=body_timeout,
                       api_key=api_key, shaped=shaped)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
