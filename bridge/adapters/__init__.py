"""Connections to trading platforms: one module per platform, each a `bridge.platform.Platform`."""
