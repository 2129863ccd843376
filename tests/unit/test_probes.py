"""`workers_ready`: a stack is ready once every provider has all its workers, not the first one."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from edge_agent.probes import workers_ready
from edge_agent.redis_server import free_port


class _Health:
    status = 200
    body: dict[str, Any] = {}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        data = json.dumps(_Health.body).encode() if self.path == "/health" else b"{}"
        self.send_response(_Health.status if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def front_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _health(status: int, **providers: tuple[bool, int]) -> None:
    _Health.status = status
    _Health.body = {
        "status": "ok" if status == 200 else "degraded",
        "providers": {p: {"worker_alive": alive, "workers": n} for p, (alive, n) in providers.items()},
    }


def test_ready_needs_every_provider_live_with_all_its_workers(front_url: str) -> None:
    ready = workers_ready(front_url, {"openai": 2, "anthropic": 1})
    _health(503, openai=(True, 2), anthropic=(False, 0))  # /health/ready would already say yes
    assert not ready()
    _health(200, openai=(True, 1), anthropic=(True, 1))  # the second openai worker still starting
    assert not ready()
    _health(200, openai=(True, 2), anthropic=(True, 0))  # alive (arq's key) but not yet registered
    assert not ready()
    _health(200, openai=(True, 2), anthropic=(True, 1))
    assert ready()
    _health(200, openai=(True, 2))  # a front whose config does not serve anthropic: nothing to wait for
    assert ready()


def test_not_ready_while_nothing_answers() -> None:
    assert not workers_ready(f"http://127.0.0.1:{free_port()}", {"openai": 1})()
