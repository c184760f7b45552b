"""Hostile peers beside a healthy server: one daemon holds a real healthy
server (tests/peers/python_server.py), answering an editor's calls all along,
and beside it servers, authorization servers and config entries that each do
one thing that once stopped the whole daemon or leaked a secret. Each must
end in a clear state for its own server alone, and a recording listener on
another origin must never be reached (no token, header or client secret
follows a redirect or an endpoint there).

The hostile servers are fakes (tests/hostile.py says why); the healthy one,
the daemon, the bridge and mcpctl are real.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from typing import Any

import leakcheck
from harness import browse, finish, start_auth, status_of, wait_state
from hostile import (
    FakeMcp,
    FakeModern,
    Handler,
    closing_listener,
    fake_authorization_server,
    fake_mcp,
    fake_modern,
    recording_listener,
    send,
    send_json,
)
from real_peers import python_server
from reliability import record
from test_bad_servers import MIN_HEALTHY_CALLS, calling_all_along
from test_tls import make_pki

from mcpd.upstream.mux import MAX_INPUT_ROUNDS

HEADER_SECRET = "hostile-api-key-6d1f0e9a"
CLIENT_SECRET = "hostile-client-secret-51c7"
SETTLE_SECONDS = 20


def sse(*events: bytes) -> bytes:
    return b"".join(events)


def event(message: dict[str, Any], event_id: bytes | None = None) -> bytes:
    head = b"id: " + event_id + b"\n" if event_id is not None else b""
    return head + b"event: message\ndata: " + json.dumps(message).encode() + b"\n\n"


def redirect(location: str, *, only: str = "/mcp") -> Callable[[Handler], bool]:
    """Answer requests to `only` with a 307 to `location`."""

    def answer(handler: Handler) -> bool:
        if handler.path != only:
            return False
        send(handler, 307, Location=location)
        return True

    return answer


def initialize_on_a_stream_that_breaks(event_id: bytes) -> Callable[[Handler], bool]:
    """Answer initialize with an event stream whose one event has `event_id`,
    and close it before the answer: a client would resume with that id."""

    def answer(handler: Handler) -> bool:
        if handler.command != "POST":
            return False
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(b"id: " + event_id + b"\ndata: \n\n")
        handler.close_connection = True
        return True

    return answer


def oversized_head(handler: Handler) -> bool:
    """Answer a POST with a head of 70 KB (one endless header): what the POST
    lane keeps of a head is bounded."""
    if handler.command != "POST":
        return False
    handler.send_response(200)
    handler.send_header("X-Filler", "a" * 70_000)
    handler.send_header("Content-Length", "0")
    handler.end_headers()
    return True


def endless_header(handler: Handler) -> bool:
    """Answer a POST with a header that never ends (64 MB of it, or until the
    daemon hangs up): the parser keeps a field until it ends, so what bounds
    the head must be what the daemon reads, not what the parser hands over."""
    if handler.command != "POST":
        return False
    handler.close_connection = True
    chunk = b"a" * 65536
    with suppress(OSError):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        for _ in range(1024):
            handler.wfile.write(chunk)
    return True


def legacy_endpoint(endpoint: str) -> Callable[[Handler], bool]:
    """The legacy HTTP+SSE transport: POST refused, GET names `endpoint`."""

    def answer(handler: Handler) -> bool:
        if handler.command == "POST":
            send(handler, 405)
            return True
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        handler.wfile.write(b"event: endpoint\ndata: " + endpoint.encode() + b"\n\n")
        handler.wfile.flush()
        time.sleep(5)
        return True

    return answer


def settled(daemon, names: list[str]) -> dict[str, dict[str, Any]]:
    """Until no server of `names` is still connecting; their statuses."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        statuses = {name: status_of(daemon, name) for name in names}
        if all(s["state"] != "connecting" for s in statuses.values()):
            return statuses
        assert time.monotonic() < deadline, statuses
        time.sleep(0.1)


def test_hostile_servers_and_config_entries_each_fail_alone(
    mcpd_env, run_daemon, editors, tmp_path
):
    leakcheck.register("header", HEADER_SECRET)
    ca, cert, key = make_pki(tmp_path)
    weird_ids = FakeMcp(get_events=event({"jsonrpc": "2.0", "method": "x"}, "caf\u00e9".encode()))
    weird_ids.hold_get = False
    bad_methods = FakeMcp(
        get_events=sse(
            event({"jsonrpc": "2.0", "id": 7, "method": ["roots/list"]}),
            event({"jsonrpc": "2.0", "id": 8, "method": {"name": "roots/list"}}),
            event({"jsonrpc": "2.0", "id": [9], "method": "roots/list"}),
        )
    )
    with ExitStack() as stack:
        recorder = stack.enter_context(recording_listener())
        good = stack.enter_context(python_server(tmp_path))

        def mcp(server: FakeMcp, **kwargs: Any) -> str:
            return stack.enter_context(fake_mcp(server, **kwargs)).url + "/mcp"

        fakes = {
            "bad_methods": bad_methods,
            "weird_get_id": weird_ids,
            "stream_id": FakeMcp(answer=initialize_on_a_stream_that_breaks(b"\x01\xc3\xa9")),
        }
        urls = {
            "tls_closed": stack.enter_context(closing_listener(reset=False)),
            "tls_reset": stack.enter_context(closing_listener(reset=True)),
            "redirect_bad_port": mcp(FakeMcp(answer=redirect("http://127.0.0.1:99999/mcp"))),
            "redirect_space": mcp(FakeMcp(answer=redirect("/a b"))),
            "session_high_byte": mcp(FakeMcp(session_id="s\u00e9ssion")),
            "session_control": mcp(FakeMcp(session_id="s\x01ssion")),
            "oversized_head": mcp(FakeMcp(answer=oversized_head)),
            "endless_header": mcp(FakeMcp(answer=endless_header)),
            "legacy_elsewhere": mcp(FakeMcp(answer=legacy_endpoint(recorder.url + "/messages"))),
            "redirect_elsewhere": mcp(FakeMcp(answer=redirect(recorder.url + "/mcp"))),
            "redirect_downgrade": mcp(
                FakeMcp(answer=redirect(recorder.url + "/mcp")), tls=(cert, key)
            ),
            **{name: mcp(server) for name, server in fakes.items()},
        }
        with_headers = f'headers = {{ "X-Api-Key" = "{HEADER_SECRET}" }}\nverify = "{ca}"\n'
        config = "".join(
            f'[servers.{name}]\nurl = "{url}"\ntimeout = 2\n{with_headers}'
            for name, url in urls.items()
        )
        base = f"http://127.0.0.1:{good.port}"
        config_entries = {
            "port_range": f'url = "http://127.0.0.1:99999/mcp"\n{with_headers}',
            "crlf_from_env": 'url = "' + base + '/mcp"\nheaders = { "X-Api-Key" = "{env:KEY}" }\n',
            "non_ascii_header": f'url = "{base}/mcp"\nheaders = {{ "X-Api-Key" = "cl\u00e9" }}\n',
            "host_header": f'url = "{base}/mcp"\nheaders = {{ "Host" = "elsewhere" }}\n',
            "spaced_name": f'url = "{base}/mcp"\nheaders = {{ "X Api-Key" = "v" }}\n',
            "space_in_path": f'url = "{base}/m cp"\n',
            "non_ascii_path": f'url = "{base}/mcp/\u00e9"\n',
        }
        config += "".join(f"[servers.{name}]\n{entry}" for name, entry in config_entries.items())
        config += f'[servers.good]\nurl = "{good.url}"\n'
        mcpd_env.write_config(config)
        daemon = run_daemon(extra_env={"KEY": HEADER_SECRET + "\r"})
        wait_state(daemon, "good", "connected")
        with calling_all_along(editors, "good") as healthy:
            statuses = settled(daemon, [*urls, *config_entries])
            healthy.wait_for(MIN_HEALTHY_CALLS)
            # Mid-way, every hostile server is asked for something: each says why, at once.
            for name in urls:
                asked = time.monotonic()
                call = daemon.mcpctl("call", name, "echo", '{"text": "x"}')
                assert time.monotonic() - asked < 5, name
                if call.returncode != 0:
                    assert call.stderr.strip(), name
        calls = healthy.check()
        assert daemon.process.poll() is None

        def failed_with(name: str, *words: str) -> None:
            status = statuses[name]
            assert status["state"] == "failed", (name, status)
            for word in words:
                assert word in (status["error"] or ""), (name, status["error"])

        failed_with("tls_closed", "closed during the TLS handshake")
        failed_with("tls_reset", "reset during the TLS handshake")
        failed_with("redirect_bad_port", "not a valid")
        failed_with("session_high_byte", "session id")
        # A control character is not HTTP at all (RFC 9110, 5.5): the HTTP layer refuses it.
        failed_with("session_control", "not valid HTTP/1.1 (invalid header value char)")
        failed_with("oversized_head", "not valid HTTP/1.1 (a head over 64 KiB)")
        failed_with("endless_header", "not valid HTTP/1.1 (a head over 64 KiB)")
        failed_with("stream_id", "could not be resumed")
        failed_with("legacy_elsewhere", "another origin")
        failed_with("redirect_elsewhere", "another origin")
        failed_with("redirect_downgrade", "https to http")
        failed_with("port_range", "port")
        failed_with("crlf_from_env", "line break")
        failed_with("non_ascii_header", "non-ASCII")
        failed_with("host_header", "set by mcpd itself")
        failed_with("spaced_name", "not a valid header name")
        # Normalised as a browser would, and sent: the healthy server has no such path.
        failed_with("space_in_path", "404")
        failed_with("non_ascii_path", "404")
        # A relative redirect with a space leads to the same origin: followed, encoded.
        assert statuses["redirect_space"]["state"] == "connected", statuses["redirect_space"]

        # Ids that cannot be echoed back are not: the stream reopens without them.
        assert statuses["weird_get_id"]["state"] == "connected"
        assert status_of(daemon, "bad_methods")["state"] == "connected"
        answered = {
            json.dumps(m.get("id")): m["error"]["code"]
            for m in bad_methods.posted
            if isinstance(m, dict) and "error" in m
        }
        assert answered == {"7": -32600, "8": -32600, "null": -32600}, bad_methods.posted
        for name in ("weird_get_id", "stream_id"):
            assert fakes[name].seen_headers, name
            assert not any("last-event-id" in h for h in fakes[name].seen_headers), name
        # Nothing reached the other origin, and no header value reached the log.
        assert recorder.seen == [], [(s.method, s.path) for s in recorder.seen]
        assert HEADER_SECRET not in daemon.log
        call = daemon.mcpctl("call", "good", "echo", '{"text": "unharmed"}')
        assert call.stdout == "unharmed\n"
    record("healthy calls while hostile servers and config entries failed", calls, __name__)


def start_beside_good(mcpd_env, run_daemon, servers: dict[str, Any], good_url: str):
    """A daemon with each of `servers` (hostile authorization servers) as an
    OAuth server of the same name, and `good` beside them, connected."""
    config = "[daemon]\ncallback_port = 0\n" + "".join(
        f'[servers.{name}]\nurl = "{peer.url}/mcp"\n'
        f'oauth = {{ client_id = "hostile-client", client_secret = "{CLIENT_SECRET}" }}\n'
        for name, peer in servers.items()
    )
    config += f'[servers.good]\nurl = "{good_url}"\n'
    mcpd_env.write_config(config)
    daemon = run_daemon()
    wait_state(daemon, "good", "connected")
    return daemon


def refuse_token(body: dict[str, Any]) -> Callable[[Handler], None]:
    return lambda handler: send_json(handler, body)


def test_hostile_authorization_servers_each_fail_their_sign_in_alone(
    mcpd_env, run_daemon, editors, tmp_path
):
    leakcheck.register_client("hostile-client", CLIENT_SECRET)
    with ExitStack() as stack:
        recorder = stack.enter_context(recording_listener())
        good = stack.enter_context(python_server(tmp_path))
        answers = {
            "token_redirect": lambda handler: send(handler, 307, Location=recorder.url + "/token"),
            "token_crlf": refuse_token(
                {"access_token": "tok\r\nX-Injected: 1", "token_type": "Bearer"}
            ),
            "token_non_ascii": refuse_token(
                {"access_token": "t\u00f6ken-0123456789", "token_type": "Bearer"}
            ),
        }
        servers = {
            name: stack.enter_context(fake_authorization_server(answer))
            for name, answer in answers.items()
        }
        daemon = start_beside_good(mcpd_env, run_daemon, servers, good.url)
        with calling_all_along(editors, "good") as healthy:
            errors = {}
            for name in servers:
                wait_state(daemon, name, "needs_auth")
                process, url = start_auth(mcpd_env, name)
                browse(url)
                code, _, err = finish(process)
                assert code == 1, (name, err)
                errors[name] = err
            healthy.wait_for(MIN_HEALTHY_CALLS)
        healthy.check()
        assert "redirect" in errors["token_redirect"], errors["token_redirect"]
        for name in ("token_crlf", "token_non_ascii"):
            assert "not visible ASCII" in errors[name], errors[name]
            assert status_of(daemon, name)["state"] == "needs_auth"
        # The token endpoint's redirect was not followed: the third host saw nothing.
        assert recorder.seen == [], [(s.method, s.path) for s in recorder.seen]
        for name, peer in servers.items():
            assert [s.path for s in peer.seen].count("/token") == 1, name
        assert CLIENT_SECRET not in daemon.log
        assert daemon.process.poll() is None


DEVICE_CODE = "hostile-device-code-0123456789"


def device_code(**fields: Any) -> Callable[[Handler], None]:
    """A device authorization answer: a well-formed one, with `fields` replaced."""
    answer = {
        "device_code": DEVICE_CODE,
        "user_code": "WDJB-MJHT",
        "verification_uri": "https://127.0.0.1/device",
        "expires_in": 600,
        "interval": 1,
        **fields,
    }
    return lambda handler: send_json(handler, answer)


def test_hostile_device_sign_ins_each_fail_alone(mcpd_env, run_daemon, editors, tmp_path):
    """Device authorization endpoints that answer what no user should be shown
    or sent to, or redirect: each sign-in fails with what was wrong, nothing
    reaches another origin, and a healthy server answers all along."""
    leakcheck.register("device code", DEVICE_CODE)
    leakcheck.register_client("hostile-client", CLIENT_SECRET)
    with ExitStack() as stack:
        recorder = stack.enter_context(recording_listener())
        good = stack.enter_context(python_server(tmp_path))
        devices = {
            # A terminal escape that would rewrite what the user reads.
            "device_escape": device_code(user_code="\x1b[2J\x1b[HOK-1234"),
            "device_plain_http": device_code(verification_uri="http://203.0.113.9/device"),
            "device_redirect": lambda handler: send(handler, 307, Location=recorder.url + "/d"),
        }
        pending = refuse_token({"error": "authorization_pending"})
        servers = {
            name: stack.enter_context(fake_authorization_server(pending, answer))
            for name, answer in devices.items()
        }
        daemon = start_beside_good(mcpd_env, run_daemon, servers, good.url)
        with calling_all_along(editors, "good") as healthy:
            errors = {}
            for name in servers:
                wait_state(daemon, name, "needs_auth")
                result = mcpd_env.mcpctl("auth", name, "--device", timeout=30)
                assert result.returncode == 1, (name, result.stdout, result.stderr)
                errors[name] = result.stderr
            healthy.wait_for(MIN_HEALTHY_CALLS)
        healthy.check()
        assert "user_code is not a printable string" in errors["device_escape"]
        assert "\x1b" not in errors["device_escape"]
        assert "not an https:// URL" in errors["device_plain_http"]
        assert "a redirect, which this request must not follow" in errors["device_redirect"]
        assert recorder.seen == [], [(s.method, s.path) for s in recorder.seen]
        for name, peer in servers.items():
            assert [s.path for s in peer.seen].count("/token") == 0, name
            assert status_of(daemon, name)["state"] == "needs_auth"
        assert CLIENT_SECRET not in daemon.log
        assert daemon.process.poll() is None


def test_a_hostile_2026_07_28_server_harms_nothing_else(mcpd_env, run_daemon, editors, tmp_path):
    """A server of the 2026-07-28 revision whose every answer is wrong in a new
    way (input requests as a list, an unknown input, input asked for without
    end, a requestState that is not a string, tools with bad header
    annotations or not tools at all, absurd cache hints, a listen stream that
    ends at once), beside a healthy server: the healthy one answers all along,
    the editor of the hostile one gets errors promptly, nothing loops, and the
    daemon is still up."""
    hostile = FakeModern()
    with python_server(tmp_path) as good, fake_modern(hostile) as bad:
        mcpd_env.write_config(
            f'[servers.good]\nurl = "{good.url}"\n[servers.modern]\nurl = "{bad.url}/mcp"\n'
        )
        daemon = run_daemon()
        wait_state(daemon, "good", "connected")
        wait_state(daemon, "modern", "connected")
        assert status_of(daemon, "modern")["protocol"] == "2026-07-28"
        with calling_all_along(editors, "good") as healthy:
            editor = editors("modern")
            editor.initialize({"elicitation": {}})
            listed = editor.request("tools/list")["result"]["tools"]
            # Only well-formed tools with valid annotations are shown.
            assert [tool["name"] for tool in listed] == [
                "list_inputs",
                "unknown_input",
                "asks_forever",
            ]
            for name in ("list_inputs", "unknown_input", "asks_forever", "missing"):
                asked = time.monotonic()
                reply = editor.call(name)
                assert "error" in reply, (name, reply)
                assert time.monotonic() - asked < 5, name
            listens_before = hostile.listens
            healthy.wait_for(MIN_HEALTHY_CALLS)
            time.sleep(3)  # measuring a rate: how many listens in a fixed window
            assert hostile.listens - listens_before <= 3, hostile.listens
        healthy.check()
        # Bounded input rounds, for the three calls that are retried (an unknown
        # input ends its call at once).
        assert hostile.retries <= 3 * MAX_INPUT_ROUNDS
        assert daemon.process.poll() is None
        assert status_of(daemon, "good")["state"] == "connected"
