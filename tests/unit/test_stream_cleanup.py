"""A streamed request cleans up on every path: the reply waiter is forgotten, the disconnect
watcher stops, and a job nobody will read is cancelled; once the response started, a failure
ends the stream with an error event, never a bare 500."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from edge_front import attempt
from edge_front.http import ClientDisconnected
from edge_front.l1 import L1Cache
from edge_front.replies import ReplyRouter
from edge_front.streams import LiveStream, relay
from shared.miss_script import MissResult
from shared.queue import Job, Reply


class FakeState:
    """What `relay` and `_start_stream` use of FrontState; `cancel` records instead of Redis."""

    def __init__(self) -> None:
        self.replies = ReplyRouter(redis=None, stream="edge:reply:test")  # type: ignore[arg-type]
        self.l1 = L1Cache(10, 1 << 20, 60)
        self.cancelled: list[str] = []

    async def cancel(self, job: Job) -> None:
        self.cancelled.append(job.job_id)


def job(deadline_s: float = 30) -> Job:
    return Job(
        "j1", "r1", "edge:reply:test", "openai", "d", "m", b"{}", time.time() + deadline_s, stream=True
    )


def miss(stream: bool = True) -> attempt.Miss:
    return attempt.Miss("r1", "m", b"{}", None, stream, False, time.time() + 30)


def chunk(text: str) -> Reply:
    body = msgspec.json.encode({"choices": [{"index": 0, "delta": {"content": text}}]})
    return Reply("j1", kind="chunk", body=body)


async def live_stream(state: FakeState, j: Job) -> LiveStream:
    replies = state.replies.expect_stream(j.job_id, j)
    watcher = asyncio.create_task(asyncio.sleep(3600))
    return LiveStream(j, replies, chunk("a"), False, None, watcher)


class Recorder:
    def __init__(self, fail_on: int | None = None, error: type[Exception] = OSError) -> None:
        self.messages: list[dict[str, Any]] = []
        self.fail_on = fail_on
        self.error = error

    async def __call__(self, message: dict[str, Any]) -> None:
        if self.fail_on is not None and len(self.messages) == self.fail_on:
            self.fail_on = None
            raise self.error("send failed")
        self.messages.append(message)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_failure_to_start_the_response_still_cleans_up() -> None:
    async def main() -> None:
        state = FakeState()
        live = await live_stream(state, job())
        assert await relay(state, live, Recorder(fail_on=0), []) == (0, 0, 0.0)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert live.watcher.cancelled()
        assert len(state.replies) == 0
        assert state.cancelled == ["j1"]  # nobody will read it: stop paying for it

    run(main())


def test_an_unexpected_failure_mid_stream_ends_it_with_an_error_event() -> None:
    async def main() -> None:
        state = FakeState()
        live = await live_stream(state, job())
        send = Recorder(fail_on=1, error=RuntimeError)  # the first chunk's write fails oddly
        live.replies.put_nowait(chunk("b"))
        await relay(state, live, send, [])  # type: ignore[arg-type]
        start, last = send.messages[0], send.messages[-1]
        assert start["type"] == "http.response.start" and start["status"] == 200
        assert last["more_body"] is False and b'"error"' in last["body"] and b"relaying" in last["body"]
        assert state.cancelled == ["j1"] and len(state.replies) == 0

    run(main())


def test_a_finished_stream_is_not_cancelled_and_its_answer_is_kept() -> None:
    async def main() -> None:
        state = FakeState()
        live = await live_stream(state, job())
        live.cache_key = "k"
        done = Reply("j1", kind="done", body=b"{}", prompt_tokens=3, completion_tokens=2, cost_usd=0.000135)
        live.replies.put_nowait(done)
        send = Recorder()
        assert await relay(state, live, send, []) == (3, 2, 0.000135)  # type: ignore[arg-type]
        # The cost, known only at the end, rides in an SSE comment (clients skip comments).
        assert send.messages[-1]["body"] == b": x-edge-cost-usd=0.000135\n\ndata: [DONE]\n\n"
        assert state.cancelled == [] and state.l1.get("k")[:2] == (b"{}", 0.000135)  # type: ignore[index]

    run(main())


def test_a_stream_past_its_deadline_ends_with_a_504_event_and_is_cancelled() -> None:
    async def main() -> None:
        state = FakeState()
        live = await live_stream(state, job(deadline_s=0.05))
        send = Recorder()
        await relay(state, live, send, [])  # type: ignore[arg-type]
        assert b"504" in send.messages[-1]["body"] or b"deadline" in send.messages[-1]["body"]
        assert state.cancelled == ["j1"]

    run(main())


def test_a_request_cancelled_while_waiting_for_its_first_chunk_cancels_its_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def submitted(state: object, m: object, j: Job) -> MissResult:
        return MissResult(job=j)

    monkeypatch.setattr(attempt, "_submit", submitted)

    async def main() -> None:
        state = FakeState()

        async def never_disconnects() -> dict[str, Any]:
            await asyncio.sleep(3600)
            return {}

        task = asyncio.create_task(
            attempt._start_stream(state, miss(), job(), never_disconnects)  # type: ignore[arg-type]
        )
        for _ in range(100):  # until it waits for its first reply
            if len(state.replies):
                break
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert state.cancelled == ["j1"] and len(state.replies) == 0

    run(main())


def test_a_client_leaving_before_the_first_chunk_cancels_its_job(monkeypatch: pytest.MonkeyPatch) -> None:
    async def submitted(state: object, m: object, j: Job) -> MissResult:
        return MissResult(job=j)

    monkeypatch.setattr(attempt, "_submit", submitted)

    async def main() -> None:
        state = FakeState()

        async def disconnects() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        with pytest.raises(ClientDisconnected):
            await attempt._start_stream(state, miss(), job(), disconnects)  # type: ignore[arg-type]
        assert state.cancelled == ["j1"] and len(state.replies) == 0

    run(main())


def test_a_non_streamed_client_leaving_cancels_its_job(monkeypatch: pytest.MonkeyPatch) -> None:
    async def submitted(state: object, m: object, j: Job) -> MissResult:
        return MissResult(job=j)

    monkeypatch.setattr(attempt, "_submit", submitted)

    async def main() -> None:
        state = FakeState()
        left = asyncio.Event()

        async def disconnects() -> dict[str, Any]:
            await left.wait()
            return {"type": "http.disconnect"}

        plain = msgspec.structs.replace(job(), stream=False)
        task = asyncio.create_task(attempt._ask(state, miss(False), plain, disconnects))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        assert state.cancelled == []  # waiting for its answer
        left.set()
        with pytest.raises(ClientDisconnected):
            await task
        assert state.cancelled == ["j1"] and len(state.replies) == 0

    run(main())


def test_a_follower_leaving_leaves_its_flight_and_cancels_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    async def joined(state: object, m: object, j: Job) -> MissResult:
        return MissResult(leader="j0", leader_deadline=time.time() + 30)

    monkeypatch.setattr(attempt, "_submit", joined)

    async def main() -> None:
        state = FakeState()
        left: list[tuple[str, str]] = []

        async def leave(cache_key: str, member: str) -> None:
            left.append((cache_key, member))

        state.leave = leave  # type: ignore[attr-defined]

        async def disconnects() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        following = attempt.Miss("r1", "m", b"{}", "v1:ns:k", False, False, time.time() + 30, flight=True)
        with pytest.raises(ClientDisconnected):
            await attempt._ask(state, following, job(), disconnects)  # type: ignore[arg-type]
        assert left == [("v1:ns:k", "edge:reply:test j1")] and state.cancelled == []

    run(main())
