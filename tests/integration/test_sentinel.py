"""Redis high availability: a front, a worker and the keys CLI find the primary through Sentinel
and follow a failover without a restart.

Real processes on loopback: a primary, a replica and three sentinels (edge_agent.sentinel_group),
then a front and an openai worker against the fake upstream. REDIS_URL names a port nobody
listens on, so everything that works goes through the sentinels. Under light load from the
official SDK the primary is SIGKILLed; the sentinels promote the replica, and the test measures
the time from the kill to the first answer of a request sent after it (printed: the README
quotes it).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import openai

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from edge_agent.redis_server import free_port
from edge_agent.sentinel_group import SentinelGroup
from tests.integration.conftest import fake_stats, wait_until

REQUEST_TIMEOUT_S = 8  # EDGE_REQUEST_TIMEOUT: a request in flight at the kill ends by then
ANSWER_BOUND_S = REQUEST_TIMEOUT_S + 4  # no request may take longer (nothing hangs)


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None  # None: no HTTP answer at all (the SDK timed out or lost the connection)
    cache: str = ""


def ask(client: openai.OpenAI, text: str) -> Outcome:
    started = time.monotonic()
    messages = [{"role": "user", "content": f"{text} {uuid.uuid4().hex}"}]
    try:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
        raw.parse()
        return Outcome(started, time.monotonic(), raw.status_code, raw.headers.get("x-edge-cache", ""))
    except openai.APIStatusError as e:
        error = e.response.json()["error"]  # OpenAI's envelope, whatever went wrong
        assert error["message"] and error["type"], e.response.text
        return Outcome(started, time.monotonic(), e.status_code)
    except (openai.APITimeoutError, openai.APIConnectionError):
        return Outcome(started, time.monotonic(), None)


class Load:
    """Two clients sending unique requests back to back (light load), every outcome kept."""

    def __init__(self, front: Front) -> None:
        self.client = openai.OpenAI(
            base_url=f"{front.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=ANSWER_BOUND_S + 10
        )
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        while not self._stop.is_set():
            self.outcomes.append(ask(self.client, "load"))
            time.sleep(0.05)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(ANSWER_BOUND_S + 15)
            assert not t.is_alive(), "a request never ended"

    def first_answer_after(self, moment: float) -> Outcome | None:
        served = [o for o in list(self.outcomes) if o.started > moment and o.status == 200]
        return min(served, key=lambda o: o.ended, default=None)


def test_front_worker_and_cli_follow_a_failover_without_a_restart(tmp_path: Path) -> None:
    group = SentinelGroup(down_after_ms=1000, failover_timeout_ms=3000).start()
    overrides = {
        **group.env,
        # Nothing listens here: with REDIS_SENTINELS only the URL's credentials and db are used.
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "EDGE_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT_S),
    }
    dev = DevStack(env_overrides=overrides, log_dir=tmp_path / "logs")
    load: Load | None = None
    try:
        dev.start_upstream()
        worker = dev.start_worker("openai")
        front = dev.start_front()
        load = Load(front)
        assert ask(load.client, "before").status == 200
        load.start()
        wait_until(lambda: sum(o.status == 200 for o in load.outcomes) >= 10, "traffic flowing")

        killed_at = time.monotonic()
        assert group.primary.process is not None
        group.primary.process.send_signal(signal.SIGKILL)
        first = wait_until(lambda: load.first_answer_after(killed_at), "an answer after the failover", 25)
        time.sleep(1.5)  # the load goes on after the recovery: every one of those must succeed
        load.stop()
        recovery_s = first.ended - killed_at
        statuses = Counter(o.status for o in load.outcomes)
        print(f"\nSentinel failover: SIGKILL of the primary -> first 200 answer in {recovery_s:.2f} s")
        print(f"requests under load: {len(load.outcomes)}, by status: {dict(statuses)}")

        assert group.replica is not None
        # The sentinel asked first may learn of the promotion a moment after the one that did it.
        wait_until(lambda: group.master_port() == group.replica.port, "the sentinels naming the replica", 10)
        # The same processes serve again: nothing was restarted.
        assert front.process.poll() is None and worker.poll() is None
        # New unique requests go through the queue to the worker and the upstream again.
        calls_before = fake_stats(dev.upstream_url)["requests"]
        after = [ask(load.client, "after") for _ in range(5)]
        assert [(o.status, o.cache) for o in after] == [(200, "miss")] * 5
        assert fake_stats(dev.upstream_url)["requests"] >= calls_before + 5
        # Every request got an answer, 200 or an error in OpenAI's envelope, within the bound.
        outcomes = load.outcomes
        assert all(o.status is not None for o in outcomes), [o for o in outcomes if o.status is None]
        assert max(o.ended - o.started for o in outcomes) < ANSWER_BOUND_S
        failed = [o.status for o in outcomes if o.status != 200]
        assert set(failed) <= {502, 503, 504}, failed
        # Once one request is served, so is every later one (no pool keeps a dead connection).
        later = [o.status for o in outcomes if o.started > first.ended]
        assert len(later) >= 5 and set(later) == {200}, later
        assert recovery_s < 15, recovery_s

        # The keys CLI finds the new primary the same way.
        done = subprocess.run(
            [sys.executable, "-m", "edge_agent", "keys", "create", "--alias", "after-failover"],
            env=dev.env,
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr.decode()
    finally:
        if load is not None:
            load._stop.set()
        dev.stop()
        group.stop()
