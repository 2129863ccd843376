"""A YAML config file read with the line and column of every value, so errors can point at them."""

from __future__ import annotations

import re
from pathlib import Path as FilePath
from typing import Any

import yaml

Path = tuple[str | int, ...]  # ("model_list", 0, "litellm_params", "model")

_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


class SourceError(Exception):
    """The file cannot be read or is not YAML (message ready to show)."""


class Source:
    """The parsed document plus where each path starts in the file."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data: Any = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SourceError(f"{name} is not valid YAML: {' '.join(str(e).split())}") from None
        self._marks: dict[Path, tuple[int, int]] = {}
        if node is not None:
            self._record(node, ())

    @classmethod
    def read(cls, path: str) -> Source:
        try:
            text = FilePath(path).read_text()
        except OSError as e:
            raise SourceError(f"cannot read {path}: {e.strerror}") from None
        return cls(path, text)

    def _record(self, node: yaml.Node, path: Path) -> None:
        # A mapping entry is marked at its key (where a reader looks for it), a list item at itself.
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, str(key.value))
                self._marks[child] = (key.start_mark.line + 1, key.start_mark.column + 1)
                self._record(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._marks[(*path, i)] = (item.start_mark.line + 1, item.start_mark.column + 1)
                self._record(item, (*path, i))

    def where(self, path: Path) -> str:
        """`file:line:col` of `path`, or of its nearest ancestor present in the file."""
        for n in range(len(path), 0, -1):
            mark = self._marks.get(path[:n])
            if mark is not None:
                return f"{self.name}:{mark[0]}:{mark[1]}"
        return self.name


def dotted(path: Path) -> str:
    """("model_list", 0, "model") -> "model_list[0].model"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def parse_dotted(text: str) -> Path:
    """msgspec's `$.model_list[0].model` (or `model_list[0].model`) back into a path."""
    text = text.removeprefix("$")
    if text and not text.startswith((".", "[")):
        text = "." + text
    return tuple(int(idx) if idx else name for name, idx in _SEGMENT.findall(text))


class PathError(Exception):
    """A refusal about one place in the file; the loader adds the file, line and column."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
