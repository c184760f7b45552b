"""Thin clients of mcpd (installed as the `mcpctl` package).

They import only the standard library, msgspec and mcpd's protocol and path
modules, never the daemon's dependencies, so that they start instantly.
"""
