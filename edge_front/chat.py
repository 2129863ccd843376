"""POST /v1/chat/completions: validate, look in L1, then in one round trip L2 or the queue.

Redis round trips per request: L1 hit 0; L2 hit 1; miss 1: the miss script
(shared/miss_script.py) returns the L2 entry, or joins an identical request in flight
(shared/flights.py), or admits the virtual key and enqueues the job. With the L2 cache in its
own Redis (CACHE_REDIS_URL), a GET there comes first: 2. The shared reply reader's XREAD is
amortized over every waiting request. A streamed miss is the same, its chunks arriving through
the same reader."""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import msgspec
from starlette.types import Receive, Scope, Send

from edge_front import access_log, metrics
from edge_front import tracing as front_tracing
from edge_front.access_log import RequestFacts
from edge_front.apis import Api, Parsed, parse_json
from edge_front.attempt import L2Hit, Miss
from edge_front.cache_lookup import evict, l1_get, l2_get, lookup, took_l2
from edge_front.dispatch import Served, dispatch
from edge_front.http import ClientDisconnected, header_map, read_body, request_id_of, send_json
from edge_front.keys import Identity
from edge_front.state import FrontState
from edge_front.streams import CHAT_SSE, LiveStream, relay, replay_body, send_sse
from shared import tracing
from shared.admission import KeyLimits
from shared.cache_keys import cache_key
from shared.cache_policy import decide, strip_body_field
from shared.config import MAX_ROUTED_MODELS, Deployment
from shared.costs import format_usd
from shared.embeddings_wire import EMBEDDINGS_API
from shared.errors import EdgeError
from shared.keys import budget_period
from shared.queue import KeyCharge, Reply
from shared.routing import is_retryable
from shared.wire import ChatCompletionRequest

log = logging.getLogger("edge.front")


def parse_chat_request(body: bytes) -> tuple[dict[str, Any], ChatCompletionRequest]:
    return parse_json(body, ChatCompletionRequest)


def _parse_chat(body: bytes) -> Parsed:
    raw, chat = parse_chat_request(body)
    stream = bool(chat.stream)
    include_usage = bool(stream and chat.stream_options and chat.stream_options.include_usage)
    return Parsed(chat.model, raw, stream, include_usage, lambda: chat)


CHAT = Api("chat", _parse_chat, replay_body, lambda status, body: body, CHAT_SSE)


Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]
_MISS = (b"x-edge-cache", b"miss")
_JOINED = (b"x-edge-cache", b"joined")
# Hit headers per (tier, deployment): built once, not per hit. Bounded by the deployments served
# (without a config file, by the models asked for: cleared if it ever grows past that).
_hit_headers: dict[tuple[str, str], list[tuple[bytes, bytes]]] = {}


def _hit_headers_for(source: str, deployment: Deployment) -> list[tuple[bytes, bytes]]:
    """A hit says which deployment its model routes to, as a miss does (x-edge-attempts 0)."""
    headers = _hit_headers.get((source, deployment.id))
    if headers is None:
        if len(_hit_headers) > 4 * MAX_ROUTED_MODELS:
            _hit_headers.clear()
        headers = [
            (b"x-edge-cache", source.encode()),
            (b"x-edge-cost-usd", b"0"),  # a hit costs nothing upstream (its saving is a metric)
            *_deployment_headers(deployment, deployment.model, 0),
        ]
        _hit_headers[(source, deployment.id)] = headers
    return headers


class Replay(msgspec.Struct):
    """A cached completion, already made into the SSE body for a streaming client."""

    body: bytes
    headers: list[tuple[bytes, bytes]]
    source: str


async def chat_completions(
    state: FrontState, scope: Scope, receive: Receive, send: Send, identity: Identity, api: Api = CHAT
) -> None:
    """POST /v1/chat/completions as a plain ASGI handler (see `edge_front.http` for why), for a
    caller `EdgeApp` already identified; with `api`, another API's requests the same way
    (edge_front/messages.py: Anthropic's Messages API)."""
    started = time.perf_counter()
    headers = header_map(scope)
    request_id = request_id_of(headers) or "req_" + state.new_id()
    base = [(b"x-request-id", request_id.encode())]
    labels = RequestFacts()
    metrics.ACTIVE.inc()
    try:
        result = await _handle(state, receive, headers, request_id, labels, identity, api)
    except EdgeError as e:
        result = _error(e, request_id, labels)
    except ClientDisconnected:
        metrics.ACTIVE.dec()
        return
    except Exception:
        # The client gets an envelope, never a traceback; the log gets the traceback.
        log.exception("request %s: unexpected error", request_id, extra={"request_id": request_id})
        result = _error(EdgeError(500, "The gateway failed to handle this request."), request_id, labels)
    building = front_tracing.response_build() if tracing.ON else None
    try:
        if isinstance(result, LiveStream):
            status = 200
            result.started = started
            metrics.STREAMS.labels("upstream").inc()
            tier = _JOINED if result.follow is not None else _tier_header(result.first.cache)
            result.framing = api.framing
            prompt, completion, labels.cost_usd = await relay(
                state, result, send, [*base, tier, *result.headers]
            )
            if result.follow is None:  # a joined stream's tokens are counted where it was asked
                _count_tokens(labels, prompt, completion)
            else:
                labels.cost_usd = 0.0
        elif isinstance(result, Replay):
            status = 200
            metrics.STREAMS.labels(result.source).inc()
            await send_sse(send, [*base, *result.headers], result.body)
        else:
            status, body, extra = result
            if status >= 400:
                body = api.error(status, body)
            await send_json(send, status, body, [*base, *extra])
    finally:
        metrics.ACTIVE.dec()
        if building is not None:
            building.end()
    elapsed_ms = (time.perf_counter() - started) * 1000
    if labels.then is not None:
        labels.then()
    model = metrics.model_label(labels.model)
    if labels.tokens:
        metrics.TOKENS.labels(labels.provider, model, "prompt").inc(labels.prompt_tokens)
        metrics.TOKENS.labels(labels.provider, model, "completion").inc(labels.completion_tokens)
    metrics.REQUESTS.labels(labels.provider, model, str(status)).inc()
    metrics.DURATION.labels(labels.provider, model, labels.cache).observe(elapsed_ms)
    if state.settings.access_log:  # off, this check is all the access log costs
        access_log.write(state.settings, request_id, identity.key_id, labels, status, elapsed_ms)
    if tracing.ON:
        front_tracing.request_facts(request_id, identity.key_id, labels)


async def _handle(
    state: FrontState,
    receive: Receive,
    headers: dict[bytes, bytes],
    request_id: str,
    labels: RequestFacts,
    identity: Identity,
    api: Api,
) -> Answer | LiveStream | Replay:
    body = await read_body(receive, headers, state.settings.max_body_bytes)
    timeout_s = _timeout_s(headers, state.settings.request_timeout_s)
    deadline = time.time() + timeout_s
    parsed = api.parse(body)
    model, stream, include_usage = parsed.model, parsed.stream, parsed.include_usage
    if not identity.allows(model):  # before routing: whether the model exists is not its business
        raise EdgeError(
            403, f"This key may not use the model '{model}'.", param="model", code="model_not_allowed"
        )
    group = state.models.group(model)
    if not group:
        raise EdgeError(404, f"The model '{model}' does not exist or is not served here.", param="model")
    # Only routed models become label values (and those bounded: see `metrics.ModelLabels`).
    labels.provider, labels.model = group[0].provider, model
    local = await api.local(state, parsed, group[0]) if api.local is not None else None
    if local is not None:  # answered by the front itself (a token count)
        labels.cache, labels.deployment = "none", group[0].id
        return 200, local, _deployment_headers(group[0], model, 0)
    forwarded = {name.decode(): headers[name].decode("latin-1") for name in api.forwarded if name in headers}
    settings = state.settings
    # LiteLLM's body field `cache` is the gateway's to read: never sent upstream, never keyed.
    body_field, body = strip_body_field(parsed.raw, body)
    policy = state.models.cache_policy(model)
    sampled = api.name != EMBEDDINGS_API
    decision = decide(policy, parsed.raw, headers, body_field, settings.cache_max_ttl_s, sampled)
    key = cache_key(parsed.raw, identity.namespace, api.name, forwarded)
    oldest = None if decision.max_age_s is None else time.time() - decision.max_age_s
    # With L2 in the queue's Redis, the miss script looks there (one round trip for a miss).
    script_lookup = decision.lookup and settings.enable_l2_cache and not settings.cache_redis
    if decision.lookup:
        if tracing.ON:
            hit = await front_tracing.cache_lookup(
                state,
                key,
                lambda state, key: l1_get(state, key, oldest),
                lambda state, key: l2_get(state, key, oldest),
                l2=not script_lookup,
            )
        else:
            hit = await lookup(state, key, oldest, l2=not script_lookup)
        if hit is not None:
            answer = await _from_cache(state, key, hit, group[0], parsed, api, labels, request_id)
            if answer is not None:
                return answer
    labels.cache = "miss"
    write_key = key if decision.store else None
    client_deadline = timeout_s < settings.request_timeout_s
    terms = _key_terms(identity, settings.key_window_s, time.time()) if api.charged else (None, None)
    miss = Miss(
        request_id,
        model,
        body,
        write_key,
        stream,
        include_usage,
        deadline,
        client_deadline,
        identity.key_id,
        *terms,
        lookup=script_lookup,
        lookup_key=key,
        # Only a request that may be served from the cache may be served another's answer.
        flight=write_key is not None and decision.lookup and settings.single_flight,
        api=api.name,
        upstream_headers=forwarded or None,
        # The workers' semantic cache too (it does not know its entries' ages: max-age skips it).
        skip_lookup=not decision.lookup or oldest is not None,
        cache_ttl_s=decision.ttl_s,
        oldest=oldest,
    )
    if miss.limits is not None and miss.limits.reserves:
        await state.estimator.ready()
        miss.estimate = parsed.tokens(state.estimator, settings.reserve_completion_tokens)
        miss.limits.reserve_tokens = sum(miss.estimate)
    served = await dispatch(state, miss, receive)
    if isinstance(served.result, L2Hit):
        hit = took_l2(state, key, served.result.entry)
        answer = await _from_cache(state, key, hit, group[0], parsed, api, labels, request_id)
        if answer is not None:
            return answer
        labels.cache, miss.lookup = "miss", False
        served = await dispatch(state, miss, receive)  # the entry was unreadable: go upstream
        assert not isinstance(served.result, L2Hit)
    labels.provider, labels.deployment, labels.attempts = (
        served.deployment.provider,
        served.deployment.id,
        served.attempts,
    )
    if served.joined:
        labels.cache = "joined"
        metrics.CACHE_HITS.labels("joined").inc()
    served_headers = _served_headers(served, model)
    if miss.limits is not None:
        served_headers.extend(miss.limits.headers)  # x-ratelimit-*: the key's rpm and tpm window
    if isinstance(served.result, LiveStream):
        served.result.headers = served_headers
        if not served.joined:
            labels.cache = served.result.first.cache
        return served.result
    reply = served.result
    if not served.joined:
        labels.cache = reply.cache  # "hit-semantic" when a worker's semantic cache answered
    if reply.status == 200:
        if write_key is not None:  # once the response is written: it need not wait for this
            args = (write_key, reply.body, reply.cost_usd)
            labels.then = (
                functools.partial(front_tracing.cache_write, state.l1, *args, decision.ttl_s)
                if tracing.ON
                else functools.partial(state.l1.set, *args, ttl_s=decision.ttl_s)
            )
        if served.joined:  # another request's upstream call: its tokens and cost are counted there
            if stream:
                return Replay(api.replay(reply.body, include_usage), [_JOINED, *served_headers], "joined")
            return 200, reply.body, [_JOINED, (b"x-edge-cost-usd", b"0"), *served_headers]
        _count_tokens(labels, reply.prompt_tokens, reply.completion_tokens)
        labels.cost_usd = reply.cost_usd
    return _answer(reply, served_headers)


async def _from_cache(
    state: FrontState,
    key: str,
    hit: tuple[str, bytes, float],
    deployment: Deployment,
    parsed: Parsed,
    api: Api,
    labels: RequestFacts,
    request_id: str,
) -> Answer | Replay | None:
    """A cached answer as the response; None (and the entry evicted) if it is unreadable."""
    labels.cache, labels.deployment = hit[0], deployment.id
    headers = _hit_headers_for(hit[0], deployment)
    if hit[2]:  # seconds since it was stored (unknown for entries written before store times)
        headers = [*headers, (b"age", b"%d" % max(0, int(time.time() - hit[2])))]
    if not parsed.stream:
        return 200, hit[1], headers
    try:
        replay = api.replay(hit[1], parsed.include_usage)
        return Replay(replay, headers, hit[0])
    except (msgspec.DecodeError, ValueError):
        # Not a chat completion (written by an older, less careful version): a miss, and gone
        # from both tiers so nobody is served it again.
        log.warning(
            "request %s: dropped an unreadable cache entry", request_id, extra={"request_id": request_id}
        )
        await evict(state, key)
        return None


def _key_terms(identity: Identity, window_s: int, now: float) -> tuple[KeyCharge | None, KeyLimits | None]:
    """Where a virtual key's usage is booked, and what admission checks when the key has limits
    or a budget (None for the master key and unlimited keys: they enqueue as before)."""
    if identity.key_id is None:
        return None, None
    period, ends = budget_period(identity.created_at, identity.period_s, now)
    charge = KeyCharge(period, ends, window_s if identity.tpm_limit is not None else 0)
    limited = (identity.rpm_limit, identity.max_parallel, identity.tpm_limit, identity.max_budget)
    if all(limit is None for limit in limited):
        return charge, None
    name = identity.alias or identity.key_id
    return charge, KeyLimits(
        identity.key_id,
        name,
        rpm=identity.rpm_limit,
        parallel=identity.max_parallel,
        window_s=window_s,
        tpm=identity.tpm_limit,
        budget=identity.max_budget,
        charge=charge,
    )


def _timeout_s(headers: dict[bytes, bytes], limit: float) -> float:
    """The request's own deadline (x-edge-timeout, seconds), never beyond the configured one."""
    given = headers.get(b"x-edge-timeout")
    if given is None:
        return limit
    try:
        value = float(given)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise EdgeError(400, "x-edge-timeout must be a positive number of seconds.", param="x-edge-timeout")
    return min(value, limit)


def _served_headers(served: Served, model: str) -> list[tuple[bytes, bytes]]:
    return _deployment_headers(served.deployment, model, served.attempts)


def _deployment_headers(deployment: Deployment, model: str, attempts: int) -> list[tuple[bytes, bytes]]:
    upstream_model = model if deployment.model == "*" else deployment.model
    return [
        (b"x-edge-provider", deployment.provider.encode()),
        (b"x-edge-model", upstream_model.encode()),
        (b"x-edge-attempts", str(attempts).encode()),
    ]


def _answer(reply: Reply, served: list[tuple[bytes, bytes]]) -> Answer:
    extra = [_tier_header(reply.cache), *served]
    if reply.status == 200:
        extra.append((b"x-edge-cost-usd", format_usd(reply.cost_usd)))
    if reply.retry_after is not None:
        extra.append((b"retry-after", f"{reply.retry_after:g}".encode()))
    if is_retryable(reply.status):
        extra.append((b"x-should-retry", b"false"))  # the gateway already retried what was worth it
    return reply.status, reply.body, extra


def _tier_header(tier: str) -> tuple[bytes, bytes]:
    """x-edge-cache of an answer a worker sent: a miss, or a hit of the worker's semantic cache."""
    return _MISS if tier == "miss" else (b"x-edge-cache", tier.encode())


def _count_tokens(labels: RequestFacts, prompt: int, completion: int) -> None:
    """Counted in the metrics once the response is written (`chat_completions`)."""
    labels.tokens, labels.prompt_tokens, labels.completion_tokens = prompt + completion, prompt, completion


def _error(error: EdgeError, request_id: str, labels: RequestFacts) -> Answer:
    if error.status >= 500:
        log.warning(
            "request %s: %d %s",
            request_id,
            error.status,
            error.message,
            extra={
                "request_id": request_id,
                "status": error.status,
                "provider": labels.provider or None,
                "model": labels.model or None,
            },
        )
    return error.status, error.body(), [(k.encode(), v.encode()) for k, v in error.headers.items()]
