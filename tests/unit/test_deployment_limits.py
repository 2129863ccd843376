"""Per-deployment rpm/tpm: counted in pipelines already sent, read by the router's refresh."""

from __future__ import annotations

import time

import pytest

from edge_front.deployment_limits import DeploymentLimits
from edge_workers.upstream import prepare_call
from shared import keyspace
from shared.config import Deployment

MINUTE = 60 * 29_000_000  # the start of some minute
LIMITED = Deployment("m", "openai", "gpt-4o", "http://u/v1", "K", id="m#0", rpm=2, tpm=100)
FREE = Deployment("m", "openai", "gpt-4o", "http://u/v1", "K", id="m#1")


def test_only_limited_deployments_are_counted() -> None:
    limits = DeploymentLimits([LIMITED, FREE])
    assert limits.count("m#1", MINUTE) is None
    assert (
        limits.count("m#0", MINUTE + 5) == keyspace.usage("m#0", MINUTE) == f"edge:usage:m#0:{MINUTE // 60}"
    )
    assert not limits.at_limit(FREE, MINUTE)


def test_own_requests_count_between_reads_and_are_not_counted_twice() -> None:
    limits = DeploymentLimits([LIMITED])
    limits.count("m#0", MINUTE)
    assert not limits.at_limit(LIMITED, MINUTE)
    read = limits.begin_read(MINUTE + 1)
    limits.count("m#0", MINUTE + 1)  # sent while the read was on its way: maybe not in it
    limits.finish_read(read, [[b"1", None]])  # Redis has the first request only
    assert limits.usage("m#0", MINUTE + 1) == (2, 0)
    assert limits.at_limit(LIMITED, MINUTE + 1)
    assert not limits.at_limit(LIMITED, MINUTE + 60)  # a new minute starts from zero


def test_a_request_answered_from_l2_or_a_flight_is_taken_back() -> None:
    limits = DeploymentLimits([LIMITED])
    limits.count("m#0", MINUTE)
    limits.count("m#0", MINUTE)
    limits.uncount("m#0", MINUTE + 1)  # the second found its answer in L2: nothing was sent
    assert not limits.at_limit(LIMITED, MINUTE + 1)
    limits.uncount("m#0", MINUTE + 60)  # another minute's: nothing to take back
    assert limits.usage("m#0", MINUTE + 1) == (1, 0)


def test_other_fronts_requests_and_workers_tokens_reach_the_limit() -> None:
    limits = DeploymentLimits([LIMITED])
    limits.finish_read(limits.begin_read(MINUTE), [[b"2", None]])
    assert limits.at_limit(LIMITED, MINUTE + 30)
    limits.finish_read(limits.begin_read(MINUTE), [[b"0", b"99"]])
    assert not limits.at_limit(LIMITED, MINUTE)
    limits.finish_read(limits.begin_read(MINUTE), [[b"0", b"100"]])
    assert limits.at_limit(LIMITED, MINUTE)


def test_the_refusal_is_a_429_until_the_minute_rolls_over() -> None:
    error = DeploymentLimits.refusal(MINUTE + 50.5)
    assert (error.status, error.code, error.headers["retry-after"]) == (429, "rate_limited", "10")
    assert DeploymentLimits.refusal(MINUTE + 59.99).headers["retry-after"] == "1"


@pytest.mark.parametrize(("stream", "bound"), [(False, 5.0), (True, 9.0)])
def test_a_deployment_timeout_bounds_its_upstream_call(stream: bool, bound: float) -> None:
    deployment = Deployment(
        "m", "openai", "gpt-4o", "http://u/v1", "K", id="m#0", timeout_s=5, stream_timeout_s=9
    )
    prepared = prepare_call(deployment, "k", "gpt-4o", {"messages": []}, time.time() + 100, stream)
    assert isinstance(prepared, tuple) and prepared[1] == bound
    prepared = prepare_call(deployment, "k", "gpt-4o", {"messages": []}, time.time() + 2, stream)
    assert isinstance(prepared, tuple) and prepared[1] <= 2  # the request's deadline still wins
