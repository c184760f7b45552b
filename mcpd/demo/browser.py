"""A headless stand-in for the user's browser, for `BROWSER=...` in `mcpd demo`.

    python -m mcpd.demo.browser URL

It GETs the authorization URL and follows the redirects, which take the
authorization response to mcpd's loopback listener, as a browser whose user
clicked "allow" would. It says where it went (paths only: the query strings
carry the state and the code) and returns 0 even on an error page, since a
browser shows those too: what counts is what the daemon makes of it.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from http.client import HTTPMessage
from typing import IO
from urllib.parse import urlsplit

TIMEOUT_SECONDS = 30


def without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class Recorder(urllib.request.HTTPRedirectHandler):
    """Follows redirects, noting each hop without its query."""

    def __init__(self) -> None:
        self.hops: list[str] = []

    def redirect_request(  # noqa: PLR0917 - urllib's signature
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        self.hops.append(f"{code} -> {without_query(newurl)}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mcpd.demo.browser URL", file=sys.stderr)
        return 2
    url = args[0]
    recorder = Recorder()
    opener = urllib.request.build_opener(recorder)
    try:
        with opener.open(url, timeout=TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        print(f"browser: cannot open {without_query(url)}: {exc}", flush=True)
        return 1
    hops = "".join(f", {hop}" for hop in recorder.hops)
    print(f"browser: GET {without_query(url)}{hops}: {status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
