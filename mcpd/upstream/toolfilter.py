"""Per-server tool filters (`tools = { allow = [...], deny = [...] }`), sans-IO.

Theory of operation
-------------------
A filter is two lists of tool names or shell-style patterns (`fnmatch`,
case-sensitive): a tool is shown when `allow` is empty or one of its
patterns matches, and no pattern of `deny` matches (deny wins). The
multiplexer holds one filter per session and applies it at its edges, never
in what it remembers:

- every `tools/list` result on its way to an editor or to mcpd itself
  (`mcpctl tools`) loses the filtered tools (`shown`), whether it came from
  the server or from the list cache, which keeps the server's result; so a
  new filter applies at once to cached pages too;
- a `tools/call` of a filtered tool is answered by mcpd with an error that
  names the key to change (`refusal`), and never reaches the server;
- a reload that changes only the filter (`only_filter_changed`) is applied in
  place, and the attached editors are told their tool list changed.

Nothing here does I/O.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from ..config import ServerEntry

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_patterns(allow: Sequence[str], deny: Sequence[str]) -> None:
    """ValueError naming the key and the fix for a pattern that can never be meant."""
    for key, patterns in (("allow", allow), ("deny", deny)):
        for index, pattern in enumerate(patterns):
            where = f"tools.{key}[{index}]"
            if not pattern:
                raise ValueError(
                    f"{where} is empty; write a tool name or a shell-style pattern "
                    '("search_*"), or remove the entry'
                )
            if pattern != pattern.strip():
                raise ValueError(
                    f"{where} ({pattern.strip()!r}) has spaces around it, so it matches no "
                    "tool name; remove them"
                )
            if _CONTROL.search(pattern):
                raise ValueError(
                    f"{where} has a line break or another control character (a CRLF file "
                    "behind an {env:...}?)"
                )


def _compiled(patterns: Sequence[str]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(fnmatch.translate(pattern)) for pattern in patterns)


@dataclass(frozen=True)
class ToolFilter:
    """Which tools of `server` editors may see and call. The default shows all."""

    server: str = ""
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    _allow: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _deny: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allow", _compiled(self.allow))
        object.__setattr__(self, "_deny", _compiled(self.deny))

    @classmethod
    def of(cls, server: str, settings: Any) -> ToolFilter:
        """The filter of a server's `tools` settings (anything with `allow` and `deny`)."""
        return cls(server, tuple(settings.allow), tuple(settings.deny))

    @property
    def active(self) -> bool:
        return bool(self.allow or self.deny)

    def why_filtered(self, name: str) -> str | None:
        """None if `name` is shown; else which setting hides it, and how to show it."""
        table = f"[servers.{self.server}]"
        for pattern, compiled in zip(self.deny, self._deny, strict=True):
            if compiled.match(name):
                matched = "" if pattern == name else f" (pattern {pattern!r})"
                return (
                    f"it matches tools.deny{matched} in {table}; remove that entry from "
                    "tools.deny to use it"
                )
        if self._allow and not any(compiled.match(name) for compiled in self._allow):
            return (
                f"it is not in tools.allow in {table}; add it (or a pattern matching it) to "
                "tools.allow to use it"
            )
        return None

    def allows(self, name: str) -> bool:
        return self.why_filtered(name) is None

    def refusal(self, name: str) -> str | None:
        """The error message for a call of `name`, or None if it may be called."""
        why = self.why_filtered(name)
        if why is None:
            return None
        return (
            f"tool {name!r} is filtered out by mcpd's config for server {self.server!r}, so "
            f"mcpd did not call it: {why} (then run `mcpctl reload`)"
        )

    def shown(self, result: Any) -> Any:
        """A `tools/list` result without the tools editors may not see (the same
        object when nothing is left out)."""
        if not self.active or not isinstance(result, dict):
            return result
        tools = result.get("tools")
        if not isinstance(tools, list):
            return result
        kept = [tool for tool in tools if self._shows(tool)]
        if len(kept) == len(tools):
            return result
        return {**result, "tools": kept}

    def _shows(self, tool: Any) -> bool:
        name = tool.get("name") if isinstance(tool, dict) else None
        # A tool without a name cannot be called, nor matched; it passes as the
        # server sent it (the editor decides what to make of it).
        return not isinstance(name, str) or self.allows(name)


def shown(tool_filter: ToolFilter, method: str, message: dict[str, Any]) -> dict[str, Any]:
    """A response to `method` as its requester may see it: a `tools/list`
    result without the filtered tools; anything else unchanged."""
    if method != "tools/list" or not tool_filter.active:
        return message
    result = message.get("result")
    visible = tool_filter.shown(result)
    return message if visible is result else {**message, "result": visible}


def refused_call(tool_filter: ToolFilter, message: dict[str, Any]) -> str | None:
    """For a `tools/call` of a filtered tool, the error message that answers it."""
    if message.get("method") != "tools/call" or not tool_filter.active:
        return None
    params = message.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    return tool_filter.refusal(name) if isinstance(name, str) else None


def listens_for_tools(message: dict[str, Any]) -> bool:
    """Whether a 2026-07-28 `subscriptions/listen` request asks for tool list changes."""
    if message.get("method") != "subscriptions/listen":
        return False
    params = message.get("params")
    wanted = params.get("notifications") if isinstance(params, dict) else None
    return isinstance(wanted, dict) and wanted.get("toolsListChanged") is True


def only_filter_changed(old: ServerEntry, new: ServerEntry) -> bool:
    """Whether two entries of a server differ in their tool filter and nothing else
    (the server need not restart: the new filter is applied in place)."""
    if old.config is None or new.config is None or old == new:
        return False
    same_tools = msgspec.structs.replace(new.config, tools=old.config.tools)
    return msgspec.structs.replace(new, config=same_tools) == old
