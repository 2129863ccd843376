"""The dashboard's page (/dashboard, its sign-in and its two static files) and the admin API it
polls (/admin/*), and who may call them.

`EdgeApp` (edge_front/app.py) sends here exactly the raw paths in `PAGE_PATHS` and
`ADMIN_PATHS`. The page paths need no key: the page itself asks for one. An /admin/* request is
let in with the master key as a bearer (actor "master"; a virtual key gets 403), or, without a
bearer, with a valid session cookie; a POST with a cookie must also carry the session's CSRF
token in `X-CSRF-Token` and must not come from another origin.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TypeVar
from urllib.parse import parse_qs

import msgspec
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from edge_front.dashboard import actions
from edge_front.dashboard.actions import ActionError, BreakerRequest, CancelRequest
from edge_front.dashboard.gather import gather
from edge_front.dashboard.session import CSRF_HEADER, Session, SessionSigner, cookie_from, cookie_header
from edge_front.http import send_json
from edge_front.state import FrontState
from shared.errors import error_body
from shared.wire import json_encoder

log = logging.getLogger("edge.admin")
PAGE_PATHS = frozenset(
    {b"/dashboard", b"/dashboard/login", b"/dashboard/logout", b"/dashboard/app.js", b"/dashboard/style.css"}
)
ADMIN_PATHS = frozenset(
    {b"/admin/state", b"/admin/breakers/reset", b"/admin/breakers/open", b"/admin/jobs/cancel"}
)
WRONG_KEY_DELAY_S = 0.5  # slows guessing; the compare itself is constant-time
_MAX_BODY = 64 * 1024
_JSON = "application/json"
# Everything the page loads comes from this origin; nothing may frame it.
_PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on the
    # sign-in POST, which `same_origin` must refuse.
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
T = TypeVar("T")


def _static(name: str) -> str:
    return (resources.files("edge_front.dashboard") / "static" / name).read_text(encoding="utf-8")


class _Files:
    """The page's files, read once at start (package data, no build step)."""

    def __init__(self) -> None:
        self.index, self.login = _static("index.html"), _static("login.html")
        self.js, self.css = _static("app.js"), _static("style.css")


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope["headers"] if k == name), None)


def is_https(scope: Scope) -> bool:
    """Behind a TLS-terminating proxy the scheme arrives as X-Forwarded-Proto; trusting it can
    only add `Secure` to the cookie, never remove it."""
    return scope.get("scheme") == "https" or _header(scope, b"x-forwarded-proto") == b"https"


def same_origin(scope: Scope) -> bool:
    """False when the browser says the request comes from another site. Browsers send Origin
    on every POST; a request without one (curl) is judged by its other checks."""
    if _header(scope, b"sec-fetch-site") in (b"cross-site", b"same-site"):
        return False
    origin = _header(scope, b"origin")
    if origin is None:
        return True
    host = _header(scope, b"host") or b""
    return origin in (b"http://" + host, b"https://" + host)


def _fail(status: int, message: str, param: str | None = None) -> Response:
    return Response(error_body(status, message, param=param), status, media_type=_JSON)


def _decode(body: bytes, kind: type[T]) -> T:
    if len(body) > _MAX_BODY:
        raise ActionError(400, f"Request body is larger than {_MAX_BODY} bytes.")
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.DecodeError, RecursionError) as e:
        raise ActionError(400, f"Invalid request: {e}") from None


class Dashboard:
    def __init__(self, app: Starlette, master_key: str) -> None:
        self.signer = SessionSigner(master_key)
        self.files = _Files()
        self.pages = self._pages()
        self.api = self._api(app)

    # ---- who is calling ---------------------------------------------------------------------

    def session(self, scope: Scope) -> Session | None:
        return self.signer.verify(cookie_from(scope["headers"]))

    async def admin_by_session(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An /admin/* request without a bearer key: the dashboard's session cookie, or 401."""
        session = self.session(scope)
        if session is None:
            body = error_body(401, "Sign in at /dashboard, or send the master key as a bearer token.")
            await send_json(send, 401, body, [(b"www-authenticate", b"Bearer")])
            return
        if scope["method"] != "GET" and not (
            same_origin(scope) and self.signer.csrf_ok(session, _header(scope, CSRF_HEADER))
        ):
            await send_json(
                send, 403, error_body(403, "Missing or invalid CSRF token, or another origin."), []
            )
            return
        await self.admin(scope, receive, send, session.actor)

    async def admin(self, scope: Scope, receive: Receive, send: Send, actor: str) -> None:
        scope["state"] = {**scope.get("state", {}), "edge_actor": actor}
        await self.api(scope, receive, send)

    # ---- the page -----------------------------------------------------------------------------

    def _login_page(self, error: str = "", status: int = 200) -> Response:
        text = self.files.login.replace("{{error}}", html.escape(error))
        return Response(text, status, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    def _pages(self) -> Starlette:
        async def page(request: Request) -> Response:
            session = self.session(request.scope)
            if session is None:
                return self._login_page()
            text = self.files.index.replace("{{csrf}}", self.signer.csrf_token(session))
            return Response(text, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

        async def login(request: Request) -> Response:
            if not same_origin(request.scope):
                return self._login_page("Sign-in from another site refused.", 403)
            body = await request.body()
            presented = (
                parse_qs(body.decode("utf-8", "replace")).get("key", [""])[0] if len(body) < 4096 else ""
            )
            if not self.signer.is_master(presented):
                await asyncio.sleep(WRONG_KEY_DELAY_S)
                log.warning("dashboard sign-in refused (wrong key)")
                # 200, the form again: a browser reports a 401 page as a console error, and
                # scripts use the bearer key, not this form.
                return self._login_page("That is not the master key.")
            value, session = self.signer.issue()
            log.info("dashboard sign-in: %s", session.actor)
            response = RedirectResponse("/dashboard", 303)
            response.headers.append(
                "set-cookie", cookie_header(value, self.signer.ttl_s, is_https(request.scope)).decode()
            )
            return response

        async def logout(request: Request) -> Response:
            response = RedirectResponse("/dashboard", 303)
            if same_origin(request.scope):
                response.headers.append("set-cookie", cookie_header("", 0, is_https(request.scope)).decode())
            return response

        def static(text: Callable[[], str], media_type: str) -> Callable[[Request], Awaitable[Response]]:
            async def serve(request: Request) -> Response:
                return Response(text(), media_type=media_type, headers={"x-content-type-options": "nosniff"})

            return serve

        return Starlette(
            routes=[
                Route("/dashboard", page, methods=["GET"]),
                Route("/dashboard/login", login, methods=["POST"]),
                Route("/dashboard/logout", logout, methods=["POST"]),
                Route("/dashboard/app.js", static(lambda: self.files.js, "text/javascript"), methods=["GET"]),
                Route("/dashboard/style.css", static(lambda: self.files.css, "text/css"), methods=["GET"]),
            ],
            exception_handlers={HTTPException: _http_error},
        )

    # ---- the admin API ------------------------------------------------------------------------

    def _api(self, app: Starlette) -> Starlette:
        def handler(
            work: Callable[[FrontState, Request, str], Awaitable[Response]],
        ) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                try:
                    return await work(app.state.edge, request, request.state.edge_actor)
                except ActionError as e:
                    return _fail(e.status, str(e), e.param)
                except (RedisError, OSError, TimeoutError) as e:
                    return _fail(503, f"Redis is unavailable ({type(e).__name__}).")

            return endpoint

        async def state(edge: FrontState, request: Request, actor: str) -> Response:
            snapshot = await gather(edge.queue_redis, edge.models, edge.front_id)
            return Response(
                json_encoder.encode(snapshot), media_type=_JSON, headers={"cache-control": "no-store"}
            )

        async def reset(edge: FrontState, request: Request, actor: str) -> Response:
            ask = _decode(await request.body(), BreakerRequest)
            detail = await actions.reset_breaker(edge.queue_redis, edge.models, ask.deployment)
            return await done(edge, actor, "breaker_reset", ask.deployment, detail)

        async def force_open(edge: FrontState, request: Request, actor: str) -> Response:
            ask = _decode(await request.body(), BreakerRequest)
            detail = await actions.open_breaker(
                edge.queue_redis, edge.models, ask.deployment, ask.duration_s, actor
            )
            return await done(edge, actor, "breaker_open", ask.deployment, detail)

        async def cancel(edge: FrontState, request: Request, actor: str) -> Response:
            ask = _decode(await request.body(), CancelRequest)
            detail = await actions.cancel_job(edge.queue_redis, sorted(edge.models.providers()), ask.job_id)
            return await done(edge, actor, "job_cancel", ask.job_id, detail)

        async def done(edge: FrontState, actor: str, action: str, target: str, detail: str) -> Response:
            await actions.record(edge.queue_redis, actor, action, target, detail)
            return Response(
                json_encoder.encode(actions.ActionDone(True, action, target, detail)), media_type=_JSON
            )

        return Starlette(
            routes=[
                Route("/admin/state", handler(state), methods=["GET"]),
                Route("/admin/breakers/reset", handler(reset), methods=["POST"]),
                Route("/admin/breakers/open", handler(force_open), methods=["POST"]),
                Route("/admin/jobs/cancel", handler(cancel), methods=["POST"]),
            ],
            exception_handlers={HTTPException: _http_error},
        )


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return _fail(status, f"Method {request.method} not allowed here" if status == 405 else "Not found")
