"""A headless stand-in for the user's browser, for `BROWSER=...` in tests.

    python tests/conformance/browser.py URL

It performs the authorization GET and follows the redirects, which deliver the
authorization response to the daemon's real loopback listener, as a browser
whose user clicked "allow" would. It prints where it ended and what it read.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def main(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read().decode(errors="replace")
            print(f"browser: {response.status} at {response.url}\n{body}", file=sys.stderr)
            return 0
    except urllib.error.HTTPError as exc:
        print(
            f"browser: {exc.code} at {exc.url}\n{exc.read().decode(errors='replace')}",
            file=sys.stderr,
        )
        return 0  # a browser shows error pages too; the daemon's outcome is what counts


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
