import random
from collections import Counter
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from edge_front import router as router_module
from edge_front.dispatch import _choose, _context_too_long
from edge_front.router import Router
from shared import keyspace
from shared.breaker import BreakerView, outcome_of
from shared.config import ConfigError, load_settings
from shared.errors import error_body
from shared.queue import Reply
from shared.routing import RetrySettings, backoff_s, is_retryable

CONFIG = """
model_list:
  - {model_name: gpt-4o, provider: openai, model: a, priority: 1, weight: 1,
     input_cost_per_1m: 5, output_cost_per_1m: 15}
  - {model_name: gpt-4o, provider: openai, model: b, priority: 0, weight: 3,
     input_cost_per_1m: 2, output_cost_per_1m: 8}
  - {model_name: gpt-4o, provider: openai, model: c, priority: 2, weight: 0,
     input_cost_per_1m: 1, output_cost_per_1m: 2}
  - {model_name: claude, provider: anthropic, model: claude-x}
  - {model_name: long, provider: openai, model: long-context}
router_settings:
  fallbacks: {gpt-4o: [claude]}
  context_window_fallbacks: {gpt-4o: [long]}
  max_queue_depth: {openai: 10}
"""


def router(tmp_path: Path, text: str = CONFIG, **strategies: str) -> Router:
    if strategies:
        text += "  group_strategies: {" + ", ".join(f"{k}: {v}" for k, v in strategies.items()) + "}\n"
    path = tmp_path / "models.yaml"
    path.write_text(text)
    _, models = load_settings({"EDGE_CONFIG": str(path)})
    return Router(models, fakeredis.aioredis.FakeRedis(), random.Random(7))


def models_of(deployments) -> list[str]:  # type: ignore[no-untyped-def]
    return [d.model for d in deployments]


def test_priority_order_then_fallback_groups(tmp_path: Path) -> None:
    r = router(tmp_path)
    assert models_of(r.plan("gpt-4o")) == ["b", "a", "c", "claude-x"]
    assert models_of(r.context_plan("gpt-4o")) == ["long-context"]
    assert r.context_plan("claude") == []


def test_lowest_cost_and_least_latency(tmp_path: Path) -> None:
    assert models_of(router(tmp_path, **{"gpt-4o": "lowest-cost"}).ordered("gpt-4o")) == ["c", "b", "a"]
    r = router(tmp_path, **{"gpt-4o": "least-latency"})
    ids = {d.model: d.id for d in r.models.group("gpt-4o")}
    r.breakers[ids["a"]] = BreakerView(ewma_ms=50)
    r.breakers[ids["b"]] = BreakerView(ewma_ms=500)
    assert models_of(r.ordered("gpt-4o")) == ["c", "a", "b"]  # unmeasured first, then fastest


def test_weighted_picks_in_proportion_to_weight(tmp_path: Path) -> None:
    r = router(tmp_path, **{"gpt-4o": "weighted"})
    firsts = Counter(r.ordered("gpt-4o")[0].model for _ in range(4000))
    assert firsts["c"] == 0
    assert 2.5 < firsts["b"] / firsts["a"] < 3.5


class FakeClock:
    """Stands in for the `time` module in edge_front.router: wall time moves only when told."""

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def time(self) -> float:
        return self.now_s

    def monotonic(self) -> float:
        return self.now_s


class FakeFront:
    """What `_choose` uses of the front's state: the router and worker liveness."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.dead: set[str] = set()

    async def provider_alive(self, provider: str) -> bool:
        return provider not in self.dead


async def open_breaker(r: Router, deployment_id: str, now_ms: int) -> None:
    """The hash fields RECORD_LUA writes when failures open a breaker."""
    fields = {"state": "open", "opened_at": now_ms, "failures": 0, "window_start": now_ms}
    await r.redis.hset(keyspace.breaker(deployment_id), mapping=fields)  # type: ignore[arg-type]


async def test_open_breakers_are_skipped_until_their_cooldown_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = router(tmp_path, CONFIG + "  breaker: {cooldown_s: 30, half_open_probes: 1}\n")
    start = 1_700_000_000.0
    clock = FakeClock(start)
    monkeypatch.setattr(router_module, "time", clock)
    probes: list[tuple[list[str], list[int]]] = []
    probe_answer = 1

    async def probe(keys: list[str], args: list[int]) -> int:
        # PROBE_LUA's slot, which fakeredis cannot run without lupa.
        probes.append((keys, args))
        return probe_answer

    monkeypatch.setattr(r, "_probe", probe)
    front: Any = FakeFront(r)
    plan = r.plan("gpt-4o")
    b, a = plan[0], plan[1]
    assert models_of(plan[:2]) == ["b", "a"]

    await r.refresh()
    assert await _choose(front, plan, 0) == (b, 0)  # all closed: the plan's first

    opened_ms = int(clock.now_s * 1000)
    await open_breaker(r, b.id, opened_ms)
    assert await _choose(front, plan, 0) == (b, 0)  # this front has not read the breaker yet
    await r.refresh()
    assert r.state(b) == "open"
    assert await _choose(front, plan, 0) == (a, 1)
    assert not r.provider_available("openai")  # no live worker seen (none in this test's Redis)
    r.live_workers["openai"] = 1
    assert r.provider_available("openai")  # a, c and long-context are still closed

    clock.now_s = start + 29.999
    await r.refresh()
    assert await _choose(front, plan, 0) == (a, 1)
    assert probes == []  # an open breaker is skipped without asking Redis

    clock.now_s = start + 30  # the cooldown has passed: half-open, one probe may go through
    assert r.state(b) == "half_open"
    front.dead.add("openai")  # no probe slot is spent on a deployment that cannot be served
    assert models_of([(await _choose(front, plan, 0))[0]]) == ["claude-x"]
    assert probes == []
    front.dead.clear()
    assert await _choose(front, plan, 0) == (b, 0)
    assert probes == [([keyspace.breaker(b.id)], [opened_ms + 30_000, 30_000, 1])]

    probe_answer = 0  # the probe slot is taken: the next request goes elsewhere
    assert await _choose(front, plan, 0) == (a, 1)


def test_admission_refuses_a_full_queue_with_a_retry_after_from_the_service_rate(tmp_path: Path) -> None:
    r = router(tmp_path)
    r.depth["openai"], r.rate["openai"] = 9, 10.0
    assert r.admission("openai") is None
    r.depth["openai"] = 40
    refusal = r.admission("openai")
    assert refusal is not None and refusal.status == 429 and refusal.code == "queue_full"
    assert refusal.headers["retry-after"] == "4"  # 31 jobs over the limit at 10 answers/s
    assert r.admission("anthropic") is None


def test_backoff_is_exponential_capped_jittered_and_honours_retry_after() -> None:
    retry = RetrySettings(initial_backoff_ms=100, multiplier=2, max_backoff_ms=1000)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.0), (9, 1.0)]:
        delays = [backoff_s(retry, attempt, None, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
    assert backoff_s(retry, 1, 2.5, rng) == 2.5


@pytest.mark.parametrize(
    ("status", "retryable", "outcome"),
    [
        (200, False, "ok"),
        (400, False, "neutral"),
        (401, False, "neutral"),
        (404, False, "neutral"),
        (408, True, "fail"),
        (409, True, "neutral"),
        (422, False, "neutral"),
        (429, True, "fail"),
        (500, True, "fail"),
        (502, True, "fail"),
        (504, True, "fail"),
    ],
)
def test_what_is_retried_and_what_counts_against_a_breaker(
    status: int, retryable: bool, outcome: str
) -> None:
    assert is_retryable(status) is retryable
    assert outcome_of(status, reached_upstream=True) == outcome
    assert outcome_of(status, reached_upstream=False) == "neutral"


def test_context_length_errors_are_recognised() -> None:
    too_long = error_body(
        400, "This model's maximum context length is 8192 tokens", code="context_length_exceeded"
    )
    assert _context_too_long(Reply("j", status=400, body=too_long))
    assert not _context_too_long(Reply("j", status=400, body=error_body(400, "bad temperature")))
    assert not _context_too_long(Reply("j", status=500, body=too_long))


def test_router_settings_naming_unknown_groups_or_strategies_stop_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown model groups: nope"):
        router(tmp_path, CONFIG.replace("fallbacks: {gpt-4o: [claude]}", "fallbacks: {gpt-4o: [nope]}"))
    with pytest.raises(ConfigError, match="routing_strategy"):
        router(tmp_path, CONFIG + "  routing_strategy: fastest\n")


def test_limits_that_would_disable_the_gateway_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_attempts"):
        router(tmp_path, CONFIG + "  retry: {max_attempts: 0}\n")
    with pytest.raises(ConfigError, match="EDGE_MAX_ATTEMPTS"):
        load_settings({"EDGE_MAX_ATTEMPTS": "0"})
