"""The run's ledger: the SQLite store, the one-writer lock, damaged-state messages, outcomes."""
