"""A worker's hand-off ticket (edge_workers/handoff.py): when it goes out, when it is renewed,
and that a draining worker puts none out again."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from edge_workers import handoff
from edge_workers.handoff import Inbox, Ticket, handed_job
from shared import keyspace
from shared.arq_compat import WORKER_STATE_TTL_S


def listening() -> Ticket:
    ticket = Ticket("openai", "w1")
    ticket.listening = True
    return ticket


def test_a_ticket_goes_out_only_while_the_inbox_listens_and_two_slots_are_free() -> None:
    ticket = Ticket("openai", "w1")
    assert ticket.renewal(free=10) == ()  # not subscribed yet: a job it brought would be lost
    ticket.listening = True
    assert ticket.renewal(free=1) == ()  # one slot: kept for the wake stream's jobs
    zadd, expire = ticket.renewal(free=2)
    assert zadd[:2] == ("ZADD", keyspace.idle("openai")) and zadd[3] == "w1"
    assert ticket.out
    # The set expires with its tickets: the miss that took the last one deleted it, and a
    # worker that dies before its next heartbeat must not leave it behind for good.
    assert expire == ("EXPIRE", keyspace.idle("openai"), WORKER_STATE_TTL_S)


def test_a_ticket_out_is_renewed_once_a_renewal_period_and_again_at_once_when_spent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(handoff.time, "monotonic", lambda: now[0])
    ticket = listening()
    assert ticket.renewal(free=5) != ()
    assert ticket.renewal(free=5) == ()
    now[0] += handoff.TICKET_RENEW_S
    assert ticket.renewal(free=5) != ()  # still idle: renewed, so it stays fresh
    ticket.spent()
    assert not ticket.out and ticket.renewal(free=5) != ()  # a job took it: out again


def test_a_withdrawn_ticket_never_goes_out_again() -> None:
    ticket = listening()
    ticket.renewal(free=5)
    assert ticket.withdraw() == ("ZREM", keyspace.idle("openai"), "w1")
    assert not ticket.out and ticket.renewal(free=5) == ()


def test_an_inbox_message_is_the_job_claimed_for_this_worker() -> None:
    data = b"\x85arq job data with spaces \x00"
    job = handed_job(b"job1 1700000000123 2 " + data)
    assert (job.job_id, job.score, job.job_try, job.data) == ("job1", 1700000000123, 2, data)


async def test_an_inbox_the_primary_does_not_see_subscribes_again() -> None:
    """After a failover the inbox may still be subscribed on the demoted primary: the check
    against the primary (PUBSUB NUMSUB there says 0) closes it, so `listen` subscribes anew, and
    no ticket goes out meanwhile."""
    ticket = listening()
    inbox = Inbox(Redis(), ticket, lambda job: None)
    closed: list[bool] = []

    async def aclose() -> None:
        closed.append(True)

    inbox._lean.aclose = aclose  # type: ignore[method-assign]
    await inbox.check([inbox.channel.encode(), 1])
    assert ticket.listening and closed == []
    await inbox.check([inbox.channel.encode(), 0])
    assert not ticket.listening and closed == [True]
    assert ticket.renewal(free=5) == ()
