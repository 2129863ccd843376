"""A cheap nesting-depth check for JSON bodies, run before they are decoded.

msgspec has no depth limit of its own: it recurses, so a body nested thousands of levels deep
raises RecursionError (a 500 before this check existed), and one just shallow enough to decode
would still be handed to workers and adapters that walk it recursively. The check works on
bytes with C-speed `bytes` methods only (no per-character Python loop): well under a
microsecond for an ordinary 1 KB chat body, which never takes the slow path at all.
"""

from __future__ import annotations

# Deep enough for any real request (a structured-output JSON schema nests ~3 levels per object
# level, and OpenAI caps those at 10), shallow enough that no decoder or adapter comes near the
# interpreter's recursion limit.
MAX_JSON_DEPTH = 100

# Keep only brackets and quotes, with `{`/`}` folded into `[`/`]`: depth does not care which
# kind of bracket nests (a mismatched pair is invalid JSON the decoder refuses anyway).
_KEEP = {ord("["): b"[", ord("{"): b"[", ord("]"): b"]", ord("}"): b"]", ord('"'): b'"'}
_TABLE = bytes(_KEEP.get(i, b"\0")[0] for i in range(256))
_DELETE = bytes(i for i in range(256) if i not in _KEEP)


def too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `body`'s arrays and objects nest more than `limit` levels (brackets inside
    strings do not count). Exact for valid JSON; for invalid JSON it may say either, and the
    decoder refuses that body anyway."""
    if body.count(b"[") + body.count(b"{") <= limit:  # the common case: cannot be that deep
        return False
    if b"\\" in body:  # escaped backslashes, then escaped quotes: every `"` left delimits a string
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = body.translate(_TABLE, _DELETE)
    skeleton = b"".join(skeleton.split(b'"')[::2])  # drop what strings hold
    # Each pass removes every innermost (empty) pair, i.e. exactly one level of nesting; after
    # `done` passes, a run of `limit + 1 - done` openers proves the depth (the usual attack,
    # `[[[[...`, is found by one scan, before any pass).
    for done in range(limit + 1):
        if not skeleton:
            return False
        if b"[" * (limit + 1 - done) in skeleton:
            return True
        skeleton = skeleton.replace(b"[]", b"")
    return True
