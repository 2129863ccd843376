"""The `edge-agent` command line, the embedded stack and the development tools."""
