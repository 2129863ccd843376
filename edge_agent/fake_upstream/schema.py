"""A deterministic JSON value that satisfies a JSON Schema, for structured output and tool calls.

Covers what clients send in practice (pydantic models through the OpenAI SDK's `parse()`, tool
parameter schemas): objects with their required properties, strings (with the common formats
and length bounds), numbers and integers within their bounds, booleans, null, arrays within
their item counts, enums, consts, `anyOf`/`oneOf` (the first non-null branch), `allOf` (merged)
and local `$ref`s into `$defs`/`definitions`. It does not search: `pattern`, `not`, `multipleOf`
and conditional schemas are ignored.
"""

from __future__ import annotations

from typing import Any

# Past this depth an optional branch is left out, so a recursive schema (a tree of nodes) ends.
_MAX_DEPTH = 6

_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
    "duration": "PT1S",
}


def instance(schema: Any, text: str) -> Any:
    """A value valid against `schema`; strings are filled from `text` (a snippet of the prompt)."""
    return _Builder(schema, text.strip()[:20] or "text").value(schema, 0)


class _Builder:
    def __init__(self, root: Any, snippet: str) -> None:
        self.root = root
        self.snippet = snippet

    def resolve(self, schema: dict[str, Any]) -> Any:
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#"):
            return schema
        target: Any = self.root
        for part in ref[1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            return {}
        rest = {k: v for k, v in schema.items() if k != "$ref"}  # siblings of $ref still apply
        return {**target, **rest} if rest else target

    def value(self, schema: Any, depth: int) -> Any:
        if not isinstance(schema, dict):
            return self.snippet  # `true` or a missing schema: anything goes
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return self.value(self._first_not_null(options), depth)
        parts = schema.get("allOf")
        if isinstance(parts, list) and parts:
            return self.value(self._merged(schema, parts), depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "integer":
            return int(self._number(schema, 1, 1))
        if kind == "number":
            return self._number(schema, 1.5, 0.5)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self._string(schema)

    def _first_not_null(self, options: list[Any]) -> Any:
        for option in options:
            resolved = self.resolve(option) if isinstance(option, dict) else option
            if not (isinstance(resolved, dict) and resolved.get("type") == "null"):
                return option
        return options[0]

    def _merged(self, schema: dict[str, Any], parts: list[Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        properties: dict[str, Any] = dict(merged.get("properties") or {})
        required: list[str] = list(merged.get("required") or [])
        for part in parts:
            part = self.resolve(part) if isinstance(part, dict) else {}
            properties.update(part.get("properties") or {})
            required.extend(part.get("required") or [])
            merged = {**part, **merged}
        if properties:
            merged["properties"] = properties
        if required:
            merged["required"] = list(dict.fromkeys(required))
        return merged

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        required = schema.get("required")
        if isinstance(required, list):
            keys = [k for k in required if k in properties]
        else:  # nothing required: fill what is described, unless that would recurse forever
            keys = list(properties) if depth < _MAX_DEPTH else []
        return {key: self.value(properties[key], depth + 1) for key in keys}

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        low = schema.get("minItems")
        high = schema.get("maxItems")
        count = low if isinstance(low, int) and low > 0 else (1 if depth < _MAX_DEPTH else 0)
        if isinstance(high, int):
            count = min(count, high)
        return [self.value(schema.get("items"), depth + 1) for _ in range(count)]

    def _number(self, schema: dict[str, Any], preferred: float, step: float) -> float:
        value = preferred
        low, high = schema.get("minimum"), schema.get("maximum")
        low_x, high_x = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if isinstance(low, (int, float)) and value < low:
            value = low
        if isinstance(low_x, (int, float)) and value <= low_x:
            value = low_x + step
        if isinstance(high, (int, float)) and value > high:
            value = high
        if isinstance(high_x, (int, float)) and value >= high_x:
            value = high_x - step
        return value

    def _string(self, schema: dict[str, Any]) -> str:
        fmt = schema.get("format")
        value = _FORMATS.get(fmt, self.snippet) if isinstance(fmt, str) else self.snippet
        low, high = schema.get("minLength"), schema.get("maxLength")
        if isinstance(low, int) and len(value) < low:
            value = value + "x" * (low - len(value))
        if isinstance(high, int):
            value = value[:high]
        return value
