"""The one error storage raises, whatever the database or driver said."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from onegate.errors import OnegateError


class StorageError(OnegateError):
    """A database cannot be reached, migrated or used, or its URL is not one onegate supports.

    Owners translate it into their own error (the key store into ``KeyStoreError``); the message
    is one line and never holds the statement or its parameters.
    """

    slug = "storage-error"
    title = "Storage error"


def describe(exc: SQLAlchemyError) -> str:
    """The driver's own error, first line only.

    SQLAlchemy appends the statement and its parameters below it, which may carry data a log
    line should not.
    """
    original = getattr(exc, "orig", None) or exc
    text = str(original)
    return f"{type(original).__name__}: {text.splitlines()[0] if text else ''}"
