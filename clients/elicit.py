"""How `mcpctl call` answers a server's `elicitation/create` (MCP 2025-11-25).

On a terminal the user answers. A form shows the server's name and message,
then asks for each field (its title, description, choices and default; Enter
takes the default), validates what is typed against the field's schema, and
shows the whole answer for review before it is sent, declined or cancelled. A
URL is shown in full with its host, and opened in the browser only if the
user says yes (then the answer is `accept`).

Without a terminal nobody can answer, so the schema answers (SEP-1034): a
form is accepted with every default the schema gives when each required field
has one, and declined otherwise; a URL is declined. End of input at a prompt
cancels.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

import msgspec

Answer = dict[str, Any]


class InvalidRequest(ValueError):
    """An elicitation request mcpctl cannot make sense of (JSON-RPC -32602)."""


class _EndOfInput(Exception):
    pass


def mode_of(params: dict[str, Any]) -> str:
    """The request's mode: form when it names none."""
    mode = params.get("mode", "form")
    if mode not in ("form", "url"):
        raise InvalidRequest(f"unknown elicitation mode {mode!r}")
    return str(mode)


def form_fields(params: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The requested schema's properties (name -> schema) and required names."""
    schema = params.get("requestedSchema")
    if not isinstance(schema, dict):
        raise InvalidRequest("a form elicitation needs a requestedSchema object")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise InvalidRequest("requestedSchema.properties must be an object")
    fields = {str(k): spec if isinstance(spec, dict) else {} for k, spec in properties.items()}
    required = schema.get("required")
    required = required if isinstance(required, list) else []
    return fields, [name for name in required if isinstance(name, str)]


def with_defaults(params: dict[str, Any]) -> Answer:
    """The answer of a client that cannot ask anyone (SEP-1034): accept with the
    schema's defaults when every required field has one, else decline."""
    if mode_of(params) == "url":
        return {"action": "decline"}
    fields, required = form_fields(params)
    content = {name: spec["default"] for name, spec in fields.items() if "default" in spec}
    if all(name in content for name in required):
        return {"action": "accept", "content": content}
    return {"action": "decline"}


# --- Values typed at a prompt --------------------------------------------------------


def choices_of(spec: dict[str, Any]) -> list[tuple[Any, str]]:
    """A field's allowed values with their titles: `enum` (with legacy
    `enumNames`), or `oneOf`/`anyOf` of `{const, title}`."""
    enum = spec.get("enum")
    if isinstance(enum, list):
        names = spec.get("enumNames")
        titles = names if isinstance(names, list) and len(names) == len(enum) else enum
        return [(value, str(title)) for value, title in zip(enum, titles, strict=True)]
    for key in ("oneOf", "anyOf"):
        options = spec.get(key)
        if isinstance(options, list):
            return [
                (option["const"], str(option.get("title", option["const"])))
                for option in options
                if isinstance(option, dict) and "const" in option
            ]
    return []


def _choose(choices: list[tuple[Any, str]], text: str) -> Any:
    """A choice by its number, its value or its title."""
    if text.isdigit() and 1 <= int(text) <= len(choices):
        return choices[int(text) - 1][0]
    for value, title in choices:
        if text in (str(value), title):
            return value
    raise ValueError("choose one of: " + ", ".join(title for _, title in choices))


def _check_range(spec: dict[str, Any], number: float) -> None:
    low, high = spec.get("minimum"), spec.get("maximum")
    if isinstance(low, int | float) and number < low:
        raise ValueError(f"at least {low}")
    if isinstance(high, int | float) and number > high:
        raise ValueError(f"at most {high}")


def _check_string(spec: dict[str, Any], text: str) -> None:
    shortest, longest = spec.get("minLength"), spec.get("maxLength")
    if isinstance(shortest, int) and len(text) < shortest:
        raise ValueError(f"at least {shortest} characters")
    if isinstance(longest, int) and len(text) > longest:
        raise ValueError(f"at most {longest} characters")
    pattern = spec.get("pattern")
    if isinstance(pattern, str):
        try:
            matches = re.search(pattern, text) is not None
        except re.error:
            matches = True  # a pattern Python cannot read is the server's to check
        if not matches:
            raise ValueError(f"must match {pattern}")
    kind = spec.get("format")
    try:
        if kind == "date":
            date.fromisoformat(text)
        elif kind == "date-time":
            datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a {kind} (ISO 8601)") from None
    if kind == "email" and not re.fullmatch(r"[^@\s]+@[^@\s]+", text):
        raise ValueError("not an email address")
    if kind == "uri" and not urlsplit(text).scheme:
        raise ValueError("not a URI")


def parse_value(spec: dict[str, Any], text: str) -> Any:
    """What `text`, typed for a field, means; ValueError says why it does not fit."""
    kind = spec.get("type")
    if kind == "array":
        items = spec.get("items")
        choices = choices_of(items) if isinstance(items, dict) else []
        values = [part.strip() for part in text.split(",") if part.strip()]
        chosen = [_choose(choices, value) if choices else value for value in values]
        fewest, most = spec.get("minItems"), spec.get("maxItems")
        if isinstance(fewest, int) and len(chosen) < fewest:
            raise ValueError(f"choose at least {fewest}")
        if isinstance(most, int) and len(chosen) > most:
            raise ValueError(f"choose at most {most}")
        return chosen
    choices = choices_of(spec)
    if choices:
        return _choose(choices, text)
    if kind == "boolean":
        answer = text.lower()
        if answer in ("y", "yes", "true", "1"):
            return True
        if answer in ("n", "no", "false", "0"):
            return False
        raise ValueError("yes or no")
    if kind in ("integer", "number"):
        try:
            number: float = int(text)
        except ValueError:
            if kind == "integer":
                raise ValueError("a whole number") from None
            try:
                number = float(text)
            except ValueError:
                raise ValueError("a number") from None
        _check_range(spec, number)
        return number
    _check_string(spec, text)
    return text


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


# --- The terminal ----------------------------------------------------------------------


class Terminal:
    """Asks the user: prompts and messages on stderr, answers from stdin."""

    def __init__(
        self,
        server: str,
        stdin: TextIO | None = None,
        stderr: TextIO | None = None,
        open_url: Callable[[str], bool] | None = None,
    ) -> None:
        self.server = server
        self._in = stdin or sys.stdin
        self._out = stderr or sys.stderr
        self._open_url = open_url

    def answer(self, params: dict[str, Any]) -> Answer:
        mode = mode_of(params)
        try:
            return self._url(params) if mode == "url" else self._form(params)
        except _EndOfInput:
            self._say("\n(cancelled)")
            return {"action": "cancel"}

    def _say(self, text: str) -> None:
        self._out.write(text + "\n")

    def _ask(self, prompt: str) -> str:
        self._out.write(prompt)
        self._out.flush()
        line = self._in.readline()
        if not line:
            raise _EndOfInput
        return line.strip()

    def _form(self, params: dict[str, Any]) -> Answer:
        fields, required = form_fields(params)
        self._say(f"\nServer {self.server!r} asks (Ctrl-D cancels):")
        self._say(f"  {params.get('message', '')}")
        values = {name: spec["default"] for name, spec in fields.items() if "default" in spec}
        while True:
            for name, spec in fields.items():
                self._field(name, spec, name in required, values)
            self._say("The answer: " + msgspec.json.encode(values).decode())
            while True:
                choice = self._ask("Send it? [Y]es, [e]dit, [d]ecline, [c]ancel: ").lower()
                if choice in ("", "y", "yes"):
                    return {"action": "accept", "content": values}
                if choice in ("d", "decline"):
                    return {"action": "decline"}
                if choice in ("c", "cancel"):
                    return {"action": "cancel"}
                if choice in ("e", "edit"):
                    break

    def _field(self, name: str, spec: dict[str, Any], required: bool, values: Answer) -> None:
        title = str(spec.get("title") or name)
        description = spec.get("description")
        label = f"  {title}" + (f" ({description})" if description else "")
        items = spec.get("items") if spec.get("type") == "array" else spec
        choices = choices_of(items) if isinstance(items, dict) else []
        if choices:
            many = " (several, separated by commas)" if spec.get("type") == "array" else ""
            listed = "  ".join(f"{i}) {t}" for i, (_, t) in enumerate(choices, 1))
            label += f"\n    {listed}{many}"
        elif spec.get("type") == "boolean":
            label += " [y/n]"
        if name in values:
            label += f" [{_shown(values[name])}]"
        elif not required:
            label += " (optional)"
        while True:
            text = self._ask(label + ": ")
            if not text:
                if name in values:
                    return  # the default, or what was typed before
                if not required:
                    return
                self._say("    required: type a value")
                continue
            try:
                values[name] = parse_value(spec, text)
            except ValueError as exc:
                self._say(f"    {exc}")
                continue
            return

    def _url(self, params: dict[str, Any]) -> Answer:
        url = params.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest("a URL elicitation needs an http or https url")
        host = parts.hostname
        self._say(f"\nServer {self.server!r} asks you to open a web page (Ctrl-D cancels):")
        self._say(f"  {params.get('message', '')}")
        self._say(f"  URL:  {url}")
        self._say(f"  host: {host}")
        if not host.isascii() or any(label.startswith("xn--") for label in host.split(".")):
            self._say("  warning: the host has international characters; check it closely")
        choice = self._ask("Open it in the browser? [y/N]: ").lower()
        if choice not in ("y", "yes"):
            return {"action": "decline"}
        opener = self._open_url
        if opener is None:
            import webbrowser

            opener = webbrowser.open
        if not opener(str(url)):
            self._say("(no browser could be opened here: open the URL yourself)")
        return {"action": "accept"}
