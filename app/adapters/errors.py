"""Which failures mean a dependency is unreachable (worth a retry later), as opposed to a bug or bad data."""

from __future__ import annotations

import errno
import socket

import redis.exceptions
import sqlalchemy.exc

# SQLSTATE classes of a database that is refusing or dropping connections, or is out of resources: transient, so
# the client should retry later. 08 connection exception; 53 insufficient resources (53300 too many connections);
# 57 operator intervention (57P01 admin shutdown, 57P03 the database system is starting up / not accepting
# connections, 57014 a statement cancelled by statement_timeout).
OUTAGE_SQLSTATE_CLASSES = ("08", "53", "57")
# Socket failures that are not ConnectionError: the host cannot be reached or its name not resolved (yet).
UNREACHABLE_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE a database error carries, whether SQLAlchemy wrapped it or not."""
    if isinstance(error, sqlalchemy.exc.DBAPIError):
        error = error.orig
    return getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)


def is_outage(error: BaseException) -> bool:
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return True
    state = sqlstate(error)
    if state is not None:
        return state.startswith(OUTAGE_SQLSTATE_CLASSES)
    if isinstance(error, OSError) and error.errno in UNREACHABLE_ERRNOS:
        return True
    return isinstance(
        error,
        ConnectionError
        | TimeoutError
        | socket.gaierror
        | redis.exceptions.ConnectionError
        | redis.exceptions.TimeoutError
        | sqlalchemy.exc.TimeoutError,
    )
