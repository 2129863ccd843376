"""The key admin API, with LiteLLM's paths and field names: /key/generate, /key/update,
/key/delete, /key/block, /key/unblock, /key/info, /key/list.

Only `EdgeApp` calls this application, and only for a request whose raw path is exactly one of
`ADMIN_PATHS` and whose key is the master key (see edge_front/app.py): a path that merely
decodes or normalizes to an admin path never gets here. Not on the hot path, so plain Starlette.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from msgspec import Struct
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared import keys
from shared.errors import error_body
from shared.json_limits import too_deep
from shared.keys import KeyError_, KeyInfo, KeyRecord
from shared.wire import json_encoder

ADMIN_PATHS = frozenset(
    {
        b"/key/generate",
        b"/key/update",
        b"/key/delete",
        b"/key/block",
        b"/key/unblock",
        b"/key/info",
        b"/key/list",
    }
)
_MAX_ADMIN_BODY = 1 << 20
_JSON = "application/json"
T = TypeVar("T")


class GeneratedKey(KeyRecord, kw_only=True):
    key: str  # the whole key: in this answer only, never stored or shown again


class KeyRef(Struct, forbid_unknown_fields=True):
    key: str  # a whole key or its public id


class DeleteKeys(Struct, forbid_unknown_fields=True):
    keys: list[str]  # whole keys or public ids


class DeletedKeys(Struct):
    deleted_keys: list[str]  # public ids


class KeyInfoAnswer(Struct):
    key: str  # the public id, never the secret
    info: KeyInfo


class KeyList(Struct):
    keys: list[KeyRecord]
    total_count: int
    current_page: int
    total_pages: int


def json_response(value: object, status: int = 200) -> Response:
    return Response(json_encoder.encode(value), status, media_type=_JSON)


def fail_response(status: int, message: str, param: str | None = None) -> Response:
    return Response(error_body(status, message, param=param), status, media_type=_JSON)


async def not_found(request: Request, exc: Exception) -> Response:
    """An admin app's 404 and 405, in OpenAI's envelope."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return fail_response(
        status, f"Method {request.method} not allowed here" if status == 405 else "Not found"
    )


async def _body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > _MAX_ADMIN_BODY:
        raise KeyError_(f"Request body is larger than {_MAX_ADMIN_BODY} bytes.")
    if too_deep(body):
        raise KeyError_("Request body nests too deeply.")
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as e:
        raise KeyError_(f"Request body is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise KeyError_("Request body must be a JSON object.")
    return value


def _convert(value: Any, kind: type[T]) -> T:
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as e:
        raise KeyError_(f"Invalid request: {e}") from None


def create(redis_of: Callable[[], Redis], changed: Callable[[], Awaitable[None]]) -> Starlette:
    """The admin application; `redis_of` gives the front's Redis client once it started, and
    `changed` is awaited after every change (so this front applies it before answering)."""

    def handler(
        work: Callable[[Redis, Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                response = await work(redis_of(), request)
                if request.method == "POST":
                    await changed()
                return response
            except KeyError_ as e:
                return fail_response(404 if e.not_found else 400, str(e))
            except (RedisError, OSError, TimeoutError) as e:
                return fail_response(503, f"Redis is unavailable ({type(e).__name__}).")

        return endpoint

    async def generate(redis: Redis, request: Request) -> Response:
        key, record = await keys.create_key(redis, keys.spec_from(await _body(request)))
        return json_response(GeneratedKey(**msgspec.structs.asdict(record), key=key))

    async def update(redis: Redis, request: Request) -> Response:
        fields = await _body(request)
        ref = fields.pop("key", None)
        if not isinstance(ref, str):
            raise KeyError_("'key' (the key or its key_id) is required.")
        return json_response(await keys.update_key(redis, ref, fields))

    async def delete(redis: Redis, request: Request) -> Response:
        refs = _convert(await _body(request), DeleteKeys).keys
        for ref in refs:  # all or nothing: every key must exist before any is deleted
            await keys.resolve(redis, ref)
        return json_response(DeletedKeys([await keys.delete_key(redis, ref) for ref in refs]))

    def set_blocked(blocked: bool) -> Callable[[Redis, Request], Awaitable[Response]]:
        async def work(redis: Redis, request: Request) -> Response:
            ref = _convert(await _body(request), KeyRef).key
            return json_response(await keys.update_key(redis, ref, {"blocked": blocked}))

        return work

    async def info(redis: Redis, request: Request) -> Response:
        ref = request.query_params.get("key")
        if not ref:
            raise KeyError_("'key' (the key or its key_id) is required.")
        info = await keys.key_info(redis, ref)
        return json_response(KeyInfoAnswer(info.key_id, info))

    async def listing(redis: Redis, request: Request) -> Response:
        try:
            page = int(request.query_params.get("page", "1"))
            size = int(request.query_params.get("size", "100"))
        except ValueError:
            raise KeyError_("page and size must be integers.") from None
        if page < 1 or not 1 <= size <= 1000:
            raise KeyError_("page must be >= 1 and size 1-1000.")
        total, records = await keys.list_keys(redis, page, size)
        return json_response(KeyList(records, total, page, max(1, -(-total // size))))

    return Starlette(
        routes=[
            Route("/key/generate", handler(generate), methods=["POST"]),
            Route("/key/update", handler(update), methods=["POST"]),
            Route("/key/delete", handler(delete), methods=["POST"]),
            Route("/key/block", handler(set_blocked(True)), methods=["POST"]),
            Route("/key/unblock", handler(set_blocked(False)), methods=["POST"]),
            Route("/key/info", handler(info), methods=["GET"]),
            Route("/key/list", handler(listing), methods=["GET"]),
        ],
        exception_handlers={HTTPException: not_found},
    )
