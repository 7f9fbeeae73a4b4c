"""The memory service: records persisted in SQLite, newest first."""
