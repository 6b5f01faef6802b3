"""Typed errors raised by the library; each message says what to do next."""
from __future__ import annotations


class QAError(Exception):
    """Base class: the message is written for the person running the tool."""


class InputPathError(QAError):
    """A path given to index does not exist or cannot be read."""


class UnreadableFileError(QAError):
    """One file could not be turned into text (the others are unaffected)."""


class EmptyCorpusError(QAError):
    """There is nothing indexable in the given paths."""


class IndexMissingError(QAError):
    """No index has been built at the given folder yet."""


class IndexMismatchError(QAError):
    """The index on disk was built with another model, backend or chunk settings."""


class IndexCorruptError(QAError):
    """The index on disk cannot be read."""


class IndexLockedError(QAError):
    """Another process is writing to the same index."""


class IndexChangedError(QAError):
    """The index changed between an answer and a request about it (its document was removed)."""


class SettingsError(QAError, ValueError):
    """A setting is out of its range."""


class QuestionError(QAError):
    """The question is empty or cannot be used."""


class ModelError(QAError):
    """The embedding model cannot be loaded from its local path."""


class StoreError(QAError):
    """The store (a PostgreSQL database) cannot be reached or used."""
