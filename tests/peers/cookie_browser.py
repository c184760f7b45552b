"""A headless browser that keeps cookies, for `BROWSER=...` in tests.

    python tests/peers/cookie_browser.py URL

It GETs the authorization URL and follows every redirect with one cookie jar,
as a browser does: oidc-provider's interaction (tests/peers/oidc_provider.mjs)
sets its cookies on the redirect to /interaction/UID and wants them back on
the redirects that resume the authorization, so a browser without cookies
never gets past it. The last redirect delivers the authorization response to
the daemon's loopback listener, as a browser whose user signed in and clicked
"allow" would.

It prints each hop as `STATUS -> scheme://host/path` (never a query string:
those carry the state and the code) and where it ended, on stderr, and exits 0
even on an error page, since a browser shows those too: what counts is what
the daemon makes of it. Exit 1 only when nothing answered at all.

`CookieBrowser` is the same browser for a test to drive page by page,
submitting forms (oidc-provider's device flow: tests/real_peers.py).
"""

from __future__ import annotations

import http.cookiejar
import sys
import urllib.error
import urllib.request
from urllib.parse import urlencode

from mcpd.demo import browser
from mcpd.demo.browser import without_query

TIMEOUT_SECONDS = 30


class Recorder(browser.Recorder):
    # oidc-provider's interaction takes more hops than urllib's default allows.
    max_redirections = 20


class CookieBrowser:
    """One cookie jar for every page and redirect, as a browser keeps one."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(jar), self.recorder
        )

    def open(self, url: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        """GET `url` (or POST `form` to it), following redirects: the status, the
        URL it ended at and the page. OSError when nothing answered."""
        data = urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(url, data, timeout=TIMEOUT_SECONDS) as response:
                return response.status, response.url, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.url, exc.read().decode(errors="replace")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/peers/cookie_browser.py URL", file=sys.stderr)
        return 2
    url = argv[0]
    browser = CookieBrowser()
    try:
        status, final, _page = browser.open(url)
    except (urllib.error.URLError, OSError) as exc:
        print(f"browser: cannot open {without_query(url)}: {exc}", file=sys.stderr)
        return 1
    for hop in browser.recorder.hops:
        print(f"browser: {hop}", file=sys.stderr)
    print(f"browser: {status} at {without_query(final)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
