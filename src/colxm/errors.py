"""The colxm exception family: every error a user can cause is one of these, with a message
that names the problem and what to do about it."""


class ColxmError(Exception):
    """Base class of every error colxm raises on purpose."""


class InputError(ColxmError, ValueError):
    """Bad user input: empty or non-string text, bad parameters, malformed collection files."""


class LanguageError(InputError):
    """A language code that is unknown or that the model has no adapter for."""


class CheckpointError(ColxmError):
    """A model folder that is missing files, malformed, or of an unsupported kind."""


class IndexFormatError(ColxmError):
    """A folder that is not a colxm index, or an index that is truncated or corrupted."""


class WriterLockedError(ColxmError):
    """Another process holds the index's writer lock."""
