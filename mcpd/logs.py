"""Structured log lines on stderr, one event per line, in logfmt.

    level=info logger=mcpd.daemon msg="listening" socket=/run/user/1000/mcpd/mcpd.sock

journald stores stderr as is and adds its own timestamps, so the time is
left out when stderr is the journal ($JOURNAL_STREAM). Context goes in
`extra={...}`; callers never put a token, secret, code or verifier there.

And should one get there all the same (in the text of an unexpected
exception, in a traceback), every line is redacted before it is written:
every secret the daemon holds (each object registered with `redact_from`
names its own: servers their configured header values, client secrets and
tokens; the sign-in its state and verifier) is replaced by `<redacted>`, and
so is anything shaped like a credential (`Bearer ...`, `code=...`). The
secrets are kept as they come, not asked for at every line: whatever gains
one hands it over (`add_secrets`): a server's entry and its credential record
are each set in one place, the sign-in's codes and links where they are made.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

# Attributes every LogRecord has; anything else came in through `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


REDACTED = "<redacted>"
# Shorter values (a header such as `X-Debug: 1`) would blank out ordinary words.
MIN_SECRET_CHARS = 8
_CREDENTIAL_SHAPES = re.compile(
    r"(?i)(?<![A-Za-z])(bearer|basic)\s+[A-Za-z0-9._~+/-]{8,}=*"
    r"|(?<=[?&])(access_token|refresh_token|id_token|code|code_verifier|client_secret|state)"
    r"=[^&\s\"']+"
)


class SecretSource(Protocol):
    def secrets(self) -> list[str]: ...


class _Secrets:
    """Every secret known, kept as they come (`add`) rather than asked of each
    source for every line: with 500 servers, asking them all made the 500
    state lines of a start cost 0.3 s. Secrets of sources gone, and tokens
    replaced, stay until the set has doubled: then it is gathered afresh from
    the sources alive."""

    def __init__(self) -> None:
        self.sources: weakref.WeakSet[SecretSource] = weakref.WeakSet()
        self._known: set[str] = set()
        self._gathered = 0  # how many were known at the last gathering
        # What each line is searched for: a secret inside another goes with it.
        # Replaced whole, never changed: a line logged from a worker thread
        # meanwhile sees the list before or after.
        self.longest_first: list[str] = []

    def add(self, values: Iterable[str]) -> None:
        new = _redactable(values) - self._known
        if not new:
            return
        known = self._known | new
        if len(known) > 2 * self._gathered + 64:
            known = new | _redactable(v for source in list(self.sources) for v in source.secrets())
            self._gathered = len(known)
        self._known = known
        self.longest_first = sorted(known, key=len, reverse=True)


def _redactable(values: Iterable[str]) -> set[str]:
    return {value for value in values if len(value) >= MIN_SECRET_CHARS}


_secrets = _Secrets()


def redact_from(source: SecretSource) -> None:
    """Redact `source.secrets()` from every log line while `source` lives; what it
    gains later, it hands to `add_secrets`."""
    _secrets.sources.add(source)
    _secrets.add(source.secrets())


def add_secrets(values: Iterable[str]) -> None:
    """Redact these from every log line from now on (a new token, say)."""
    _secrets.add(values)


def redacted(text: str) -> str:
    """`text` with every known secret and anything shaped like a credential replaced."""
    for secret in _secrets.longest_first:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _CREDENTIAL_SHAPES.sub(_mask_value, text)


def _mask_value(match: re.Match[str]) -> str:
    if match.group(1):
        return f"{match.group(1)} {REDACTED}"
    return f"{match.group(2)}={REDACTED}"


def _quote(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\\\n\t'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    def __init__(self, *, with_time: bool) -> None:
        super().__init__()
        self.with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        fields: list[tuple[str, Any]] = []
        if self.with_time:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            fields.append(("ts", f"{stamp}.{int(record.msecs):03d}Z"))
        fields += [
            ("level", record.levelname.lower()),
            ("logger", record.name),
            ("msg", record.getMessage()),
        ]
        fields += [(k, v) for k, v in vars(record).items() if k not in _STANDARD]
        if record.exc_info and record.exc_info[1] is not None:
            fields.append(("exc", self.formatException(record.exc_info)))
        return redacted(" ".join(f"{key}={_quote(value)}" for key, value in fields))


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter(with_time="JOURNAL_STREAM" not in os.environ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
