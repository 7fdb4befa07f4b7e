"""Placeholder: filled in by the admin API work (issue 6)."""

from __future__ import annotations

from api.endpoints import Endpoint

ENDPOINTS: list[Endpoint] = []
