"""The dashboard's admin API and sign-in with real processes: who may call /admin/*, what
/admin/state reports, breaker reset / force open, job cancel, and the session cookie + CSRF."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from shared import keyspace
from tests.integration.conftest import wait_until

MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}
DEPLOYMENT = "openai:gpt-4o-mini"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    overrides = {"EDGE_MAX_ATTEMPTS": "1", "EDGE_BREAKER_FAILURES": "1000", "EDGE_WORKER_CONCURRENCY": "1"}
    dev = DevStack(env_overrides=overrides, log_dir=Path(tmp_path_factory.mktemp("dashboard-logs")))
    try:
        dev.start_redis()
        dev.start_upstream()
        dev.start_worker("openai")
        dev.start_worker("anthropic")
        dev.front = dev.start_front()  # type: ignore[attr-defined]
        yield dev
    finally:
        dev.stop()


@pytest.fixture(scope="module")
def front(stack: DevStack) -> Front:
    return stack.front  # type: ignore[attr-defined,no-any-return]


def chat(front: Front, text: str, model: str = "gpt-4o-mini", timeout: float = 30) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": f"{text} {uuid.uuid4().hex}"}]}
    return httpx.post(f"{front.url}/v1/chat/completions", json=body, headers=MASTER, timeout=timeout)


def state(front: Front, **kwargs: Any) -> dict[str, Any]:
    answer = httpx.get(
        f"{front.url}/admin/state", headers=kwargs.pop("headers", MASTER), timeout=10, **kwargs
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def post(front: Front, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{front.url}{path}", json=body, headers=MASTER if headers is None else headers, timeout=10
    )


def deployment(front: Front, deployment_id: str = DEPLOYMENT) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in state(front)["deployments"] if d["id"] == deployment_id)
    return found


def test_only_the_master_key_or_a_session_may_use_the_admin_api(front: Front) -> None:
    created = httpx.post(f"{front.url}/key/generate", json={}, headers=MASTER, timeout=10).json()
    virtual = {"Authorization": f"Bearer {created['key']}"}
    for method, path in (
        ("GET", "/admin/state"),
        ("POST", "/admin/breakers/reset"),
        ("POST", "/admin/breakers/open"),
        ("POST", "/admin/jobs/cancel"),
    ):
        none = httpx.request(method, f"{front.url}{path}", json={}, timeout=10)
        assert none.status_code == 401 and none.json()["error"]["type"] == "authentication_error"
        wrong = httpx.request(method, f"{front.url}{path}", json={}, headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401
        refused = httpx.request(method, f"{front.url}{path}", json={}, headers=virtual, timeout=10)
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    # Only the exact raw path is the admin API: other spellings are unknown paths, never admin.
    for path in ("/admin/state/", "/admin//state", "/%61dmin/state", "/Admin/state"):
        assert httpx.get(f"{front.url}{path}", headers=MASTER, timeout=10).status_code == 404


def test_state_reports_queues_workers_outcomes_deployments_and_cache(front: Front) -> None:
    assert chat(front, "hello").status_code == 200
    failed = chat(front, "[[fake:status=500]] [[fake:echo_error]] card 4111 1111 1111 1111.")
    assert failed.status_code >= 500
    request_id = failed.headers["x-request-id"]

    def reported() -> dict[str, Any] | None:
        now = state(front)
        ids = [f["request_id"] for f in now["recent_failures"]]
        return now if request_id in ids else None

    now = wait_until(reported, "the failure in /admin/state")
    openai = now["providers"]["openai"]
    assert openai["throughput_per_min"] >= 2 and 0 < openai["error_rate"] <= 0.5
    assert (
        openai["latency_ms"]["p50"] is not None and openai["latency_ms"]["p95"] >= openai["latency_ms"]["p50"]
    )
    assert openai["queued"] == 0 and openai["oldest_queued_s"] == 0.0
    [worker] = openai["workers"]
    assert worker["heartbeat_age_s"] < 2 and worker["running"] == 0
    assert len(now["providers"]["anthropic"]["workers"]) == 1
    failure = next(f for f in now["recent_failures"] if f["request_id"] == request_id)
    assert (
        failure["status"] == failed.status_code
        and failure["deployment"] == DEPLOYMENT
        and failure["model"] == "gpt-4o-mini"
    )
    assert "[REDACTED:card]" in failure["message"] and "4111" not in failure["message"]
    assert abs(failure["time"] - time.time()) < 60
    row = deployment(front)
    assert row["breaker"] == "closed" and row["recent_failures"] >= 1 and row["cooldown_left_s"] == 0
    assert set(now["cache"]) == {"l1", "l2"} and now["cache"]["l1"]["misses"] >= 2


def test_force_open_drains_a_deployment_until_reset(front: Front, stack: DevStack) -> None:
    done = post(front, "/admin/breakers/open", {"deployment": DEPLOYMENT})
    assert done.status_code == 200 and done.json()["action"] == "breaker_open"
    row = deployment(front)
    assert row["breaker"] == "open" and row["forced_by"] == "master"
    assert row["cooldown_left_s"] > 86_000  # held a day, not the 30 s cooldown
    # The router reads breakers twice a second: within a second, no request reaches it.
    wait_until(lambda: chat(front, "hi").status_code == 503, "the forced-open breaker refusing requests")
    refused = chat(front, "hi")
    assert refused.json()["error"]["code"] == "all_deployments_unavailable"
    # A failure recorded while held (an attempt already in flight) does not reopen its timer.
    opened_at = redis.Redis.from_url(stack.env["REDIS_URL"]).hget(keyspace.breaker(DEPLOYMENT), "opened_at")
    assert opened_at is not None and int(opened_at) > time.time() * 1000

    assert post(front, "/admin/breakers/reset", {"deployment": DEPLOYMENT}).status_code == 200
    assert deployment(front)["breaker"] == "closed"
    wait_until(lambda: chat(front, "hi").status_code == 200, "the reset deployment serving again")
    actions = state(front)["actions"]
    assert [(a["action"], a["target"], a["actor"]) for a in actions[:2]] == [
        ("breaker_reset", DEPLOYMENT, "master"),
        ("breaker_open", DEPLOYMENT, "master"),
    ]


def test_a_short_hold_ends_by_itself(front: Front) -> None:
    assert post(front, "/admin/breakers/open", {"deployment": DEPLOYMENT, "duration_s": 1}).status_code == 200
    assert deployment(front)["breaker"] == "open"
    time.sleep(1.1)
    assert deployment(front)["breaker"] == "half_open"
    wait_until(lambda: chat(front, "hi").status_code == 200, "probes closing the breaker again")
    post(front, "/admin/breakers/reset", {"deployment": DEPLOYMENT})


def test_bad_action_input_is_a_400_or_404_in_openai_s_envelope(front: Front) -> None:
    cases = [
        ("/admin/breakers/reset", {"deployment": "nobody:nothing"}, 404),
        ("/admin/breakers/open", {"deployment": "nobody:nothing"}, 404),
        ("/admin/breakers/open", {}, 400),
        ("/admin/breakers/open", {"deployment": DEPLOYMENT, "duration_s": 0}, 400),
        ("/admin/breakers/open", {"deployment": DEPLOYMENT, "duration_s": 10**9}, 400),
        ("/admin/breakers/reset", {"deployment": DEPLOYMENT, "extra": 1}, 400),
        ("/admin/breakers/reset", ["not", "an", "object"], 400),
        ("/admin/jobs/cancel", {"job_id": "no-such-job"}, 404),
        ("/admin/jobs/cancel", {"job_id": ""}, 400),
    ]
    for path, body, status in cases:
        answer = post(front, path, body)
        assert answer.status_code == status, (path, body, answer.text)
        assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    broken = httpx.post(f"{front.url}/admin/jobs/cancel", content=b"{", headers=MASTER, timeout=10)
    assert broken.status_code == 400
    assert httpx.get(f"{front.url}/admin/jobs/cancel", headers=MASTER, timeout=10).status_code == 405


def test_cancel_drops_a_queued_job_and_its_client_gets_410(front: Front, stack: DevStack) -> None:
    sync = redis.Redis.from_url(stack.env["REDIS_URL"])
    answers: dict[str, httpx.Response] = {}

    def ask(name: str) -> None:
        answers[name] = chat(front, "[[fake:delay_ms=3000]]")

    first = threading.Thread(target=ask, args=("running",))
    first.start()
    wait_until(lambda: sync.zcard(keyspace.queue("openai")) == 1, "the first job")
    running = sync.zrange(keyspace.queue("openai"), 0, 0)[0].decode()
    second = threading.Thread(target=ask, args=("queued",))
    second.start()  # the worker runs one job at a time: this one waits
    wait_until(lambda: sync.zcard(keyspace.queue("openai")) == 2, "the second job queued")
    queued = next(j.decode() for j in sync.zrange(keyspace.queue("openai"), 0, -1) if j.decode() != running)
    wait_until(lambda: state(front)["providers"]["openai"]["queued"] == 1, "the queued job in the state")

    done = post(front, "/admin/jobs/cancel", {"job_id": queued})
    assert done.status_code == 200, done.text
    assert "openai" in done.json()["detail"]
    second.join(10)
    assert answers["queued"].status_code == 410
    assert answers["queued"].json()["error"]["code"] == "cancelled"
    assert sync.zscore(keyspace.queue("openai"), queued) is None
    first.join(15)
    assert answers["running"].status_code == 200  # the other job was left alone
    assert state(front)["actions"][0]["action"] == "job_cancel"


def sign_in(front: Front, key: str) -> httpx.Response:
    return httpx.post(
        f"{front.url}/dashboard/login",
        data={"key": key},
        headers={"origin": front.url},
        timeout=10,
        follow_redirects=False,
    )


def test_sign_in_sets_a_session_the_page_and_the_api_accept(front: Front) -> None:
    page = httpx.get(f"{front.url}/dashboard", timeout=10)
    assert page.status_code == 200 and 'type="password"' in page.text and "csrf-token" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]

    created = httpx.post(f"{front.url}/key/generate", json={}, headers=MASTER, timeout=10).json()
    for wrong in ("not-the-key", created["key"]):  # a virtual key cannot sign in
        started = time.monotonic()
        refused = sign_in(front, wrong)
        assert time.monotonic() - started >= 0.45
        assert refused.status_code == 200 and "not the master key" in refused.text
        assert "set-cookie" not in refused.headers
    cross = httpx.post(
        f"{front.url}/dashboard/login", data={"key": MASTER_KEY}, headers={"origin": "https://evil.example"}
    )
    assert cross.status_code == 403 and "set-cookie" not in cross.headers

    signed = sign_in(front, MASTER_KEY)
    assert signed.status_code == 303 and signed.headers["location"] == "/dashboard"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie  # plain HTTP
    https = httpx.post(
        f"{front.url}/dashboard/login",
        data={"key": MASTER_KEY},
        headers={"origin": "https://front.example", "host": "front.example", "x-forwarded-proto": "https"},
    )
    assert https.status_code == 303 and "; Secure" in https.headers["set-cookie"]

    jar = {"edge_dashboard": signed.cookies["edge_dashboard"]}
    page = httpx.get(f"{front.url}/dashboard", cookies=jar, timeout=10)
    assert page.status_code == 200 and "csrf-token" in page.text
    token = page.text.split('name="csrf-token" content="')[1].split('"')[0]
    assert state(front, headers={}, cookies=jar)["providers"]

    reset = f"{front.url}/admin/breakers/reset"
    body = {"deployment": DEPLOYMENT}
    assert httpx.post(reset, json=body, cookies=jar).status_code == 403  # no CSRF token
    assert httpx.post(reset, json=body, cookies=jar, headers={"x-csrf-token": token[:-2]}).status_code == 403
    cross_site = {"x-csrf-token": token, "origin": "https://evil.example"}
    assert httpx.post(reset, json=body, cookies=jar, headers=cross_site).status_code == 403
    ok = httpx.post(reset, json=body, cookies=jar, headers={"x-csrf-token": token, "origin": front.url})
    assert ok.status_code == 200, ok.text
    assert state(front)["actions"][0]["actor"].startswith("session:")

    forged = {"edge_dashboard": jar["edge_dashboard"][:-3] + "AAA"}
    assert httpx.get(f"{front.url}/admin/state", cookies=forged).status_code == 401
    out = httpx.post(f"{front.url}/dashboard/logout", cookies=jar, headers={"origin": front.url})
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
