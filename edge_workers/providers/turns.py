"""What the Anthropic and Bedrock request mappings share: OpenAI messages folded into a system
prompt and strictly alternating user/assistant turns (both APIs require alternation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from shared.errors import EdgeError
from shared.wire import (
    AssistantMessage,
    DeveloperMessage,
    Message,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)


class Turn(Protocol):
    @property
    def role(self) -> str: ...

    @property
    def content(self) -> list[Any]: ...


T = TypeVar("T", bound=Turn)


def texts(content: str | list[TextPart]) -> list[str]:
    return [content] if isinstance(content, str) else [p.text for p in content]


def fold_turns(
    messages: list[Message],
    turn: Callable[[int, UserMessage | AssistantMessage | ToolMessage], T],
    provider: str,
) -> tuple[list[str], list[T]]:
    """(system texts, turns): system and developer messages, wherever they appear, go to the
    system prompt (blank ones dropped); every other message becomes a turn made by `turn` (tool
    results are user turns); empty turns are skipped and consecutive same-role turns merge."""
    system: list[str] = []
    turns: list[T] = []
    for i, m in enumerate(messages):
        if isinstance(m, SystemMessage | DeveloperMessage):
            system.extend(t for t in texts(m.content) if t.strip())
            continue
        if not isinstance(m, UserMessage | AssistantMessage | ToolMessage):
            why = "the deprecated 'function' role is not supported; use tool messages"
            raise EdgeError(400, why, param=f"messages[{i}].role")
        made = turn(i, m)
        if not made.content:
            continue
        if turns and turns[-1].role == made.role:
            turns[-1].content.extend(made.content)
        else:
            turns.append(made)
    if not turns:
        why = f"{provider} needs at least one non-empty user or assistant message"
        raise EdgeError(400, why, param="messages")
    return system, turns
