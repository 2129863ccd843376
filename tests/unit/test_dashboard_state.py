"""The dashboard's per-provider numbers, from queue, registry, load and recent outcomes."""

from __future__ import annotations

from edge_front.dashboard.gather import percentile, provider_view
from shared.outcomes import OUTCOMES_MAXLEN, JobOutcome

NOW = 1_800_000_000_000  # ms


def outcome(age_ms: int, status: int = 200, latency_ms: float = 100.0) -> JobOutcome:
    return JobOutcome(NOW - age_ms, "req", "gpt-4o-mini", "openai:gpt-4o-mini", status, latency_ms)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0 and percentile(values, 0.95) == 95.0
    assert percentile([7.0], 0.95) == 7.0 and percentile([], 0.5) is None


def test_running_jobs_are_not_queued_and_dead_workers_are_not_listed() -> None:
    registry = [(b"w-live", float(NOW - 300)), (b"w-dead", float(NOW - 5000))]
    load = {b"w-live": b"2", b"w-dead": b"0"}
    view = provider_view(NOW, 5, [(b"job", float(NOW - 4200))], registry, load, [])
    assert (view.queued, view.running, view.oldest_queued_s) == (3, 2, 4.2)
    assert [(w.id, w.heartbeat_age_s, w.running) for w in view.workers] == [("w-live", 0.3, 2)]
    idle = provider_view(NOW, 2, [(b"job", float(NOW - 4200))], registry, load, [])
    assert idle.queued == 0 and idle.oldest_queued_s == 0.0  # only running jobs in the queue


def test_throughput_errors_and_latency_count_the_last_minute_only() -> None:
    recent = [
        outcome(1_000, 200, 10.0),
        outcome(2_000, 502, 30.0),
        outcome(3_000, 400, 20.0),  # the client's mistake: a failed job, not an upstream error
        outcome(4_000, 429, -1.0),  # latency unknown: not in the percentiles
        outcome(61_000, 500, 999.0),  # older than a minute
    ]
    view = provider_view(NOW, 0, [], [], {}, recent)
    assert view.throughput_per_min == 4.0
    assert view.error_rate == 0.5  # the 502 and the 429
    assert (view.latency_ms.p50, view.latency_ms.p95) == (20.0, 30.0)
    assert provider_view(NOW, 0, [], [], {}, []).error_rate is None


def test_a_full_stream_shorter_than_a_minute_is_scaled_to_one() -> None:
    # The capped stream holds only the last 10 s of a busy provider: 1000 in 10 s is 6000/min.
    recent = [outcome(i * 10) for i in range(OUTCOMES_MAXLEN)]
    recent[-1] = outcome(10_000)
    assert provider_view(NOW, 0, [], [], {}, recent).throughput_per_min == 6000.0
