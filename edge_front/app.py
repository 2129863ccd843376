"""The front's Starlette application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from edge_front import health
from edge_front.auth import OPEN_PATHS, UNAUTHORIZED_BODY, is_authorized
from edge_front.chat import chat_completions
from edge_front.http import send_json
from edge_front.orphans import NoWorkerWatch
from edge_front.state import FrontState
from shared.config import ModelTable, Settings
from shared.errors import error_body

log = logging.getLogger("edge.front")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 answers, in OpenAI's envelope."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = {404: f"Unknown path {request.url.path}", 405: f"Method {request.method} not allowed here"}.get(
        status, "Request failed"
    )
    return Response(
        error_body(status, message, code="not_found" if status == 404 else None),
        status,
        headers=getattr(exc, "headers", None),  # a 405's Allow
        media_type="application/json",
    )


CHAT_PATHS = frozenset({b"/v1/chat/completions", b"/chat/completions"})


class EdgeApp:
    """The front door: authenticates every request on its raw path, sends chat completions
    straight to their handler, and everything else (health, models, metrics) to Starlette."""

    def __init__(self, app: Starlette, master_key: str) -> None:
        self.app = app
        self.master_key = master_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        path = (scope.get("raw_path") or scope["path"].encode()).partition(b"?")[0]
        if path not in OPEN_PATHS and not is_authorized(scope["headers"], self.master_key):
            await send_json(send, 401, UNAUTHORIZED_BODY, [(b"www-authenticate", b"Bearer")])
            return
        if path in CHAT_PATHS:
            if scope["method"] == "POST":
                await chat_completions(self.app.state.edge, scope, receive, send)
                return
            await send_json(
                send, 405, error_body(405, "Use POST for chat completions."), [(b"allow", b"POST")]
            )
            return
        await self.app(scope, receive, send)


def create_app(settings: Settings, models: ModelTable) -> EdgeApp:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = FrontState.create(settings, models)
        app.state.edge = state
        await state.start()
        state.add_task(NoWorkerWatch(state).run(), "no-worker-watch")
        log.info("front %s ready", state.front_id)
        try:
            yield
        finally:
            await state.stop()

    app = Starlette(
        routes=[
            Route("/v1/models", health.models, methods=["GET"]),
            Route("/health", health.health, methods=["GET"]),
            Route("/health/live", health.live, methods=["GET"]),
            Route("/health/ready", health.ready, methods=["GET"]),
            Route("/metrics", health.prometheus, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    return EdgeApp(app, settings.master_key)
