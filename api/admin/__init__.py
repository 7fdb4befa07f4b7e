"""The operators' admin API: one module per resource, each exporting its `ENDPOINTS`."""
