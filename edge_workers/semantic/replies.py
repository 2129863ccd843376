"""A semantic cache hit as the replies a front waits for: the cached completion, or for a
streaming client the chunks OpenAI would have sent (as the front replays its own hits), all
marked `hit-semantic` so the front says so in x-edge-cache."""

from __future__ import annotations

import msgspec

from shared.chunks import replay_chunks
from shared.queue import Job, Reply

TIER = "hit-semantic"
_encode = msgspec.json.Encoder().encode


def hit_replies(job: Job, completion: bytes) -> list[Reply] | None:
    """None when the cached entry is not a chat completion (then the job goes upstream)."""
    if not job.stream:
        return [Reply(job.job_id, body=completion, cache=TIER)]
    try:
        chunks = replay_chunks(completion, include_usage=True)  # the front drops usage if not asked
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None
    replies = [
        Reply(job.job_id, kind="chunk", body=_encode(chunk), usage_chunk=not chunk.choices, cache=TIER)
        for chunk in chunks
    ]
    replies.append(Reply(job.job_id, kind="done", body=completion, cache=TIER))
    return replies
