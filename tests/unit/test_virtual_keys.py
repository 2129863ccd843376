"""Pure parts of virtual keys: the depth check, key settings validation, model matching, format."""

from __future__ import annotations

import json
import random

import pytest

from edge_front.keys import ModelMatcher
from shared.json_limits import too_deep
from shared.keys import KeyError_, hash_key, make_key, public_id_of, spec_from


def reference_depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


def random_json(rng: random.Random, depth: int) -> object:
    if depth == 0 or rng.random() < 0.2:
        return rng.choice(['a"[{', "\\", 'x\\"]', "\\\\[", 1, None, "[[[[", "}}}"])
    if rng.random() < 0.5:
        return [random_json(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}[": random_json(rng, depth - 1) for i in range(rng.randint(0, 3))}


def test_depth_matches_a_reference_whatever_the_strings_hold() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        value = random_json(rng, rng.randint(1, 12))
        body = json.dumps(value).encode()
        depth = reference_depth(value)
        for limit in (depth - 1, depth):
            if limit >= 0:
                assert too_deep(body, limit) == (depth > limit), (body, depth, limit)


@pytest.mark.parametrize("depth", [101, 5_000, 100_000])
def test_deep_bodies_are_too_deep_and_shallow_ones_are_not(depth: int) -> None:
    assert too_deep(b'{"m": ' + b"[" * depth + b"]" * depth + b"}")
    assert not too_deep(b'{"m": ' + b"[" * 99 + b"]" * 99 + b"}")
    assert not too_deep(json.dumps({"text": "[" * depth}).encode())  # brackets in a string


@pytest.mark.parametrize(
    "fields",
    [
        {"max_budget": float("inf")},
        {"max_budget": float("nan")},
        {"max_budget": -0.01},
        {"rpm_limit": -1},
        {"budget_duration": "2w"},
        {"budget_duration": "0d"},
        {"surprise": True},
        {"models": [""]},
    ],
)
def test_bad_settings_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(KeyError_):
        spec_from(fields)


def test_good_settings_are_kept() -> None:
    spec = spec_from(
        {"max_budget": 12.5, "budget_duration": "30d", "rpm_limit": 10, "expires": "2030-01-01T00:00:00"}
    )
    assert spec.max_budget == 12.5 and spec.budget_duration == "30d"
    assert spec.expires is not None and spec.expires.utcoffset() is not None  # no zone: UTC


def test_model_patterns() -> None:
    matcher = ModelMatcher(["gpt-4o*", "claude-3-5-haiku-latest"])
    assert matcher("gpt-4o") and matcher("gpt-4o-mini") and matcher("claude-3-5-haiku-latest")
    assert not matcher("gpt-4") and not matcher("claude-3-5-haiku") and not matcher("o1")
    assert ModelMatcher([])("anything") and ModelMatcher(["*"])("anything")


def test_key_format() -> None:
    public_id, key = make_key()
    assert public_id_of(key) == public_id and public_id_of(key.encode()) == public_id
    assert public_id_of("sk-edge-test-key") is None  # the test master key is no virtual key
    assert public_id_of(f"sk-edge-{public_id}-") is None
    assert len(hash_key(key)) == 64 and hash_key(key) != hash_key(key + "x")
