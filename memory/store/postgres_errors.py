"""PostgreSQL failures in the operator's words, and where the database is (without secrets).

Each reason is what ``/health`` shows and what a 503 says: "database is
locked", "database refused the credentials", "database is restarting"... A
refused connection carries no SQLSTATE, so its reason is read from libpq's text.
"""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import PoolTimeout

from memory.store.group_commit import TIMED_OUT


def describe_location(url: str) -> str:
    """``postgresql://user@host:port/dbname`` from a connection URL, without its password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    user = parts.get("user")
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    database = parts.get("dbname") or user or ""
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{database}"


def describe_failure(exc: BaseException) -> str:
    """What the operator needs to know, from a database error."""
    if isinstance(exc, PoolTimeout):
        # No connection in time, none failing to connect: all busy, or being replaced.
        return TIMED_OUT
    if isinstance(exc, pg_errors.LockNotAvailable):
        return "database is locked"
    if isinstance(exc, pg_errors.QueryCanceled):
        return TIMED_OUT
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return "database is read-only"
    if isinstance(exc, pg_errors.DiskFull):
        return "database disk error"
    if isinstance(exc, pg_errors.UndefinedTable):
        return "database schema is missing"
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return "database refused access"
    if isinstance(exc, pg_errors.InvalidAuthorizationSpecification | pg_errors.InvalidPassword):
        return "database refused the credentials"
    if isinstance(exc, pg_errors.InvalidCatalogName):
        return "database does not exist"
    if isinstance(exc, ValueError):
        return "database holds a record that is not JSON"
    if isinstance(exc, psycopg.OperationalError):
        return _describe_connection_failure(str(exc))
    return "database error"


def _describe_connection_failure(message: str) -> str:
    # libpq reports a refused connection as text only (no SQLSTATE).
    if "password authentication failed" in message or "no pg_hba.conf entry" in message:
        return "database refused the credentials"
    if "role" in message and "does not exist" in message:
        return "database refused the credentials"
    if "database" in message and "does not exist" in message:
        return "database does not exist"
    if "starting up" in message or "shutting down" in message or "recovery" in message:
        return "database is restarting"
    return "database is unreachable"
