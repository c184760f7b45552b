"""OAuth for remote MCP servers, as the MCP authorization specification has it.

`discovery`, `flow`, `device` (RFC 8628) and `refresh` are sans-IO: each
step is a generator that yields the HTTP requests it needs (`messages`) and
receives their responses, and returns its decision; `driver.drive` performs
one over the server's HTTP client. `model` is what OAuth leaves the daemon
holding (tokens, client registration, authorization server), `callback` is
the loopback listener (h11), and `manager` runs one flow per server for
everyone who asks.
"""
