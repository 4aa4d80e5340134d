"""The vault: sealed records in SQLite, with phases and retention."""
