"""mcpd: one daemon per user that owns every remote MCP server connection.

This package file stays free of imports: the thin clients import
`mcpd.protocol` and `mcpd.paths` and must not pay for the daemon.
"""

__version__ = "0.1.0"
