"""The front's Starlette application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from edge_front import access_log, admin, cache_admin, health, messages, metrics
from edge_front import tracing as front_tracing
from edge_front.auth import (
    FORBIDDEN_ADMIN_BODY,
    KEYS_LOADING_BODY,
    OPEN_PATHS,
    UNAUTHORIZED_BODY,
    is_master,
    presented_key,
    refused_body,
)
from edge_front.chat import chat_completions
from edge_front.dashboard import routes as dashboard
from edge_front.embeddings import EMBEDDINGS
from edge_front.http import send_json
from edge_front.keys import MASTER, Identity, KeyCache, KeysNotLoaded
from edge_front.lost_jobs import LostJobsWatch
from edge_front.orphans import NoWorkerWatch
from edge_front.state import FrontState
from shared import tracing
from shared.config import ModelTable, Settings
from shared.errors import error_body
from shared.redis_memory import warn_about_eviction

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
EMBEDDINGS_PATHS = frozenset({b"/v1/embeddings", b"/embeddings"})


class EdgeApp:
    """The front door: decides who is calling on the raw request path (the master key or a
    virtual key, checked in-process), sends chat completions and embeddings straight to their
    handlers, admin paths (master key only) to the admin app, the dashboard's page and /admin/*
    API (master key or a dashboard session) to the dashboard, and everything else (health,
    models, metrics) to Starlette."""

    def __init__(self, app: Starlette, master_key: str) -> None:
        self.app = app
        self.master_key = master_key.encode()
        self.keys = KeyCache()
        self.admin = admin.create(lambda: app.state.edge.queue_redis, self.keys.refresh)
        self.invalidations = cache_admin.Invalidations()
        self.cache_admin = cache_admin.create(lambda: app.state.edge, self.invalidations)
        self.dashboard = dashboard.Dashboard(app, master_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        # Exactly the bytes the client sent: no decoding or normalizing can turn another path
        # into an admin or chat path here, and the Host header plays no part.
        path = (scope.get("raw_path") or scope["path"].encode()).partition(b"?")[0]
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if path in dashboard.PAGE_PATHS:  # the page asks for the key itself
            await self.dashboard.pages(scope, receive, send)
            return
        if path in dashboard.ADMIN_PATHS and presented_key(scope["headers"]) is None:
            await self.dashboard.admin_by_session(scope, receive, send)
            return
        api = messages.api_of(path)
        identity = await self._identify(scope, send, messages.error_envelope if api else None)
        if identity is None:
            return
        if api is not None:
            if scope["method"] == "POST":
                await chat_completions(self.app.state.edge, scope, receive, send, identity, api)
                return
            body = messages.error_envelope(405, error_body(405, "Use POST for this path."))
            await send_json(send, 405, body, [(b"allow", b"POST")])
            return
        if path in CHAT_PATHS:
            if scope["method"] == "POST":
                await chat_completions(self.app.state.edge, scope, receive, send, identity)
                return
            await send_json(
                send, 405, error_body(405, "Use POST for chat completions."), [(b"allow", b"POST")]
            )
            return
        if path in EMBEDDINGS_PATHS:
            if scope["method"] == "POST":
                await chat_completions(self.app.state.edge, scope, receive, send, identity, EMBEDDINGS)
                return
            await send_json(send, 405, error_body(405, "Use POST for embeddings."), [(b"allow", b"POST")])
            return
        if path in admin.ADMIN_PATHS or path in cache_admin.PATHS:
            if not identity.is_master:
                await send_json(send, 403, FORBIDDEN_ADMIN_BODY, [])
                return
            await (self.admin if path in admin.ADMIN_PATHS else self.cache_admin)(scope, receive, send)
            return
        if path in dashboard.ADMIN_PATHS:
            if not identity.is_master:
                await send_json(send, 403, FORBIDDEN_ADMIN_BODY, [])
                return
            await self.dashboard.admin(scope, receive, send, "master")
            return
        scope["state"] = {**scope.get("state", {}), "edge_identity": identity}  # for /v1/models
        await self.app(scope, receive, send)

    async def _identify(
        self, scope: Scope, send: Send, envelope: Callable[[int, bytes], bytes] | None = None
    ) -> Identity | None:
        """The caller's identity, or None once its refusal has been sent (in OpenAI's error
        envelope, or the one `envelope` makes of it)."""

        async def refuse(status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
            await send_json(send, status, envelope(status, body) if envelope else body, headers)

        token = presented_key(scope["headers"])
        if token is None:
            await refuse(401, UNAUTHORIZED_BODY, [(b"www-authenticate", b"Bearer")])
            return None
        if is_master(token, self.master_key):
            return MASTER
        try:
            checked = self.keys.check(token)
        except KeysNotLoaded:
            await refuse(503, KEYS_LOADING_BODY, [(b"retry-after", b"1")])
            return None
        if isinstance(checked, str):
            await refuse(401, refused_body(checked), [(b"www-authenticate", b"Bearer")])
            return None
        return checked


def create_app(settings: Settings, models: ModelTable) -> EdgeApp | front_tracing.TracedApp:
    tracing.setup("edge-front")  # ENABLE_TRACING, OTEL_*: off, nothing of it is imported

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = FrontState.create(settings, models)
        metrics.model_label = metrics.ModelLabels(
            (name for name, _ in models.public_models()), settings.metrics_max_models
        )
        app.state.edge = state
        await state.start()
        cache = state.cache_redis if settings.cache_redis is not None else None
        await warn_about_eviction(state.queue_redis, cache, log)
        edge.keys.redis = state.queue_redis
        try:
            await edge.keys.refresh()  # loads every key before the first request, when Redis answers
        except Exception as e:  # the refresh task keeps trying; virtual keys get 503 meanwhile
            log.warning("could not load virtual keys at start (%s)", type(e).__name__)
        state.add_task(edge.keys.run(), "key-refresh")
        edge.invalidations.l1, edge.invalidations.redis = state.l1, state.queue_redis
        state.add_task(edge.invalidations.run(), "cache-deletes")
        state.add_task(NoWorkerWatch(state).run(), "no-worker-watch")
        state.add_task(LostJobsWatch(state).run(), "lost-jobs-watch")
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
    access_log.configure(settings)
    edge = EdgeApp(app, settings.master_key)
    return front_tracing.TracedApp(edge) if tracing.ON else edge
