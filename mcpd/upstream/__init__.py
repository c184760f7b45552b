"""The daemon's side of remote MCP servers: transports, sessions and sharing."""
