"""Persistence: schema, migrations, the event journal and account snapshots.

The ledger stores encoded events and states as bytes; it never needs to know their types.
"""

from ledger.database import create_engine, database_label, normalize_url, upgrade
from ledger.journal import Journal, JournalEntry, JournalRecord
from ledger.snapshots import Snapshot, SnapshotStore

__all__ = [
    "Journal",
    "JournalEntry",
    "JournalRecord",
    "Snapshot",
    "SnapshotStore",
    "create_engine",
    "database_label",
    "normalize_url",
    "upgrade",
]
