"""Which failures mean a dependency is unreachable (worth a retry later), as opposed to a bug or bad data."""

from __future__ import annotations

import redis.exceptions
import sqlalchemy.exc


def is_outage(error: BaseException) -> bool:
    if isinstance(error, sqlalchemy.exc.DBAPIError):
        return error.connection_invalidated
    return isinstance(
        error,
        ConnectionError
        | TimeoutError
        | redis.exceptions.ConnectionError
        | redis.exceptions.TimeoutError
        | sqlalchemy.exc.TimeoutError,
    )
