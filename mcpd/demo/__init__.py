"""`mcpd demo`: the whole product on one machine, without an account anywhere.

- `mcpd.demo.server`: a local MCP server protected by OAuth, with its own
  authorization server, built on the official Python SDK (`mcp`, the `demo`
  extra). A demo: its "user" approves every sign-in at once.
- `mcpd.demo.browser`: a headless stand-in for the user's browser (`BROWSER=`).
- `mcpd.demo.run`: `mcpd demo` itself: the server, a daemon in a temporary
  directory, and `mcpctl` signing in, listing and calling tools.

Nothing here imports `mcp` until the server runs, so mcpd works without the extra.
"""
