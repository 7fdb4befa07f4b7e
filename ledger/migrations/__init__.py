"""Alembic migrations of the ledger (run them with `ledger.database.upgrade`)."""
