"""Health probes, the model list and the metrics endpoint."""

from __future__ import annotations

import hmac
import time

from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from edge_front import metrics
from edge_front.state import FrontState
from shared import keyspace
from shared.errors import error_body
from shared.queue import WORKER_DEAD_AFTER_S
from shared.wire import Model, ModelList, json_encoder

_JSON = "application/json"


def _state(request: Request) -> FrontState:
    state: FrontState = request.app.state.edge
    return state


async def live(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type=_JSON)


async def _providers(state: FrontState) -> dict[str, dict[str, object]]:
    names = sorted(state.models.providers())
    now_ms = int(time.time() * 1000)
    async with state.queue_redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcard(keyspace.queue(name))
            pipe.zcount(keyspace.workers(name), now_ms - int(WORKER_DEAD_AFTER_S * 1000), "+inf")
            pipe.hvals(keyspace.load(name))
        results = await pipe.execute()
    out: dict[str, dict[str, object]] = {}
    for i, name in enumerate(names):
        jobs, workers, held = results[3 * i : 3 * i + 3]
        running = sum(int(n) for n in held)
        out[name] = {
            # From the workers' own heartbeats (every 0.5 s), not arq's health-check key, which
            # is rewritten only every few seconds: after Redis restarted empty it would lag.
            "worker_alive": int(workers) > 0,
            "workers": int(workers),
            "queue_depth": max(0, int(jobs) - running),  # waiting for a worker
            "running": running,
            # What this front's router last saw, and admits against:
            "router_view": {
                "waiting": state.router.depth.get(name, 0),
                "running": state.router.running.get(name, 0),
            },
            "available": state.router.provider_available(name),
            "missing_keys": sorted(state.router.missing_keys.get(name, ())),  # unset on its workers
        }
    return out


async def ready(request: Request) -> Response:
    """Ready when Redis answers and at least one provider has a live worker."""
    state = _state(request)
    try:
        providers = await _providers(state)
    except (RedisError, OSError) as e:
        return Response(error_body(503, f"Redis unreachable: {type(e).__name__}"), 503, media_type=_JSON)
    if not any(p["worker_alive"] for p in providers.values()):
        return Response(error_body(503, "No provider has a live worker."), 503, media_type=_JSON)
    return Response(b'{"status":"ready"}', media_type=_JSON)


async def health(request: Request) -> Response:
    """Per-component detail; 200 when everything is up, 503 otherwise."""
    state = _state(request)
    started = time.perf_counter()
    detail: dict[str, object] = {"front_id": state.front_id}
    try:
        await state.queue_redis.ping()
        detail["redis"] = {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
        providers = await _providers(state)
    except (RedisError, OSError) as e:
        detail["redis"] = {"status": "down", "error": type(e).__name__}
        providers = {}
    detail["providers"] = providers
    detail["breakers"] = {d.id: state.router.state(d) for d in state.models.deployments()}
    detail["l1"] = {"entries": len(state.l1), "bytes": state.l1.bytes, "max_entries": state.l1.max_entries}
    detail["waiting_replies"] = len(state.replies)
    breakers: dict[str, str] = detail["breakers"]  # type: ignore[assignment]
    healthy = (
        detail["redis"]["status"] == "ok"  # type: ignore[index]
        and all(p["worker_alive"] for p in providers.values())
        and "open" not in breakers.values()  # a deployment refusing requests is a degradation
        and not any(p["missing_keys"] for p in providers.values())  # so is one without its key
    )
    detail["status"] = "ok" if healthy else "degraded"
    return Response(json_encoder.encode(detail), 200 if healthy else 503, media_type=_JSON)


async def models(request: Request) -> Response:
    """The models served here that the caller's key may use."""
    state = _state(request)
    allows = request.scope["state"]["edge_identity"].allows
    listing = ModelList(
        data=[
            Model(id=name, created=state.started, owned_by=provider)
            for name, provider in state.models.public_models()
            if allows(name)
        ]
    )
    return Response(json_encoder.encode(listing), media_type=_JSON)


async def prometheus(request: Request) -> Response:
    settings = _state(request).settings
    if not settings.enable_metrics:
        return Response(
            error_body(404, "Metrics are disabled (ENABLE_METRICS=false)."), 404, media_type=_JSON
        )
    if settings.metrics_token and not _metrics_allowed(request, settings.metrics_token, settings.master_key):
        return Response(
            error_body(401, "Metrics want the metrics token (EDGE_METRICS_TOKEN) or the master key."),
            401,
            headers={"www-authenticate": "Bearer"},
            media_type=_JSON,
        )
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _metrics_allowed(request: Request, token: str, master_key: str) -> bool:
    """Prometheus's `authorization: credentials_file` sends `Bearer <token>`; compared in constant
    time with both secrets (no short cut: which one matched is not timed either)."""
    given = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
    as_token = hmac.compare_digest(given, token.encode())
    as_master = bool(master_key) and hmac.compare_digest(given, master_key.encode())
    return as_token or as_master
