"""The memory service: records in SQLite (default) or PostgreSQL, newest first."""
