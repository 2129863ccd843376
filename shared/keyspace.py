"""Every Redis key the gateway uses, in one place.

arq's own keys (`arq:job:<id>`, `arq:in-progress:<id>`, `arq:retry:<id>`) are fixed by arq;
everything else lives under one prefix so operators can see and ACL it.
"""

from __future__ import annotations

from shared.arq_compat import HEALTH_CHECK_SUFFIX, IN_PROGRESS_KEY_PREFIX, JOB_KEY_PREFIX, RETRY_KEY_PREFIX

PREFIX = "edge"


def cache_entry(cache_key: str) -> str:
    """L2 cache entry (the cache key already carries its tenant scope)."""
    return f"{PREFIX}:l2:{cache_key}"


def queue(provider: str) -> str:
    """The arq queue (a sorted set) for one provider's worker pool."""
    return f"{PREFIX}:queue:{provider}"


def queue_health(provider: str) -> str:
    """arq's health-check key for a queue: present while at least one worker of it is alive."""
    return queue(provider) + HEALTH_CHECK_SUFFIX


def wake(provider: str) -> str:
    """Stream the front appends to after enqueueing, so idle workers pick up jobs at once."""
    return f"{PREFIX}:wake:{provider}"


def idle(provider: str) -> str:
    """Sorted set: the provider's idle workers' tickets (worker id scored by when it was last
    renewed, ms). A miss hands its job to the worker whose ticket it takes (edge_workers/handoff.py)."""
    return f"{PREFIX}:idle:{provider}"


def inbox(worker_id: str) -> str:
    """Pub/sub channel: the jobs handed to one worker, already claimed for it by the miss script."""
    return f"{PREFIX}:inbox:{worker_id}"


def claim_keys(provider: str, worker_id: str) -> list[str]:
    """The KEYS of a claim (shared.arq_compat.CLAIM_LUA) by the worker `worker_id` of `provider`."""
    return [
        queue(provider),
        IN_PROGRESS_KEY_PREFIX,
        running(worker_id),
        wake(provider),
        JOB_KEY_PREFIX,
        RETRY_KEY_PREFIX,
        idle(provider),
    ]


def replies(front_id: str) -> str:
    """Stream a front process reads its answers from; one per front process, not per request."""
    return f"{PREFIX}:reply:{front_id}"


def cancels(provider: str) -> str:
    """Pub/sub channel on which fronts name the jobs whose clients went away."""
    return f"{PREFIX}:cancel:{provider}"


def breaker(deployment_id: str) -> str:
    """Hash: a deployment's circuit-breaker state and its upstream latency EWMA."""
    return f"{PREFIX}:breaker:{deployment_id}"


def epoch() -> str:
    """String: a token the first process to find it missing sets (SET NX), and every process
    reads on its heartbeat or refresh. A different token means Redis lost its data (restarted
    empty, or failed over to a replica that had not caught up): see edge_front/lost_jobs.py and
    edge_workers/recovery.py. One fixed key, no expiry."""
    return f"{PREFIX}:epoch"


def served(provider: str) -> str:
    """Counter of answers a provider's workers finished (the service rate, for Retry-After)."""
    return f"{PREFIX}:served:{provider}"


def workers(provider: str) -> str:
    """Sorted set: the provider's worker ids scored by their last heartbeat (ms)."""
    return f"{PREFIX}:workers:{provider}"


def load(provider: str) -> str:
    """Hash: worker id -> how many jobs it holds (running jobs stay in arq's queue until done)."""
    return f"{PREFIX}:load:{provider}"


def missing_keys(provider: str) -> str:
    """Hash: worker id -> the key variables it found unset (space-separated; empty if none)."""
    return f"{PREFIX}:nokey:{provider}"


def running(worker_id: str) -> str:
    """Set: the job ids a worker holds, so another can take them over if it dies."""
    return f"{PREFIX}:running:{worker_id}"


def stream_started(job_id: str) -> str:
    """Marker: a streamed answer already sent chunks (a re-run would repeat them)."""
    return f"{PREFIX}:started:{job_id}"


def usage(deployment_id: str, unix_time: float) -> str:
    """Hash: a deployment's requests (`r`) and tokens (`t`) in the minute holding `unix_time`,
    for its rpm/tpm limits (edge_front/deployment_limits.py)."""
    return f"{PREFIX}:usage:{deployment_id}:{int(unix_time // 60)}"


def key_record(public_id: str) -> str:
    """Hash: a virtual key's record JSON (`record`) and the SHA-256 of the whole key (`hash`)."""
    return f"{PREFIX}:key:{public_id}"


def key_index() -> str:
    """Sorted set: every virtual key's public id, scored by creation time (for listing)."""
    return f"{PREFIX}:keys"


def keys_version() -> str:
    """Counter bumped on every key change: fronts poll it to notice one (edge_front/keys.py)."""
    return f"{PREFIX}:keys:version"


def key_changes() -> str:
    """Stream (trimmed): the public id and new version of every key change, so fronts reload only
    what changed."""
    return f"{PREFIX}:keys:changes"


def deleted_keys() -> str:
    """Sorted set: public ids of deleted keys (their tombstones), scored by deletion time and
    trimmed to the tombstones' lifetime."""
    return f"{PREFIX}:keys:deleted"


def key_rpm(public_id: str, window: int) -> str:
    """Counter: a virtual key's upstream-bound requests in one rpm window (shared/admission.py)."""
    return f"{PREFIX}:krpm:{public_id}:{window}"


def key_parallel(public_id: str) -> str:
    """Sorted set: a virtual key's in-flight slots (requests gone upstream, of a key with a
    parallel, tpm or budget limit), scored by when each expires on its own; a slot names what
    its request reserved, `<job id>:<tokens>:<usd>` (shared/admission.py)."""
    return f"{PREFIX}:kpar:{public_id}"


def key_tpm(public_id: str, window: int) -> str:
    """Counter: tokens a virtual key's answers used in one tpm window (the rpm windows' length)."""
    return f"{PREFIX}:ktpm:{public_id}:{window}"


def key_spend(public_id: str, period: str) -> str:
    """Hash: a virtual key's spend (USD), requests and tokens in one budget period (`life` for a
    key without a budget_duration; see shared.keys.budget_period)."""
    return f"{PREFIX}:kspend:{public_id}:{period}"


def outcomes(provider: str) -> str:
    """Stream (capped, ~1000 entries): the provider's recent job outcomes (time, request id,
    model, deployment, status, latency, redacted error), written by workers with each job's
    answer, read by the operator dashboard (edge_front/dashboard/)."""
    return f"{PREFIX}:outcomes:{provider}"


def admin_actions() -> str:
    """Stream (capped): the operator actions taken through /admin/* (who, what, on what), so
    every front's dashboard lists the same ones."""
    return f"{PREFIX}:admin:actions"


def flight(cache_key: str) -> str:
    """String `<job id> <deadline ms>`: the job now calling upstream for this cache key, which
    identical misses from any front join instead of calling again (shared/flights.py). Lives
    as long as the job's key; deleted with the job's last publication or its cancel."""
    return f"{PREFIX}:flight:{cache_key}"


def flight_followers(cache_key: str) -> str:
    """Set: the requests that joined a flight, `<reply stream> <wait id>` each; every reply of
    the flight's job is also appended to each one's reply stream."""
    return f"{PREFIX}:flight:{cache_key}:f"


def flight_log(cache_key: str) -> str:
    """Stream: a streamed flight's chunks so far, copied to a request that joins it late."""
    return f"{PREFIX}:flight:{cache_key}:log"


def cache_version() -> str:
    """Counter bumped on every cache deletion through /cache/delete, numbering its stream entries."""
    return f"{PREFIX}:cache:version"


def cache_deletes() -> str:
    """Stream (trimmed): the cache keys or namespaces /cache/delete removed, with their version;
    every front polls it and drops them from its L1 (edge_front/cache_admin.py)."""
    return f"{PREFIX}:cache:deletes"


def semantic_vectors() -> str:
    """Stream: one entry per answer the semantic cache may serve again (its vector, partition,
    guard features and L2 cache key; never the prompt's text). Workers append in the round trip
    that publishes the answer and every semantic-enabled worker tails it. Trimmed by approximate
    MINID to the L2 TTL on each append."""
    return f"{PREFIX}:semantic"
