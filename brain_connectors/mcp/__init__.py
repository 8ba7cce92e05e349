"""The MCP server (server), who calls it (auth), and what each app's `mcp_tools` module contributes (registry, schema)."""
