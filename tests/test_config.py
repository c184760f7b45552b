"""The configuration file: whole-file errors, per-server errors, {env:VAR}, no leaks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mcpd.config import (
    Config,
    ConfigError,
    DaemonSettings,
    OAuthSettings,
    ServerConfig,
    ServerEntry,
    load,
    parse,
    parse_server,
)
from mcpd.protocol import DEFAULT_MAX_FRAME_SIZE

PATH = Path("/home/user/.config/mcpd/config.toml")

README_EXAMPLE = """\
[servers.linear]
url = "https://mcp.linear.app/mcp"

[servers.internal]
url = "{env:MCP_API_URL}"
headers = { Authorization = "Bearer {env:MCP_API_KEY}" }
oauth = false

[servers.github]
url = "https://api.githubcopilot.com/mcp/"
enabled = true
oauth = { client_id = "Iv1.abc", client_secret = "{env:GH_SECRET}", scope = "repo read:org" }
"""

API_URL = "https://mcp.internal.example/v1"
API_KEY = "sk-live-7f3a9c2e1d-SECRETKEY"
GH_SECRET = "ghs_0123456789abcdefSECRET"
ENV = {"MCP_API_URL": API_URL, "MCP_API_KEY": API_KEY, "GH_SECRET": GH_SECRET}


def errors_of(config: Config) -> list[str]:
    return [entry.error for entry in config.servers.values() if entry.error is not None]


def good(name: str) -> str:
    return f'[servers.{name}]\nurl = "https://{name}.example/mcp"\n'


# --- The README example ------------------------------------------------------------


def test_readme_example_parses_to_the_expected_structs():
    config = parse(README_EXAMPLE, PATH, ENV)
    assert config.path == PATH
    assert config.daemon == DaemonSettings()
    assert list(config.servers) == ["linear", "internal", "github"]
    assert config.servers["linear"] == ServerEntry(
        name="linear",
        config=ServerConfig(url="https://mcp.linear.app/mcp"),
        error=None,
        display_url="https://mcp.linear.app/mcp",
    )
    assert config.servers["internal"] == ServerEntry(
        name="internal",
        config=ServerConfig(
            url=API_URL,
            enabled=True,
            headers={"Authorization": f"Bearer {API_KEY}"},
            oauth=False,
        ),
        error=None,
        display_url=API_URL,
    )
    assert config.servers["github"] == ServerEntry(
        name="github",
        config=ServerConfig(
            url="https://api.githubcopilot.com/mcp/",
            enabled=True,
            oauth=OAuthSettings(
                client_id="Iv1.abc", client_secret=GH_SECRET, scope="repo read:org"
            ),
        ),
        error=None,
        display_url="https://api.githubcopilot.com/mcp/",
    )


def test_readme_config_block_is_the_example_tested_here():
    # The config block in README.md, with its [daemon] table, parses to the
    # same servers as README_EXAMPLE and to the documented daemon defaults.
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.DOTALL)
    assert blocks, "README.md has no ```toml block"
    documented = parse(blocks[0], PATH, ENV)
    assert documented.servers == parse(README_EXAMPLE, PATH, ENV).servers
    assert documented.daemon == DaemonSettings()


def test_readme_example_defaults():
    linear = parse(README_EXAMPLE, PATH, ENV).servers["linear"].config
    assert linear is not None
    assert linear.enabled is True
    assert linear.headers == {}
    # None: OAuth only when the server asks for it.
    assert linear.oauth is None


def test_readme_example_loaded_from_a_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(README_EXAMPLE, encoding="utf-8")
    assert load(path, ENV) == parse(README_EXAMPLE, path, ENV)
    assert load(path, ENV).path == path


def test_env_defaults_to_the_process_environment(monkeypatch):
    for var, value in ENV.items():
        monkeypatch.setenv(var, value)
    config = parse(README_EXAMPLE, PATH)
    internal = config.servers["internal"].config
    assert internal is not None
    assert internal.headers == {"Authorization": f"Bearer {API_KEY}"}


# --- {env:VAR} -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "server", "key"),
    [
        ("MCP_API_KEY", "internal", "headers.Authorization"),
        ("MCP_API_URL", "internal", "url"),
        ("GH_SECRET", "github", "oauth.client_secret"),
    ],
)
def test_missing_env_var_names_server_key_and_variable(missing, server, key):
    env = {var: value for var, value in ENV.items() if var != missing}
    config = parse(README_EXAMPLE, PATH, env)
    entry = config.servers[server]
    assert entry.config is None
    assert entry.error is not None
    assert repr(server) in entry.error
    assert key in entry.error
    assert missing in entry.error
    # The other variables' values never show up.
    for value in env.values():
        assert value not in entry.error
    # The other servers are unaffected.
    for name, other in config.servers.items():
        if name != server:
            assert other.config is not None
            assert other.error is None


def test_missing_env_var_error_wording():
    env = {"MCP_API_URL": API_URL, "GH_SECRET": GH_SECRET}
    entry = parse(README_EXAMPLE, PATH, env).servers["internal"]
    assert entry.error == (
        "server 'internal': headers.Authorization refers to {env:MCP_API_KEY} "
        "but $MCP_API_KEY is not set"
    )


def test_missing_env_var_keeps_the_unexpanded_url_for_display():
    entry = parse(README_EXAMPLE, PATH, {"MCP_API_KEY": API_KEY}).servers["internal"]
    assert entry.config is None
    assert entry.display_url == "{env:MCP_API_URL}"


def test_empty_env_var_is_set():
    text = '[servers.a]\nurl = "https://a.example/{env:SUFFIX}"\n'
    entry = parse(text, PATH, {"SUFFIX": ""}).servers["a"]
    assert entry.config == ServerConfig(url="https://a.example/")


def test_several_references_in_one_value():
    text = (
        '[servers.a]\nurl = "https://{env:HOST}:{env:PORT}/mcp"\n'
        'headers = { X-Pair = "{env:HOST}/{env:HOST}" }\n'
    )
    entry = parse(text, PATH, {"HOST": "h.example", "PORT": "8443"}).servers["a"]
    assert entry.config is not None
    assert entry.config.url == "https://h.example:8443/mcp"
    assert entry.config.headers == {"X-Pair": "h.example/h.example"}


def test_expansion_is_not_recursive():
    # A value that itself looks like a reference is inserted verbatim.
    text = '[servers.a]\nurl = "https://a.example"\nheaders = { X = "{env:A}" }\n'
    entry = parse(text, PATH, {"A": "{env:B}", "B": "leaked"}).servers["a"]
    assert entry.config is not None
    assert entry.config.headers == {"X": "{env:B}"}


def test_text_that_is_not_a_reference_is_left_alone():
    text = (
        '[servers.a]\nurl = "https://a.example"\n'
        'headers = { X = "{env:}{ENV:A}{env:1A}{env:A-B}$A {env:A" }\n'
    )
    entry = parse(text, PATH, {"A": "x"}).servers["a"]
    assert entry.config is not None
    assert entry.config.headers == {"X": "{env:}{ENV:A}{env:1A}{env:A-B}$A {env:A"}


def test_header_names_are_not_expanded():
    # Taken as written, which is no header name at all: refused, saying so.
    text = '[servers.a]\nurl = "https://a.example"\nheaders = { "{env:A}" = "v" }\n'
    entry = parse(text, PATH, {"A": "x"}).servers["a"]
    assert entry.config is None
    assert "'{env:A}' is not a valid header name" in (entry.error or "")


def test_env_is_only_read_for_referenced_variables():
    class Strict(dict[str, str]):
        def __getitem__(self, key: str) -> str:
            if key != "WANTED":
                raise AssertionError(f"read {key}")
            return super().__getitem__(key)

    env = Strict(WANTED="x", OTHER="y")
    text = '[servers.a]\nurl = "https://a.example"\nheaders = { X = "{env:WANTED}" }\n'
    entry = parse(text, PATH, env).servers["a"]
    assert entry.config is not None
    assert entry.config.headers == {"X": "x"}


# --- One bad entry does not affect the others ----------------------------------------

BAD_ENTRIES = {
    "unknown-key": ('[servers.bad]\nurll = "https://bad.example"\n', "urll"),
    "missing-url": ("[servers.bad]\nenabled = true\n", "url"),
    "enabled-wrong-type": (
        '[servers.bad]\nurl = "https://bad.example"\nenabled = "yes"\n',
        "enabled",
    ),
    "headers-wrong-type": (
        '[servers.bad]\nurl = "https://bad.example"\nheaders = { X = 5 }\n',
        "headers",
    ),
    "headers-not-a-table": (
        '[servers.bad]\nurl = "https://bad.example"\nheaders = "X: 1"\n',
        "headers",
    ),
    "oauth-unknown-key": (
        '[servers.bad]\nurl = "https://bad.example"\noauth = { client = "x" }\n',
        "client",
    ),
    "oauth-wrong-type": ('[servers.bad]\nurl = "https://bad.example"\noauth = "yes"\n', "oauth"),
    "url-wrong-type": ("[servers.bad]\nurl = 5\n", "url"),
    "url-ftp": ('[servers.bad]\nurl = "ftp://bad.example/mcp"\n', "http"),
    "url-no-host": ('[servers.bad]\nurl = "https:///mcp"\n', "host"),
    "url-relative": ('[servers.bad]\nurl = "bad.example/mcp"\n', "http"),
    "url-empty": ('[servers.bad]\nurl = ""\n', "url"),
    "not-a-table": ('[servers]\nbad = "https://bad.example"\n', "object"),
    "missing-env": ('[servers.bad]\nurl = "https://{env:NOT_SET_ANYWHERE}"\n', "NOT_SET_ANYWHERE"),
}


@pytest.mark.parametrize("case", list(BAD_ENTRIES), ids=str)
def test_one_bad_entry_does_not_affect_the_others(case):
    bad, fragment = BAD_ENTRIES[case]
    text = good("first") + "\n" + bad + "\n" + good("last")
    config = parse(text, PATH, {})
    assert list(config.servers) == ["first", "bad", "last"]
    for name in ("first", "last"):
        assert config.servers[name] == ServerEntry(
            name,
            ServerConfig(url=f"https://{name}.example/mcp"),
            None,
            f"https://{name}.example/mcp",
        )
    entry = config.servers["bad"]
    assert entry.name == "bad"
    assert entry.config is None
    assert entry.error is not None
    assert entry.error.startswith("server 'bad': ")
    assert fragment in entry.error


def test_unknown_key_error_names_server_and_key():
    text = '[servers.bad]\nurl = "https://bad.example"\ntimeuot = 5\n'
    error = parse(text, PATH, {}).servers["bad"].error
    assert error is not None
    assert error.startswith("server 'bad': ")
    assert "unknown field `timeuot`" in error


def test_nested_error_points_at_the_nested_key():
    text = '[servers.gh]\nurl = "https://gh.example"\noauth = { client_id = 5 }\n'
    error = parse(text, PATH, {}).servers["gh"].error
    assert error is not None
    assert "servers.gh.oauth.client_id" in error


def test_invalid_entry_keeps_its_url_for_display():
    text = '[servers.bad]\nurl = "https://bad.example"\nenabled = "yes"\n'
    assert parse(text, PATH, {}).servers["bad"].display_url == "https://bad.example"
    text = "[servers.bad]\nurl = 5\n"
    assert parse(text, PATH, {}).servers["bad"].display_url == ""


@pytest.mark.parametrize(
    "name",
    ["a", "A1", "linear", "my-server", "my_server", "v1.2", "a" * 64, "0day", "x.-_"],
)
def test_valid_server_names(name):
    text = f'[servers."{name}"]\nurl = "https://a.example"\n'
    entry = parse(text, PATH, {}).servers[name]
    assert entry.error is None
    assert entry.config == ServerConfig(url="https://a.example")


@pytest.mark.parametrize(
    "name",
    ["", "-a", ".a", "_a", "..", "a b", "a/b", "../x", "a" * 65, "ünicode", "a\tb", "a:b"],
)
def test_bad_server_name_is_an_entry_error(name):
    text = f'[servers."{name}"]\nurl = "https://bad.example"\n\n' + good("fine")
    config = parse(text, PATH, {})
    entry = config.servers[name]
    assert entry.config is None
    assert entry.error is not None
    assert entry.error.startswith(f"server {name!r}: names may use")
    assert entry.display_url == "https://bad.example"
    assert config.servers["fine"].config is not None


def test_bad_name_is_reported_before_a_missing_variable():
    text = '[servers."bad name"]\nurl = "{env:UNSET}"\n'
    error = parse(text, PATH, {}).servers["bad name"].error
    assert error is not None
    assert "names may use" in error
    assert "UNSET" not in error


def test_parse_server_directly():
    entry = parse_server("a", {"url": "http://localhost:8080/mcp", "enabled": False}, {})
    assert entry == ServerEntry(
        "a", ServerConfig(url="http://localhost:8080/mcp", enabled=False), None, entry.display_url
    )
    assert entry.display_url == "http://localhost:8080/mcp"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("false", False),
        ("{}", OAuthSettings()),
        (
            '{ client_metadata_url = "https://me.example/client.json" }',
            OAuthSettings(client_metadata_url="https://me.example/client.json"),
        ),
        (
            '{ redirect_uri = "http://127.0.0.1:33418/callback" }',
            OAuthSettings(redirect_uri="http://127.0.0.1:33418/callback"),
        ),
    ],
)
def test_oauth_forms(value, expected):
    text = f'[servers.a]\nurl = "https://a.example"\noauth = {value}\n'
    entry = parse(text, PATH, {}).servers["a"]
    assert entry.config is not None
    assert entry.config.oauth == expected


def test_oauth_as_a_subtable():
    text = (
        '[servers.a]\nurl = "https://a.example"\n'
        '[servers.a.oauth]\nclient_id = "cid"\nscope = "read"\n'
    )
    entry = parse(text, PATH, {}).servers["a"]
    assert entry.config is not None
    assert entry.config.oauth == OAuthSettings(client_id="cid", scope="read")


def test_disabled_server_is_still_a_valid_config():
    text = '[servers.a]\nurl = "https://a.example"\nenabled = false\n'
    entry = parse(text, PATH, {}).servers["a"]
    assert entry.config == ServerConfig(url="https://a.example", enabled=False)


def test_config_structs_are_frozen():
    entry = parse(README_EXAMPLE, PATH, ENV).servers["linear"]
    assert entry.config is not None
    with pytest.raises(AttributeError):
        entry.config.url = "https://other.example"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        entry.error = "x"  # type: ignore[misc]


# --- Whole-file errors -------------------------------------------------------------


def test_empty_file_is_an_empty_config():
    config = parse("", PATH, {})
    assert config == Config(PATH, DaemonSettings(), {})


def test_missing_file_is_an_empty_config(tmp_path):
    path = tmp_path / "nope" / "config.toml"
    config = load(path, {})
    assert config.path == path
    assert config.servers == {}
    assert config.daemon == DaemonSettings()
    assert not path.exists()
    assert not path.parent.exists()


def test_unreadable_file_raises_config_error(tmp_path):
    path = tmp_path / "config.toml"
    path.mkdir()
    with pytest.raises(ConfigError, match="cannot read") as info:
        load(path, {})
    assert str(path) in str(info.value)


def test_non_utf8_file_raises_config_error(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b'[servers.a]\nurl = "https://a.example/\xff"\n')
    with pytest.raises(ConfigError, match="cannot read") as info:
        load(path, {})
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[daemon]\nlog_level = \n", 2),
        ('[servers.a]\nurl = "https://a"\n\n\n[servers.a]\nurl = "https://b"\n', 5),
        ('[servers.a]\nurl = "https://a.example\n', 2),
        ('\n\n\n[servers.a]\nurl = "https://a"\nheaders = { X = "1" \n', 6),
        ("this is not toml\n", 1),
    ],
)
def test_invalid_toml_names_file_and_line(text, line):
    with pytest.raises(ConfigError) as info:
        parse(text, PATH, {})
    message = str(info.value)
    assert message.startswith(f"{PATH}: invalid TOML")
    assert f"line {line}," in message


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("verbose = true\n", "verbose", 1),
        ('# comment\n[deamon]\nlog_level = "debug"\n', "deamon", 2),
        ('[servers.a]\nurl = "https://a.example"\n[server.b]\nurl = "https://b"\n', "server", 3),
        ('[daemon]\nlog_level = "debug"\nloglevel = "info"\n', "loglevel", 3),
        ('[servers.a]\nurl = "https://a.example"\n  [ extra ]\nx = 1\n', "extra", 3),
    ],
)
def test_unknown_top_level_key_names_file_and_line(text, key, line):
    with pytest.raises(ConfigError) as info:
        parse(text, PATH, {})
    message = str(info.value)
    assert message.startswith(f"{PATH}:{line}: ")
    assert f"`{key}`" in message
    assert "[daemon] and [servers.NAME]" in message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('# comment\n\n[deamon]\nlog_level = "debug"\n', 3),
        ('[servers.a]\nurl = "https://a.example"\n\n[server.b]\nurl = "https://b"\n', 4),
        ('[servers.a]\nurl = "https://a.example"\n\n\n\n[extra]\nx = 1\n', 6),
        ("\n\n  \n\t\nverbose = 1\n", 5),
    ],
)
def test_unknown_top_level_key_after_blank_lines_names_its_own_line(text, line):
    with pytest.raises(ConfigError) as info:
        parse(text, PATH, {})
    assert str(info.value).startswith(f"{PATH}:{line}: ")


def test_unknown_top_level_array_of_tables_names_its_line():
    text = '[servers.a]\nurl = "https://a.example"\n[[servers_list]]\nurl = "https://b"\n'
    with pytest.raises(ConfigError) as info:
        parse(text, PATH, {})
    assert str(info.value).startswith(f"{PATH}:3: ")


def test_unknown_top_level_key_without_a_findable_line_still_names_the_file():
    text = '"quoted key" = 1\n'
    with pytest.raises(ConfigError) as info:
        parse(text, PATH, {})
    message = str(info.value)
    assert message.startswith(f"{PATH}: ")
    assert "`quoted key`" in message


def test_unknown_top_level_key_fails_the_whole_file_even_with_good_servers():
    text = README_EXAMPLE + "\n[extra]\nx = 1\n"
    with pytest.raises(ConfigError, match="extra"):
        parse(text, PATH, ENV)


def test_unknown_top_level_table_line_ignores_same_named_keys_in_servers():
    text = '[servers.a]\nurl = "https://a.example"\nheaders = { X = "1" }\n[headers]\nX = "2"\n'
    with pytest.raises(ConfigError) as info:
        parse(text, PATH, {})
    assert str(info.value).startswith(f"{PATH}:4: ")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('servers = "x"\n', "servers"),
        ('daemon = "x"\n', "daemon"),
        ("[daemon]\nmax_frame_size = true\n", "max_frame_size"),
        ('[daemon]\nmax_frame_size = "16M"\n', "max_frame_size"),
        ("[daemon]\nmax_frame_size = 1.5e6\n", "max_frame_size"),
    ],
)
def test_wrong_types_at_top_level_raise_config_error(text, fragment):
    with pytest.raises(ConfigError) as info:
        parse(text, PATH, {})
    assert str(info.value).startswith(str(PATH))
    assert fragment in str(info.value)


# --- [daemon] ---------------------------------------------------------------------


def test_daemon_defaults():
    settings = parse(good("a"), PATH, {}).daemon
    assert settings.max_frame_size == DEFAULT_MAX_FRAME_SIZE
    assert settings.log_level == "info"


@pytest.mark.parametrize("size", [1024, 4096, 64 * 1024 * 1024])
def test_max_frame_size_accepted(size):
    config = parse(f"[daemon]\nmax_frame_size = {size}\n", PATH, {})
    assert config.daemon.max_frame_size == size


@pytest.mark.parametrize("size", [1023, 0, -1, -(2**40)])
def test_max_frame_size_too_small(size):
    with pytest.raises(ConfigError) as info:
        parse(f"[daemon]\nmax_frame_size = {size}\n" + good("a"), PATH, {})
    message = str(info.value)
    assert message.startswith(str(PATH))
    assert "daemon.max_frame_size" in message
    assert "1024" in message


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_log_levels_accepted(level):
    assert parse(f'[daemon]\nlog_level = "{level}"\n', PATH, {}).daemon.log_level == level


@pytest.mark.parametrize("level", ["verbose", "INFO", "warn", "", "critical"])
def test_bad_log_level(level):
    text = f'\n[daemon]\nlog_level = "{level}"\n'
    with pytest.raises(ConfigError) as info:
        parse(text, PATH, {})
    assert str(info.value).startswith(str(PATH))
    assert "log_level" in str(info.value)


def test_log_level_wrong_type():
    with pytest.raises(ConfigError, match="log_level"):
        parse("[daemon]\nlog_level = 10\n", PATH, {})


def test_connection_limits_defaults():
    settings = parse(good("a"), PATH, {}).daemon
    assert settings.max_connections == 4096
    assert settings.frame_timeout == 30.0


@pytest.mark.parametrize("count", [1, 20, 100_000])
def test_max_connections_accepted(count):
    assert parse(f"[daemon]\nmax_connections = {count}\n", PATH, {}).daemon.max_connections == (
        count
    )


@pytest.mark.parametrize("count", [0, -1])
def test_max_connections_too_small(count):
    with pytest.raises(ConfigError) as info:
        parse(f"[daemon]\nmax_connections = {count}\n" + good("a"), PATH, {})
    message = str(info.value)
    assert message.startswith(str(PATH))
    assert "daemon.max_connections must be at least 1" in message


@pytest.mark.parametrize("value", ['"many"', "1.5", "true"])
def test_max_connections_wrong_type(value):
    with pytest.raises(ConfigError, match="max_connections"):
        parse(f"[daemon]\nmax_connections = {value}\n", PATH, {})


@pytest.mark.parametrize(("text", "seconds"), [("0.25", 0.25), ("2", 2.0), ("3600", 3600.0)])
def test_frame_timeout_accepted(text, seconds):
    assert parse(f"[daemon]\nframe_timeout = {text}\n", PATH, {}).daemon.frame_timeout == seconds


@pytest.mark.parametrize("text", ["0", "-1", "3600.5", "inf", "nan", "-inf"])
def test_frame_timeout_out_of_range(text):
    with pytest.raises(ConfigError) as info:
        parse(f"[daemon]\nframe_timeout = {text}\n" + good("a"), PATH, {})
    message = str(info.value)
    assert message.startswith(str(PATH))
    assert "daemon.frame_timeout must be more than 0 and at most 3600 seconds" in message


@pytest.mark.parametrize("value", ['"30s"', "true"])
def test_frame_timeout_wrong_type(value):
    with pytest.raises(ConfigError, match="frame_timeout"):
        parse(f"[daemon]\nframe_timeout = {value}\n", PATH, {})


# --- Secrets never appear in errors --------------------------------------------------

SECRET = "s3cr3t-VALUE-that-must-not-leak"
SECRET_ENV = {"TOKEN": SECRET, "CLIENT_SECRET": SECRET + "-client", "URL": "https://ok.example"}

LEAKY_ENTRIES = [
    # An env-var secret in a header, with another problem in the same entry.
    '[servers.x]\nurl = "{env:URL}"\nheaders = { A = "Bearer {env:TOKEN}" }\nbogus = 1\n',
    '[servers.x]\nurl = "{env:URL}"\nheaders = { A = "Bearer {env:TOKEN}" }\nenabled = "no"\n',
    '[servers.x]\nurl = "ftp://x.example"\nheaders = { A = "Bearer {env:TOKEN}" }\n',
    '[servers.x]\nurl = "{env:URL}"\nheaders = { A = "Bearer {env:TOKEN}", B = "{env:NOPE}" }\n',
    '[servers.x]\nurl = "{env:URL}"\nheaders = { A = "{env:TOKEN}", B = 5 }\n',
    # The same secret written literally in the file.
    f'[servers.x]\nurl = "https://x.example"\nheaders = {{ A = "{SECRET}" }}\noauth = 1\n',
    f'[servers.x]\nurl = "https://x.example"\nheaders = {{ A = "{SECRET}", B = [1] }}\n',
    # A client secret next to an invalid OAuth field.
    '[servers.x]\nurl = "{env:URL}"\noauth = { client_secret = "{env:CLIENT_SECRET}", s = 1 }\n',
    '[servers.x]\nurl = "{env:URL}"\n'
    'oauth = { client_secret = "{env:CLIENT_SECRET}", scope = 1 }\n',
    f'[servers.x]\nurl = "{{env:URL}}"\noauth = {{ client_secret = "{SECRET}", client_id = 2 }}\n',
    # A bad name on an entry holding a secret.
    '[servers."x y"]\nurl = "{env:URL}"\nheaders = { A = "Bearer {env:TOKEN}" }\n',
]


@pytest.mark.parametrize("text", LEAKY_ENTRIES)
def test_secrets_never_appear_in_entry_errors(text):
    config = parse(text, PATH, SECRET_ENV)
    errors = errors_of(config)
    assert errors, "each of these entries is invalid"
    for error in errors:
        assert SECRET not in error
    for entry in config.servers.values():
        assert entry.config is None
        assert SECRET not in entry.display_url


@pytest.mark.parametrize(
    "text",
    [
        # Invalid TOML on the line that holds the secret.
        f'[servers.x]\nurl = "https://x.example"\nheaders = {{ A = "{SECRET}" \n',
        f'[servers.x]\nurl = "https://x.example"\nheaders = {{ A = {SECRET} }}\n',
        f'[servers.x]\nurl = "https://x.example"\ntoken = "{SECRET}\n',
        # A whole-file error in a file that holds the secret.
        f'[servers.x]\nurl = "https://x.example"\nheaders = {{ A = "{SECRET}" }}\n[extra]\n',
        f'[servers.x]\nurl = "https://x.example"\nheaders = {{ A = "{SECRET}" }}\n'
        "[daemon]\nmax_frame_size = 10\n",
    ],
)
def test_secrets_never_appear_in_file_errors(text):
    with pytest.raises(ConfigError) as info:
        parse(text, PATH, SECRET_ENV)
    assert SECRET not in str(info.value)


def test_secret_in_url_env_var_does_not_leak_into_url_error():
    text = '[servers.x]\nurl = "{env:URL}"\n'
    entry = parse(text, PATH, {"URL": f"htps://x.example/mcp?key={SECRET}"}).servers["x"]
    assert entry.error is not None
    assert SECRET not in entry.error


def test_missing_env_error_quotes_no_values():
    env = {"MCP_API_URL": API_URL, "GH_SECRET": GH_SECRET}
    config = parse(README_EXAMPLE, PATH, env)
    for error in errors_of(config):
        assert API_URL not in error
        assert GH_SECRET not in error
        # Only the reference is quoted, never anything that looks like a value.
        assert re.search(r"Bearer", error) is None


# --- The authorization request's knobs: oauth.prompt, oauth.resource, oauth.authorize_params


def oauth_entry(value: str, env: dict[str, str] | None = None) -> ServerEntry:
    text = f'[servers.sso]\nurl = "https://sso.example/mcp"\noauth = {value}\n'
    return parse(text, PATH, env or {}).servers["sso"]


def oauth_of(value: str) -> OAuthSettings:
    entry = oauth_entry(value)
    assert entry.error is None, entry.error
    assert entry.config is not None
    assert isinstance(entry.config.oauth, OAuthSettings)
    return entry.config.oauth


def oauth_error(value: str, env: dict[str, str] | None = None) -> str:
    entry = oauth_entry(value, env)
    assert entry.config is None
    assert entry.error is not None
    assert entry.error.startswith("server 'sso': ")
    return entry.error


def test_knobs_default_to_the_servers_own_request():
    settings = oauth_of("{}")
    assert settings.prompt is None
    assert settings.resource is None
    assert settings.authorize_params == {}


@pytest.mark.parametrize(
    "prompt", ["consent", "login", "none", "select_account", "login consent", "", "x-vendor"]
)
def test_prompt_accepted(prompt):
    assert oauth_of(f'{{ prompt = "{prompt}" }}').prompt == prompt


@pytest.mark.parametrize(
    ("prompt", "fragment"),
    [
        (" consent", "separated by single spaces"),
        ("login  consent", "separated by single spaces"),
        ("consent ", "separated by single spaces"),
        ('con\\"sent', "separated by single spaces"),
        ("consent\\n", "separated by single spaces"),
        ("none login", '"none" cannot be combined'),
    ],
)
def test_prompt_refused(prompt, fragment):
    error = oauth_error(f'{{ prompt = "{prompt}" }}')
    assert "oauth.prompt" in error
    assert fragment in error


def test_prompt_of_the_wrong_type_names_the_key():
    error = oauth_error("{ prompt = true }")
    assert "servers.sso.oauth.prompt" in error


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("false", False),
        ("true", None),  # the default, written out
        ('"https://graph.example.com"', "https://graph.example.com"),
        ('"https://api.example.com/v1?tenant=a"', "https://api.example.com/v1?tenant=a"),
        ('"http://127.0.0.1:8080/mcp"', "http://127.0.0.1:8080/mcp"),
        ('"http://localhost:8080/mcp"', "http://localhost:8080/mcp"),
    ],
)
def test_resource_accepted(value, expected):
    assert oauth_of(f"{{ resource = {value} }}").resource == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ('"http://api.example.com/mcp"', "must be https://; set oauth.resource to an"),
        ('"https://api.example.com/mcp#part"', "no fragment"),
        ('"api.example.com"', "or to false to leave the parameter out"),
        ('"urn:example:api"', "not an http:// or https:// URL"),
        ('"https://api.example.com:99999/"', "port"),
        ('""', "oauth.resource"),
    ],
)
def test_resource_refused(value, fragment):
    error = oauth_error(f"{{ resource = {value} }}")
    assert "oauth.resource" in error
    assert fragment in error


def test_resource_of_the_wrong_type_names_the_key():
    assert "servers.sso.oauth.resource" in oauth_error("{ resource = 1 }")


def test_resource_from_the_environment():
    entry = oauth_entry('{ resource = "{env:AUD}" }', {"AUD": "https://aud.example"})
    assert entry.config is not None
    assert isinstance(entry.config.oauth, OAuthSettings)
    assert entry.config.oauth.resource == "https://aud.example"


def test_authorize_params_accepted():
    settings = oauth_of(
        '{ authorize_params = { audience = "https://api.example.com", "acr_values" = "mfa", '
        'login_hint = "me@example.com", "claims[x]" = "", ui_locales = "fr é" } }'
    )
    assert settings.authorize_params == {
        "audience": "https://api.example.com",
        "acr_values": "mfa",
        "login_hint": "me@example.com",
        "claims[x]": "",
        "ui_locales": "fr é",
    }


def test_authorize_params_as_a_subtable():
    text = (
        '[servers.sso]\nurl = "https://sso.example/mcp"\n'
        '[servers.sso.oauth.authorize_params]\naudience = "api://default"\n'
    )
    entry = parse(text, PATH, {}).servers["sso"]
    assert entry.config is not None
    assert entry.config.oauth == OAuthSettings(authorize_params={"audience": "api://default"})


@pytest.mark.parametrize(
    ("name", "instead"),
    [
        ("response_type", "remove it"),
        ("response_mode", "remove it"),
        ("client_id", "set oauth.client_id instead"),
        ("client_secret", "set oauth.client_secret instead"),
        ("redirect_uri", "set oauth.redirect_uri instead"),
        ("state", "remove it"),
        ("code_challenge", "remove it"),
        ("code_challenge_method", "remove it"),
        ("scope", "set oauth.scope instead"),
        ("Scope", "set oauth.scope instead"),
        ("resource", "set oauth.resource instead"),
        ("prompt", "set oauth.prompt instead"),
        ("request", "remove it"),
        ("request_uri", "remove it"),
    ],
)
def test_authorize_params_refuse_what_mcpd_sends_and_say_what_to_use(name, instead):
    error = oauth_error(f'{{ authorize_params = {{ {name} = "{SECRET}" }} }}')
    assert f"oauth.authorize_params.{name}:" in error
    assert "cannot be set here" in error
    assert instead in error
    assert SECRET not in error


@pytest.mark.parametrize("name", ["a b", "", "x=y", "é"])
def test_authorize_params_refuse_names_that_are_no_parameter(name):
    error = oauth_error(f'{{ authorize_params = {{ "{name}" = "v" }} }}')
    assert "is not a parameter name" in error


def test_authorize_params_refuse_control_characters_without_quoting_the_value():
    error = oauth_error(
        '{ authorize_params = { audience = "{env:AUD}" } }', {"AUD": SECRET + "\r\n"}
    )
    assert "oauth.authorize_params.audience" in error
    assert "control character" in error
    assert SECRET not in error


@pytest.mark.parametrize(
    "value", ["{ authorize_params = { a = 1 } }", '{ authorize_params = "x" }']
)
def test_authorize_params_of_the_wrong_type_name_the_key(value):
    assert "servers.sso.oauth.authorize_params" in oauth_error(value)


def test_a_bad_knob_fails_that_server_only():
    text = (
        '[servers.sso]\nurl = "https://sso.example/mcp"\n'
        'oauth = { resource = "http://x.example" }\n' + good("other")
    )
    config = parse(text, PATH, {})
    assert config.servers["sso"].config is None
    assert config.servers["other"].config is not None


def test_the_readme_example_of_the_knobs_loads():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.DOTALL) if "resource =" in b]
    assert blocks, "README.md has no example of oauth.resource"
    config = parse(blocks[0], PATH, {})
    assert config.servers
    for entry in config.servers.values():
        assert entry.error is None, entry.error
        assert isinstance(entry.config.oauth, OAuthSettings)
    entra = config.servers["entra"].config.oauth
    assert (entra.resource, entra.authorize_params) == (False, {"domain_hint": "contoso.example"})
