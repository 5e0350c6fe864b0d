"""Errors an operator can fix. The CLI prints them as one line and exits 2, never a traceback."""

from __future__ import annotations


class OperatorError(Exception):
    """A problem with input the operator controls: flags, config, files, credentials.

    The message must say what is wrong and where (file, key, path), on one line.
    """

    exit_code = 2


class ConfigError(OperatorError):
    pass


def file_problem(error: OSError, missing: str = "no such file", permission_hint: str = "") -> str:
    """Why a file could not be read, in the few words an operator's error line ends with.

    Every reader of operator files says the same things; ``missing`` and ``permission_hint``
    are there for the readers whose messages already use other words ("not found", "run as
    root?")."""
    if isinstance(error, FileNotFoundError):
        return missing
    if isinstance(error, IsADirectoryError):
        return "is a directory"
    if isinstance(error, PermissionError):
        return "permission denied" + permission_hint
    return error.strerror or str(error)
