"""The operator-facing shell: settings, the aiohttp app, the CLI and the demo."""
