"""The aiohttp application, the control endpoints, and ways to run it (blocking, thread, CLI)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from edge_agent.fake_upstream import bedrock_embeddings, embeddings, gemini_embeddings
from edge_agent.fake_upstream.anthropic_api import AnthropicApi, AnthropicCountTokensApi
from edge_agent.fake_upstream.azure_api import AzureApi
from edge_agent.fake_upstream.bedrock_embeddings import BedrockEmbeddingsApi
from edge_agent.fake_upstream.common import Settings, Stats, json_response
from edge_agent.fake_upstream.embeddings import AzureEmbeddingsApi, OpenAIEmbeddingsApi
from edge_agent.fake_upstream.gemini_api import GeminiApi
from edge_agent.fake_upstream.gemini_embeddings import GeminiEmbeddingsApi
from edge_agent.fake_upstream.openai_api import OpenAIApi

SETTINGS_KEY = web.AppKey("fake_upstream_settings", Settings)
STATS_KEY = web.AppKey("fake_upstream_stats", Stats)
_CONFIG_FIELDS = {"latency_ms": float, "jitter_ms": float, "error_rate": float, "error_status": int}


def base_urls(port: int, host: str = "127.0.0.1") -> dict[str, str]:
    """Each provider's base URL variable, pointed at a fake upstream on `port` (for `up`, the
    dev stack and the benchmark: one place says where each API lives in the fake)."""
    root = f"http://{host}:{port}"
    return {
        "OPENAI_BASE_URL": f"{root}/v1",
        "ANTHROPIC_BASE_URL": root,
        "GEMINI_BASE_URL": f"{root}/v1beta",
        "AZURE_OPENAI_ENDPOINT": root,
    }


def create_app(
    latency_ms: float = 0,
    jitter_ms: float = 0,
    error_rate: float = 0,
    error_status: int = 500,
    require_key: str | None = None,
) -> web.Application:
    """The fake upstream app. Serve it with `handler_cancellation=True` so `cancelled` counts
    handlers whose client went away (`run()` and `BackgroundServer` do)."""
    settings = Settings(
        float(latency_ms), float(jitter_ms), float(error_rate), int(error_status), require_key
    )
    stats = Stats()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SETTINGS_KEY] = settings
    app[STATS_KEY] = stats

    async def get_stats(request: web.Request) -> web.Response:
        return json_response(stats.snapshot())

    async def reset(request: web.Request) -> web.Response:
        stats.reset()
        return json_response(stats.snapshot())

    async def get_config(request: web.Request) -> web.Response:
        return json_response({name: getattr(settings, name) for name in _CONFIG_FIELDS})

    async def set_config(request: web.Request) -> web.Response:
        try:
            changes = msgspec.json.decode(await request.read())
        except msgspec.DecodeError:
            return json_response({"error": "body must be JSON"}, 400)
        if not isinstance(changes, dict):
            return json_response({"error": "body must be a JSON object"}, 400)
        unknown = sorted(set(changes) - set(_CONFIG_FIELDS))
        if unknown:
            return json_response({"error": f"unknown settings: {', '.join(unknown)}"}, 400)
        try:
            values = {name: _CONFIG_FIELDS[name](value) for name, value in changes.items()}
        except (TypeError, ValueError):
            return json_response({"error": "settings must be numbers"}, 400)
        for name, value in values.items():
            setattr(settings, name, value)
        return await get_config(request)

    async def health(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    app.router.add_post("/v1/chat/completions", OpenAIApi(settings, stats).handle)
    app.router.add_post("/v1/messages", AnthropicApi(settings, stats).handle)
    app.router.add_post("/v1/messages/count_tokens", AnthropicCountTokensApi(settings, stats).handle)
    # Embeddings first: the Gemini chat route below takes any `models/{target}`.
    embeddings.add_routes(app, OpenAIEmbeddingsApi(settings, stats), AzureEmbeddingsApi(settings, stats))
    gemini_embeddings.add_routes(app, GeminiEmbeddingsApi(settings, stats))
    bedrock_embeddings.add_routes(app, BedrockEmbeddingsApi(settings, stats))
    gemini = GeminiApi(settings, stats).handle
    app.router.add_post("/v1beta/models/{target}", gemini)
    app.router.add_post("/v1/models/{target}", gemini)
    azure = AzureApi(settings, stats).handle
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", azure)
    app.router.add_post("/openai/v1/chat/completions", azure)
    app.router.add_get("/_fake/stats", get_stats)
    app.router.add_post("/_fake/reset", reset)
    app.router.add_get("/_fake/config", get_config)
    app.router.add_post("/_fake/config", set_config)
    app.router.add_get("/health", health)
    return app


async def start_runner(
    app: web.Application, host: str, port: int, shutdown_timeout: float = 1.0
) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (0 picks a free port); returns the runner and the bound port."""
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)


class BackgroundServer:
    """The fake upstream on its own event loop in a daemon thread (for tests and embedding).

    with BackgroundServer(latency_ms=5) as server:
        httpx.post(server.url + "/v1/chat/completions", ...)
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **settings: Any) -> None:
        self.host = host
        self.port = port
        self.app = create_app(**settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="fake-upstream", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def stats(self) -> Stats:
        return self.app[STATS_KEY]

    @property
    def settings(self) -> Settings:
        return self.app[SETTINGS_KEY]

    def start(self) -> BackgroundServer:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            runner, self.port = await start_runner(self.app, self.host, self.port, shutdown_timeout=0.5)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve_forever(host: str, port: int, settings: dict[str, Any]) -> None:
    runner, bound = await start_runner(create_app(**settings), host, port, shutdown_timeout=2.0)
    print(f"fake upstream listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(host: str = "127.0.0.1", port: int = 8090, **settings: Any) -> None:
    """Serve until SIGINT / SIGTERM (blocking); uses uvloop when it is installed."""
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_forever(host, port, settings))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("FAKE_UPSTREAM_PORT") or 8090),
        help="listen port (env FAKE_UPSTREAM_PORT, default 8090)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fixed delay per request")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="extra uniform random delay, 0..N ms")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction (0..1) of requests that fail")
    parser.add_argument(
        "--error-status", type=int, default=500, help="status of those failures (default 500)"
    )
    parser.add_argument("--require-key", default=None, help="accept only this API key")


def main_from_args(args: argparse.Namespace) -> None:
    run(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        error_rate=args.error_rate,
        error_status=args.error_status,
        require_key=args.require_key,
    )
