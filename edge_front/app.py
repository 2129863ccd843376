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

from edge_front import health
from edge_front.auth import AuthMiddleware
from edge_front.chat import chat_completions
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
        media_type="application/json",
    )


def create_app(settings: Settings, models: ModelTable) -> AuthMiddleware:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = FrontState.create(settings, models)
        app.state.edge = state
        await state.start()
        log.info("front %s ready", state.front_id)
        try:
            yield
        finally:
            await state.stop()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", health.models, methods=["GET"]),
            Route("/health", health.health, methods=["GET"]),
            Route("/health/live", health.live, methods=["GET"]),
            Route("/health/ready", health.ready, methods=["GET"]),
            Route("/metrics", health.prometheus, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    return AuthMiddleware(app, settings.master_key)
