"""OAuth for remote MCP servers, as the MCP authorization specification has it.

`discovery`, `client` and `flow` are sans-IO: each step is a generator that
yields the HTTP requests it needs and receives their responses, and returns
its decision; `http.drive` runs one over the daemon's HTTP client. `callback` is the loopback
listener (h11) and `manager` ties a flow to a server, the store and the user.
"""
