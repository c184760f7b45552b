"""URLs as the daemon checks and shows them: sans-IO, one place.

A configured URL is checked once, when the config is loaded (`checked_url`):
http or https, a host that is an IP address or a name that IDNA can encode, a
port in range, no control characters. It comes back normalised the way a
browser would send it (an IDN host in its ASCII form, spaces and non-ASCII in
the path percent-encoded), so that every later use (requests, the resource
indicator, the stored record's URL) sees one spelling; a URL that is already
printable ASCII is kept exactly as written. `public_url` is the
form that status, errors and logs show: no user info, no query.
`visible_ascii` is the check for a value a peer chose that goes back on the
wire in a header (a session id, an event id, an access token).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import NamedTuple
from urllib.parse import urlsplit

from yarl import URL

DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# A DNS name as it goes on the wire: letters, digits, '-' and '_' in dot-separated labels.
_ASCII_NAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidUrl(ValueError):
    """A URL that cannot be used; the message says why, without quoting secrets."""


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS.get(self.scheme) else f"{host}:{self.port}"


@functools.lru_cache(maxsize=1024)  # asked of the same few URLs on every request
def origin_of(url: str) -> Origin:
    """The (scheme, host, port) of a URL; an unparseable one has an origin of its own."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return Origin("invalid", url, 0)
    return Origin(scheme, (parts.hostname or "").lower(), port)


def is_loopback(host: str) -> bool:
    return host.lower().strip("[]") in LOOPBACK_NAMES


def public_url(url: str) -> str:
    """The URL without what may carry a secret (user info, query, fragment).

    Status, errors and logs show this form: an API key in a query string or
    `user:password@` must not travel to every client that asks for status.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    host = parts.netloc.rpartition("@")[2]
    query = "?…" if parts.query else ""
    return f"{parts.scheme}://{host}{parts.path}{query}" if parts.scheme else parts.path


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return bool(_ASCII_NAME.fullmatch(host))
    return True


def checked_url(url: str, what: str = "url") -> str:
    """`url`, normalised for the wire; InvalidUrl, naming `what`, if it cannot be used."""
    shown = public_url(url)
    if _CONTROL.search(url):
        raise InvalidUrl(
            f"{what} {shown!r} contains a line break or another control character; "
            "check the value (or the environment variable it comes from)"
        )
    try:
        parsed = URL(url)
        port = parsed.port
        host = parsed.raw_host
    except (ValueError, UnicodeError) as exc:
        reason = "its port is not a number from 1 to 65535" if "port" in str(exc).lower() else ""
        raise InvalidUrl(
            f"{what} {shown!r} is not a valid URL" + (f": {reason}" if reason else "")
        ) from None
    if parsed.scheme not in DEFAULT_PORTS:
        raise InvalidUrl(f"{what} {shown!r} is not an http:// or https:// URL")
    if not host or not _valid_host(host):
        raise InvalidUrl(
            f"{what} {shown!r} has no valid host name (letters, digits, '-' and '.', "
            "an international name, or an IP address)"
        )
    if port is None or not 0 < port <= 65535:
        raise InvalidUrl(f"{what} {shown!r}: the port must be a number from 1 to 65535")
    if wire_clean(url):
        return url  # exactly as written: its own percent-encoding is the server's business
    return str(parsed.with_fragment(None))


_VISIBLE_ASCII = re.compile(r"[!-~]+")


def visible_ascii(value: str) -> bool:
    """Whether a value a peer chose may be sent back in a header as it is:
    visible ASCII, 0x21 to 0x7E (what the transport specification requires of
    session ids, and more than RFC 6750 allows in a bearer token)."""
    return _VISIBLE_ASCII.fullmatch(value) is not None


def wire_clean(url: str) -> bool:
    """Whether a URL can go on the wire as it is: printable ASCII, no space."""
    return url.isascii() and url.isprintable() and " " not in url
